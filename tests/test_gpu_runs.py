"""scripts/gpu_runs.py, dry-run on the CPU (smoke profile): what a lent GPU call would
bring back, and resuming a run from a results root's checkpoint."""
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from hypernas import experiments
from hypernas.data import DEBIAN_FMNIST
from hypernas.presets import config

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_gpu_runs_dry_run_resumes_and_packs(tmp_path):
    # a run stopped after 2 of its 4 steps, as a GPU call's time limit leaves it
    prior = tmp_path / "prior"
    cfg = config("exp1", "authors_code", "smoke", progress=False, device="cpu")
    assert experiments.run(cfg, results_root=prior, stop_after_steps=2) is None
    out = tmp_path / "out"
    env = {**os.environ, "HYPERNAS_COMMIT": "abc1234", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gpu_runs.py"), str(out), str(DEBIAN_FMNIST),
         "--device", "cpu", "--profile", "smoke", "--runs", "exp1:authors_code", "--check-steps", "1",
         "--no-bench", "--budget", "600", "--work", str(tmp_path / "work"), "--resume-from", str(prior)],
        env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "resuming exp1-authors_code-seed0" in proc.stdout
    assert sorted(p.name for p in out.iterdir()) == ["check.json", "exp1-authors_code-seed0.tar.gz", "logs.tar.gz"]
    check = json.loads((out / "check.json").read_text())
    assert check["smoke"] is not None and len(check["graphs"]) == 3
    assert all(g["max_abs_param_diff"] == 0.0 for g in check["graphs"])   # no graphs on a CPU: same steps
    with tarfile.open(out / "exp1-authors_code-seed0.tar.gz") as tar:
        names = tar.getnames()
        assert {"exp1-authors_code-seed0.json", "exp1-authors_code-seed0/model.pt",
                "exp1-authors_code-seed0/log.jsonl"} <= set(names)
        res = json.load(tar.extractfile("exp1-authors_code-seed0.json"))
        log = [json.loads(l) for l in tar.extractfile("exp1-authors_code-seed0/log.jsonl").read().splitlines()]
        console = tar.extractfile("exp1-authors_code-seed0.out").read().decode()
    assert res["provenance"]["commit"] == "abc1234"
    segments = res["provenance"]["training_segments"]      # this process resumed at step 2
    assert [r["from_step"] for r in segments] == [0, 2]
    assert segments[1]["commit"] == "abc1234" and segments[1]["device"].startswith("cpu")
    assert set(res["architectures"]) == {"A", "B", "C", "D"}
    steps = [r["global_step"] for r in log if r["event"] == "step"]
    assert steps == sorted(steps) and steps[-1] == 4
    assert "| 2/4 [" in console and "| 0/4 [" not in console      # resumed at step 2, not restarted
    assert (prior / "smoke" / "exp1-authors_code-seed0" / "checkpoint.pt").exists()  # the source is untouched
