"""The hypernetwork, complexity vectors, the relaxation, temperature schedules and the
cost, each against a direct (loop) evaluation of its formula."""
import math

import pytest
import torch

from hypernas.complexity import check_complexity, sample_simplex, simplex_grid
from hypernas.cost import cost
from hypernas.hypernet import HyperNetwork, simplex_vertices_and_centre
from hypernas.model import HyperSupernet
from hypernas.presets import OP_SETS
from hypernas.relax import gumbel_softmax, op_weights, temperature

OPS3 = OP_SETS["authors_code"][3]
OPS5 = OP_SETS["thesis_text"][5]


# -- hypernetwork ----------------------------------------------------------------------

def _alpha_loops(hn, s):
    """alpha(s) = sum_r softmax_r(sign * ||s - s_ref_r||^2) alpha_ref_r, with loops."""
    P = hn.reference_points.detach().double()
    L = hn.reference_logits.detach().double()
    m, k = P.shape
    d2 = [sum((float(s[i]) - float(P[r, i])) ** 2 for i in range(k)) for r in range(m)]
    z = [math.exp(hn.sign * d) for d in d2]
    w = [v / sum(z) for v in z]
    out = torch.zeros(L.shape[1:], dtype=torch.float64)
    for r in range(m):
        out += w[r] * L[r]
    return out, w


@pytest.mark.parametrize("sign", [-1.0, 1.0])
@pytest.mark.parametrize("ops", [OPS3, OPS5])
def test_hypernet_equals_formula(sign, ops):
    torch.manual_seed(3)
    k = len(ops)
    hn = HyperNetwork(ops, n_edges=14, n_reference=5, sign=sign)
    S = sample_simplex(k, 6)
    batched = hn(S)
    assert batched.shape == (6, 2, 14, k)
    for b in range(6):
        want, w = _alpha_loops(hn, S[b])
        single = hn(S[b])
        assert single.shape == (2, 14, k)
        torch.testing.assert_close(single.double(), want, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(batched[b].double(), want, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(hn.interpolation_weights(S[b]).double(),
                                   torch.tensor(w, dtype=torch.float64), rtol=1e-5, atol=1e-6)


def test_sign_decides_which_reference_point_dominates():
    hn_near = HyperNetwork(OPS3, n_reference=4, init="simplex", sign=-1.0)
    hn_far = HyperNetwork(OPS3, n_reference=4, init="simplex", sign=1.0)
    s = torch.tensor([0.9, 0.05, 0.05])
    assert hn_near.interpolation_weights(s).argmax() == 0       # the pool vertex
    assert hn_far.interpolation_weights(s).argmax() in (1, 2)   # a far vertex


def test_simplex_init_and_fixed_points():
    hn = HyperNetwork(OPS3, n_reference=4, learn_points=False, init="simplex")
    torch.testing.assert_close(hn.reference_points, simplex_vertices_and_centre(3))
    assert "reference_points" not in dict(hn.named_parameters())
    assert "reference_points" in dict(hn.named_buffers())
    with pytest.raises(ValueError, match="k \\+ 1"):
        HyperNetwork(OPS3, n_reference=5, init="simplex")
    with pytest.raises(ValueError, match="sign"):
        HyperNetwork(OPS3, sign=0.5)


def test_model_alpha_is_hypernet_output_and_per_sample_s():
    torch.manual_seed(0)
    model = HyperSupernet(OPS3, C=4, in_channels=1, rbf_sign=1.0, classifier="shared")
    S = sample_simplex(3, 4)
    A = model.alpha(S)
    for b in range(4):
        want, _ = _alpha_loops(model.hypernet, S[b])
        torch.testing.assert_close(A[b].double(), want, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="3 complexity vectors for a batch of 2"):
        model(torch.randn(2, 1, 28, 28), S[:3])


# -- complexity vectors -----------------------------------------------------------------

@pytest.mark.parametrize("bad", [
    [0.5, 0.5],                           # wrong length
    [[0.5, 0.5], [0.2, 0.8]],             # wrong length, batched
    [[[1 / 3] * 3]],                      # too many dims
    [1.2, -0.1, -0.1],                    # negative
    [float("nan"), 0.5, 0.5],             # NaN
    [float("inf"), 0.0, 0.0],             # inf
    [0.5, 0.3, 0.3],                      # sums to 1.1
    [[1 / 3] * 3, [0.1, 0.1, 0.1]],       # one row of a batch does not sum to 1
    "abc",                                # not numbers
])
def test_check_complexity_errors_name_k_and_op_order(bad):
    with pytest.raises(ValueError) as err:
        check_complexity(bad, OPS3)
    msg = str(err.value)
    assert "k=3" in msg
    assert str(list(OPS3)) in msg


def test_check_complexity_accepts_valid_vectors():
    t = check_complexity([0, 1, 0], OPS3)                 # ints become floats
    assert t.dtype == torch.get_default_dtype() and t.tolist() == [0.0, 1.0, 0.0]
    assert check_complexity([0.33, 0.33, 0.33], OPS3, tol=0.02).shape == (3,)
    assert check_complexity(sample_simplex(5, 7), OPS5).shape == (7, 5)
    with pytest.raises(ValueError, match="k=5"):
        check_complexity(sample_simplex(3, 2), OPS5)


def test_sample_simplex_uniform():
    g = torch.Generator().manual_seed(0)
    k, n = 3, 40000
    S = sample_simplex(k, n, generator=g)
    assert S.shape == (n, k)
    assert (S >= 0).all()
    torch.testing.assert_close(S.sum(-1), torch.ones(n))
    assert (S.mean(0) - 1 / k).abs().max() < 0.01
    # uniform on the simplex: each coordinate is Beta(1, k - 1), P(s_i < 1/2) = 1 - 2^-(k-1)
    assert abs((S[:, 0] < 0.5).float().mean().item() - 0.75) < 0.01
    one = sample_simplex(5)
    assert one.shape == (5,) and abs(one.sum().item() - 1) < 1e-6
    # a seeded generator makes it reproducible
    a = sample_simplex(4, 3, torch.Generator().manual_seed(7))
    b = sample_simplex(4, 3, torch.Generator().manual_seed(7))
    assert torch.equal(a, b)


def test_simplex_grid():
    G = simplex_grid(3, 4)
    assert G.shape == (15, 3)
    torch.testing.assert_close(G.sum(-1), torch.ones(15))
    assert len({tuple(r) for r in G.tolist()}) == 15


# -- relaxation -------------------------------------------------------------------------

def test_op_weights_discrete_and_softmax():
    torch.manual_seed(0)
    alpha = torch.randn(2, 14, 5)
    d = op_weights(alpha, 0.3, "discrete")
    assert d.shape == alpha.shape
    assert set(d.unique().tolist()) == {0.0, 1.0}
    assert torch.equal(d.sum(-1), torch.ones(2, 14))
    assert torch.equal(d.argmax(-1), alpha.argmax(-1))
    sm = op_weights(alpha, 0.5, "softmax")
    torch.testing.assert_close(sm, torch.exp(alpha / 0.5) / torch.exp(alpha / 0.5).sum(-1, keepdim=True))
    with pytest.raises(ValueError, match="unknown mode"):
        op_weights(alpha, 1.0, "hard")


def test_gumbel_softmax_is_softmax_of_perturbed_logits():
    alpha = torch.tensor([[0.5, -1.0, 2.0], [0.0, 0.0, 0.0]])
    t = 0.7
    torch.manual_seed(11)
    got = gumbel_softmax(alpha, t, (4,))
    assert got.shape == (4, 2, 3)
    torch.manual_seed(11)
    u = torch.rand(4, 2, 3).clamp(torch.finfo(torch.float32).eps, 1 - torch.finfo(torch.float32).eps)
    g = -torch.log(-torch.log(u))
    want = torch.softmax((alpha + g) / t, -1)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape,sample_shape", [((3,), ()), ((2, 14, 3), (64,)), ((7, 2, 14, 5), ())])
def test_gumbel_softmax_is_torch_distribution_bit_for_bit(dtype, shape, sample_shape):
    """Our sampler spells out RelaxedOneHotCategorical.rsample (which checks its arguments
    with a GPU read-back): from the same random state it must give the very same numbers,
    or runs started with the distribution would not resume exactly."""
    from torch.distributions import RelaxedOneHotCategorical
    for t in (1.0, 0.36, 0.2):
        alpha = (3 * torch.randn(shape, dtype=dtype)).requires_grad_()
        torch.manual_seed(5)
        want = RelaxedOneHotCategorical(torch.as_tensor(t), logits=alpha).rsample(torch.Size(sample_shape))
        torch.manual_seed(5)
        got = gumbel_softmax(alpha, t, sample_shape)
        assert got.dtype == want.dtype and torch.equal(got, want)
        w = torch.randn_like(got)
        g_want, = torch.autograd.grad((want * w).sum(), alpha)
        g_got, = torch.autograd.grad((got * w).sum(), alpha)
        assert torch.equal(g_got, g_want)


def test_gumbel_samples_follow_softmax_and_sharpen():
    torch.manual_seed(0)
    alpha = torch.tensor([1.0, 0.0, -0.5])
    samples = op_weights(alpha, 0.5, "gumbel", (20000,))
    assert samples.shape == (20000, 3)
    assert (samples >= 0).all()
    torch.testing.assert_close(samples.sum(-1), torch.ones(20000))
    # Gumbel-max: the argmax of a sample is distributed as softmax(alpha), at any t
    freq = torch.bincount(samples.argmax(-1), minlength=3).float() / 20000
    assert (freq - torch.softmax(alpha, 0)).abs().max() < 0.015
    # lower temperature: closer to one-hot
    cold = op_weights(alpha, 0.05, "gumbel", (2000,))
    assert cold.max(-1).values.mean() > 0.95 > samples.max(-1).values.mean()
    # reparameterised: gradients reach alpha
    a = alpha.clone().requires_grad_()
    (op_weights(a, 0.5, "gumbel", (8,))[:, 0]).sum().backward()
    assert a.grad is not None and a.grad.abs().sum() > 0


def test_temperature_schedules():
    assert temperature(0, 10, "linear") == pytest.approx(1.0)
    assert temperature(9, 10, "linear") == pytest.approx(0.2)
    lin = [temperature(e, 10, "linear") for e in range(10)]
    assert all(a > b for a, b in zip(lin, lin[1:]))
    assert lin[1] - lin[0] == pytest.approx(-0.8 / 9)
    assert temperature(0, 1, "linear") == pytest.approx(1.0)
    step = [temperature(e, 20, "step") for e in range(20)]
    for e in range(11):
        assert step[e] == pytest.approx(1.0 - 0.08 * e)
    assert step[9] == pytest.approx(0.28)            # exp 1 ends here
    assert all(t == pytest.approx(0.2) for t in step[11:])   # 1 - 0.88 < 0.2: floor
    assert min(step) >= 0.2
    assert temperature(15, 20, "step", floor=0.05) == pytest.approx(0.05)
    with pytest.raises(ValueError, match="schedule"):
        temperature(0, 10, "cosine")


# -- cost -------------------------------------------------------------------------------

def _cost_loops(alpha, s, counts, t, weights):
    """sum_cells sum_edges sum_m gamma_bar_m s_m, averaged over a batch of s."""
    if alpha.dim() == 3:
        alpha, s = alpha[None], s[None]
    total = 0.0
    for b in range(alpha.shape[0]):
        for c in range(alpha.shape[1]):
            for e in range(alpha.shape[2]):
                logits = alpha[b, c, e].double() / (t if weights == "softmax_t" else 1.0)
                p = torch.softmax(logits, 0)
                total += counts[c] * sum(float(p[m]) * float(s[b, m]) for m in range(alpha.shape[3]))
    return total / alpha.shape[0]


@pytest.mark.parametrize("weights", ["softmax_t", "softmax"])
@pytest.mark.parametrize("batched", [False, True])
@pytest.mark.parametrize("k", [3, 5])
def test_cost_matches_loops(weights, batched, k):
    torch.manual_seed(k)
    counts = (1, 2)
    t = 0.4
    if batched:
        alpha, s = 2 * torch.randn(3, 2, 14, k), sample_simplex(k, 3)
    else:
        alpha, s = 2 * torch.randn(2, 14, k), sample_simplex(k)
    got = cost(alpha, s, counts, t, weights)
    assert got.dim() == 0
    assert got.item() == pytest.approx(_cost_loops(alpha, s, counts, t, weights), rel=1e-5)


def test_cost_counts_cells_and_temperature_matters():
    alpha = torch.randn(2, 14, 3)
    s = torch.tensor([0.2, 0.3, 0.5])
    one = cost(alpha, s, (1, 0), 1.0, "softmax")
    red = cost(alpha, s, (0, 1), 1.0, "softmax")
    assert cost(alpha, s, (1, 2), 1.0, "softmax").item() == pytest.approx((one + 2 * red).item(), rel=1e-6)
    assert cost(alpha, s, (1, 2), 0.3, "softmax").item() == pytest.approx(
        cost(alpha, s, (1, 2), 1.0, "softmax").item(), rel=1e-6)   # code: t unused
    assert cost(alpha, s, (1, 2), 0.3, "softmax_t").item() != pytest.approx(
        cost(alpha, s, (1, 2), 1.0, "softmax_t").item(), rel=1e-3)
    # uniform logits: every edge costs mean(s); 14 edges x 3 cells
    assert cost(torch.zeros(2, 14, 3), s, (1, 2), 0.5).item() == pytest.approx(42 * 1 / 3, rel=1e-6)
    with pytest.raises(ValueError, match="cost weights"):
        cost(alpha, s, (1, 2), 1.0, "argmax")


def test_cost_gradient_pushes_penalised_ops_down():
    """d Cost / d alpha_m = count * p_m (s_m - sum_j p_j s_j): the op with the highest
    penalty always loses logit mass."""
    torch.manual_seed(0)
    alpha = torch.randn(2, 14, 3, requires_grad=True)
    s = torch.tensor([0.9, 0.05, 0.05])
    cost(alpha, s, (1, 2), 1.0, "softmax").backward()
    p = torch.softmax(alpha.detach(), -1)
    want = p * (s - (p * s).sum(-1, keepdim=True)) * torch.tensor([1.0, 2.0]).view(2, 1, 1)
    torch.testing.assert_close(alpha.grad, want, rtol=1e-5, atol=1e-6)
    assert (alpha.grad[..., 0] > 0).all()   # gradient descent lowers the pool logit


def test_model_cell_counts():
    model = HyperSupernet(OPS3, C=4, n_cells=3)
    assert model.net.cell_counts == (1, 2)


def test_own_classifier_follows_the_authors_hyperlinear():
    """classifier='own': its own reference points for W and for b, N(0, 1) at the start,
    trained with the network weights (SGD group, under their weight decay and clip),
    W(s) and b(s) interpolated with softmax(sign * ||s - p||^2) over those points."""
    from hypernas.presets import config
    from hypernas.train import build_model, build_optimizers
    torch.manual_seed(0)
    cfg = config("exp1", "authors_code", classifier="own", width=8)
    model = build_model(cfg, 1)
    clf = model.classifier
    m, k = cfg["n_reference"], len(cfg["ops"])
    assert clf.weight_points.shape == clf.bias_points.shape == (m, k)
    assert clf.weight.shape == (m, 10, model.net.out_channels) and clf.bias.shape == (m, 10)
    # N(0, 1): mean and spread of the reference weights (thousands of draws)
    w = clf.weight.detach().flatten()
    assert abs(w.mean().item()) < 0.05 and abs(w.std().item() - 1) < 0.05
    # one optimiser group: the network weights (SGD), never the hypernetwork's Adam
    ids = lambda ps: {id(p) for p in ps}  # noqa: E731
    w_opt, h_opt, _ = build_optimizers(model, cfg)
    own = ids(clf.parameters())
    assert own <= ids(model.weights()) and not own & ids(model.hypernet_parameters())
    assert own <= ids(p for g in w_opt.param_groups for p in g["params"])
    assert isinstance(w_opt, torch.optim.SGD) and w_opt.param_groups[0]["weight_decay"] == cfg["w_weight_decay"]
    # the function: separate interpolation weights for W and b, by their own points
    s = torch.tensor([0.2, 0.3, 0.5])
    vw = torch.softmax(cfg["rbf_sign"] * ((s - clf.weight_points) ** 2).sum(1), 0)
    vb = torch.softmax(cfg["rbf_sign"] * ((s - clf.bias_points) ** 2).sum(1), 0)
    h = torch.randn(4, model.net.out_channels)
    want = h @ torch.einsum("r,rod->od", vw, clf.weight).t() + torch.einsum("r,ro->o", vb, clf.bias)
    torch.testing.assert_close(clf(h, s, model.hypernet), want)
    # 'shared' uses the hypernetwork's points instead, and has none of its own
    shared = build_model(config("exp1", "authors_code", classifier="shared", width=8), 1).classifier
    assert not hasattr(shared, "weight_points")
