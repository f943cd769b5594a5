"""Candidate ops, genotypes and the thesis's weight-count convention (NOTES.md)."""
import random

import pytest
import torch

from hypernas.derived import DerivedNetwork
from hypernas.genotype import Genotype, cell_edges, cell_layout, derive, op_counts, weight_count_of
from hypernas.model import HyperSupernet
from hypernas.ops import OP_TYPES, OPS, check_ops, make_op, op_type, weight_count
from hypernas.presets import OP_SETS

ALL_OPS = sorted(OPS)


def n_params(module):
    return sum(p.numel() for p in module.parameters())


# -- ops ------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ALL_OPS)
def test_op_shapes(name):
    torch.manual_seed(0)
    C = 8
    x = torch.randn(2, C, 12, 12)
    for stride, hw in ((1, 12), (2, 6)):
        op = make_op(name, C, stride).train()
        y = op(x)
        assert y.shape == (2, C, hw, hw), (name, stride, y.shape)
        assert torch.isfinite(y).all()


@pytest.mark.parametrize("name", ALL_OPS)
@pytest.mark.parametrize("C", [16, 32, 64])
@pytest.mark.parametrize("stride", [1, 2])
def test_weight_count_matches_module(name, C, stride):
    assert weight_count(name, C, stride) == n_params(make_op(name, C, stride))


def test_weight_count_closed_forms():
    # the numbers NOTES.md builds the published counts from
    assert weight_count("sep_conv_3x3", 16, 1) == 800
    assert weight_count("sep_conv_3x3", 32, 2) + weight_count("sep_conv_3x3", 64, 2) == 11968
    assert weight_count("skip_connect", 32, 2) + weight_count("skip_connect", 64, 2) == 5120
    assert weight_count("skip_connect", 64, 1) == 0
    assert weight_count("avg_pool_3x3", 64, 2) == 0
    assert weight_count("conv_5x5", 16, 1) == 25 * 16 * 16
    assert weight_count("sep_conv_5x5", 16, 2) == 2 * (25 * 16 + 16 * 16)


@pytest.mark.parametrize("call", [
    lambda: make_op("conv_7x7", 16, 1),
    lambda: weight_count("dil_conv_3x3", 16, 1),
    lambda: op_type("zero"),
    lambda: check_ops(["avg_pool_3x3", "nope"]),
    lambda: HyperSupernet(["avg_pool_3x3", "skip_connect", "sep_conv_7x7"]),
])
def test_unknown_op_lists_known_ops(call):
    with pytest.raises(ValueError) as err:
        call()
    msg = str(err.value)
    assert "unknown op" in msg
    for name in OPS:
        assert name in msg, f"{name} missing from: {msg}"


def test_duplicate_op_rejected():
    with pytest.raises(ValueError, match="twice"):
        check_ops(["skip_connect", "skip_connect"])


def test_op_types():
    assert {op_type(n) for n in OPS} == {"pool", "conv", "identity"}
    for preset, sets in OP_SETS.items():
        assert [OP_TYPES[o] for o in sets[3]] == ["pool", "identity", "conv"], preset
        assert [OP_TYPES[o] for o in sets[5]] == ["pool", "pool", "identity", "conv", "conv"], preset


# -- genotypes and the published counts -------------------------------------------------

EDGES = cell_edges(4)
#: edges leaving an input node: stride 2 in a reduction cell
STRIDE2 = [e for e, (i, j) in enumerate(EDGES) if i < 2]
STRIDE1 = [e for e, (i, j) in enumerate(EDGES) if i >= 2]
POOL, SKIP, CONV = OP_SETS["authors_code"][3]


def test_cell_edges_and_layout():
    assert EDGES == [(0, 2), (1, 2), (0, 3), (1, 3), (2, 3), (0, 4), (1, 4), (2, 4), (3, 4),
                     (0, 5), (1, 5), (2, 5), (3, 5), (4, 5)]
    assert len(STRIDE2) == 8 and len(STRIDE1) == 6
    assert cell_layout(3) == [(False, 1), (True, 2), (True, 4)]


def _cell(**placed):
    """A 14-edge genotype row: ``placed`` maps op -> list of edge indices; every edge
    must be named exactly once."""
    row = [None] * len(EDGES)
    for op, edges in placed.items():
        for e in edges:
            assert row[e] is None, f"edge {e} placed twice"
            row[e] = op
    assert None not in row
    return tuple(row)


def _normal(n_conv, n_pool, n_skip):
    assert n_conv + n_pool + n_skip == 14
    return tuple([CONV] * n_conv + [POOL] * n_pool + [SKIP] * n_skip)


#: Table 1 (experiment 1) compositions per NOTES.md, with the published op counts
TABLE1 = {
    # 3 convs in each genotype; skips of the reduce genotype only on stride-1 edges
    "A": (Genotype(_normal(3, 5, 6),
                   _cell(**{SKIP: STRIDE1[:4], CONV: STRIDE1[4:] + STRIDE2[:1], POOL: STRIDE2[1:]})),
          38304, {"pool": 12, "conv": 6, "identity": 10}),
    # no conv; exactly one skip on a stride-2 edge of the reduce genotype
    "B": (Genotype(_normal(0, 10, 4), _cell(**{SKIP: STRIDE1 + STRIDE2[:1], POOL: STRIDE2[1:]})),
          5120, {"pool": 17, "conv": 0, "identity": 11}),
    # 2 convs normal, 11 reduce, 2 stride-2 skips (+1 stride-1 skip) in reduce
    "C": (Genotype(_normal(2, 0, 12),
                   _cell(**{SKIP: STRIDE2[:2] + STRIDE1[:1], CONV: STRIDE2[2:] + STRIDE1[1:]})),
          143488, {"pool": 0, "conv": 13, "identity": 15}),
    # 9 convs normal, one stride-2 skip in reduce
    "D": (Genotype(_normal(9, 5, 0), _cell(**{SKIP: STRIDE2[:1], POOL: STRIDE2[1:] + STRIDE1})),
          12320, {"pool": 18, "conv": 9, "identity": 1}),
}


@pytest.mark.parametrize("arch", sorted(TABLE1))
def test_table1_weight_counts(arch):
    genotype, published, counts = TABLE1[arch]
    assert weight_count_of(genotype, C=16, n_cells=3) == published
    counts_got = op_counts(genotype)
    assert counts_got == counts
    assert sum(counts_got.values()) == 28


def test_stride2_skip_costs_5120_and_stride1_skip_costs_nothing():
    genotype, published, _ = TABLE1["A"]
    red = list(genotype.reduce)
    e_pool_s2 = next(e for e in STRIDE2 if red[e] == POOL)
    moved = red.copy(); moved[e_pool_s2] = SKIP
    assert weight_count_of(Genotype(genotype.normal, tuple(moved))) == published + 5120
    normal = list(genotype.normal)
    normal[normal.index(POOL)] = SKIP  # normal cell: no stride-2 edge
    assert weight_count_of(Genotype(tuple(normal), genotype.reduce)) == published


@pytest.fixture(scope="module")
def supernet3():
    torch.manual_seed(0)
    return HyperSupernet(OP_SETS["authors_code"][3], C=16, n_cells=3, in_channels=1,
                         classifier="shared", rbf_sign=1.0).eval()


def _measured(net):
    return sum(n_params(op) for cell in net.cells for op in cell.edge_ops)


@pytest.mark.parametrize("arch", sorted(TABLE1))
def test_table1_counts_from_derived_modules(supernet3, arch):
    genotype, published, _ = TABLE1[arch]
    s = torch.tensor([1 / 3, 1 / 3, 1 / 3])
    net = DerivedNetwork(supernet3, genotype, s).eval()
    assert _measured(net) == published
    # the chosen op really is the op on each edge
    for cell in net.cells:
        ops = genotype.reduce if cell.reduction else genotype.normal
        assert len(cell.edge_ops) == 14
        for (i, _), op, mod in zip(EDGES, ops, cell.edge_ops):
            stride = 2 if cell.reduction and i < 2 else 1
            assert type(mod) is type(make_op(op, 16, stride))
    with torch.no_grad():
        out = net(torch.randn(2, 1, 28, 28))
    assert out.shape == (2, 10)


@pytest.mark.parametrize("preset,k", [("authors_code", 5), ("thesis_text", 3), ("thesis_text", 5)])
def test_weight_count_of_matches_modules_for_random_genotypes(preset, k):
    ops = OP_SETS[preset][k]
    torch.manual_seed(1)
    model = HyperSupernet(ops, C=16, in_channels=1).eval()
    rng = random.Random(k)
    for _ in range(3):
        g = Genotype(tuple(rng.choice(ops) for _ in EDGES), tuple(rng.choice(ops) for _ in EDGES))
        net = DerivedNetwork(model, g, torch.full((k,), 1 / k))
        assert _measured(net) == weight_count_of(g, 16, 3)
        assert sum(op_counts(g).values()) == 28


def test_derive_takes_argmax_and_checks_shape():
    ops = OP_SETS["authors_code"][3]
    alpha = torch.zeros(2, 14, 3)
    alpha[0, :, 2] = 1.0          # normal: conv everywhere
    alpha[1, :, 0] = 1.0          # reduce: pool everywhere
    alpha[1, 5, 1] = 2.0          # ... but a skip on edge 5
    g = derive(alpha, ops)
    assert g.normal == (CONV,) * 14
    assert g.reduce[5] == SKIP and g.reduce.count(POOL) == 13
    assert op_counts(g) == {"pool": 13, "conv": 14, "identity": 1}
    with pytest.raises(ValueError, match="shape"):
        derive(torch.zeros(4, 2, 14, 3), ops)


def test_authors_code_op_orders_are_the_authors():
    """The components of s follow the authors' code's primitive lists (DARTS_small for
    three ops, DARTS_five for five), so an s copied from their configs penalises the same
    ops here; the committed exp2 seed-0 run predates the five-op order and keeps its own
    (its results file records it)."""
    from hypernas.presets import config
    assert config("exp1")["ops"] == ["avg_pool_3x3", "skip_connect", "sep_conv_3x3"]
    assert config("exp2")["ops"] == ["avg_pool_3x3", "max_pool_3x3", "skip_connect",
                                     "sep_conv_3x3", "sep_conv_5x5"]
    # the thesis's role order (pool, pool, ident, conv, conv) holds for both presets
    for preset in OP_SETS:
        roles = [OP_TYPES[o] for o in config("exp2", preset)["ops"]]
        assert roles == ["pool", "pool", "identity", "conv", "conv"]
