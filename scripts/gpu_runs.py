"""Paper-profile runs and the GPU benchmark on a lent GPU, in one call, inside a time limit.

    python3 scripts/gpu_runs.py OUT DATA_DIR [--budget 550] [--runs exp2:authors_code ...]
                                [--resume-from results/h200]

1. a check (seconds): whole training steps eager vs replayed from a CUDA graph for
   each experiment's configuration, from identical states and inputs (img/s of each,
   largest parameter difference); the runs use graphs only if the difference is at
   rounding level.  Then a smoke-profile run end to end on the GPU (train, derive,
   evaluate).
2. the paper-profile runs, each in its own process, all at once; a run still going
   when the time is nearly up is stopped (its last checkpoint, every 100 steps, stays).
3. ``hypernas bench --device cuda`` if time is left.
4. OUT gets one ``<run>.tar.gz`` per run (results file, log, model.pt, checkpoint.pt,
   the run's output), ``check.json``, ``bench-gpu.json`` and ``logs.tar.gz`` (at most
   8 files: what the device tool brings back).

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
    p.add_argument("--runs", nargs="+", default=["exp2:authors_code", "exp1:authors_code", "exp1:thesis_text"])
    p.add_argument("--work", default="/tmp/hypernas-gpu")
    p.add_argument("--device", default="cuda", help="cpu: a dry run of this script (with --profile smoke)")
    p.add_argument("--profile", default="paper")
    p.add_argument("--check-steps", type=int, default=10)
    p.add_argument("--no-bench", action="store_true")
    p.add_argument("--resume-from", default=None,
                   help="a results root (e.g. results/h200) whose unfinished runs' checkpoints to resume")
    a = p.parse_args()
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
    if a.resume_from:
        import shutil
        for spec in a.runs:
            exp, preset = spec.split(":")
            src = Path(a.resume_from) / a.profile / f"{exp}-{preset}-seed0"
            if (src / "checkpoint.pt").is_file():
                shutil.copytree(src, work / "results" / a.profile / src.name, dirs_exist_ok=True)
                print(f"resuming {src.name} from {src}", flush=True)
    for spec in a.runs:
        exp, preset = spec.split(":")
        name = f"{exp}-{preset}-seed0"
        code = ("from hypernas.experiments import run; from hypernas.presets import config; "
                f"run(config({exp!r}, {preset!r}, {a.profile!r}, device={a.device!r}, cuda_graphs={graphs}), "
                f"results_root={str(work / 'results')!r})")
        log = open(work / "logs" / f"{name}.out", "w")
        procs[name] = (subprocess.Popen([sys.executable, "-c", code], env=env, stdout=log, stderr=subprocess.STDOUT,
                                        cwd=REPO), time.time())
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
    for name in procs:
        with tarfile.open(out / f"{name}.tar.gz", "w:gz") as tar:
            for path in (work / "results" / a.profile / f"{name}.json", work / "results" / a.profile / name,
                         work / "logs" / f"{name}.out"):
                if path.exists():
                    tar.add(path, arcname=path.name)
    with tarfile.open(out / "logs.tar.gz", "w:gz") as tar:
        tar.add(work / "logs", arcname="logs")
    print(f"done in {time.time() - t_start:.0f} s; OUT: {sorted(p.name for p in out.iterdir())}", flush=True)


if __name__ == "__main__":
    main()
