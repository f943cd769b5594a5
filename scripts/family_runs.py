"""The families of the committed paper runs (#15): ``results/paper/<run>-family.json``.

    python scripts/family_runs.py evaluate [RUN ...]   # accuracies, weights, FLOPs (2 workers)
    python scripts/family_runs.py finish TABLE [RUN ...]  # latencies (idle machine), predictions, fronts

The first phase is the long one (every distinct genotype of the grid and as many random
ones, each BatchNorm-recalibrated and tested on the whole test set) and writes
``build/family/<run>.json``; the second measures every member's latency at batch 1 on
one thread -- run it with nothing else on the machine -- adds the latency table's
predictions and the fronts, and writes ``results/paper/<run>-family.json`` atomically.
"""
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RUNS = ["exp3-authors_code-seed0", "exp1-authors_code-seed0", "exp1-thesis_text-seed0",
        "exp2-authors_code-seed0"]
PARTIAL = ROOT / "build" / "family"


def _cfg(run):
    from hypernas.presets import upgrade
    cfg = upgrade(json.loads((ROOT / "results" / "paper" / f"{run}.json").read_text())["config"])
    cfg["data_dir"] = None          # found as documented (HYPERNAS_DATA, Debian's copy, ...)
    return cfg


def evaluate(runs):
    from hypernas.family import evaluate_family
    PARTIAL.mkdir(parents=True, exist_ok=True)
    for run in runs:
        t0 = time.time()
        res = evaluate_family(ROOT / "results" / "paper" / run / "model.pt", _cfg(run), workers=2,
                              progress=lambda i, n: print(f"{run}: {i}/{n} {time.time() - t0:.0f} s",
                                                          flush=True) if i % 10 == 0 or i == n else None)
        tmp = PARTIAL / f"{run}.json.tmp"
        tmp.write_text(json.dumps(res, indent=1))
        os.replace(tmp, PARTIAL / f"{run}.json")


def finish(table_path, runs):
    from hypernas.family import finish as finish_family
    from hypernas.latency import load_table
    table = load_table(table_path)
    for run in runs:
        res = json.loads((PARTIAL / f"{run}.json").read_text())
        finish_family(res, ROOT / "results" / "paper" / run / "model.pt", table)
        out = ROOT / "results" / "paper" / f"{run}-family.json"
        tmp = out.with_name(out.name + ".tmp")
        tmp.write_text(json.dumps(res, indent=1))
        os.replace(tmp, out)
        print(f"{run}: {len(res['members'])} members -> {out}")


if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in ("evaluate", "finish"):
        sys.exit(__doc__)
    if sys.argv[1] == "evaluate":
        evaluate(sys.argv[2:] or RUNS)
    else:
        finish(sys.argv[2], sys.argv[3:] or RUNS)
