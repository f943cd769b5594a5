"""hypernas retrain: a derived architecture trained from scratch at smoke scale, and one
clear error (nothing written) for bad input."""
import json
from pathlib import Path

import pytest
import torch

from hypernas import cli, retrain
from hypernas.presets import config
from hypernas.train import build_model

pytestmark = pytest.mark.usefixtures("one_thread")
ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "results" / "paper" / "exp1-authors_code-seed0.json"


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    cfg = config("exp1", "authors_code", "smoke", 0, width=4)
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("model") / "model.pt"
    torch.save(dict(format=1, hypernas="0.1.0", cfg=cfg, model=build_model(cfg, 1).state_dict()), path)
    return path


def _tree(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def test_retrain_smoke_writes_the_stated_keys(tiny_model, tmp_path, capsys):
    rc = cli.main(["retrain", str(tiny_model), "--s", "0.2", "0.3", "0.5", "--results-root", str(tmp_path)])
    assert rc == 0, capsys.readouterr().err
    (path,) = (tmp_path / "smoke" / "retrain").glob("*.json")
    assert path.name == "exp1-authors_code-seed0-s0.200-0.300-0.500.json"
    assert not list(path.parent.glob("*.checkpoint.pt")) and not list(path.parent.glob(".*tmp"))
    res = json.loads(path.read_text())
    assert set(res) == {"protocol", "source", "architecture", "inherited_test_acc", "retrained", "cost", "provenance"}
    p = res["protocol"]
    assert p["source"].endswith("fmnist_fine_0.cfg") and p["epochs"] == 100 and p["epochs_run"] == 1
    assert (p["batch_size"], p["lr"], p["cutout"], p["train_images"]) == (96, 0.025, 16, 256)
    r = res["retrained"]
    assert 0 <= r["final_test_acc"] <= 1 and len(r["epochs"]) == 1 and r["best_epoch"] == 1
    assert res["cost"]["paper_protocol_estimate_h"] > 0 and res["cost"]["note"].startswith("estimate")
    assert res["provenance"]["segments"][0]["threads"] == 1
    assert res["provenance"]["segments"][0]["device"].startswith("cpu")
    assert sum(res["architecture"]["op_counts"].values()) == 28


def test_results_file_source_takes_the_architecture_and_its_inherited_accuracy():
    src = retrain.resolve_source(RESULTS, arch="B")
    res = json.loads(RESULTS.read_text())["architectures"]["B"]
    assert src["label"] == "B" and src["run"] == "exp1-authors_code-seed0"
    assert list(src["genotype"].normal) == res["genotype"]["normal"]
    assert src["inherited_test_acc"] == res["test_acc"]


BAD = {
    "missing-model": (["nowhere/model.pt", "--s", "0.2", "0.3", "0.5"], ["does not exist"]),
    "bad-s-length": (["MODEL", "--s", "0.5", "0.5"], ["--s:", "length k=3"]),
    "bad-s-negative": (["MODEL", "--s", "-0.2", "0.6", "0.6"], ["--s:", "negative"]),
    "no-s": (["MODEL"], ["give --s"]),
    "no-arch": ([str(RESULTS)], ["give --arch"]),
    "bad-arch": ([str(RESULTS), "--arch", "E"], ["give --arch", "got 'E'"]),
    "bad-device": (["MODEL", "--s", "0.2", "0.3", "0.5", "--device", "tpu9"], ["unknown device"]),
    "bad-profile": (["MODEL", "--s", "0.2", "0.3", "0.5", "--profile", "huge"], ["--profile must be one of"]),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_is_one_error_and_writes_nothing(case, tiny_model, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args, needles = BAD[case]
    args = [str(tiny_model) if a == "MODEL" else a for a in args]
    before = _tree(tmp_path)
    rc = cli.main(["retrain", *args, "--results-root", str(tmp_path / "res")])
    out, err = capsys.readouterr()
    assert rc == 2 and out == "" and "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("hypernas: error: "), err
    for n in needles:
        assert n in lines[0], lines[0]
    assert _tree(tmp_path) == before


def test_protocol_table_and_kendall_from_files():
    WEIGHTS = dict(A=40, B=10, C=30, D=50, m1=20)     # ranks B < C < A < D: the retrained order below
    def f(label, inh, ret, normal, epochs=100):
        return dict(source=dict(run="exp1-authors_code-seed0", label=label), inherited_test_acc=inh,
                    retrained=dict(final_test_acc=ret, best_test_acc=ret + 0.01),
                    architecture=dict(weights=WEIGHTS[label], genotype=dict(normal=[normal], reduce=[])),
                    protocol=dict(epochs_run=epochs, epochs=100),
                    cost=dict(paper_protocol_estimate_h=1.0, measured_wall_s=epochs * 36.0, threads=1))
    files = [f("A", 0.80, 0.90, "a"), f("B", 0.70, 0.85, "b"), f("C", 0.85, 0.88, "c"),
             f("D", 0.60, 0.95, "d"), f("m1", 0.5, 0.5, "e", epochs=1)]      # a smoke run: left out
    t = retrain.protocol_table(files)
    assert list(t["arch"]) == ["A", "B", "C", "D", "m1"]
    assert abs(t.loc[0, "gain, points"] - 10.0) < 1e-9
    assert list(t["this run, h"]) == pytest.approx([1.0, 1.0, 1.0, 1.0, 0.01])   # measured_wall_s / 3600
    for r in files:
        r["provenance"] = dict(device="cpu", commit="abc1234", finished="2026-12-03 09:29:08 UTC",
                               segments=[dict(from_epoch=0, threads=1, commit="abc1234")])
    files[0]["provenance"]["segments"].append(dict(from_epoch=4, threads=1, commit="def5678+dirty"))
    prov = retrain.provenance_table(files)
    assert prov.loc[0, "segments"] == ("from epoch 0: 1 thread(s), commit abc1234; "
                                       "from epoch 4: 1 thread(s), commit def5678 (uncommitted changes)")
    assert list(prov["retraining"])[:2] == ["exp1-authors_code-seed0-A", "exp1-authors_code-seed0-B"]
    assert list(prov["wall, h"]) == [1.0, 1.0, 1.0, 1.0, 0.01]
    # inherited order D < B < A < C, retrained B < C < A < D: 2 concordant, 4 discordant pairs
    tau, n = retrain.kendall_by_run(files)["exp1-authors_code-seed0"]
    assert n == 4 and abs(tau - (2 - 4) / 6) < 1e-12
    # a short-protocol file never enters the full protocol's tau, nor the reverse
    short = [f(k, inh, ret, g, epochs=10) for k, inh, ret, g in
             (("A", 0.8, 0.7, "a"), ("B", 0.7, 0.6, "b"), ("C", 0.85, 0.9, "c"))]
    assert retrain.kendall_by_run(files + short)["exp1-authors_code-seed0"] == (tau, n)
    assert retrain.kendall_by_run(files + short, epochs_run=10)["exp1-authors_code-seed0"] == (1.0, 3)
    # one sentence per protocol, full first, each saying the count is below 8
    # the weight-count baseline over the same architectures: B < C < A < D is the retrained
    # order (tau 1); for the short files B < C < A against retrained B < A < C: A-C discordant, tau 1/3
    assert retrain.kendall_by_run(files, by="weights")["exp1-authors_code-seed0"] == (1.0, 4)
    assert retrain.kendall_by_run(short, epochs_run=10, by="weights")["exp1-authors_code-seed0"][0] == pytest.approx(1 / 3)
    assert retrain.kendall_sentences(files + short) == [
        f"Kendall's tau, inherited vs retrained with the authors' protocol, `exp1-authors_code-seed0`: {tau:.2f} "
        "over 4 distinct architectures (fewer than 8: indicative only); the weight count alone ranks them with tau 1.00.",
        "Kendall's tau, inherited vs retrained with the 10-epoch proxy, `exp1-authors_code-seed0`: 1.00 "
        "over 3 distinct architectures (fewer than 8: indicative only); the weight count alone ranks them with tau 0.33."]
    for r in short:
        r["architecture"]["weights"] = 7
    assert retrain.kendall_sentences(short)[0].endswith("the weight count alone ranks them with tau undefined "
                                                          "(all weight counts equal).")


def test_short_profile_compresses_the_protocol_and_files_beside_the_paper_ones(tiny_model, tmp_path, monkeypatch):
    """The short profile: its own file name under paper/, the drop-path probability
    following the fraction of training (so it ends where the full protocol would), the
    cosine schedule run to 0 over its own epochs, and the file saying it is compressed."""
    monkeypatch.setitem(retrain.RETRAIN_PROFILES, "short",
                        dict(retrain.RETRAIN_PROFILES["short"], epochs=4, train_images=96, test_images=100))
    src = retrain.resolve_source(tiny_model, s=[0.2, 0.3, 0.5])
    assert retrain.out_path(src, "short", tmp_path) == (
        tmp_path / "paper" / "retrain" / "exp1-authors_code-seed0-s0.200-0.300-0.500-short.json")
    assert retrain.out_path(src, "paper", tmp_path) == (
        tmp_path / "paper" / "retrain" / "exp1-authors_code-seed0-s0.200-0.300-0.500.json")
    res = retrain.retrain(src, "short", tmp_path, log=lambda *_: None)
    hist = res["retrained"]["epochs"]
    per_epoch = retrain.PROTOCOLS["fashion_mnist"]["drop_path_per_epoch"]
    assert [h["drop_path"] for h in hist] == pytest.approx([per_epoch * e * 100 / 4 for e in range(4)])
    lrs = [h["lr"] for h in hist]
    assert lrs[0] == pytest.approx(0.025) and all(a > b for a, b in zip(lrs, lrs[1:])) and lrs[-1] > 0
    assert res["protocol"]["epochs_run"] == 4 and res["protocol"]["epochs"] == 100
    assert "compressed" in res["protocol"]["drop_path"]
    assert retrain.out_path(src, "short", tmp_path).exists()
    # the full protocol keeps the authors' rule
    assert retrain.drop_path_prob(per_epoch, 50, 100, 100) == pytest.approx(per_epoch * 50)


def test_stopped_retrain_resumes_from_its_checkpoint(tiny_model, tmp_path, monkeypatch):
    """Stopped after epoch 1 of 2, the same call resumes at epoch 2 (a second segment)."""
    monkeypatch.setitem(retrain.RETRAIN_PROFILES, "smoke", dict(epochs=2, train_images=96, test_images=100))
    src = retrain.resolve_source(tiny_model, s=[0.2, 0.3, 0.5])
    import hypernas.evaluation as derived
    real, calls = derived.accuracy, []

    def stop_in_epoch_two(*a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*a, **k)
    monkeypatch.setattr(derived, "accuracy", stop_in_epoch_two)
    with pytest.raises(KeyboardInterrupt):
        retrain.retrain(src, "smoke", tmp_path, log=lambda *_: None)
    ckpt = retrain.out_path(src, "smoke", tmp_path).with_suffix(".checkpoint.pt")
    assert ckpt.exists() and not retrain.out_path(src, "smoke", tmp_path).exists()
    (stopped,) = retrain.in_progress(tmp_path, "smoke", results_root=tmp_path)   # what the book lists
    assert stopped["name"] == retrain.out_path(src, "smoke", tmp_path).stem
    assert (stopped["epoch"], stopped["epochs"]) == (1, 2) and 0 <= stopped["last_test_acc"] <= 1
    monkeypatch.setattr(derived, "accuracy", real)
    res = retrain.retrain(src, "smoke", tmp_path, log=lambda *_: None)
    assert [h["epoch"] for h in res["retrained"]["epochs"]] == [1, 2]
    assert [s["from_epoch"] for s in res["provenance"]["segments"]] == [0, 1]
    assert not ckpt.exists()
    assert retrain.in_progress(tmp_path, "smoke", results_root=tmp_path) == []


def test_collect_orders_members_by_number(tmp_path):
    folder = tmp_path / "results" / "paper" / "retrain"
    folder.mkdir(parents=True)
    for label in ("m118", "B", "m45", "A", "m7"):
        (folder / f"exp1-authors_code-seed0-{label}-short.json").write_text(json.dumps(dict(label=label)))
    (folder / "exp1-authors_code-seed0-m9-short.checkpoint.pt").write_bytes(b"")   # not a results file
    assert [r["label"] for r in retrain.collect(tmp_path)] == ["A", "B", "m7", "m45", "m118"]
    assert retrain.natural_key("seed10") > retrain.natural_key("seed9")


def test_spread_members_covers_the_weight_range():
    fam = dict(members=[dict(weights=w) for w in (50, 10, 40, 30, 20, 60, 70, 80, 90, 100)])
    idx = retrain.spread_members(fam, 4)
    ws = sorted(fam["members"][i]["weights"] for i in idx)
    assert len(idx) == 4 and ws[0] == 10 and ws[-1] == 100
    assert retrain.spread_members(dict(members=fam["members"][:3]), 8) == [0, 1, 2]


def test_similar_size_members_take_the_fullest_band_spread_over_accuracy():
    # weights 100..104 (five members, the fullest 15 % band) and 200, 300, 400 elsewhere
    w = [300, 100, 101, 200, 102, 103, 400, 104]
    acc = [0.9, 0.50, 0.70, 0.95, 0.60, 0.65, 0.99, 0.80]
    fam = dict(members=[dict(weights=a, test_acc=b) for a, b in zip(w, acc)])
    band = [1, 2, 4, 5, 7]
    assert retrain.similar_size_members(fam, 8, band=0.15) == band      # all five: fewer than n
    # three of them spread over accuracy: the lowest (0.50), the middle (0.65), the highest (0.80)
    assert retrain.similar_size_members(fam, 3, band=0.15) == [1, 5, 7]
    assert retrain.similar_size_members(fam, 8, band=0.001) == [1]     # every band holds one: the first
    with pytest.raises(ValueError, match="band must lie in"):
        retrain.similar_size_members(fam, 3, band=1.5)


def test_versus_published_compares_one_protocol_with_the_published_column():
    from hypernas.report import PUBLISHED
    pub = PUBLISHED["exp1"]["Test accuracy, %"]

    def f(label, inh, ret, epochs):
        return dict(source=dict(run="exp1-authors_code-seed0", experiment="exp1", label=label),
                    inherited_test_acc=inh, retrained=dict(final_test_acc=ret),
                    protocol=dict(epochs_run=epochs, epochs=100))
    # A: inherited 1 point below the published, retrained 3 above -> inherited closer
    # B: inherited 4 below, retrained 1 below -> retrained closer
    files = [f("A", (pub[0] - 1) / 100, (pub[0] + 3) / 100, 10),
             f("B", (pub[1] - 4) / 100, (pub[1] - 1) / 100, 10),
             f("C", (pub[2] - 1) / 100, (pub[2] - 2) / 100, 100),      # the full protocol: apart
             f("m7", 0.5, 0.6, 10),                                    # a family member: no column
             f("D", None, 0.9, 10)]                                    # no inherited accuracy
    short = retrain.versus_published(files, epochs_run=10)
    assert [(p["arch"], p["closer"]) for p in short] == [("A", "inherited"), ("B", "retrained")]
    assert short[0]["published"] == pub[0]
    assert short[0]["retrained"] == pytest.approx(pub[0] + 3) and short[1]["inherited"] == pytest.approx(pub[1] - 4)
    assert [(p["arch"], p["closer"]) for p in retrain.versus_published(files)] == [("C", "inherited")]


def test_one_process_per_retraining_and_a_finished_one_is_not_redone(tiny_model, tmp_path, capsys, monkeypatch):
    """While another process holds a retraining, a second `hypernas retrain` of it is one
    error naming the holder (nothing written); once it is free the retraining runs; run
    again, it returns the finished file without training; a file of another retraining at
    the same path is one error and stays as it was."""
    import subprocess
    import sys
    args = ["retrain", str(tiny_model), "--s", "0.2", "0.3", "0.5", "--results-root", str(tmp_path)]
    path = retrain.out_path(retrain.resolve_source(tiny_model, s=[0.2, 0.3, 0.5]), "smoke", tmp_path)
    path.parent.mkdir(parents=True)
    lock = path.with_suffix(".lock")
    holder = subprocess.Popen([sys.executable, "-c", "import time; from hypernas.runlock import file_lock\n"
                               f"with file_lock({str(lock)!r}, ''):\n print('held', flush=True); time.sleep(120)"],
                              cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        before = _tree(tmp_path)
        assert cli.main(args) == 1                # RunLocked: busy, not bad input
        out, err = capsys.readouterr()
        assert out == "" and len(err.strip().splitlines()) == 1 and "Traceback" not in err
        assert f"being retrained by process {holder.pid}" in err and f"kill {holder.pid}" in err
        assert _tree(tmp_path) == before
    finally:
        holder.kill()
        holder.wait()
    assert cli.main(args) == 0, capsys.readouterr().err
    assert path.exists() and not lock.exists()
    first = path.read_bytes()
    import hypernas.evaluation as derived

    def no_training(*a, **k):
        raise AssertionError("trained again")
    monkeypatch.setattr(derived, "accuracy", no_training)
    capsys.readouterr()
    assert cli.main(args) == 0
    assert "retrained already" in capsys.readouterr().out and path.read_bytes() == first
    other = json.loads(first)
    other["protocol"]["epochs_run"] += 1
    path.write_text(json.dumps(other))
    assert cli.main(args) == 2
    err = capsys.readouterr().err
    assert "holds another retraining" in err and len(err.strip().splitlines()) == 1
    assert json.loads(path.read_text()) == other
