#!/usr/bin/env bash
# Train (or resume) the paper-profile runs that are not finished, one process per
# experiment, each on one torch thread (two threads per process on a shared 2-core machine
# are many times slower), in the background; logs in logs/<run>.out.
#   bash scripts/paper_runs.sh exp2 exp3            # authors_code preset
#   PRESET=thesis_text bash scripts/paper_runs.sh exp1
# Before a time-boxed session ends, commit each run's checkpoint.pt and log.jsonl
# (results/paper/<run>/); rerunning this script resumes from them exactly.
set -euo pipefail
cd "$(dirname "$0")/.."
PRESET=${PRESET:-authors_code}
SHARED_DATA="$(cd .. && pwd)/shared/data"
if [ -z "${HYPERNAS_DATA:-}" ] && [ -d "$SHARED_DATA" ]; then export HYPERNAS_DATA="$SHARED_DATA"; fi
mkdir -p logs
for exp in "$@"; do
  name="$exp-$PRESET-seed0"
  if [ -f "results/paper/$name.json" ]; then echo "$name: finished (results/paper/$name.json)"; continue; fi
  OMP_NUM_THREADS=1 nohup .venv/bin/hypernas train --experiment "$exp" --preset "$PRESET" \
    --profile paper > "logs/$name.out" 2>&1 &
  echo "$name: training in the background (pid $!), log logs/$name.out"
done
