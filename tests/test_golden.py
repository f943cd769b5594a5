"""Golden runs: a short fixed-seed training whose numbers are committed, so that a
refactor that changes what training computes is caught bit for bit.

Each golden run trains on real Fashion-MNIST at smoke scale (1,024 images, 2 epochs,
32 steps, one torch thread) and records

* ``state_sha256``: a SHA-256 of the final model's ``state_dict`` (every tensor's bytes,
  keys in order),
* ``losses``: every logged step loss, as the exact float (``float.hex``),
* ``genotypes``: the architectures derived for A-D.

Floating-point results depend on the processor (oneDNN and the compiled kernels pick
code by instruction set), the torch version and whether the CPU kernels are in use, so
``tests/golden/runs.json`` keeps one record per *fingerprint* of those.  On a machine
whose fingerprint was recorded the test demands equality of every bit; on another one it
checks the same run within a tolerance (losses to 1e-4 relative, same genotypes) and
says so.  Record the current machine (new fingerprints only; a recorded one is never
overwritten) with::

    python tests/test_golden.py --record
"""
from __future__ import annotations

import hashlib
import json
import platform
import sys
from pathlib import Path

import pytest
import torch

GOLDEN = Path(__file__).parent / "golden" / "runs.json"

#: the golden runs: name -> (experiment, preset, overrides); every field that changes
#: training is fixed here, so a change of a preset's defaults does not move them
RUNS = {
    "exp1-authors_code": ("exp1", "authors_code", {"classifier": "shared"}),
    "exp1-authors_code-own": ("exp1", "authors_code", {"classifier": "own"}),
    "exp1-thesis_text": ("exp1", "thesis_text", {}),
}
SCALE = dict(train_images=1024, val_images=256, test_images=512, bn_images=256, epochs=2,
             log_every=2, checkpoint_every=1000, device="cpu", progress=False)


def fingerprint() -> str:
    from hypernas.fast import kernels
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        flags = next((line for line in Path("/proc/cpuinfo").read_text().splitlines()
                      if line.startswith("flags")), "")
        isa = "avx512" if "avx512f" in flags else "avx2" if "avx2" in flags else "other"
    except OSError:
        isa = "unknown"
    return f"{cpu} | {isa} | torch {torch.__version__} | kernels {'on' if kernels.active() else 'off'}"


def state_sha256(model) -> str:
    h = hashlib.sha256()
    for key, t in model.state_dict().items():
        h.update(key.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def golden_run(name, run_dir) -> dict:
    from hypernas.data import load
    from hypernas.presets import config
    from hypernas.train import Trainer, read_log
    experiment, preset, overrides = RUNS[name]
    cfg = config(experiment, preset, "smoke", 0, **SCALE, **overrides)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        trainer = Trainer(cfg, load(cfg["dataset"]), run_dir, "cpu")
        trainer.fit()
        model = trainer.model.eval()
        genotypes = {a: [list(g) for g in model.genotype(torch.tensor(s))]
                     for a, s in cfg["complexities"].items()}
    finally:
        torch.set_num_threads(threads)
    losses = [r["loss"].hex() for r in read_log(run_dir) if r["event"] == "step"]
    return dict(state_sha256=state_sha256(model), losses=losses, genotypes=genotypes)


def _records():
    return json.loads(GOLDEN.read_text()) if GOLDEN.exists() else {}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(RUNS))
def test_golden_run(name, tmp_path):
    records = _records()
    fp = fingerprint()
    ref = records.get(fp, {}).get(name)
    if ref is None:
        ref = next((r[name] for r in records.values() if name in r), None)
        assert ref is not None, f"no golden record of {name}; run python tests/test_golden.py --record"
        exact = False
    else:
        exact = True
    got = golden_run(name, tmp_path / name)
    assert got["genotypes"] == ref["genotypes"]
    assert len(got["losses"]) == len(ref["losses"]) == 16
    if exact:
        assert got["losses"] == ref["losses"], "the step losses changed bit for bit"
        assert got["state_sha256"] == ref["state_sha256"], "the trained parameters changed"
    else:
        print(f"\nno golden record for this machine ({fp}); compared within tolerance")
        for a, b in zip(got["losses"], ref["losses"]):
            assert float.fromhex(a) == pytest.approx(float.fromhex(b), rel=1e-4)


def _record():
    """Record the golden runs this machine's fingerprint lacks (a recorded run is never
    overwritten: delete its entry by hand to re-record it)."""
    import tempfile
    records = _records()
    fp = fingerprint()
    new = [name for name in sorted(RUNS) if name not in records.get(fp, {})]
    if not new:
        print(f"every golden run is recorded for {fp}; delete an entry in {GOLDEN} by hand to re-record it")
        return 1
    with tempfile.TemporaryDirectory() as tmp:
        records.setdefault(fp, {}).update({name: golden_run(name, Path(tmp) / name) for name in new})
    GOLDEN.parent.mkdir(exist_ok=True)
    GOLDEN.write_text(json.dumps(records, indent=1) + "\n")
    print(f"recorded {new} for {fp} in {GOLDEN}")
    return 0


if __name__ == "__main__":
    if sys.argv[1:] != ["--record"]:
        sys.exit("usage: python tests/test_golden.py --record")
    sys.exit(_record())


RESULTS = Path(__file__).resolve().parent.parent / "results"
PAPER_RUNS = sorted(str(p.relative_to(RESULTS).with_suffix("")) for p in RESULTS.glob("*/paper/*-seed[0-9].json")) \
    + sorted(str(p.relative_to(RESULTS).with_suffix("")) for p in RESULTS.glob("paper/*-seed[0-9].json"))


@pytest.mark.parametrize("run", PAPER_RUNS)
def test_committed_paper_model_derives_its_results(run):
    """Every committed paper model (results/paper/ and the comparison runs beside it, such
    as results/classifier-own/paper/) loads and derives the A-D genotypes and weight
    counts its results file records."""
    from hypernas.genotype import Genotype, weight_count_of
    from hypernas.train import load_model
    results = json.loads((RESULTS / f"{run}.json").read_text())
    model = load_model(RESULTS / run / "model.pt")
    cfg = results["config"]
    assert list(model.ops) == cfg["ops"]
    for name, arch in results["architectures"].items():
        g = model.genotype(torch.tensor(arch["s"]))
        assert list(g.normal) == arch["genotype"]["normal"], name
        assert list(g.reduce) == arch["genotype"]["reduce"], name
        assert weight_count_of(Genotype(g.normal, g.reduce), cfg["width"], cfg["n_cells"]) == arch["weights"]
