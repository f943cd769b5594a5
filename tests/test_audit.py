"""The audit of the published tables (hypernas.audit) on columns computed by hand."""
from hypernas import audit
from hypernas.genotype import Genotype, cell_edges, weight_count_of


def test_units_are_the_weight_convention():
    u = audit.unit_weights(("sep_conv_3x3", "sep_conv_5x5"))
    # by hand: 2 (9 C + C^2) at C = 16; at C = 32 and 64 for the reduction genotype
    assert u[("sep_conv_3x3", "normal")] == 2 * (9 * 16 + 16 ** 2) == 800
    assert u[("sep_conv_3x3", "reduce")] == 2 * (9 * 32 + 32 ** 2) + 2 * (9 * 64 + 64 ** 2) == 11968
    assert u[("sep_conv_5x5", "normal")] == 2 * (25 * 16 + 16 ** 2) == 1312
    assert u[("skip_connect", "stride2")] == 32 ** 2 + 64 ** 2 == 5120


def test_table1_d_is_unique_and_a_real_genotype_has_it():
    # Table 1 D: 12,320 weights, pool 18 / conv 9 / identity 1.  By hand: 9 convs, so
    # 800 cn + 11968 cr + 5120 f = 12320 with cn + cr = 9; cr = 0 gives 7200 + 5120 f,
    # f = 1; cr >= 1 already exceeds 12,320.  One composition.
    a = audit.audit_column(12320, 18, 9, 1)
    assert a["status"] == "unique"
    (fit,) = a["fits"]
    assert (fit["normal"], fit["reduce"], fit["stride2_identities"]) == ((9,), (0,), 1)
    P, I, S = "avg_pool_3x3", "skip_connect", "sep_conv_3x3"
    stride2 = [i < 2 for i, _ in cell_edges(4)]
    normal = tuple(S if e < 9 else P for e in range(14))
    reduce = tuple(I if e == 0 else P for e in range(14))
    assert stride2[0] and weight_count_of(Genotype(normal, reduce)) == 12320


def test_impossible_column_names_nearest_and_the_swap():
    # Table 3 C: 159,456 weights with 9 convs cannot be; 19 convs (7 + 12) and two
    # stride-2 identities give it: 7*800 + 12*11968 + 2*5120 = 159456
    assert 7 * 800 + 12 * 11968 + 2 * 5120 == 159456
    a = audit.audit_column(159456, 0, 9, 19)
    assert a["status"] == "impossible" and a["nearest"]
    assert (0, 19, 9) in [p[:3] for p in a["permuted_rows"]]


def test_ambiguous_five_op_column_lists_every_fit():
    # Table 2 A: 93,888 = 2*1312 + 3*11968 + 3*15040 + 2*5120, and two other splits
    a = audit.audit_column(93888, 16, 8, 4, ("sep_conv_3x3", "sep_conv_5x5"))
    assert a["status"] == "ambiguous"
    assert ((0, 2), (3, 3), 2) in [(f["normal"], f["reduce"], f["stride2_identities"]) for f in a["fits"]]
    assert all(f["weights"] == 93888 for f in a["fits"])


def test_published_tables_summary():
    s = audit.summary()
    assert s["impossible"] == [("exp3", "C")]
    assert set(s["ambiguous"]) == {("exp2", "A"), ("exp2", "C")}
    assert len(s["unique"]) == 9
