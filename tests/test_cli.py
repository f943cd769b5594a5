"""The command line and the notebook driver: atomic outputs, clear errors."""
import json
import subprocess
import sys

import pytest

from hypernas import cli, experiments
from hypernas.presets import config


def test_failed_notebook_leaves_previous_output_untouched(tmp_path):
    out = tmp_path / "exp1.ipynb"
    out.write_text("previous good notebook")
    copy = tmp_path / "copy.ipynb"
    with pytest.raises(Exception) as err:
        cli.execute_notebook(dict(experiment="exp9", preset="authors_code", profile="smoke", seed=0,
                                  device="cpu", data_dir=None, epochs=None, kappa=None, width=None),
                             out, copies=[copy])
    assert "unknown experiment 'exp9'" in str(err.value)
    assert out.read_text() == "previous good notebook"
    assert not copy.exists()
    assert (tmp_path / "exp1.failed.ipynb").exists()  # the partial run is kept for inspection
    assert not list(tmp_path.glob(".*.running.ipynb"))


def test_train_then_derive_cli(tmp_path):
    cfg = config("exp1", "authors_code", "smoke", 0, train_images=128, test_images=200, bn_images=128,
                 latency_repeats=1, progress=False)
    res = experiments.run(cfg, results_root=tmp_path)
    model_pt = tmp_path / "smoke" / "exp1-authors_code-seed0" / "model.pt"
    assert model_pt.exists()
    r = subprocess.run([sys.executable, "-m", "hypernas.cli", "derive", str(model_pt), "--s", "0.7", "0.15", "0.15"],
                       capture_output=True, text=True, check=True)
    out = json.loads(r.stdout)
    assert sum(out["op_counts"].values()) == 28
    assert out["ops"] == cfg["ops"]
    # the CLI's genotype for C's vector is the one the experiment derived for C
    assert out["normal"] == res["architectures"]["C"]["genotype"]["normal"]
    assert out["reduce"] == res["architectures"]["C"]["genotype"]["reduce"]
    bad = subprocess.run([sys.executable, "-m", "hypernas.cli", "derive", str(model_pt), "--s", "0.5", "0.5"],
                         capture_output=True, text=True)
    assert bad.returncode != 0
    assert "length k=3" in bad.stderr and "skip_connect" in bad.stderr


def test_results_file_is_written_only_on_success(tmp_path):
    cfg = config("exp1", "authors_code", "smoke", 0, train_images=128, progress=False)
    res = experiments.run(cfg, results_root=tmp_path, stop_after_steps=1)
    assert res is None  # stopped early: no results file yet, a checkpoint instead
    path = experiments.results_path(cfg, tmp_path)
    assert not path.exists()
    assert (path.with_suffix("") / "checkpoint.pt").exists()


def test_finished_run_is_not_evaluated_again(tmp_path):
    cfg = config("exp1", "authors_code", "smoke", 0, train_images=128, test_images=200, bn_images=128,
                 latency_repeats=1, progress=False)
    first = experiments.run(cfg, results_root=tmp_path)
    path = experiments.results_path(cfg, tmp_path)
    stamp = path.stat().st_mtime_ns
    again = experiments.run(dict(cfg), results_root=tmp_path)
    assert again == first and path.stat().st_mtime_ns == stamp
    other = experiments.run(dict(cfg, test_images=100), results_root=tmp_path)  # evaluation changed
    assert path.stat().st_mtime_ns != stamp
    assert other["config"]["test_images"] == 100


def test_train_cli_writes_under_results_root(tmp_path):
    """`--results-root` keeps a run (a timing run, say) apart from the committed ones."""
    r = subprocess.run([sys.executable, "-m", "hypernas.cli", "train", "--experiment", "exp1", "--profile", "smoke",
                        "--device", "cpu", "--stop-after-steps", "1", "--results-root", str(tmp_path)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "stopped early" in r.stdout
    assert (tmp_path / "smoke" / "exp1-authors_code-seed0" / "checkpoint.pt").exists()
