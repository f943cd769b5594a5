"""Training on real Fashion-MNIST: it learns, the cost steers the hypernetwork, and an
interrupted run resumes bit-identically.  Needs the data set: without it these tests
fail with the library's DataNotFound message (they never skip)."""
import itertools
import json
import shutil
import warnings

import pytest
import torch

from hypernas.complexity import sample_simplex
from hypernas.cost import cost
from hypernas.data import load
from hypernas.experiments import results_path, run
from hypernas.genotype import Genotype, op_counts, weight_count_of
from hypernas.ops import OP_TYPES
from hypernas.presets import config
from hypernas.train import Trainer, read_log

from conftest import assert_same as _assert_same


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def splits():
    return load("fashion_mnist")


# -- (a) it learns ------------------------------------------------------------------------

@pytest.mark.slow
def test_short_run_learns_fashion_mnist(tmp_path):
    """192 steps (3072 images x 2 epochs, batch 32) of the thesis-text preset at width 8
    reach ~0.7 test accuracy (chance: 0.1); measured 0.68-0.73 over seeds 0-1."""
    base = config("exp1", preset="thesis_text")
    cfg = config("exp1", preset="thesis_text", profile="smoke", train_images=3072, epochs=2,
                 batch_size=32, width=8, augment="none", val_images=500, test_images=2000,
                 bn_images=500, complexities={"A": base["complexities"]["A"]},
                 device="cpu", progress=False)
    res = run(cfg, results_root=tmp_path)
    out = results_path(cfg, tmp_path)
    assert out.is_file() and json.loads(out.read_text())["architectures"].keys() == {"A"}
    assert (out.with_suffix("") / "model.pt").is_file()
    a = res["architectures"]["A"]
    print(f"\nshort run: derived A {a['test_acc']:.3f}, soft supernet {a['soft_supernet_test_acc']:.3f}")
    assert a["soft_supernet_test_acc"] > 0.5, a
    assert a["test_acc"] > 0.5, a
    assert res["training"]["val_acc_soft_uniform"][-1] > 0.5
    # the reported weight count is the convention's, and the derived modules agree
    g = a["genotype"]
    assert a["weights"] == weight_count_of(Genotype(tuple(g["normal"]), tuple(g["reduce"])), 8, 3)
    assert a["weights_measured"] == a["weights"]
    assert sum(a["op_counts"].values()) == 28
    assert res["provenance"]["train_images"] == 3072


# -- (b) the cost steers the hypernetwork ---------------------------------------------------

def _penalising(ops, kind):
    """s with 0.9 on the ops of type ``kind`` (split evenly), the rest spread evenly."""
    idx = [i for i, o in enumerate(ops) if OP_TYPES[o] == kind]
    rest = len(ops) - len(idx)
    return torch.tensor([0.9 / len(idx) if i in idx else 0.1 / rest for i in range(len(ops))])


KINDS = ("pool", "identity", "conv")


def _steer_cfg(preset, kappa):
    # accuracy is not the point: a narrow net, small batches, many hypernetwork steps
    # (200), and an Adam step for the hypernetwork large enough to move its logits
    # (randn-initialised, O(1)) within them: 0.05 x 200 steps
    return config("exp1", preset=preset, profile="smoke", train_images=1600, batch_size=8,
                  width=4, epochs=1, kappa=kappa, h_lr=0.05, augment="none", val_images=64,
                  log_every=20, progress=False)


def _penalised_counts(trainer):
    m, ops = trainer.model, trainer.cfg["ops"]
    return {kind: op_counts(m.genotype(_penalising(ops, kind)))[kind] for kind in KINDS}


@pytest.mark.slow
@pytest.mark.parametrize("preset", ["authors_code", "thesis_text"])
def test_large_kappa_removes_the_penalised_op_type(splits, tmp_path, preset):
    cfg = _steer_cfg(preset, 500.0)
    trainer = Trainer(cfg, splits, tmp_path / "run", "cpu")
    before = _penalised_counts(trainer)
    mean_cost_before = _mean_cost(trainer)
    assert sum(before.values()) > 0          # at initialisation the types are still there
    trainer.fit()
    after = _penalised_counts(trainer)
    assert after == {kind: 0 for kind in KINDS}, (before, after)
    # s matters: the genotype for the pool-penalising s is another than for the others
    genos = {kind: trainer.model.genotype(_penalising(cfg["ops"], kind)) for kind in KINDS}
    assert len(set(genos.values())) >= 2
    # the expected cost over s ~ Uniform(simplex) fell (uniform logits: 42 / 3 = 14)
    assert _mean_cost(trainer) < 0.85 * mean_cost_before, (mean_cost_before, _mean_cost(trainer))


def _mean_cost(trainer):
    m = trainer.model
    S = sample_simplex(len(trainer.cfg["ops"]), 256, torch.Generator().manual_seed(0))
    with torch.no_grad():
        return cost(m.alpha(S), S, m.net.cell_counts, 1.0, "softmax").item()


@pytest.mark.slow
def test_without_cost_the_penalised_types_stay(splits, tmp_path):
    """Control: the same run with kappa = 0 keeps the penalised types (so it is the
    cost's gradient, not the schedule or chance, that removes them above)."""
    trainer = Trainer(_steer_cfg("thesis_text", 0.0), splits, tmp_path / "run", "cpu").fit()
    assert sum(_penalised_counts(trainer).values()) > 0


# -- (c)-(e) checkpoints and resume --------------------------------------------------------

def _resume_cfg(**kw):
    # authors' preset: SGD with momentum + cosine scheduler + Adam, all of which must resume
    settings = dict(train_images=256, batch_size=64, epochs=2, checkpoint_every=3, log_every=2,
                    width=4, val_images=64, progress=False)
    return config("exp1", preset="authors_code", profile="smoke", **{**settings, **kw})


STEPS_PER_EPOCH = 4


@pytest.fixture(scope="module")
def run_a(splits, tmp_path_factory):
    d = tmp_path_factory.mktemp("uninterrupted")
    trainer = Trainer(_resume_cfg(), splits, d, "cpu").fit()
    assert trainer.steps_per_epoch == STEPS_PER_EPOCH and trainer.global_step == 8
    return d, trainer


def _log_without_timing(d):
    return [{k: v for k, v in r.items() if k not in ("time", "img_per_s")} for r in read_log(d)]


def _ckpt(d):
    st = torch.load(d / "checkpoint.pt", weights_only=False)
    st.pop("elapsed")
    st.pop("segments")      # when and where each stretch of training ran
    return st


@pytest.mark.parametrize("stops,where", [
    ((5,), (1, 1)),      # mid-epoch: epoch 1, step 1
    ((4,), (1, 0)),      # exactly at the epoch boundary
    ((3, 3), (1, 2)),    # twice; the first stop right at a periodic checkpoint (step 3)
], ids=["mid-epoch", "epoch-boundary", "twice"])
def test_resume_is_bit_identical(splits, run_a, tmp_path, stops, where):
    dir_a, trainer_a = run_a
    dir_b = tmp_path / "b"
    for stop in stops:
        partial = Trainer(_resume_cfg(), splits, dir_b, "cpu").fit(stop_after_steps=stop)
        assert not partial.done
    st = torch.load(dir_b / "checkpoint.pt", weights_only=False)
    assert (st["epoch"], st["step"]) == where
    assert not (dir_b / "model.pt").exists()
    # lines written after the last checkpoint (a crash) are dropped and written again
    with open(dir_b / "log.jsonl", "a") as f:
        f.write(json.dumps({"event": "step", "global_step": 999}) + "\n")
    trainer_b = Trainer(_resume_cfg(), splits, dir_b, "cpu").fit()   # a new Trainer object
    assert trainer_b.done and trainer_b.global_step == trainer_a.global_step == 8
    # each stretch of training is on record: where it started, on what, with how many threads
    segments = torch.load(dir_b / "checkpoint.pt", weights_only=False)["segments"]
    assert [r["from_step"] for r in segments] == [0, *itertools.accumulate(stops)]
    assert {r["threads"] for r in segments} == {torch.get_num_threads()}
    assert [r["from_step"] for r in trainer_a.segments] == [0]

    _assert_same(trainer_a.model.state_dict(), trainer_b.model.state_dict(), "model")
    _assert_same(trainer_a.w_opt.state_dict(), trainer_b.w_opt.state_dict(), "w_opt")
    _assert_same(trainer_a.h_opt.state_dict(), trainer_b.h_opt.state_dict(), "h_opt")
    _assert_same(trainer_a.sched.state_dict(), trainer_b.sched.state_dict(), "sched")
    assert trainer_a.w_opt.state_dict()["state"], "the optimiser state is empty"
    _assert_same(_ckpt(dir_a), _ckpt(dir_b), "checkpoint")
    _assert_same(torch.load(dir_a / "model.pt", weights_only=False),
                 torch.load(dir_b / "model.pt", weights_only=False), "model.pt")

    log_a, log_b = _log_without_timing(dir_a), _log_without_timing(dir_b)
    assert len(log_a) == len(log_b) == 6
    assert [(r["event"], r["global_step"]) for r in log_b] == [
        ("step", 2), ("step", 4), ("epoch", 4), ("step", 6), ("step", 8), ("epoch", 8)]
    # every logged field but the windowed training metrics (see the next test) is equal
    windowed = ("loss", "task", "cost", "train_acc")
    assert ([{k: v for k, v in r.items() if k not in windowed} for r in log_a]
            == [{k: v for k, v in r.items() if k not in windowed} for r in log_b])
    if stops == (4,):    # resumed at a log boundary: the windows line up, all equal
        assert log_a == log_b


def test_resume_under_another_thread_count_warns(splits, tmp_path):
    """Float results depend on the thread count (a sum split over two threads adds in
    another order), so resuming under another one is not exact: the trainer says so and
    names the setting that makes it exact; under the same count it says nothing."""
    d = tmp_path / "run"
    before = torch.get_num_threads()
    other = 2 if before == 1 else 1
    Trainer(_resume_cfg(), splits, d, "cpu").fit(stop_after_steps=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")                 # same threads: no warning
        Trainer(_resume_cfg(), splits, d, "cpu").fit(stop_after_steps=1)
    torch.set_num_threads(other)
    try:
        with pytest.warns(UserWarning, match=f"resuming at step 3.*OMP_NUM_THREADS={before}"):
            trainer = Trainer(_resume_cfg(), splits, d, "cpu").fit(stop_after_steps=1)
    finally:
        torch.set_num_threads(before)
    assert [(r["from_step"], r["threads"]) for r in trainer.segments] == [
        (0, before), (2, before), (3, other)]


def test_resume_with_the_kernel_switched_warns(splits, tmp_path):
    """The compiled CPU kernels round sums in another order than the eager code: a run
    started without them and resumed with them is not exact, and the trainer says how to
    make it exact."""
    from hypernas.fast import kernels
    if not kernels.active():
        pytest.skip("the CPU kernels are not available here")
    d = tmp_path / "run"
    with kernels.disabled():
        Trainer(_resume_cfg(), splits, d, "cpu").fit(stop_after_steps=2)
    with pytest.warns(UserWarning, match="without the compiled CPU kernels.*HYPERNAS_KERNELS=0"):
        trainer = Trainer(_resume_cfg(), splits, d, "cpu").fit(stop_after_steps=1)
    assert [r["cpu_kernels"] for r in trainer.segments] == [False, True]


def test_resumed_log_metrics_equal_uninterrupted(splits, run_a, tmp_path):
    """The step records average loss/task/cost/acc over the steps since the last record;
    that window must survive an interruption, or the resumed log reports other numbers
    than the uninterrupted run (here: global step 6 averages steps 5-6 in A, only 6 in B)."""
    dir_a, _ = run_a
    dir_b = tmp_path / "b"
    Trainer(_resume_cfg(), splits, dir_b, "cpu").fit(stop_after_steps=5)
    Trainer(_resume_cfg(), splits, dir_b, "cpu").fit()
    log_a, log_b = _log_without_timing(dir_a), _log_without_timing(dir_b)
    for ra, rb in zip(log_a, log_b):
        assert ra == rb, (ra, rb)


def _snapshot(d):
    return {p.name: p.read_bytes() for p in sorted(d.iterdir()) if p.is_file()}


def test_checkpoint_of_another_config_is_refused(splits, tmp_path):
    d = tmp_path / "run"
    Trainer(_resume_cfg(), splits, d, "cpu").fit(stop_after_steps=2)
    before = _snapshot(d)
    assert "checkpoint.pt" in before
    with pytest.raises(ValueError) as err:
        Trainer(_resume_cfg(kappa=500.0), splits, d, "cpu").fit()
    msg = str(err.value)
    assert "kappa" in msg and "50.0" in msg and "500.0" in msg
    assert "seed" not in msg and "width" not in msg      # only the differing field
    with pytest.raises(ValueError, match="width"):
        Trainer(_resume_cfg(width=6), splits, d, "cpu").fit()
    assert _snapshot(d) == before                          # checkpoint and log untouched
    # fields that do not change training (where it runs, how it is evaluated) may differ
    resumed = Trainer(_resume_cfg(test_images=7, bn_images=9), splits, d, "cpu").fit(stop_after_steps=0)
    assert resumed.global_step == 2


def test_resume_of_finished_run_is_a_noop(splits, run_a):
    dir_a, trainer_a = run_a
    before = _snapshot(dir_a)
    again = Trainer(_resume_cfg(), splits, dir_a, "cpu")
    assert again.fit() is again
    assert again.done and again.global_step == 8 and again.epoch == 2
    assert _snapshot(dir_a) == before
    _assert_same(trainer_a.model.state_dict(), again.model.state_dict(), "model")
    _assert_same(trainer_a.h_opt.state_dict(), again.h_opt.state_dict(), "h_opt")
