"""Paper-profile runs and the GPU benchmark on a lent GPU, in one call, inside a time limit.

    python3 scripts/gpu_runs.py OUT DATA_DIR [--budget 550] [--runs exp2:authors_code[:SEED] ...]
                                [--retrain exp1-authors_code-seed0:A ...] [--resume-from results/h200]

1. a check (seconds): whole training steps eager vs replayed from a CUDA graph for
   each experiment's configuration, from identical states and inputs (img/s of each,
   largest parameter difference); the runs use graphs only if the difference is at
   rounding level.  Then a smoke-profile run end to end on the GPU (train, derive,
   evaluate).
2. the paper-profile runs (``exp:preset`` is seed 0, ``exp:preset:seed`` another seed)
   and the retrainings (``hypernas retrain`` of architecture A-D of a committed results
   file ``results/paper/<run>.json``, the authors' protocol: :mod:`hypernas.retrain`),
   each in its own process, all at once; one still going when the time is nearly up is
   stopped (its last checkpoint -- every 100 steps of a run, every epoch of a
   retraining -- stays, and ``--resume-from`` continues from it on the next GPU, or the
   CPU continues it: copy the checkpoint to ``results/paper/retrain/``).
3. ``hypernas bench --device cuda`` if time is left.
4. OUT gets one ``<run>.tar.gz`` per run (results file, log, model.pt, checkpoint.pt,
   the run's output), ``retrain.tar.gz`` (the retrainings' files and checkpoints),
   ``check.json``, ``bench-gpu.json`` and ``logs.tar.gz`` (at most 8 files: what the
   device tool brings back; so at most five runs).

Everything happens under a scratch folder; nothing in the repository is written.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tarfile
import time
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("out")
    p.add_argument("data_dir")
    p.add_argument("--budget", type=float, default=550, help="seconds for everything")
    p.add_argument("--runs", nargs="*", default=["exp2:authors_code", "exp1:authors_code", "exp1:thesis_text"],
                   help="exp:preset[:seed] (seed 0 when left out); at most five")
    p.add_argument("--retrain", nargs="*", default=[],
                   help="run:arch, e.g. exp1-authors_code-seed0:A (its results file must be in results/paper/)")
    p.add_argument("--work", default="/tmp/hypernas-gpu")
    p.add_argument("--device", default="cuda", help="cpu: a dry run of this script (with --profile smoke)")
    p.add_argument("--profile", default="paper")
    p.add_argument("--check-steps", type=int, default=10)
    p.add_argument("--no-bench", action="store_true")
    p.add_argument("--resume-from", default=None,
                   help="a results root (e.g. results/h200) whose unfinished runs' checkpoints to resume")
    a = p.parse_args()
    runs = [_run_spec(spec) for spec in a.runs]
    if len(runs) > 5:
        p.error("at most five --runs: OUT may bring back 8 files")
    for spec in a.retrain:
        run, _, arch = spec.partition(":")
        if arch not in ("A", "B", "C", "D") or not (REPO / "results" / "paper" / f"{run}.json").is_file():
            p.error(f"--retrain {spec}: give run:arch with arch A-D and results/paper/<run>.json present")
    t_start = time.time()
    left = lambda: a.budget - (time.time() - t_start)  # noqa: E731
    out, work = Path(a.out), Path(a.work)
    out.mkdir(parents=True, exist_ok=True)
    (work / "logs").mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "4",
           "HYPERNAS_DATA": str(Path(a.data_dir).resolve())}

    import torch
    from hypernas.bench import cuda_graph_effect
    from hypernas.train import pick_device
    from hypernas.experiments import device_name, git_commit
    dev = pick_device(a.device)
    print(f"torch {torch.__version__}, {device_name(dev)}, python {sys.version.split()[0]}, "
          f"commit {git_commit()}", flush=True)

    # 1. an end-to-end smoke run (eager), then the graph check (a failed capture leaves
    #    this process's CUDA random state unusable; the runs are separate processes)
    check = dict(graphs=[], graphs_ok=False, smoke=None)
    try:
        from hypernas.experiments import run
        from hypernas.presets import config
        t0 = time.time()
        r = run(config("exp1", "authors_code", "smoke", device=a.device, progress=False,
                       data_dir=env["HYPERNAS_DATA"]), results_root=work / "smoke")
        check["smoke"] = dict(seconds=time.time() - t0, test_acc={k: v["test_acc"] for k, v in r["architectures"].items()})
        print(f"smoke run on the GPU: {check['smoke']}", flush=True)
    except Exception:
        check["smoke_error"] = traceback.format_exc()
        print(check["smoke_error"], flush=True)
    try:
        for e in ("exp1", "exp2", "exp3"):
            g = cuda_graph_effect(e, dev, steps=a.check_steps)
            check["graphs"].append(g)
            print(f"{e}: eager {g['eager_img_s']:.0f} img/s, graph {g['graph_img_s']:.0f} img/s "
                  f"({g['speedup']:.2f}x), max |param diff| {g['max_abs_param_diff']:.1e}", flush=True)
        check["graphs_ok"] = all(g["max_abs_param_diff"] < 1e-4 for g in check["graphs"])
    except Exception:
        check["graphs_error"] = traceback.format_exc()
        print(check["graphs_error"], flush=True)
    graphs = check["graphs_ok"]
    print(f"runs use CUDA graphs: {graphs}", flush=True)
    (out / "check.json").write_text(json.dumps(check, indent=1))

    # 2. the paper runs, concurrently (resumed where --resume-from holds a checkpoint)
    procs = {}
    retrain_profile = "paper" if a.profile == "paper" else "smoke"
    retrain_dir = work / "results" / retrain_profile / "retrain"
    if a.resume_from:
        import shutil
        for exp, preset, seed in runs:
            src = Path(a.resume_from) / a.profile / f"{exp}-{preset}-seed{seed}"
            if (src / "checkpoint.pt").is_file():
                shutil.copytree(src, work / "results" / a.profile / src.name, dirs_exist_ok=True)
                print(f"resuming {src.name} from {src}", flush=True)
        from hypernas import retrain as rt
        for spec in a.retrain:
            run, _, arch = spec.partition(":")
            src = rt.resolve_source(REPO / "results" / "paper" / f"{run}.json", arch=arch)
            ck = rt.out_path(src, retrain_profile, root=a.resume_from).with_suffix(".checkpoint.pt")
            if ck.is_file():
                retrain_dir.mkdir(parents=True, exist_ok=True)
                shutil.copy2(ck, retrain_dir / ck.name)
                print(f"resuming the retraining {spec} from {ck}", flush=True)
    for exp, preset, seed in runs:
        name = f"{exp}-{preset}-seed{seed}"
        code = ("from hypernas.experiments import run; from hypernas.presets import config; "
                f"run(config({exp!r}, {preset!r}, {a.profile!r}, seed={seed}, device={a.device!r}, "
                f"cuda_graphs={graphs}), results_root={str(work / 'results')!r})")
        log = open(work / "logs" / f"{name}.out", "w")
        procs[name] = (subprocess.Popen([sys.executable, "-c", code], env=env, stdout=log, stderr=subprocess.STDOUT,
                                        cwd=REPO), time.time())
        print(f"started {name}", flush=True)
    retrains = []
    for spec in a.retrain:
        run, _, arch = spec.partition(":")
        name = f"{run}-{arch}-retrain"
        cmd = [sys.executable, "-m", "hypernas.cli", "retrain", str(REPO / "results" / "paper" / f"{run}.json"),
               "--arch", arch, "--profile", retrain_profile, "--device", a.device,
               "--results-root", str(work / "results")]
        log = open(work / "logs" / f"{name}.out", "w")
        procs[name] = (subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=REPO), time.time())
        retrains.append(name)
        print(f"started {name}", flush=True)
    reserve = 45  # packing, and the bench if it fits
    while any(pr.poll() is None for pr, _ in procs.values()) and left() > reserve:
        time.sleep(5)
    for name, (pr, t0) in procs.items():
        if pr.poll() is None:
            pr.terminate()
            pr.wait(timeout=30)
            print(f"{name}: stopped at the time limit after {time.time() - t0:.0f} s", flush=True)
        else:
            print(f"{name}: exit {pr.returncode} after {time.time() - t0:.0f} s wall "
                  f"(finished at {time.time() - t_start:.0f} s)", flush=True)

    # 3. the benchmark, if there is time
    if not a.no_bench and left() > 150:
        cmd = [sys.executable, "-m", "hypernas.cli", "bench", "--device", a.device, "--windows", "3", "--steps", "3",
               "--no-memory", "--output", str(out / "bench-gpu.json"),
               "--note", "run on a lent H200 right after the paper runs"]
        try:
            subprocess.run(cmd, env=env, cwd=REPO, timeout=left() - 25, stdout=open(work / "logs" / "bench.out", "w"),
                           stderr=subprocess.STDOUT)
        except subprocess.TimeoutExpired:
            print("bench: stopped at the time limit", flush=True)
        print((work / "logs" / "bench.out").read_text()[-3000:], flush=True)

    # 4. pack
    if retrains:
        with tarfile.open(out / "retrain.tar.gz", "w:gz") as tar:
            if retrain_dir.exists():
                tar.add(retrain_dir, arcname="retrain")
    for name in procs:
        if name in retrains:
            continue
        with tarfile.open(out / f"{name}.tar.gz", "w:gz") as tar:
            for path in (work / "results" / a.profile / f"{name}.json", work / "results" / a.profile / name,
                         work / "logs" / f"{name}.out"):
                if path.exists():
                    tar.add(path, arcname=path.name)
    with tarfile.open(out / "logs.tar.gz", "w:gz") as tar:
        tar.add(work / "logs", arcname="logs")
    print(f"done in {time.time() - t_start:.0f} s; OUT: {sorted(p.name for p in out.iterdir())}", flush=True)


def _run_spec(spec):
    """``exp:preset`` or ``exp:preset:seed`` -> ``(exp, preset, seed)``."""
    parts = spec.split(":")
    if len(parts) not in (2, 3) or (len(parts) == 3 and not parts[2].isdigit()):
        raise SystemExit(f"gpu_runs.py: --runs {spec}: give exp:preset or exp:preset:seed, e.g. exp2:authors_code:1")
    return parts[0], parts[1], int(parts[2]) if len(parts) == 3 else 0


if __name__ == "__main__":
    main()
