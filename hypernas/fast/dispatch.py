"""Kernel or eager: every place that picks a compiled CPU kernel (:mod:`hypernas.fast.kernels`)
or plain torch ops, in one module.  The two paths compute the same function up to float
rounding (tests compare them)."""
from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from . import kernels


@functools.lru_cache(maxsize=None)
def pool_inverse_count(H, W, stride, device, dtype):
    """``1 / count`` per output pixel of a 3x3 window with padding 1 on an ``H x W`` image,
    ``count`` being how many in-image pixels the window covers: the divisor of
    ``avg_pool_3x3`` (``count_include_pad=False``); shape ``(1, 1, H', W')``, cached."""
    ones = torch.ones(1, 1, H, W, device=device, dtype=dtype)
    return 1.0 / F.conv2d(ones, torch.ones(1, 1, 3, 3, device=device, dtype=dtype), stride=stride, padding=1)


def memory_format(x: torch.Tensor):
    """``torch.channels_last`` for a channels-last ``x`` (that is not also contiguous)."""
    cl = torch.channels_last
    return cl if x.is_contiguous(memory_format=cl) and not x.is_contiguous() else torch.contiguous_format


class _ReLUSubsample(torch.autograd.Function):
    """``cat([r[:, :, ::2, ::2], r[:, :, 1::2, 1::2]], 1)`` with ``r = relu(x)`` (or ``x``), contiguous in x's
    memory format, with a gradient in that format too: slicing's own backward returns an
    NCHW gradient for a channels-last ``x``, and every op after it (ReLU's backward
    first) then pays for the mismatch in a slower kernel."""

    @staticmethod
    def forward(ctx, x, relu):
        B, C, H, W = x.shape
        if H % 2 or W % 2:
            raise ValueError(f"FactorizedReduce needs an even height and width, got {H} x {W}")
        fmt = memory_format(x)
        z = torch.empty(B, 2 * C, H // 2, W // 2, dtype=x.dtype, device=x.device, memory_format=fmt)
        z[:, :C] = x[:, :, ::2, ::2]
        z[:, C:] = x[:, :, 1::2, 1::2]
        if relu:
            z.relu_()
        ctx.save_for_backward(z)
        ctx.shape, ctx.fmt, ctx.relu = x.shape, fmt, relu
        return z

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g):
        z, = ctx.saved_tensors
        C = ctx.shape[1]
        g = g.contiguous(memory_format=ctx.fmt)
        if ctx.relu:
            g = torch.ops.aten.threshold_backward(g, z, 0)
        dx = torch.empty(ctx.shape, dtype=g.dtype, device=g.device, memory_format=ctx.fmt).zero_()
        dx[:, :, ::2, ::2] = g[:, :C]
        dx[:, :, 1::2, 1::2] = g[:, C:]
        return dx, None


def relu_subsample(x: torch.Tensor, relu: bool = True) -> torch.Tensor:
    """ReLU (unless ``relu`` is False), then the two pixel grids FactorizedReduce reads
    (``x[::2, ::2]`` and ``x[1::2, 1::2]``) stacked on the channels: ``(B, 2C, H/2, W/2)``."""
    return _ReLUSubsample.apply(x, relu)


def depthwise(x, weight, stride):
    """``F.conv2d(torch.cat([x] * E, 1), weight, None, stride, K // 2, 1, E * C)`` for
    ``weight`` ``(E * C, 1, K, K)``: a depthwise convolution of ``E`` copies of ``x`` (one
    per outgoing edge), by the compiled kernel where it applies (CPUs), which reads ``x``
    once; oneDNN on the copies otherwise."""
    if kernels.depthwise_repeat_usable(x, weight, stride):
        return kernels.depthwise_repeat(x, weight, stride)
    copies = weight.shape[0] // x.shape[1]
    if copies > 1:
        x = torch.cat([x] * copies, 1)
    return F.conv2d(x, weight, None, stride, weight.shape[-1] // 2, 1, weight.shape[0])


def pointwise(x, weight, groups):
    """A grouped 1x1 convolution: the compiled kernel where it applies (CPUs, 16 channels
    per group), oneDNN otherwise."""
    if kernels.pointwise_usable(x, weight, groups):
        return kernels.pointwise(x, weight, groups)
    return F.conv2d(x, weight, None, 1, 0, 1, groups)


_POOL_ONES = {}


def avg_pool_3x3(x, stride):
    """``F.avg_pool2d(x, 3, stride, 1, count_include_pad=False)`` on a CPU as a depthwise
    convolution with weights 1, times ``1 / count`` (how many in-image pixels each window
    covers): the same function up to float rounding, and faster forward and backward than
    ATen's pooling loop (:func:`depthwise`).  Other devices pool."""
    if x.device.type != "cpu":
        return F.avg_pool2d(x, 3, stride, 1, count_include_pad=False)
    C = x.shape[1]
    if (C, x.dtype) not in _POOL_ONES:
        _POOL_ONES[C, x.dtype] = torch.ones(C, 1, 3, 3, dtype=x.dtype)
    return (depthwise(x, _POOL_ONES[C, x.dtype], stride)
            * pool_inverse_count(*x.shape[-2:], stride, x.device, x.dtype))


def conv2d(x, conv):
    """``conv(x)`` for an ``nn.Conv2d`` on the compiled kernels where they apply -- a
    16-channel 1x1 convolution, a stride-1 depthwise 3x3 or 5x5 -- or None (the caller
    runs ``nn.Conv2d``'s own forward)."""
    w = conv.weight
    plain = conv.stride == (1, 1) and conv.dilation == (1, 1) and conv.padding_mode == "zeros"
    if (plain and conv.groups == 1 and conv.kernel_size == (1, 1) and conv.padding == (0, 0)
            and kernels.pointwise_usable(x, w, 1)):
        y = kernels.pointwise(x, w, 1)
    elif (plain and conv.groups == conv.in_channels == conv.out_channels
          and conv.padding == (conv.kernel_size[0] // 2,) * 2 and kernels.depthwise_repeat_usable(x, w, 1)):
        y = kernels.depthwise_repeat(x, w)
    else:
        return None
    return y if conv.bias is None else y.add_(conv.bias.view(1, -1, 1, 1))   # y: the kernel's own output


def mix_eager(gamma, fused, shared, accs):
    """:func:`mix` in plain torch ops (GPUs, and CPUs without the compiled kernel, which
    computes the same)."""
    E = gamma.shape[1]
    out = None
    for m, y in fused:        # per-channel weights over the E parts at once
        g = gamma[:, :, m].repeat_interleave(y.shape[1] // E, dim=1)[:, :, None, None]
        out = g * y if out is None else torch.addcmul(out, g, y)
    parts = list(torch.split(out, out.shape[1] // E, 1)) if out is not None else [None] * E
    for t in range(E):
        for m, y in shared:
            g = gamma[:, t, m, None, None, None]
            parts[t] = g * y if parts[t] is None else torch.addcmul(parts[t], g, y)
    return [p if a is None else a + p for a, p in zip(accs, parts)]


def mix(x, C, gamma, fused, shared, accs):
    """One source node's op mixture: per outgoing edge ``t``, ``accs[t] + sum_m gamma[:, t,
    m] * y_m`` (see :meth:`hypernas.supernet.SourceOps.forward`); by the compiled kernel
    where it applies (CPUs, ``C`` channels per edge), :func:`mix_eager` otherwise."""
    if kernels.usable(x, C):
        return kernels.mix(gamma.expand(x.shape[0], -1, -1), fused, shared, accs)
    return mix_eager(gamma, fused, shared, accs)
