"""Safe and robust for users (#18): model files that cannot run code, one clear error per
bad input (and nothing written), divergence, one process per run, and the export of a
derived network.

The command is called in-process (``hypernas.cli.main``) in an empty working folder with
a results root under ``tmp_path``; each bad-input case asserts the exit status, that
stderr is the one line ``hypernas: error: ...`` naming what is wrong and the fix (no
traceback), that stdout is empty, and that no file or folder was written anywhere under
``tmp_path``.  A few cases run as real processes (``python -m hypernas.cli``).
"""
from __future__ import annotations

import json
import math
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from hypernas import cli, experiments
from hypernas.errors import Diverged, RunLocked, UserError
from hypernas.presets import config
from hypernas.runlock import LOCK_NAME, holder_pid, run_lock
from hypernas.train import Trainer, build_model, load_model, load_state

from conftest import assert_same

ROOT = Path(__file__).resolve().parent.parent
PAPER_MODEL = ROOT / "results" / "paper" / "exp1-authors_code-seed0" / "model.pt"
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}

pytestmark = pytest.mark.usefixtures("one_thread")


# -- helpers ------------------------------------------------------------------------------

def _tree(folder: Path) -> dict:
    """Every file and folder under ``folder``, with file sizes."""
    return {str(p.relative_to(folder)): (p.stat().st_size if p.is_file() else "dir")
            for p in sorted(folder.rglob("*"))}


@pytest.fixture
def place(tmp_path, monkeypatch):
    """An empty working folder, the results root (not yet there), and a snapshot."""
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.delenv("HYPERNAS_DATA", raising=False)
    return tmp_path


def _run_cli(argv, capsys):
    rc = cli.main(argv)
    out, err = capsys.readouterr()
    return rc, out, err


def _assert_one_error(rc, out, err, code, *needles):
    assert rc == code, (rc, err)
    assert out == ""
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("hypernas: error: "), err
    for needle in needles:
        assert needle in lines[0], f"{needle!r} not in: {lines[0]}"


def _tiny_cfg(**kw):
    return config("exp1", "authors_code", "smoke", 0, width=4, **kw)


@pytest.fixture(scope="module")
def tiny_model_file(tmp_path_factory):
    """A model.pt as training writes one (untrained: only its format matters here)."""
    cfg = _tiny_cfg()
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("model") / "model.pt"
    torch.save(dict(format=1, hypernas="0.1.0", cfg=cfg, model=build_model(cfg, 1).state_dict()), path)
    return path


class _RunsCode:
    """Unpickling this runs ``touch MARKER`` (what a crafted model file would do)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


# -- 1. model files that cannot run code -----------------------------------------------------

COMMITTED = sorted(ROOT.glob("results/**/*.pt"))


@pytest.mark.parametrize("path", COMMITTED, ids=lambda p: str(p.relative_to(ROOT)))
def test_committed_files_load_without_unpickling_code(path):
    """Every committed model and checkpoint loads with weights_only=True, to exactly what
    the unrestricted loader gives (configs, optimiser states, RNG states are plain).
    A retraining's checkpoint (results/<profile>/retrain/) is read by hypernas.retrain with
    torch.load(weights_only=True), as here."""
    if path.parent.name == "retrain":
        safe = torch.load(path, map_location="cpu", weights_only=True)
    else:
        safe = load_state(path)
    full = torch.load(path, map_location="cpu", weights_only=False)
    assert_same(safe, full)


def test_written_checkpoint_and_model_load_without_unpickling_code(tmp_path):
    """What training writes today (format, segments, window, perm ...) is plain too."""
    from hypernas.data import load
    cfg = _tiny_cfg(train_images=128, val_images=64, progress=False)
    Trainer(cfg, load("fashion_mnist"), tmp_path, "cpu").fit()
    for name in ("checkpoint.pt", "model.pt"):
        st = load_state(tmp_path / name)
        assert st["format"] == 1 and st["cfg"] == cfg
        assert_same(st, torch.load(tmp_path / name, weights_only=False))
    assert load_model(tmp_path / "model.pt").cfg == cfg


@pytest.mark.parametrize("kind", ["torch-archive", "plain-pickle"])
def test_crafted_model_file_is_refused_and_runs_nothing(tmp_path, kind):
    marker = tmp_path / "code-ran"
    path = tmp_path / "model.pt"
    if kind == "torch-archive":      # a real model file with one object swapped in
        torch.save(dict(cfg=_RunsCode(marker), model={}), path)
    else:
        path.write_bytes(pickle.dumps(_RunsCode(marker)))
    assert pickle.loads(pickle.dumps(_RunsCode(tmp_path / "control"))) == 0   # the payload works
    assert (tmp_path / "control").exists()
    with pytest.raises(UserError) as err:
        load_model(path)
    msg = str(err.value)
    assert str(path) in msg and "\n" not in msg
    if kind == "torch-archive":
        assert "refusing to load" in msg and "could run code" in msg and "posix.system" in msg
    else:
        assert "not a hypernas model file" in msg
    assert not marker.exists()


def test_crafted_model_file_refused_by_the_command(tmp_path):
    """The same through a real process: exit 2, one line, the payload never ran."""
    marker = tmp_path / "code-ran"
    path = tmp_path / "model.pt"
    torch.save(dict(cfg=_RunsCode(marker), model={}), path)
    r = subprocess.run([sys.executable, "-m", "hypernas.cli", "derive", str(path), "--s", "0.2", "0.3", "0.5"],
                       capture_output=True, text=True, env=ENV, cwd=tmp_path, timeout=300)
    _assert_one_error(r.returncode, r.stdout, r.stderr, 2, "refusing to load", "could run code")
    assert not marker.exists()


# -- 2. one clear error per bad input ---------------------------------------------------------

def _bad_files(folder: Path, good: Path) -> dict:
    """name -> (path, needles) of model files a user might pass by mistake."""
    st = torch.load(good, weights_only=True)
    files = {}

    def save(name, obj):
        p = folder / name
        torch.save(obj, p)
        return p

    text = folder / "notes.pt"
    text.write_text("not a model\n")
    empty = folder / "empty.pt"
    empty.write_bytes(b"")
    truncated = folder / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    extra = dict(st, model={**st["model"], "new_layer.weight": torch.zeros(1)})
    missing_key = dict(st, cfg={k: v for k, v in st["cfg"].items() if k != "n_nodes"})
    other_width = dict(st, cfg=dict(st["cfg"], width=8))
    files.update({
        "missing": (folder / "nowhere" / "model.pt", ["does not exist", "pass the model.pt"]),
        "folder": (folder, ["is a folder", "pass the model.pt"]),
        "text": (text, ["not a hypernas model file", "pass the model.pt"]),
        "empty": (empty, ["not a hypernas model file", "pass the model.pt"]),
        "truncated": (truncated, ["truncated or corrupted", "copy the file again"]),
        "tensor": (save("tensor.pt", torch.zeros(3)), ["holds a Tensor", "pass the model.pt"]),
        "dict-without-model": (save("dict.pt", {"a": 1}), ["without cfg and model", "pass the model.pt"]),
        "newer-format": (save("newer.pt", dict(st, format=2, hypernas="9.0")),
                         ["written by hypernas 9.0", "install the newer hypernas"]),
        "other-version-weights": (save("extra.pt", extra),
                                  ["weights do not fit", "new_layer.weight", "load it with the version"]),
        "other-version-config": (save("nokey.pt", missing_key),
                                 ["cannot build a model", "n_nodes", "load it with the version"]),
        "other-config": (save("width.pt", other_width), ["weights do not fit", "size mismatch"]),
    })
    return files


BAD_FILES = ["missing", "folder", "text", "empty", "truncated", "tensor", "dict-without-model",
             "newer-format", "other-version-weights", "other-version-config", "other-config"]


@pytest.mark.parametrize("case", BAD_FILES)
def test_bad_model_file(case, place, tiny_model_file, capsys):
    files = place / "files"
    files.mkdir()
    path, needles = _bad_files(files, tiny_model_file)[case]
    before = _tree(place)
    rc, out, err = _run_cli(["derive", str(path), "--s", "0.2", "0.3", "0.5"], capsys)
    _assert_one_error(rc, out, err, 2, *needles)
    assert _tree(place) == before


S_CASES = {
    "wrong-length": (["0.5", "0.5"], ["length k=3", "got 2 values", "sep_conv_3x3"]),
    "negative": (["-0.2", "0.6", "0.6"], ["negative values [-0.2, 0.6, 0.6]", "non-negative"]),
    "nan": (["nan", "0.5", "0.5"], ["non-finite values", "finite"]),
    "inf": (["inf", "0", "0"], ["non-finite values", "finite"]),
    "sum": (["0.5", "0.3", "0.3"], ["sum(s) = 1.1", "summing to 1"]),
    "not-a-number": (["0.5", "x", "0.5"], ["invalid float value: 'x'", "--help"]),
}


@pytest.mark.parametrize("case", sorted(S_CASES))
def test_bad_complexity_vector(case, place, tiny_model_file, capsys):
    values, needles = S_CASES[case]
    before = _tree(place)
    rc, out, err = _run_cli(["derive", str(tiny_model_file), "--s", *values], capsys)
    _assert_one_error(rc, out, err, 2, *needles)
    assert _tree(place) == before


def _train(place, *args):
    return ["train", "--profile", "smoke", "--device", "cpu", "--results-root", str(place / "res"), *args]


TRAIN_CASES = {
    "kappa-nan": (["--kappa", "nan"], ["kappa (--kappa) must be a finite number of at least 0; got nan"]),
    "kappa-inf": (["--kappa", "inf"], ["kappa (--kappa) must be a finite number", "got inf"]),
    "kappa-negative": (["--kappa", "-1"], ["kappa (--kappa) must be a finite number of at least 0; got -1.0"]),
    "epochs-zero": (["--epochs", "0"], ["epochs (--epochs) must be a whole number of at least 1; got 0"]),
    "epochs-negative": (["--epochs", "-1"], ["epochs (--epochs) must be a whole number of at least 1; got -1"]),
    "width-zero": (["--width", "0"], ["width (--width) must be a whole number of at least 1; got 0"]),
    "epochs-not-int": (["--epochs", "2.5"], ["invalid int value: '2.5'", "--help"]),
    "profile": (["--profile", "huge"], ["invalid choice: 'huge'", "smoke", "--help"]),
    "preset": (["--preset", "mine"], ["invalid choice: 'mine'", "authors_code", "--help"]),
    "experiment": (["--experiment", "exp9"], ["invalid choice: 'exp9'", "exp1", "--help"]),
    "unknown-option": (["--lr", "1"], ["unrecognized arguments: --lr 1", "--help"]),
    "device": (["--device", "gpu"], ["unknown device 'gpu'", "use auto, cpu"]),
    "stop-after-negative": (["--stop-after-steps", "-1"], ["--stop-after-steps must be at least 0"]),
}


@pytest.mark.parametrize("case", sorted(TRAIN_CASES))
def test_bad_training_option(case, place, capsys):
    args, needles = TRAIN_CASES[case]
    before = _tree(place)
    rc, out, err = _run_cli(_train(place, *args), capsys)
    _assert_one_error(rc, out, err, 2, *needles)
    assert _tree(place) == before


@pytest.mark.parametrize("field", ["epochs", "width", "n_cells", "n_nodes", "batch_size"])
@pytest.mark.parametrize("value", [0, -3, 2.5])
def test_config_rejects_counts_that_are_not_positive_integers(field, value):
    """The library's API is covered too: config() itself refuses."""
    with pytest.raises(UserError, match=f"^{field}.* must be a whole number of at least 1; got {value}$"):
        config("exp1", **{field: value})


@pytest.mark.parametrize("field", ["kappa", "w_lr", "h_lr"])
@pytest.mark.parametrize("value", [float("nan"), float("inf"), -0.5])
def test_config_rejects_rates_that_are_not_finite_and_non_negative(field, value):
    with pytest.raises(UserError, match="must be a finite number of at least 0"):
        config("exp1", **{field: value})


def test_config_rejects_unknown_names():
    for kw, needle in ((dict(experiment="exp9"), "unknown experiment 'exp9'; choose one of exp1, exp2, exp3"),
                       (dict(preset="mine"), "unknown preset 'mine'"),
                       (dict(profile="huge"), "unknown profile 'huge'"),
                       (dict(classifier="deep"), "classifier (--classifier) must be one of 'linear'"),
                       (dict(complexities={"A": [0.5, 0.5]}), "complexities['A']: a complexity vector")):
        with pytest.raises(UserError, match=None) as err:
            config(**kw)
        assert needle in str(err.value)


def test_data_dir_that_does_not_exist(place, capsys):
    before = _tree(place)
    rc, out, err = _run_cli(_train(place, "--data-dir", str(place / "data")), capsys)
    _assert_one_error(rc, out, err, 2, f"the data directory {place / 'data'} (data_dir / --data-dir) "
                      "does not exist", "give the folder that holds the data set")
    assert _tree(place) == before


def test_data_dir_that_is_a_file(place, capsys):
    (place / "data").write_text("x")
    before = _tree(place)
    rc, out, err = _run_cli(_train(place, "--data-dir", str(place / "data")), capsys)
    _assert_one_error(rc, out, err, 2, "is not a folder", "give the folder")
    assert _tree(place) == before


def test_data_dir_without_the_data_is_not_replaced_by_another_copy(place, capsys, monkeypatch):
    """Debian's Fashion-MNIST is on this machine; an explicit folder without the data set
    still fails (here offline: the download into it fails), and leaves the folder empty."""
    from hypernas import data
    assert data._load_idx_folder(data.DEBIAN_FMNIST) is not None   # the other copy exists
    monkeypatch.setattr(data, "_download", lambda name, root: None)  # no internet
    (place / "data").mkdir()
    before = _tree(place)
    rc, out, err = _run_cli(_train(place, "--data-dir", str(place / "data")), capsys)
    assert rc == 2 and out == "" and "Traceback" not in err
    first = err.splitlines()[0]
    assert first.startswith(f"hypernas: error: fashion_mnist was not found in {place / 'data'} "
                            "(the data directory given; no other copy is used in its place)")
    assert "Provide it one of these ways" in first      # the ways follow, one per line
    assert _tree(place) == before
    with pytest.raises(data.DataNotFound):               # the library's API the same
        data.load("fashion_mnist", place / "data", download=False)


def test_hypernas_data_naming_no_folder(place, capsys, monkeypatch):
    monkeypatch.setenv("HYPERNAS_DATA", str(place / "gone"))
    before = _tree(place)
    rc, out, err = _run_cli(_train(place), capsys)
    _assert_one_error(rc, out, err, 2, f"$HYPERNAS_DATA={place / 'gone'} does not exist",
                      "point $HYPERNAS_DATA at the folder")
    assert _tree(place) == before


def test_results_root_that_cannot_be_written(place, capsys):
    (place / "res").write_text("a file where the results folder should be")
    before = _tree(place)
    rc, out, err = _run_cli(_train(place), capsys)
    _assert_one_error(rc, out, err, 2, "cannot write the results folder (--results-root)",
                      "is a file, not a folder; choose another folder")
    assert _tree(place) == before


REPRODUCE_CASES = {
    "output-is-a-file": (["--output", "{place}/out"], ["cannot write the notebook folder (--output)",
                                                       "choose another folder"]),
    "jobs-zero": (["--jobs", "0"], ["--jobs must be at least 1; got 0"]),
    "kappa-nan": (["--kappa", "nan"], ["kappa (--kappa) must be a finite number"]),
    "data-dir": (["--data-dir", "{place}/data"], ["does not exist", "give the folder"]),
    "experiment": (["--experiments", "exp1", "exp7"], ["invalid choice: 'exp7'"]),
    "classifier": (["--classifier", "own"], ["reproduce does not take --classifier",
                                             "hypernas train --classifier"]),
}


@pytest.mark.parametrize("case", sorted(REPRODUCE_CASES))
def test_bad_reproduce_option(case, place, capsys):
    """Checked before any notebook starts."""
    (place / "out").write_text("x")
    args, needles = REPRODUCE_CASES[case]
    args = [a.format(place=place) for a in args]
    before = _tree(place)
    rc, out, err = _run_cli(["reproduce", "--profile", "smoke", "--experiments", "exp1", *args], capsys)
    _assert_one_error(rc, out, err, 2, *needles)
    assert _tree(place) == before


def test_export_into_a_file(place, tiny_model_file, capsys):
    (place / "out").write_text("x")
    before = _tree(place)
    rc, out, err = _run_cli(["derive", str(tiny_model_file), "--s", "0.2", "0.3", "0.5",
                             "--export", str(place / "out" / "net")], capsys)
    _assert_one_error(rc, out, err, 2, "cannot write the export folder (--export)", "choose another folder")
    assert _tree(place) == before


def test_failed_notebook_is_one_error(place, capsys, monkeypatch):
    """An error inside an experiment notebook (here: training diverged) ends `reproduce`
    with exit 1 and one line naming the experiment, the error and the notebook's output."""
    from papermill.exceptions import PapermillExecutionError

    def fails(parameters, output, copies=()):
        raise PapermillExecutionError(3, 3, "res = experiments.run(cfg)", "Diverged",
                                      "training diverged: the loss became non-finite", ["..."])

    monkeypatch.setattr(cli, "execute_notebook", fails)
    rc, out, err = _run_cli(["reproduce", "--profile", "smoke", "--experiments", "exp1", "--output",
                             str(place / "nb"), "--results-root", str(place / "res")], capsys)
    assert out.startswith("[hypernas] exp1")
    _assert_one_error(rc, "", err, 1, "exp1: Diverged: training diverged: the loss became non-finite",
                      f"(the notebook's output is in {place / 'nb' / 'exp1.failed.ipynb'})")


def test_debug_shows_the_traceback(place, capsys):
    rc = cli.main(["--debug", *_train(place, "--kappa", "nan")])
    err = capsys.readouterr().err
    assert rc == 2
    assert "Traceback" in err and "UserError" in err
    assert err.strip().splitlines()[-1].startswith("hypernas: error: kappa")


def test_usage_error_in_a_real_process(tmp_path):
    r = subprocess.run([sys.executable, "-m", "hypernas.cli", "train", "--epochs", "-1",
                        "--results-root", str(tmp_path / "res")],
                       capture_output=True, text=True, env=ENV, cwd=tmp_path, timeout=300)
    _assert_one_error(r.returncode, r.stdout, r.stderr, 2, "epochs (--epochs) must be a whole number")
    assert list(tmp_path.iterdir()) == []


# -- 3. divergence ----------------------------------------------------------------------------

def test_diverging_run_writes_nothing(tmp_path):
    """A learning rate of 1e30 turns the loss into NaN within two steps: training stops
    with an error naming the steps, before any checkpoint, log line or results file."""
    cfg = _tiny_cfg(train_images=256, batch_size=32, log_every=2, checkpoint_every=3, w_lr=1e30,
                    val_images=64, progress=False, device="cpu")
    with pytest.raises(Diverged) as err:
        experiments.run(cfg, results_root=tmp_path / "res")
    msg = str(err.value)
    assert "training diverged: the loss became non-finite (NaN or infinite) between steps 1 and 2" in msg
    assert "no checkpoint was written" in msg and "lower the learning rates" in msg
    assert not (tmp_path / "res").exists()          # no folder, no lock file left behind


class _PoisonedLoss(Trainer):
    """From global step 6 on, the network's first weight is NaN (a blown-up update)."""

    def _step(self, x, y, s, t):
        if self.global_step + 1 >= 6:
            with torch.no_grad():
                next(self.model.weights()).fill_(float("nan"))
        return super()._step(x, y, s, t)


def test_divergence_keeps_the_last_good_checkpoint(place, capsys, monkeypatch):
    """Through the command: exit 1, one line naming the steps; the checkpoint on disk is
    the one of step 4 (equal to an uninterrupted run's state there), no model.pt, no
    results file, and every logged loss is finite."""
    monkeypatch.setattr(experiments, "Trainer", _PoisonedLoss)
    rc, out, err = _run_cli(_train(place, "--epochs", "3", "--width", "4"), capsys)
    run_dir = place / "res" / "smoke" / "exp1-authors_code-seed0"
    err = err.rstrip().rpartition("\n")[2]             # after the progress bar: the error
    _assert_one_error(rc, out, err, 1, "training diverged: the loss became non-finite (NaN or infinite) "
                      "between steps 5 and 8 (epoch 1)", f"the checkpoint {run_dir / 'checkpoint.pt'} "
                      "(step 4) is the last good state and was kept", "lower the learning rates")
    assert sorted(p.name for p in run_dir.iterdir()) == ["checkpoint.pt", "log.jsonl"]
    assert not (place / "res" / "smoke" / "exp1-authors_code-seed0.json").exists()
    st = load_state(run_dir / "checkpoint.pt")
    assert st["global_step"] == 4
    log = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    assert [r["global_step"] for r in log] == [4, 4]          # step and epoch record of epoch 0
    assert all(math.isfinite(r.get("loss", 0.0)) for r in log)
    # the kept state is the uninterrupted run's state at step 4, bit for bit
    from hypernas.data import load
    cfg = config("exp1", "authors_code", "smoke", 0, epochs=3, width=4, device="cpu")
    ref = Trainer(cfg, load("fashion_mnist"), place / "ref", "cpu").fit(stop_after_steps=4)
    assert_same(st["model"], ref.model.state_dict(), "model")


class _PoisonedGradient(Trainer):
    """The gradient of global step 6 is NaN; that step's loss is finite."""

    def _step(self, x, y, s, t):
        if self.global_step + 1 != 6:
            return super()._step(x, y, s, t)
        hook = next(self.model.weights()).register_hook(lambda g: torch.full_like(g, float("nan")))
        try:
            return super()._step(x, y, s, t)
        finally:
            hook.remove()


def test_nonfinite_gradient_is_not_checkpointed(tmp_path):
    """A NaN gradient with a finite loss poisons the parameters; the checkpoint due at
    that step finds them and is not written (the one of step 4 stays)."""
    from hypernas.data import load
    cfg = _tiny_cfg(train_images=256, batch_size=64, epochs=2, log_every=2, checkpoint_every=3,
                    val_images=64, progress=False)
    trainer = _PoisonedGradient(cfg, load("fashion_mnist"), tmp_path, "cpu")
    with pytest.raises(Diverged, match="the parameters became non-finite .* between steps 5 and 6 "
                                       r"\(epoch 1\); the checkpoint .* \(step 4\) is the last good"):
        trainer.fit()
    st = load_state(tmp_path / "checkpoint.pt")
    assert st["global_step"] == 4
    assert all(bool(torch.isfinite(v).all()) for v in st["model"].values() if v.is_floating_point())
    assert [r["global_step"] for r in map(json.loads, (tmp_path / "log.jsonl").read_text().splitlines())
            if r["event"] == "step"] == [2, 4, 6]           # step 6's loss was still finite


# -- 4. one run per name ------------------------------------------------------------------------

def test_second_process_is_refused_and_a_killed_run_resumes(tmp_path):
    """Two real processes train the same run: the second exits at once (status 1) naming
    the first's pid, while the first trains on; after `kill -9` of the first its lock
    file is left behind, and the next process resumes the run."""
    cmd = [sys.executable, "-m", "hypernas.cli", "train", "--profile", "smoke", "--device", "cpu",
           "--epochs", "500", "--width", "4", "--results-root", str(tmp_path / "res")]
    run_dir = tmp_path / "res" / "smoke" / "exp1-authors_code-seed0"
    first = subprocess.Popen(cmd, env=ENV, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 240
        while holder_pid(run_dir / LOCK_NAME) != first.pid or not (run_dir / "checkpoint.pt").exists():
            assert first.poll() is None, "the first process ended early"
            assert time.monotonic() < deadline, "the first process never took the lock"
            time.sleep(0.2)
        t0 = time.monotonic()
        second = subprocess.run(cmd, env=ENV, cwd=tmp_path, capture_output=True, text=True, timeout=240)
        waited = time.monotonic() - t0
        assert first.poll() is None          # the second did not wait for the first to finish
        _assert_one_error(second.returncode, second.stdout, second.stderr, 1,
                          f"the run in {run_dir} is being trained by process {first.pid}",
                          f"kill {first.pid}")
        print(f"\nsecond process refused after {waited:.1f} s")
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    assert (run_dir / LOCK_NAME).exists()    # left by kill -9: a file, no longer a lock
    resumed = subprocess.run(cmd + ["--stop-after-steps", "2"], env=ENV, cwd=tmp_path,
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert "stopped early" in resumed.stdout
    assert not (run_dir / LOCK_NAME).exists()
    steps = [(r["event"], r["global_step"]) for r in
             map(json.loads, (run_dir / "log.jsonl").read_text().splitlines())]
    assert len(steps) == len(set(steps)) and steps == sorted(steps, key=lambda r: r[1])


def test_lock_is_reentrant_in_a_process_and_refuses_another(tmp_path):
    d = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from hypernas.runlock import run_lock\n"
                               f"with run_lock({str(d)!r}):\n print('held', flush=True); time.sleep(120)"],
                              env=ENV, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(RunLocked, match=f"being trained by process {holder.pid}"):
            with run_lock(d):
                pass
    finally:
        holder.kill()
        holder.wait()
    with run_lock(d):
        assert holder_pid(d / LOCK_NAME) == os.getpid()
        with run_lock(d):                         # the same process again: fine
            pass
        assert (d / LOCK_NAME).exists()
    assert not (d / LOCK_NAME).exists()


# -- 5. export --------------------------------------------------------------------------------

def test_export_runs_in_onnxruntime(tmp_path, capsys):
    """`derive --export` on the committed paper model writes the genotype, weights that
    load without pickle, and an ONNX file whose outputs in ONNX Runtime match PyTorch's
    to 1e-4 (batch sizes 1 and 50 of real test images)."""
    import onnxruntime
    from hypernas.data import load
    from hypernas.export import load_derived
    out = tmp_path / "net"
    s = ["0.15", "0.15", "0.7"]
    rc = cli.main(["derive", str(PAPER_MODEL), "--s", *s, "--export", str(out)])
    printed = json.loads(capsys.readouterr().out)        # stdout is the JSON alone
    assert rc == 0 and printed["exported"] == str(out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["net"]      # no staging folder left
    assert sorted(p.name for p in out.iterdir()) == ["genotype.json", "model.onnx", "weights.pt"]
    info = json.loads((out / "genotype.json").read_text())
    results = json.loads((PAPER_MODEL.parent.parent / "exp1-authors_code-seed0.json").read_text())
    assert results["architectures"]["B"]["s"] == pytest.approx([0.15, 0.15, 0.7])
    assert info["normal"] == printed["normal"] == results["architectures"]["B"]["genotype"]["normal"]
    assert info["reduce"] == printed["reduce"] == results["architectures"]["B"]["genotype"]["reduce"]
    assert info["weights"] == results["architectures"]["B"]["weights"]
    torch.load(out / "weights.pt", weights_only=True)
    net = load_derived(out)
    splits = load("fashion_mnist")
    session = onnxruntime.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    for n in (1, 50):
        x = splits.normalize(splits.x_test[:n])
        got = session.run(None, {"x": x.numpy()})[0]
        with torch.no_grad():
            want = net(x.contiguous(memory_format=torch.channels_last)).numpy()
        diff = float(abs(got - want).max())
        print(f"\nbatch {n}: max |onnxruntime - torch| = {diff:.2e}")
        assert diff <= 1e-4
    # the exported weights are the network the library evaluates (BatchNorm re-estimated)
    from hypernas.derived import DerivedNetwork
    from hypernas.evaluation import recalibrate_bn
    model = load_model(PAPER_MODEL)
    s_t = torch.tensor([float(v) for v in s])
    ref = recalibrate_bn(DerivedNetwork(model, model.genotype(s_t), s_t), splits, model.cfg["bn_images"])
    assert_same(dict(net.state_dict()), dict(ref.state_dict()), "derived")
