"""A derived network is the supernet at one architecture: it equals the supernet run with
one-hot op weights for its genotype, and its inference copy (BatchNorm folded into the
convolutions) equals it in eval mode."""
import random

import pytest
import torch

from hypernas.derived import DerivedNetwork
from hypernas.genotype import Genotype
from hypernas.presets import config
from hypernas.train import build_model

CASES = [(preset, k, shape) for preset in ("authors_code", "thesis_text") for k in (3, 5)
         for shape in ((1, 28), (3, 32))]
IDS = [f"{p}-{k}ops-{c}x{h}" for p, k, (c, h) in CASES]

pytestmark = pytest.mark.usefixtures("one_thread")


def _setup(preset, k, channels, seed):
    cfg = config("exp1" if k == 3 else "exp2", preset=preset)
    torch.manual_seed(0)
    model = build_model(cfg, channels)
    rng = random.Random(seed)
    ops = model.ops
    g = Genotype(tuple(rng.choice(ops) for _ in range(14)), tuple(rng.choice(ops) for _ in range(14)))
    alpha = torch.zeros(2, 14, k)
    for c, cell_ops in enumerate((g.normal, g.reduce)):
        for e, op in enumerate(cell_ops):
            alpha[c, e, ops.index(op)] = 1.0
    s = torch.distributions.Dirichlet(torch.ones(k)).sample()
    return model, g, alpha, s


@pytest.mark.parametrize("preset,k,shape", CASES, ids=IDS)
def test_derived_equals_supernet_at_its_genotype(preset, k, shape):
    c, h = shape
    model, g, alpha, s = _setup(preset, k, c, seed=k + h)
    assert len(set(g.normal + g.reduce)) > 1
    net = DerivedNetwork(model, g, s)
    x = torch.randn(6, c, h, h)
    model.train(); net.train()          # both normalise with the batch's statistics
    with torch.no_grad():
        a = model.run(x, s, alpha, 1.0, "discrete")
        b = net(x)
    assert (a - b).abs().max().item() < 1e-5 * (1 + a.abs().max().item())
    # and the derived net's ops are the ones the genotype names
    for cell in net.cells:
        names = g.reduce if cell.reduction else g.normal
        assert [type(op).__name__ for op in cell.edge_ops] == \
            [type(model.net.export_edge(0 if not cell.reduction else 1, e, model.ops.index(n))).__name__
             for e, n in enumerate(names)]


@pytest.mark.parametrize("preset,k,shape", CASES[:2] + CASES[-2:], ids=IDS[:2] + IDS[-2:])
def test_folded_equals_eval(preset, k, shape):
    c, h = shape
    model, g, alpha, s = _setup(preset, k, c, seed=7)
    net = DerivedNetwork(model, g, s).train()
    with torch.no_grad():
        for _ in range(3):                       # non-trivial running statistics
            net(torch.randn(16, c, h, h) * 2 + 0.5)
    net.eval()
    folded = net.folded()
    n_bn = lambda m: sum(isinstance(x, torch.nn.BatchNorm2d) for x in m.modules())
    assert n_bn(folded) < n_bn(net)              # something was folded ...
    x = torch.randn(5, c, h, h)
    with torch.no_grad():
        a, b = net(x), folded(x)
    assert (a - b).abs().max().item() < 1e-4 * (1 + a.abs().max().item())
    assert net.training is False and any(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules())  # ... in a copy


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("hw", [(7, 7), (8, 5), (28, 28)])
def test_folded_avg_pool_equals_pool_and_bn(stride, hw):
    """AvgPoolBN (depthwise conv x 1/count + shift) against avg_pool2d(count_include_pad=
    False) + BatchNorm, at borders and odd sizes where the counts differ."""
    from hypernas.fast.inference import AvgPoolBN
    from hypernas.ops import PoolBN
    torch.manual_seed(3)
    for affine in (False, True):
        ref = PoolBN("avg", 6, stride, affine)
        ref.bn.running_mean.uniform_(-1, 1); ref.bn.running_var.uniform_(0.2, 3)
        if affine:
            torch.nn.init.uniform_(ref.bn.weight, 0.5, 2); torch.nn.init.uniform_(ref.bn.bias, -1, 1)
        ref.eval()
        x = torch.randn(4, 6, *hw).contiguous(memory_format=torch.channels_last)
        with torch.no_grad():
            a, b = ref(x), AvgPoolBN(ref)(x)
        assert a.shape == b.shape
        assert (a - b).abs().max().item() < 1e-5 * (1 + a.abs().max().item())
