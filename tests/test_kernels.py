"""The compiled CPU kernels (hypernas/fast/csrc/) compute what the eager code computes:
values and gradients of every input, for the shapes the supernets use and for awkward
ones.  The mixture kernel (mix.cpp) in float32 and float64 (channels not a multiple of 8,
one edge, no fused op, no shared op, inputs that are not channels-last); the grouped 1x1
(pointwise.cpp) and the depthwise convolution of repeated inputs (depthwise.cpp) against
torch's convolutions in float64."""
import contextlib
import copy
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from hypernas.fast import kernels
from hypernas.presets import config
from hypernas.fast.dispatch import mix_eager
from hypernas.train import build_model

CL = torch.channels_last


@pytest.fixture(scope="module")
def ext():
    e = kernels.extension()
    if e is None:
        if kernels.setting() == "require":
            pytest.fail(f"HYPERNAS_KERNELS=require but the kernel is not available: {kernels.error()}")
        pytest.skip(f"the CPU kernels are not available here: {kernels.error() or 'HYPERNAS_KERNELS=0'}")
    return e


def _inputs(B, E, C, H, W, n_fused, n_shared, with_acc, dtype, fmt=CL, seed=0):
    g = torch.Generator().manual_seed(seed)
    k = n_fused + n_shared + 1                          # one op slot unused (skipped op)
    order = torch.randperm(k, generator=g).tolist()
    fi, si = order[:n_fused], order[n_fused:n_fused + n_shared]
    rnd = lambda *s: torch.randn(*s, generator=g, dtype=dtype).contiguous(memory_format=fmt).requires_grad_()
    gamma = torch.rand(B, E, k, generator=g, dtype=dtype).requires_grad_()
    fused = [(m, rnd(B, E * C, H, W)) for m in fi]
    shared = [(m, rnd(B, C, H, W)) for m in si]
    accs = [rnd(B, C, H, W) if with_acc[t % len(with_acc)] else None for t in range(E)]
    return gamma, fused, shared, accs


def _leaves(gamma, fused, shared, accs):
    return [gamma] + [y for _, y in fused] + [y for _, y in shared] + [a for a in accs if a is not None]


def _run(fn, args, seed=1):
    out = fn(*args)
    g = torch.Generator().manual_seed(seed)
    grads_out = [torch.randn(o.shape, generator=g, dtype=o.dtype) for o in out]
    leaves = _leaves(*args)
    grads = torch.autograd.grad(out, leaves, grads_out)
    return [o.detach() for o in out], grads


CASES = [  # B, E, C, H, W, n_fused, n_shared, which targets have an accumulator
    (4, 4, 16, 28, 28, 1, 2, (False,)),    # exp1 source 0: sep conv fused, pool + identity shared
    (4, 3, 32, 14, 14, 1, 2, (True,)),
    (3, 2, 64, 7, 7, 2, 3, (True, False)),  # exp2-like: two fused convs, three shared
    (2, 1, 16, 9, 5, 1, 0, (True,)),       # one edge, no shared op, odd spatial size
    (2, 4, 12, 6, 6, 0, 2, (False, True)),  # no fused op; C not specialised in the kernel
    (2, 4, 16, 8, 8, 3, 0, (False,)),       # fused only (thesis_text's reduction edges)
]


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-12), (torch.float32, 1e-5)])
@pytest.mark.parametrize("case", CASES)
def test_kernel_equals_eager(ext, case, dtype, tol):
    args = _inputs(*case, dtype=dtype)
    (ka, kg), (ea, eg) = _run(kernels.mix, args), _run(mix_eager, args)
    assert len(ka) == len(ea) == case[1]
    for a, b in zip(ka, ea):
        assert a.is_contiguous(memory_format=CL)
        assert (a - b).abs().max().item() <= tol * max(1.0, b.abs().max().item())
    for a, b in zip(kg, eg):
        assert a.shape == b.shape
        assert (a - b).abs().max().item() <= tol * max(1.0, b.abs().max().item())


def test_kernel_takes_any_layout_and_broadcast_gamma(ext):
    """NCHW inputs are converted; a gamma of one row, expanded over the batch, gets the
    batch's summed gradient (as in SourceOps.forward for per-batch Gumbel samples)."""
    gamma, fused, shared, accs = _inputs(3, 4, 16, 10, 10, 1, 2, (True, False), torch.float64,
                                         fmt=torch.contiguous_format)
    row = gamma[:1].detach().clone().requires_grad_()
    out_k = kernels.mix(row.expand(3, -1, -1), fused, shared, accs)
    out_e = mix_eager(row, fused, shared, accs)
    loss_k = sum((o * (i + 1)).sum() for i, o in enumerate(out_k))
    loss_e = sum((o * (i + 1)).sum() for i, o in enumerate(out_e))
    gk, = torch.autograd.grad(loss_k, row)
    ge, = torch.autograd.grad(loss_e, row)
    assert max((a - b).abs().max().item() for a, b in zip(out_k, out_e)) < 1e-12
    assert (gk - ge).abs().max().item() < 1e-9 and gk.abs().max().item() > 0


def test_kernel_rejects_bad_input_with_a_clear_error(ext):
    gamma, fused, shared, accs = _inputs(2, 2, 16, 6, 6, 1, 1, (False,), torch.float32)
    bad = [(fused[0][0], fused[0][1][:, :20].contiguous(memory_format=CL))]   # not E*C channels
    with pytest.raises(RuntimeError, match="wrong shape"):
        kernels.mix(gamma, bad, shared, accs)


def _step(model, x, y, s):
    model.zero_grad(set_to_none=True)
    torch.manual_seed(5)
    out = model(x, s, 1.0, "gumbel")
    F.cross_entropy(out, y).backward()
    return out.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("experiment", ["exp1", "exp2"])
def test_supernet_with_and_without_kernel(ext, experiment, monkeypatch):
    """A whole training step of the supernet: the kernel against the eager mixture, in
    float64 (so only the summation order differs)."""
    cfg = config(experiment, "authors_code", "smoke")
    torch.manual_seed(0)
    model = build_model(cfg, 1).double().to(memory_format=CL).train()
    eager = copy.deepcopy(model)
    x = torch.randn(4, 1, 28, 28, dtype=torch.float64).contiguous(memory_format=CL)
    y = torch.randint(0, 10, (4,))
    s = torch.full((len(cfg["ops"]),), 1.0 / len(cfg["ops"]), dtype=torch.float64)
    calls = []
    real = kernels.mix
    monkeypatch.setattr(kernels, "mix", lambda *a: calls.append(1) or real(*a))
    out_k, grads_k = _step(model, x, y, s)
    assert len(calls) == 3 * 5                 # every source node of every cell
    monkeypatch.setattr(kernels, "usable", lambda *a: False)
    out_e, grads_e = _step(eager, x, y, s)
    assert (out_k - out_e).abs().max().item() < 1e-12
    assert grads_k.keys() == grads_e.keys() and len(grads_k) > 10
    for n in grads_k:
        assert (grads_k[n] - grads_e[n]).abs().max().item() < 1e-10 * max(1.0, grads_e[n].abs().max().item()), n


def test_setting_names_the_fix(monkeypatch):
    monkeypatch.setenv("HYPERNAS_KERNELS", "fast")
    with pytest.raises(ValueError, match="auto .*0 .*require"):
        kernels.setting()
    monkeypatch.setenv("HYPERNAS_KERNELS", "0")
    assert kernels.setting() == "off"


def test_ci_requires_the_kernel():
    """CI sets HYPERNAS_KERNELS=require: there the kernel must have built (a broken build
    must not pass quietly on the slower eager code)."""
    if os.environ.get("HYPERNAS_KERNELS") != "require":
        pytest.skip("HYPERNAS_KERNELS is not 'require' (CI sets it)")
    assert kernels.extension() is not None


@pytest.mark.parametrize("mode", ["auto", "require"])
def test_a_failed_build_warns_and_falls_back_or_raises(tmp_path, mode):
    """No working compiler: ``auto`` warns once and computes with the eager code,
    ``require`` raises an error that names the fix."""
    code = ("import warnings, torch, hypernas\n"
            "from hypernas.fast import kernels\n"
            "with warnings.catch_warnings(record=True) as w:\n"
            "    warnings.simplefilter('always')\n"
            "    x = torch.randn(2, 4, 5, 5)\n"
            "    print('usable', kernels.usable(x, 4))\n"
            "    print('warned', sum('eager code' in str(m.message) for m in w))\n")
    env = {**os.environ, "HYPERNAS_KERNELS": mode, "CXX": "/bin/false",
           "TORCH_EXTENSIONS_DIR": str(tmp_path)}    # no cached build to fall back on
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    if mode == "auto":
        assert r.returncode == 0, r.stderr
        assert "usable False" in r.stdout and "warned 1" in r.stdout
    else:
        assert r.returncode != 0
        assert "HYPERNAS_KERNELS=require" in r.stderr and "Install a C++ compiler" in r.stderr


@pytest.mark.parametrize("shape", [(4, 4, 28, 28), (3, 1, 9, 5), (2, 3, 7, 7)])
@pytest.mark.parametrize("fmt", [CL, torch.contiguous_format], ids=["cl", "nchw"])
def test_pointwise_equals_grouped_convolution(ext, shape, fmt):
    """Values, input and weight gradients of the grouped 1x1 kernel against torch's
    convolution in float64 (the kernel computes in float32)."""
    B, G, H, W = shape
    g = torch.Generator().manual_seed(3)
    x = torch.randn(B, G * 16, H, W, generator=g).contiguous(memory_format=fmt).requires_grad_()
    w = (torch.randn(G * 16, 16, 1, 1, generator=g) / 4).requires_grad_()
    dy = torch.randn(B, G * 16, H, W, generator=g)
    assert kernels.pointwise_usable(x, w, G)
    y = kernels.pointwise(x, w, G)
    dx, dw = torch.autograd.grad(y, (x, w), dy)
    x64, w64 = x.detach().double().requires_grad_(), w.detach().double().requires_grad_()
    y64 = F.conv2d(x64, w64, None, 1, 0, 1, G)
    dx64, dw64 = torch.autograd.grad(y64, (x64, w64), dy.double())
    assert y.is_contiguous(memory_format=CL)
    for a, b in ((y, y64), (dx, dx64), (dw, dw64)):
        assert a.shape == b.shape
        assert (a.double() - b).abs().max().item() <= 1e-5 * b.abs().max().item()


def test_pointwise_only_where_it_applies(ext):
    x = torch.randn(2, 32, 5, 5)
    assert kernels.pointwise_usable(x, torch.randn(32, 16, 1, 1), 2)
    assert not kernels.pointwise_usable(x, torch.randn(32, 32, 1, 1), 1)        # 32 per group: oneDNN
    assert not kernels.pointwise_usable(x.double(), torch.randn(32, 16, 1, 1).double(), 2)
    assert not kernels.pointwise_usable(x, torch.randn(32, 16, 3, 3), 2)        # not 1x1
    with kernels.disabled():
        assert not kernels.pointwise_usable(x, torch.randn(32, 16, 1, 1), 2)


def test_supernet_step_float32_uses_the_mixture_and_pointwise_kernels(ext, monkeypatch):
    """A float32 training forward of exp1's supernet (width 16) goes through the mixture and
    pointwise kernels and gives the eager code's logits within float32 rounding."""
    cfg = config("exp1", "authors_code", "smoke")
    torch.manual_seed(0)
    model = build_model(cfg, 1).to(memory_format=CL).train()
    eager = copy.deepcopy(model)
    x = torch.randn(8, 1, 28, 28).contiguous(memory_format=CL)
    s = torch.full((3,), 1 / 3)
    calls = {"mix": 0, "pointwise": 0}
    for name in calls:
        real = getattr(kernels, name)
        monkeypatch.setattr(kernels, name, lambda *a, _r=real, _n=name: calls.__setitem__(_n, calls[_n] + 1) or _r(*a))
    torch.manual_seed(5)
    a = model(x, s, 1.0, "gumbel")
    with kernels.disabled():
        torch.manual_seed(5)
        b = eager(x, s, 1.0, "gumbel")
    assert calls["mix"] == 15 and calls["pointwise"] == 2 * 5     # both pw convs of cell 0's 5 nodes
    assert (a - b).abs().max().item() < 1e-5 * max(1.0, b.abs().max().item())


@pytest.mark.parametrize("E,C,H,W,K", [(4, 16, 28, 28, 3), (3, 16, 9, 7, 3), (1, 32, 6, 6, 5), (2, 16, 5, 8, 5),
                                       (4, 64, 7, 7, 3), (2, 16, 1, 3, 3), (1, 16, 2, 1, 5)])
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("fmt", [CL, torch.contiguous_format], ids=["cl", "nchw"])
def test_depthwise_repeat_equals_convolution_of_copies(ext, E, C, H, W, K, stride, fmt):
    """Values, input and weight gradients of the depthwise kernel against torch's grouped
    convolution of ``cat([x] * E)`` in float64 (the kernel computes in float32); borders,
    odd and even sizes (at stride 2 an odd size has a last output row reading the border),
    one row, 5x5 taps wider than the image."""
    g = torch.Generator().manual_seed(E * 100 + H + 7 * stride)
    x = torch.randn(3, C, H, W, generator=g).contiguous(memory_format=fmt).requires_grad_()
    w = torch.randn(E * C, 1, K, K, generator=g).requires_grad_()
    x64, w64 = x.detach().double().requires_grad_(), w.detach().double().requires_grad_()
    y64 = F.conv2d(torch.cat([x64] * E, 1), w64, None, stride, K // 2, 1, E * C)
    dy = torch.randn(y64.shape, generator=g)
    assert kernels.depthwise_repeat_usable(x, w, stride)
    y = kernels.depthwise_repeat(x, w, stride)
    dx, dw = torch.autograd.grad(y, (x, w), dy)
    dx64, dw64 = torch.autograd.grad(y64, (x64, w64), dy.double())
    assert y.is_contiguous(memory_format=CL) and dx.is_contiguous(memory_format=CL)
    for a, b in ((y, y64), (dx, dx64), (dw, dw64)):
        assert a.shape == b.shape
        assert (a.double() - b).abs().max().item() <= 1e-5 * b.abs().max().item()


def test_depthwise_repeat_weight_without_gradient(ext):
    """A weight that needs no gradient (the pooling's ones) gets none, and the input's
    gradient is still right."""
    x = torch.randn(2, 16, 6, 6).contiguous(memory_format=CL).requires_grad_()
    ones = torch.ones(16, 1, 3, 3)
    dx, = torch.autograd.grad(kernels.depthwise_repeat(x, ones).sum(), x)
    ref, = torch.autograd.grad(F.conv2d(x, ones, None, 1, 1, 1, 16).sum(), x)
    assert (dx - ref).abs().max().item() < 1e-5


def test_depthwise_repeat_only_where_it_applies(ext):
    x = torch.randn(2, 16, 5, 5)
    w = torch.randn(64, 1, 3, 3)
    assert kernels.depthwise_repeat_usable(x, w, 1)
    assert kernels.depthwise_repeat_usable(x, w, 2)
    assert not kernels.depthwise_repeat_usable(x, w, 3)                       # stride 3: oneDNN
    assert not kernels.depthwise_repeat_usable(x, torch.randn(80, 1, 3, 3), 1)  # 5 copies
    assert not kernels.depthwise_repeat_usable(x, torch.randn(64, 1, 7, 7), 1)  # 7x7
    assert not kernels.depthwise_repeat_usable(torch.randn(2, 12, 5, 5), torch.randn(24, 1, 3, 3), 1)
    assert not kernels.depthwise_repeat_usable(x.double(), w.double(), 1)
    with kernels.disabled():
        assert not kernels.depthwise_repeat_usable(x, w, 1)


@pytest.mark.parametrize("experiment", ["exp1", "exp2"])
def test_supernet_step_float32_uses_the_depthwise_kernel(ext, experiment, monkeypatch):
    """A float32 training step of the supernet sends every depthwise convolution (both of
    each separable conv, the average pool's, at stride 1 and 2) through the kernel, and its
    logits and gradients are as close to a float64 step's as float32 itself allows.

    "As float32 allows" is measured, not assumed: the gradients of this step are
    ill-conditioned (non-affine BatchNorm at batch 8 cancels), so the eager float32 code
    moves by up to ~1e-2 of a gradient's scale when the input moves by one unit in the last
    place (CI's CPU put kernel-vs-eager at 6e-4 where this one put 1e-4).  The kernel must
    stay within three times the largest such move over six perturbed inputs; a wrong
    kernel is off by O(1).  The relaxation is the deterministic softmax."""
    from hypernas.fast.fused import FusedSepConv, SharedPool
    cfg = config(experiment, "authors_code", "smoke")
    torch.manual_seed(0)
    model = build_model(cfg, 1).to(memory_format=CL).train()
    ref = copy.deepcopy(model).double()
    x = torch.randn(8, 1, 28, 28).contiguous(memory_format=CL)
    s = torch.full((len(cfg["ops"]),), 1 / len(cfg["ops"]))
    calls = []
    real = kernels.depthwise_repeat
    monkeypatch.setattr(kernels, "depthwise_repeat", lambda *a: calls.append(1) or real(*a))
    expected = sum(2 if isinstance(op, FusedSepConv) else int(op.kind == "avg")
                   for op in model.modules() if isinstance(op, (FusedSepConv, SharedPool)))
    assert any(op.stride == 2 for op in model.modules() if isinstance(op, FusedSepConv))

    def step(m, x, use):
        with contextlib.nullcontext() if use else kernels.disabled():
            logits = m(x, s.to(x.dtype), 1.0, "softmax")
            grads = torch.autograd.grad(F.cross_entropy(logits, torch.arange(8)), list(m.parameters()),
                                        allow_unused=True)
        return logits.detach().double(), [g if g is None else g.double() for g in grads]

    want_logits, want = step(ref, x.double(), False)

    def error(got):
        return max((a - b).abs().max().item() / max(1.0, b.abs().max().item())
                   for a, b in zip(got, want) if b is not None)
    logits, grads = step(model, x, True)
    assert len(calls) == expected > 10
    calls.clear()
    eager_logits, eager = step(model, x, False)
    gen = torch.Generator().manual_seed(1)
    floor = max([error(eager)] + [error(step(model, x * (1 + 2 ** -23 * torch.randn(x.shape, generator=gen)), False)[1])
                                  for _ in range(6)])
    assert not calls                                                   # eager: no kernel
    scale = max(1.0, want_logits.abs().max().item())
    assert (logits - want_logits).abs().max().item() < 1e-5 * scale
    assert (eager_logits - want_logits).abs().max().item() < 1e-5 * scale
    assert error(grads) < 3 * floor + 1e-6, (error(grads), floor)
    assert floor < 5e-2


@pytest.mark.parametrize("conv,by_kernel", [
    (dict(in_channels=16, out_channels=16, kernel_size=1, bias=True), True),                          # pointwise
    (dict(in_channels=32, out_channels=32, kernel_size=3, padding=1, groups=32, bias=False), True),   # depthwise
    (dict(in_channels=16, out_channels=16, kernel_size=5, padding=2, groups=16, bias=True), True),
    (dict(in_channels=16, out_channels=16, kernel_size=3, padding=1, groups=16, stride=2), False),   # oneDNN
    (dict(in_channels=48, out_channels=16, kernel_size=1), False),                                    # oneDNN
    (dict(in_channels=16, out_channels=16, kernel_size=1, padding=1), False),                         # padded
], ids=["pw16", "dw3", "dw5-bias", "dw-stride2", "pw48", "pw16-padded"])
def test_derived_networks_kernel_conv_equals_conv2d(ext, conv, by_kernel, monkeypatch):
    """KernelConv2d (derived networks' convolutions) is nn.Conv2d with the same state,
    computed by the kernels where they apply and by oneDNN elsewhere."""
    from hypernas.fast.inference import KernelConv2d
    torch.manual_seed(0)
    ref = torch.nn.Conv2d(**conv)
    fast = copy.deepcopy(ref)
    fast.__class__ = KernelConv2d
    assert fast.state_dict().keys() == ref.state_dict().keys()
    calls = []
    for name in ("pointwise", "depthwise_repeat"):
        real = getattr(kernels, name)
        monkeypatch.setattr(kernels, name, lambda *a, _r=real: calls.append(1) or _r(*a))
    x = torch.randn(3, conv["in_channels"], 10, 10).contiguous(memory_format=CL)
    with torch.no_grad():
        a, b = fast(x), ref(x)
    assert a.shape == b.shape and (a - b).abs().max().item() < 1e-5 * max(1.0, b.abs().max().item())
    assert len(calls) == int(by_kernel)
