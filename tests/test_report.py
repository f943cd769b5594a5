"""The claim sentences and the side-by-side tables of hypernas.report, on results dicts
shaped like those experiments.run writes."""
from hypernas import report


def _arch(pool, conv, identity, weights, normal=("a",)):
    return dict(test_acc=0.8, weights=weights, genotype=dict(normal=list(normal), reduce=[]),
                op_counts=dict(pool=pool, conv=conv, identity=identity))


def _res(archs):
    return dict(config=dict(experiment="exp1"), architectures=archs)


def _v(res):
    return {v["claim"].split(" (")[0].split(" removes")[0]: v for v in report.verdicts(res)}


def test_verdicts_supported_partly_and_absent_op():
    res = _res({"A": _arch(0, 20, 8, 100, ("a",)), "B": _arch(10, 0, 18, 10, ("b",)),
                "C": _arch(0, 28, 0, 200, ("c",)), "D": _arch(0, 26, 2, 150, ("d",))})
    v = _v(res)
    assert v["Penalising conv"]["verdict"] == "supported"
    assert v["Penalising conv"]["evidence"] == "conv ops: B 0, A 20"
    # C has no pool, but A has none either: not shown, and the caveat says why
    assert v["Penalising pool"]["verdict"] == "not shown"
    assert v["Penalising pool"]["caveat"].startswith("absent op")
    assert v["Penalising identity"]["verdict"] == "partly supported"
    assert v["B"]["verdict"] == "supported" and "C 200" in v["B"]["evidence"]
    assert v["One trained model gives four different architectures"]["verdict"] == "supported"
    assert len(report.claims(res)) == len(report.verdicts(res))


def test_verdicts_tie_is_not_support():
    # C and D are the same cell: C is the largest only by a tie with D
    res = _res({"A": _arch(1, 16, 11, 100, ("a",)), "B": _arch(6, 0, 22, 10, ("b",)),
                "C": _arch(0, 28, 0, 200, ("c",)), "D": _arch(0, 28, 0, 200, ("c",))})
    v = _v(res)
    assert v["B"]["verdict"] == "not shown" and "tie: C = D" in v["B"]["caveat"]
    one = v["One trained model gives four different architectures"]
    assert one["verdict"] == "partly supported" and "C=D" in one["caveat"]
    # an architecture identical to A cannot show that its penalty removed anything
    res["architectures"]["B"] = _arch(1, 16, 11, 100, ("a",))
    assert _v(res)["Penalising conv"]["caveat"] == "tie: B is the same architecture as A"
    assert _v(res)["Penalising conv"]["verdict"] == "not shown"
    # B lowest in accuracy only as a copy of A: a tie, not support
    for k, acc in zip("ABCD", (0.57, 0.56, 0.78, 0.68)):
        res["architectures"][k]["test_acc"] = acc
    acc = _v(res)["B has the lowest accuracy, C the highest"]
    assert acc["verdict"] == "not shown" and "B = A" in acc["caveat"]


def test_verdicts_reversal_is_named():
    # published Table 1: B 5,120 < D 12,320 < A 38,304 < C 143,488; here D is the largest
    res = _res({"A": _arch(1, 16, 11, 133792, ("a",)), "B": _arch(6, 0, 22, 30720, ("b",)),
                "C": _arch(0, 26, 2, 159936, ("c",)), "D": _arch(0, 28, 0, 178752, ("d",))})
    v = _v(res)
    order = v["The weights of A-D are in the published order"]
    assert order["verdict"] == "not supported"
    assert "D is the published second smallest (12,320) but our largest (178,752)" in order["caveat"]
    assert v["B"]["verdict"] == "partly supported" and "D has the most" in v["B"]["caveat"]
    # more of the penalised op than A: a reversal, not a tie
    res["architectures"]["D"] = _arch(0, 12, 16, 178752, ("d",))
    assert _v(res)["Penalising identity"]["caveat"].startswith("reversal")


def test_replicate_table_puts_runs_beside_published():
    a = _res({k: _arch(i, 28 - i, 0, 10) for i, k in enumerate("ABCD")})
    b = _res({k: _arch(i + 1, 27 - i, 0, 10) for i, k in enumerate("ABCD")})
    df = report.replicate_table({"CPU": a, "H200": b}, "exp1")
    assert list(df.columns.get_level_values(1)[:3]) == ["CPU", "H200", "published"]
    assert df.loc["Pooling ops", ("C", "CPU")] == 2 and df.loc["Pooling ops", ("C", "H200")] == 3
    assert df.loc["Pooling ops", ("A", "published")] == report.PUBLISHED["exp1"]["Pooling ops"][0]
    assert "Parameters" not in df.index


def test_provenance_lists_training_segments():
    seg = lambda step, threads, commit: dict(from_step=step, device=f"cpu (x86_64, {threads} threads)",
                                             threads=threads, commit=commit, started="")
    res = dict(provenance=dict(train_wall_s=600.0, commit="c3",
                               training_segments=[seg(5800, 1, "c2"), seg(9000, 2, "c3")]))
    text = report.provenance(res).loc["training_segments", "value"]
    assert text.startswith("steps before 5800: not recorded; from step 5800: ")
    assert text.index("commit c2") < text.index("from step 9000") < text.index("2 thread(s)")
    res["provenance"]["training_segments"] = []
    assert "not recorded" in report.provenance(res).loc["training_segments", "value"]
    assert report.provenance(res).loc["train_wall_min", "value"] == "10.0"


def test_readme_block_lists_retrainings_and_their_tau(tmp_path):
    import json
    folder = tmp_path / "results" / "paper" / "retrain"
    folder.mkdir(parents=True)
    for label, inh, ret, op in (("A", 0.80, 0.85, "a"), ("B", 0.70, 0.75, "b"), ("C", 0.90, 0.70, "c")):
        (folder / f"exp1-authors_code-seed0-{label}-short.json").write_text(json.dumps(dict(
            source=dict(run="exp1-authors_code-seed0", label=label), inherited_test_acc=inh,
            retrained=dict(final_test_acc=ret), protocol=dict(epochs_run=10, epochs=100),
            architecture=dict(weights=1000 * len(op) + ord(op), genotype=dict(normal=[op], reduce=[])),
            cost=dict(measured_wall_s=5400.0, threads=1))))
    block = report.readme_table(tmp_path)
    assert "| exp1-authors_code-seed0 | A | 1,097 | 80.00 | 85.00 | 10 of 100 | 1.50 (1) |" in block
    assert "| exp1-authors_code-seed0 | C | 1,099 | 90.00 | 70.00 | 10 of 100 | 1.50 (1) |" in block
    # inherited B < A < C, retrained C < B < A: 1 concordant pair (A, B), 2 discordant;
    # weights A < B < C: the reverse of the retrained order
    assert ("Kendall's tau, inherited vs retrained with the 10-epoch proxy, `exp1-authors_code-seed0`: "
            "-0.33 over 3 distinct architectures (fewer than 8: indicative only); "
            "the weight count alone ranks them with tau -1.00.") in block
    assert "the authors' protocol, `" not in block           # no full-protocol file: no tau for it
    assert "Retrained from scratch" not in report.readme_table(tmp_path / "empty")
