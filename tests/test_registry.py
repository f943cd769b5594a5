"""One record per op: an op added through the public API alone (hypernas.ops.register_op)
runs in the fast supernet, equals the per-edge reference built from the plain ops,
exports with strict keys and derives; a fused form whose export does not fit the plain
op fails when the network is built."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from hypernas import ops
from hypernas.complexity import sample_simplex
from hypernas.derived import DerivedNetwork
from hypernas.genotype import Genotype, cell_edges, weight_count_of
from hypernas.model import HyperSupernet
from hypernas.reference import reference_model

pytestmark = pytest.mark.usefixtures("one_thread")


class ReLUConv1x1BN(nn.Module):
    """A small new op: ReLU -> 1x1 conv (the stride on it) -> BN."""

    def __init__(self, C, stride, affine=False):
        super().__init__()
        self.relu = nn.ReLU()
        self.conv = nn.Conv2d(C, C, 1, stride, 0, bias=False)
        self.bn = nn.BatchNorm2d(C, affine=affine)

    def forward(self, x):
        return self.bn(self.conv(self.relu(x)))


class FusedConv1x1(nn.Module):
    """Its fused form: one 1x1 conv over all ``E`` edges' weights."""
    shared = False

    def __init__(self, C, E, stride, bad_key=False):
        super().__init__()
        self.C, self.stride, self.bad_key = C, stride, bad_key
        self.weight = nn.Parameter(torch.randn(E * C, C, 1, 1) / C ** 0.5)
        self.bn = nn.BatchNorm2d(E * C, affine=False)

    def forward(self, x):
        return self.bn(F.conv2d(F.relu(x), self.weight, None, self.stride))

    def export_state(self, t):
        sl = slice(t * self.C, (t + 1) * self.C)
        bn = self.bn
        return {("conv.w" if self.bad_key else "conv.weight"): self.weight[sl],
                "bn.running_mean": bn.running_mean[sl], "bn.running_var": bn.running_var[sl],
                "bn.num_batches_tracked": bn.num_batches_tracked}


def _record(name, fused=None):
    return ops.OpRecord(name, "conv", plain=lambda C, stride, affine: ReLUConv1x1BN(C, stride, affine),
                        weights=lambda C, stride: C * C, fused=fused, relu_first=True)


@pytest.fixture
def new_op(request):
    name, fused = request.param
    ops.register_op(_record(name, fused))
    yield name
    ops.unregister_op(name)


def _check_against_reference(name):
    op_set = ("max_pool_3x3", "skip_connect", name)
    torch.manual_seed(0)
    fast = HyperSupernet(op_set, C=16, n_cells=3, n_nodes=4, in_channels=1)
    ref = reference_model(fast)
    x = torch.randn(4, 1, 16, 16)
    for training in (True, False):
        fast.train(training); ref.train(training)
        s = sample_simplex(3, 4)
        torch.manual_seed(7)
        a = fast(x, s, 0.7, "gumbel")
        torch.manual_seed(7)
        b = ref(x, s, 0.7, "gumbel")
        assert (a - b).abs().max().item() < 1e-4 * max(1.0, b.abs().max().item())
    # every edge's export loads with strict keys, and the weight count is the record's
    g = Genotype((name,) * len(cell_edges(4)), (name,) * len(cell_edges(4)))
    net = DerivedNetwork(fast, g, torch.full((3,), 1 / 3))
    assert sum(p.numel() for c in net.cells for p in c.edge_ops.parameters()) == weight_count_of(g, 16, 3)
    net.eval()
    with torch.no_grad():
        assert (net(x) - net.folded()(x)).abs().max().item() < 1e-4


@pytest.mark.parametrize("new_op", [("relu_conv_1x1_plain", None)], indirect=True)
def test_new_op_without_fused_form_equals_reference(new_op):
    assert ops.op_type(new_op) == "conv" and ops.weight_count(new_op, 16, 2) == 256
    _check_against_reference(new_op)


@pytest.mark.parametrize("new_op", [("relu_conv_1x1_fused", lambda C, E, stride: FusedConv1x1(C, E, stride))],
                         indirect=True)
def test_new_op_with_fused_form_equals_reference(new_op):
    _check_against_reference(new_op)


@pytest.mark.parametrize("new_op", [("relu_conv_1x1_bad", lambda C, E, stride: FusedConv1x1(C, E, stride, True))],
                         indirect=True)
def test_fused_form_that_does_not_export_fails_when_built(new_op):
    with pytest.raises(ValueError, match=r"relu_conv_1x1_bad.*missing \['conv.weight'\].*unexpected \['conv.w'\]"):
        HyperSupernet(("max_pool_3x3", new_op), C=16)


def test_registering_a_name_twice_fails():
    with pytest.raises(ValueError, match="registered already"):
        ops.register_op(_record("sep_conv_3x3"))
    with pytest.raises(ValueError, match="type"):
        ops.OpRecord("x", "attention", plain=None, weights=None)
