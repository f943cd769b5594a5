#!/usr/bin/env bash
# Train (or resume) the paper-profile runs that are not finished, or retrain derived
# architectures from scratch, queued in the background: at most JOBS processes at once
# (default 2), each on one torch thread (two threads per process on a shared 2-core
# machine are many times slower); logs in logs/<run>.out, the queue's in logs/paper_runs.out.
#
#   SEEDS="0 1 2 3 4" bash scripts/paper_runs.sh exp1                  # authors_code preset
#   PRESET=thesis_text SEEDS="0 1 2 3 4" bash scripts/paper_runs.sh exp1
#   SEEDS="0 1 2" bash scripts/paper_runs.sh exp2 exp3
#   MODE=retrain ARCHS="A B C D" SEEDS=0 bash scripts/paper_runs.sh exp1   # hypernas retrain --profile paper
#   MODE=retrain ARCHS= MEMBERS="0 8 15" SEEDS=0 bash scripts/paper_runs.sh exp1   # members of the family file
#     (hypernas.retrain.spread_members(family, 8) picks members spread over the weights;
#      similar_size_members(family, 8) members of one size band spread over inherited accuracy)
#   RETRAIN_PROFILE=short MODE=retrain ...   # the protocol compressed to 10 epochs (a labelled proxy;
#     files results/paper/retrain/<run>-<arch>-short.json); default paper (the authors' protocol)
#   DRY_RUN=1 ...                                                       # print the queue only
#   RETRAIN_DEVICE=cuda ...          # retrain on a GPU (hypernas retrain --device; default cpu)
#
# When a run or a retraining has finished, commit its files and refresh the README's table
# and the model cards: python -m hypernas.report --readme --cards
# A run whose results file exists is skipped. `hypernas train` resumes a run from its
# checkpoint (results/paper/<run>/checkpoint.pt, log.jsonl) and `hypernas retrain` from
# results/paper/retrain/<run>-<arch>.checkpoint.pt: before a time-boxed session ends, commit
# them; rerunning this script resumes from them exactly (same thread count: one). Two
# queues that list the same run never run it twice at once: the second process refuses at
# once (the run's lock) and its queue goes on.
set -euo pipefail
cd "$(dirname "$0")/.."
PRESET=${PRESET:-authors_code}
SEEDS=${SEEDS:-0}
MODE=${MODE:-train}
RETRAIN_PROFILE=${RETRAIN_PROFILE:-paper}
case "$RETRAIN_PROFILE" in paper) SUFFIX= ;; short) SUFFIX=-short ;;
  *) echo "RETRAIN_PROFILE must be paper or short, not $RETRAIN_PROFILE" >&2; exit 2 ;; esac
ARCHS=${ARCHS-A B C D}     # unset: all four; ARCHS= (empty): none, e.g. with MEMBERS
JOBS=${JOBS:-2}
HYPERNAS=${HYPERNAS:-.venv/bin/hypernas}
SHARED_DATA="$(cd .. && pwd)/shared/data"
if [ -z "${HYPERNAS_DATA:-}" ] && [ -d "$SHARED_DATA" ]; then export HYPERNAS_DATA="$SHARED_DATA"; fi

queue=()
for exp in "$@"; do
  for seed in $SEEDS; do
    name="$exp-$PRESET-seed$seed"
    if [ "$MODE" = train ]; then
      if [ -f "results/paper/$name.json" ]; then echo "$name: finished (results/paper/$name.json)"; continue; fi
      queue+=("$name|$HYPERNAS train --experiment $exp --preset $PRESET --seed $seed --profile paper")
    elif [ "$MODE" = retrain ]; then
      if [ ! -f "results/paper/$name.json" ]; then echo "$name: no results file to retrain from yet"; continue; fi
      for arch in $ARCHS; do
        if [ -f "results/paper/retrain/$name-$arch$SUFFIX.json" ]; then echo "$name-$arch$SUFFIX: retrained already"; continue; fi
        queue+=("$name-$arch$SUFFIX-retrain|$HYPERNAS retrain results/paper/$name.json --arch $arch --profile $RETRAIN_PROFILE --device ${RETRAIN_DEVICE:-cpu}")
      done
      for m in ${MEMBERS:-}; do
        if [ -f "results/paper/retrain/$name-m$m$SUFFIX.json" ]; then echo "$name-m$m$SUFFIX: retrained already"; continue; fi
        queue+=("$name-m$m$SUFFIX-retrain|$HYPERNAS retrain results/paper/$name-family.json --member $m --profile $RETRAIN_PROFILE --device ${RETRAIN_DEVICE:-cpu}")
      done
    else
      echo "MODE must be train or retrain, not $MODE" >&2; exit 2
    fi
  done
done

if [ "${DRY_RUN:-0}" = 1 ]; then
  for job in ${queue[@]+"${queue[@]}"}; do echo "would run: ${job#*|}  >> logs/${job%%|*}.out"; done
  exit 0
fi
[ ${#queue[@]} -eq 0 ] && exit 0
mkdir -p logs
run_queue() {
  for job in "$@"; do
    while [ "$(jobs -rp | wc -l)" -ge "$JOBS" ]; do wait -n || true; done
    echo "$(date -u '+%F %T') start ${job%%|*}: ${job#*|}"
    OMP_NUM_THREADS=1 ${job#*|} >> "logs/${job%%|*}.out" 2>&1 &   # >>: a resumed run keeps the earlier lines
  done
  wait
  echo "$(date -u '+%F %T') queue done"
}
export -f run_queue
export JOBS
nohup bash -c 'run_queue "$@"' run_queue "${queue[@]}" >> logs/paper_runs.out 2>&1 &
echo "${#queue[@]} run(s) queued in the background (pid $!, $JOBS at a time); log logs/paper_runs.out"
