"""The claim sentences and the side-by-side tables of hypernas.report, on results dicts
shaped like those experiments.run writes."""
from hypernas import report


def _arch(pool, conv, identity, weights, normal=("a",)):
    return dict(test_acc=0.8, weights=weights, genotype=dict(normal=list(normal), reduce=[]),
                op_counts=dict(pool=pool, conv=conv, identity=identity))


def _res(archs):
    return dict(config=dict(experiment="exp1"), architectures=archs)


def test_claims_verdicts():
    res = _res({"A": _arch(0, 20, 8, 100, ("a",)), "B": _arch(10, 0, 18, 10, ("b",)),
                "C": _arch(0, 28, 0, 200, ("c",)), "D": _arch(0, 26, 2, 150, ("c",))})
    conv, pool, ident, params, one_model = report.claims(res)
    assert "supported: B has no conv op (A has 20)" in conv
    # C has no pool, but A has none either: the run cannot show the claim
    assert "not shown by this run" in pool and "supported:" not in pool
    assert "partly supported: D has 2 identity op(s), fewer than A's 8" in ident
    assert "supported: B has the fewest weights (10), C the most (200)" in params
    assert "partly supported: 3 distinct" in one_model        # C and D are the same cell


def test_claims_not_supported():
    res = _res({"A": _arch(5, 5, 5, 100, ("a",)), "B": _arch(5, 9, 5, 300, ("b",)),
                "C": _arch(6, 5, 5, 50, ("c",)), "D": _arch(5, 5, 5, 100, ("d",))})
    conv, pool, ident, params, one_model = report.claims(res)
    assert "not supported: B has 9 conv op(s), A has 5" in conv
    assert "not supported: C has 6 pool" in pool
    assert "not supported: B has 300 weights, C has 50" in params
    assert "supported: the four architectures are all different" in one_model


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
