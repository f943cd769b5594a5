"""The fast supernet (fused per source node) equals the plain per-edge reference
(pt.darts' MixedOp) it is exported to: outputs, gradients and BatchNorm statistics."""
import pytest
import torch
import torch.nn.functional as F

from hypernas.complexity import sample_simplex
from hypernas.cost import cost
from hypernas.presets import config
from hypernas.reference import ReferenceNetwork, reference_model
from hypernas.train import build_model

TOL = 1e-5
CASES = [(preset, k, shape) for preset in ("authors_code", "thesis_text") for k in (3, 5)
         for shape in ((1, 28), (3, 32))]


pytestmark = pytest.mark.usefixtures("one_thread")


def _pair(preset, k, channels):
    cfg = config("exp1" if k == 3 else "exp2", preset=preset)
    torch.manual_seed(0)
    fast = build_model(cfg, channels)
    return cfg, fast, reference_model(fast)


def _both(fast, ref, x, s, t, mode, seed=123):
    torch.manual_seed(seed)
    a = fast(x, s, t, mode)
    torch.manual_seed(seed)
    b = ref(x, s, t, mode)
    return a, b


def _maxdiff(a, b):
    """Largest difference, relative to the values' scale when that exceeds 1 (float32
    rounding grows with the magnitude: the authors' classifier, N(0, 1) reference
    weights, gives logits of tens)."""
    return (a - b).abs().max().item() / max(1.0, b.abs().max().item())


def _bn_buffers(model):
    return {n: b for n, b in model.named_buffers() if "running" in n or "num_batches" in n}


@pytest.mark.parametrize("preset,k,shape", CASES, ids=[f"{p}-{k}ops-{c}x{h}" for p, k, (c, h) in CASES])
def test_fast_equals_reference(preset, k, shape):
    channels, H = shape
    cfg, fast, ref = _pair(preset, k, channels)
    assert isinstance(ref.net, ReferenceNetwork) and ref.net is not fast.net
    assert fast.per_image == (preset == "authors_code")
    B = 4
    torch.manual_seed(1)
    x = torch.randn(B, channels, H, H)
    s_one = sample_simplex(k)
    s_many = sample_simplex(k, B)
    t = 0.6
    checks = []
    for training in (False, True):
        fast.train(training); ref.train(training)
        for per_image in (True, False):
            fast.per_image = ref.per_image = per_image
            for s in (s_one, s_many):
                checks.append((training, "gumbel", per_image, s.dim()))
                with torch.no_grad():
                    a, b = _both(fast, ref, x, s, t, "gumbel")
                assert a.shape == (B, 10)
                assert _maxdiff(a, b) < TOL, checks[-1]
        fast.per_image = ref.per_image = cfg["per_image"]
        for mode in ("softmax", "discrete"):
            for s in (s_one, s_many):
                checks.append((training, mode, s.dim()))
                with torch.no_grad():
                    a, b = _both(fast, ref, x, s, t, mode)
                assert _maxdiff(a, b) < TOL, checks[-1]
    # the Gumbel draws really are per image / per batch
    fast.eval()
    with torch.no_grad():
        fast.per_image = True
        torch.manual_seed(5); g_img = fast.gamma(fast.alpha(s_one), t, "gumbel", B)
        fast.per_image = False
        torch.manual_seed(5); g_bat = fast.gamma(fast.alpha(s_one), t, "gumbel", B)
    assert g_img.shape == (B, 2, 14, k) and not torch.allclose(g_img[0], g_img[1])
    assert g_bat.shape == (1, 2, 14, k)

    # the train-mode forwards above updated the running statistics of both the same way
    fb, rb = _bn_buffers(fast.net), _bn_buffers(ref.net)
    assert fb["stem.1.num_batches_tracked"].item() == 8 == rb["stem.1.num_batches_tracked"].item()
    assert torch.equal(fb["stem.1.running_mean"], rb["stem.1.running_mean"])
    moved = [n for n, b in fb.items() if "running_mean" in n and b.abs().sum() > 0]
    assert len(moved) > 10
    # ... and one exported edge's statistics equal the fused op's slice (up to rounding:
    # the fast supernet's compiled depthwise kernel sums its taps in another order)
    edge_op = ref.net.cells[1].mixed[0].ops[k - 1]       # a conv on a stride-2 edge
    exported = fast.net.export_edge(1, 0, k - 1)
    for (n1, b1), (n2, b2) in zip(edge_op.named_buffers(), exported.named_buffers()):
        assert n1 == n2 and _maxdiff(b1.double(), b2.double()) < 1e-6, n1
        assert b1.abs().sum() > 0 or "num_batches" in n1, n1
    assert edge_op.state_dict().keys() == exported.state_dict().keys()
    fast.eval(); ref.eval()
    for mode in ("softmax", "discrete", "gumbel"):
        with torch.no_grad():
            a, b = _both(fast, ref, x, s_many, t, mode)
        assert _maxdiff(a, b) < TOL, ("eval after training forwards", mode)


@pytest.mark.parametrize("preset,k", [("authors_code", 3), ("authors_code", 5),
                                      ("thesis_text", 3), ("thesis_text", 5)])
def test_gradients_equal(preset, k):
    """In float64: these gradients are ill-conditioned in float32 (BatchNorm over 6 images),
    where changing the node sums by 1e-7 relative -- the rounding of another summation
    order, e.g. the mixture kernel's -- moves a depthwise weight's gradient by 3e-3 and the
    stem's by 5e-4 (measured), so float32 could only compare identical summation orders."""
    cfg, fast, ref = _pair(preset, k, 1)
    fast.train().double(); ref.train().double()
    torch.manual_seed(2)
    x = torch.randn(6, 1, 28, 28, dtype=torch.float64)
    y = torch.randint(0, 10, (6,))
    s = sample_simplex(k).double()
    t = 0.8
    grads = []
    for model in (fast, ref):
        model.zero_grad(set_to_none=True)
        torch.manual_seed(9)
        alpha = model.alpha(s)
        logits = model.run(x, s, alpha, t, "gumbel")
        loss = F.cross_entropy(logits, y) + 0.5 * cost(alpha, s, fast.net.cell_counts, t, cfg["cost_weights"])
        loss.backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters()
                      if n.startswith(("hypernet.", "classifier.", "net.stem."))})
    assert grads[0].keys() == grads[1].keys()
    assert "hypernet.reference_logits" in grads[0]
    for name in grads[0]:
        g, r = grads[0][name], grads[1][name]
        rel = ((g - r).norm() / r.norm().clamp_min(1e-12)).item()
        assert rel < 1e-9, (name, rel)
        assert r.abs().sum() > 0, name


@pytest.mark.parametrize("fmt", [torch.contiguous_format, torch.channels_last], ids=["nchw", "cl"])
@pytest.mark.parametrize("size,stride", [(28, 1), (28, 2), (14, 2), (7, 1), (8, 2), (9, 1)])
def test_avg_pool_as_convolution_equals_pooling(size, stride, fmt):
    """The fast supernet's avg_pool_3x3 (a depthwise conv of ones times 1/count) is
    F.avg_pool2d(count_include_pad=False): values and input gradients, borders included."""
    from hypernas.fast.dispatch import avg_pool_3x3
    torch.manual_seed(0)
    x = torch.randn(4, 6, size, size).contiguous(memory_format=fmt).requires_grad_()
    a = F.avg_pool2d(x, 3, stride, 1, count_include_pad=False)
    b = avg_pool_3x3(x, stride)
    assert a.shape == b.shape and _maxdiff(a, b) < 1e-6
    g = torch.randn_like(a)
    ga, = torch.autograd.grad(a, x, g)
    gb, = torch.autograd.grad(b, x, g)
    assert _maxdiff(ga, gb) < 1e-6
    assert b.is_contiguous(memory_format=fmt)


@pytest.mark.parametrize("fmt", [torch.contiguous_format, torch.channels_last], ids=["nchw", "cl"])
@pytest.mark.parametrize("size", [28, 14, 32, 8])
def test_subsampled_factorized_reduce_equals_the_module(size, fmt):
    """SubsampledFactorizedReduce (1x1 convs on x[::2, ::2] and x[1::2, 1::2]) equals
    FactorizedReduce (strided convs on x and x[1:, 1:]) with the same state: output,
    gradients, BatchNorm statistics."""
    from hypernas.fast.inference import SubsampledFactorizedReduce
    from hypernas.ops import FactorizedReduce
    torch.manual_seed(0)
    fr = FactorizedReduce(12, 16).train()
    fr2 = SubsampledFactorizedReduce(12, 16).train()
    fr2.load_state_dict(fr.state_dict())
    x = torch.randn(5, 12, size, size).contiguous(memory_format=fmt).requires_grad_()
    a, b = fr(x), fr2(x)
    assert a.shape == b.shape == (5, 16, size // 2, size // 2) and _maxdiff(a, b) < TOL
    g = torch.randn_like(a)
    ga = torch.autograd.grad(a, [x, fr.conv1.weight, fr.conv2.weight], g)
    gb = torch.autograd.grad(b, [x, fr2.conv1.weight, fr2.conv2.weight], g)
    for p, q in zip(ga, gb):        # weight gradients sum 5 x 14 x 14 products: relative
        assert _maxdiff(p, q) < TOL * max(1.0, p.abs().max().item()), (_maxdiff(p, q), p.abs().max())
    for name, buf in _bn_buffers(fr).items():
        assert _maxdiff(buf.float(), _bn_buffers(fr2)[name].float()) < TOL, name


@pytest.mark.parametrize("fmt", [torch.contiguous_format, torch.channels_last], ids=["nchw", "cl"])
def test_relu_subsample_keeps_the_layout_of_its_input(fmt):
    """relu_subsample equals ReLU then the two grids, and both its output and the gradient
    it returns are contiguous in the input's layout (plain slicing returns an NCHW gradient
    for a channels-last input, which made every backward op after it run on mismatched
    layouts: a ReLU backward ~10x slower)."""
    from hypernas.fast.dispatch import relu_subsample
    torch.manual_seed(0)
    x = torch.randn(3, 5, 8, 6).contiguous(memory_format=fmt).requires_grad_()
    z = relu_subsample(x)
    r = F.relu(x)
    assert torch.equal(z, torch.cat([r[:, :, ::2, ::2], r[:, :, 1::2, 1::2]], 1))
    assert z.is_contiguous(memory_format=fmt)
    g = torch.randn(z.shape).contiguous(memory_format=fmt)
    dx, = torch.autograd.grad(z, x, g)
    ref, = torch.autograd.grad(torch.cat([r[:, :, ::2, ::2], r[:, :, 1::2, 1::2]], 1), x, g)
    assert torch.equal(dx, ref) and dx.is_contiguous(memory_format=fmt)
    assert (dx[:, :, ::2, 1::2] == 0).all() and dx.abs().sum() > 0
    # without the ReLU (a derived network's input has it already): the grids as they are
    z = relu_subsample(x, relu=False)
    plain = torch.cat([x[:, :, ::2, ::2], x[:, :, 1::2, 1::2]], 1)
    assert torch.equal(z, plain) and (z < 0).any()
    dx, = torch.autograd.grad(z, x, g)
    ref, = torch.autograd.grad(plain, x, g)
    assert torch.equal(dx, ref) and dx.is_contiguous(memory_format=fmt)
    with pytest.raises(ValueError, match="even height and width"):
        relu_subsample(torch.randn(1, 2, 7, 8))


def test_supernet_backward_keeps_channels_last():
    """Every convolution, ReLU and BatchNorm backward of a channels-last supernet step sees
    channels-last gradients (a mismatch is correct but several times slower on a CPU)."""
    from torch.utils._python_dispatch import TorchDispatchMode
    cfg = config("exp1", "authors_code", "smoke")
    torch.manual_seed(0)
    model = build_model(cfg, 1).to(memory_format=torch.channels_last).train()
    x = torch.randn(4, 1, 28, 28).contiguous(memory_format=torch.channels_last)
    seen, mismatched = [], []

    class Watch(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            name = func.overloadpacket.__name__
            if name in ("threshold_backward", "convolution_backward", "native_batch_norm_backward"):
                grad = args[0]
                seen.append(name)
                if grad.dim() == 4 and not grad.is_contiguous(memory_format=torch.channels_last):
                    mismatched.append((name, tuple(grad.shape), grad.stride()))
            return func(*args, **(kwargs or {}))

    with Watch():
        F.cross_entropy(model(x, torch.full((3,), 1 / 3), 1.0, "gumbel"), torch.arange(4)).backward()
    assert len(seen) > 50
    assert mismatched == []
