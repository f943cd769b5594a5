"""The families of the committed paper runs (#15): ``results/paper/<run>-family.json``.

    python scripts/family_runs.py evaluate [RUN ...]   # accuracies, weights, FLOPs (2 workers)
    python scripts/family_runs.py finish TABLE [RUN ...]  # latencies (idle machine), predictions, fronts
    python scripts/family_runs.py devices [RUN ...]        # each device table's s and architecture

The first phase is the long one (every distinct genotype of the grid and as many random
ones, each BatchNorm-recalibrated and tested on the whole test set) and writes
``build/family/<run>.json``; the second measures every member's latency at batch 1 on
one thread -- run it with nothing else on the machine -- adds the latency table's
predictions and the fronts, and writes ``results/paper/<run>-family.json`` atomically.
"""
import json
import sys
import time
from pathlib import Path

from hypernas.files import write_json

ROOT = Path(__file__).resolve().parent.parent
RUNS = ["exp3-authors_code-seed0", "exp1-authors_code-seed0", "exp1-thesis_text-seed0",
        "exp2-authors_code-seed0"]
PARTIAL = ROOT / "build" / "family"
#: one line per evaluated member as it finishes (committed while a run is under way, so a
#: stopped evaluation resumes in the next session: run the same command again)
JOURNAL = ROOT / "results" / "paper" / "family-journal"


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
        JOURNAL.mkdir(parents=True, exist_ok=True)
        res = evaluate_family(ROOT / "results" / "paper" / run / "model.pt", _cfg(run), workers=2,
                              journal=JOURNAL / f"{run}.jsonl",
                              progress=lambda i, n: print(f"{run}: {i}/{n} {time.time() - t0:.0f} s",
                                                          flush=True) if i % 10 == 0 or i == n else None)
        write_json(res, PARTIAL / f"{run}.json")


def finish(table_path, runs):
    from hypernas.family import finish as finish_family
    from hypernas.latency import load_table
    table = load_table(table_path)
    for run in runs:
        if not (PARTIAL / f"{run}.json").exists():
            print(f"{run}: not evaluated yet (python scripts/family_runs.py evaluate {run}); skipped")
            continue
        res = json.loads((PARTIAL / f"{run}.json").read_text())
        finish_family(res, ROOT / "results" / "paper" / run / "model.pt", table)
        out = write_json(res, ROOT / "results" / "paper" / f"{run}-family.json")
        print(f"{run}: {len(res['members'])} members -> {out}")


def devices(runs):
    """For every device table in results/devices/ and every run: the device's complexity
    vector, its architecture, that architecture measured on the device (batch 1) and
    predicted by the table, and its accuracy (from the run's family file, where the
    architecture is a member; else evaluated here).  -> results/paper/devices.json"""
    import torch

    from hypernas.data import DATASETS, load
    from hypernas.derived import derive_network
    from hypernas.family import evaluate_genotype
    from hypernas.latency import load_table, measure_network_ms, predicted_latency_ms, table_complexity
    from hypernas.provenance import git_commit
    from hypernas.train import load_model
    tables = [load_table(p) for p in sorted((ROOT / "results" / "devices").glob("*.json"))]
    rows, t0 = [], time.time()
    for run in runs:
        cfg = _cfg(run)
        model = load_model(ROOT / "results" / "paper" / run / "model.pt")
        fam_path = ROOT / "results" / "paper" / f"{run}-family.json"
        members = json.loads(fam_path.read_text())["members"] if fam_path.exists() else []
        d = DATASETS[cfg["dataset"]]
        shape = (d["channels"], d["size"], d["size"])
        splits = None
        for table in tables:
            s = table_complexity(table, model.ops, cfg)
            g = model.genotype(torch.tensor(s))
            key = {"normal": list(g.normal), "reduce": list(g.reduce)}
            member = next((m for m in members if m["genotype"] == key), None)
            if member is None:
                splits = splits or load(cfg["dataset"])
                member = evaluate_genotype(model, splits, g, s, cfg)
            net = derive_network(model, torch.tensor(s)).folded()
            measured = measure_network_ms(net, shape, 1, runtime=table["runtime"], threads=table["threads"])
            rows.append(dict(run=run, device=table["device"], runtime=table["runtime"], threads=table["threads"],
                             s=[round(v, 4) for v in s], genotype=key, op_counts=member["op_counts"],
                             weights=member["weights"], test_acc=member["test_acc"], val_acc=member["val_acc"],
                             accuracy_from="family member" if member in members else "evaluated here",
                             measured_ms=measured["median_ms"], measured_p10_ms=measured["p10_ms"],
                             measured_p90_ms=measured["p90_ms"],
                             predicted_ms=predicted_latency_ms(table, g, cfg)))
            print(f"{run} on {table['device']}: s = {rows[-1]['s']}, {rows[-1]['measured_ms']:.2f} ms", flush=True)
    write_json(dict(rows=rows, provenance=dict(
        commit=git_commit(), date=time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        wall_s=round(time.time() - t0, 1), tables=[t["device"] for t in tables],
        protocol="measured: hypernas.latency.measure_network_ms at batch 1 on the table's runtime and "
                 "threads, median of its repeats; accuracy: the family's protocol")),
               ROOT / "results" / "paper" / "devices.json")


if __name__ == "__main__":
    from hypernas.fast.process import retain_freed_memory
    retain_freed_memory()     # what the CLI does: importing hypernas changes nothing
    if len(sys.argv) < 2 or sys.argv[1] not in ("evaluate", "finish", "devices"):
        sys.exit(__doc__)
    if sys.argv[1] == "evaluate":
        evaluate(sys.argv[2:] or RUNS)
    elif sys.argv[1] == "finish":
        finish(sys.argv[2], sys.argv[3:] or RUNS)
    else:
        devices(sys.argv[2:] or RUNS)
