"""Candidate operations: one registry of constructors, one op type per name.

Two op sets live here side by side (see the reproduction notes in the book):

* the thesis text's: ``conv_3x3`` / ``conv_5x5`` (ReLU-Conv-BN), ``max_pool_3x3``,
  ``avg_pool_3x3`` and ``identity``;
* the authors' code's (DARTS): ``sep_conv_3x3`` / ``sep_conv_5x5``, ``avg_pool_3x3``
  (``count_include_pad=False``), ``max_pool_3x3`` and ``skip_connect``.

Every op maps ``C`` channels to ``C`` channels; on a stride-2 edge it halves the
resolution (identity becomes ``FactorizedReduce``).  During search all BatchNorms are
``affine=False`` and pools are followed by a BatchNorm, as in DARTS' search phase.

These per-edge modules are the *plain* implementation: the reference supernet in
:mod:`hypernas.reference` and the derived (discrete) networks are built from them.  The
fast supernet (:mod:`hypernas.supernet`) stores the same weights fused across edges and
exports them as these modules.
"""
from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import nn

#: op type of every registered op; the thesis counts ops per type
OP_TYPES = {
    "max_pool_3x3": "pool",
    "avg_pool_3x3": "pool",
    "identity": "identity",
    "skip_connect": "identity",
    "conv_3x3": "conv",
    "conv_5x5": "conv",
    "sep_conv_3x3": "conv",
    "sep_conv_5x5": "conv",
}
TYPE_ORDER = ("pool", "conv", "identity")


class ReLUConvBN(nn.Module):
    """ReLU -> Conv(k x k) -> BN: the thesis text's convolution op and DARTS' 1x1
    preprocessing (``StdConv``)."""

    def __init__(self, C_in, C_out, kernel_size, stride, padding, affine=False):
        super().__init__()
        self.net = nn.Sequential(
            nn.ReLU(inplace=False),
            nn.Conv2d(C_in, C_out, kernel_size, stride, padding, bias=False),
            nn.BatchNorm2d(C_out, affine=affine),
        )

    def forward(self, x):
        return self.net(x)


class DilConv(nn.Module):
    """ReLU -> depthwise k x k -> pointwise 1x1 -> BN."""

    def __init__(self, C_in, C_out, kernel_size, stride, padding, affine=False):
        super().__init__()
        self.net = nn.Sequential(
            nn.ReLU(inplace=False),
            nn.Conv2d(C_in, C_in, kernel_size, stride, padding, groups=C_in, bias=False),
            nn.Conv2d(C_in, C_out, 1, 1, 0, bias=False),
            nn.BatchNorm2d(C_out, affine=affine),
        )

    def forward(self, x):
        return self.net(x)


class SepConv(nn.Module):
    """DARTS' separable conv: two DilConv blocks, the first one carrying the stride."""

    def __init__(self, C_in, C_out, kernel_size, stride, padding, affine=False):
        super().__init__()
        self.net = nn.Sequential(
            DilConv(C_in, C_in, kernel_size, stride, padding, affine),
            DilConv(C_in, C_out, kernel_size, 1, padding, affine),
        )

    def forward(self, x):
        return self.net(x)


class PoolBN(nn.Module):
    """3x3 max or average pool followed by a non-affine BatchNorm (DARTS search)."""

    def __init__(self, kind, C, stride, affine=False):
        super().__init__()
        if kind == "max":
            self.pool = nn.MaxPool2d(3, stride, 1)
        else:
            self.pool = nn.AvgPool2d(3, stride, 1, count_include_pad=False)
        self.bn = nn.BatchNorm2d(C, affine=affine)

    def forward(self, x):
        return self.bn(self.pool(x))


class FactorizedReduce(nn.Module):
    """Halve the resolution with two 1x1 stride-2 convs on offset grids (identity on a
    stride-2 edge, and the preprocessing after a reduction cell)."""

    def __init__(self, C_in, C_out, affine=False):
        super().__init__()
        assert C_out % 2 == 0, "FactorizedReduce needs an even number of output channels"
        self.relu = nn.ReLU(inplace=False)
        self.conv1 = nn.Conv2d(C_in, C_out // 2, 1, 2, 0, bias=False)
        self.conv2 = nn.Conv2d(C_in, C_out // 2, 1, 2, 0, bias=False)
        self.bn = nn.BatchNorm2d(C_out, affine=affine)

    def forward(self, x):
        x = self.relu(x)
        return self.bn(torch.cat([self.conv1(x), self.conv2(x[:, :, 1:, 1:])], dim=1))


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
    first, ~10x slower on mismatched layouts) then pays for the mismatch."""

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


class SubsampledFactorizedReduce(FactorizedReduce):
    """The same function and state as :class:`FactorizedReduce`, faster on a CPU: the two
    1x1 convolutions read only the pixels they use (``x[::2, ::2]``, ``x[1::2, 1::2]``,
    gathered once by :func:`relu_subsample`) as one convolution of two groups at stride
    1, instead of strided convolutions over ``x`` and over a copy of ``x[1:, 1:]``.  Used
    by the fast supernet and by folded derived networks (whose convolutions carry the
    BatchNorm as a bias, ``bn`` an identity)."""

    def forward(self, x):
        w = torch.cat([self.conv1.weight, self.conv2.weight])
        b = None if self.conv1.bias is None else torch.cat([self.conv1.bias, self.conv2.bias])
        # a derived network takes the ReLU out (nn.Identity) when its input has it already
        z = relu_subsample(x, relu=isinstance(self.relu, nn.ReLU))
        return self.bn(F.conv2d(z, w, b, 1, 0, 1, 2))


class Identity(nn.Module):
    def forward(self, x):
        return x


def _identity(C, stride, affine):
    return Identity() if stride == 1 else FactorizedReduce(C, C, affine)


#: name -> constructor(C, stride, affine) -> nn.Module
OPS = {
    "max_pool_3x3": lambda C, stride, affine: PoolBN("max", C, stride, affine),
    "avg_pool_3x3": lambda C, stride, affine: PoolBN("avg", C, stride, affine),
    "identity": _identity,
    "skip_connect": _identity,
    "conv_3x3": lambda C, stride, affine: ReLUConvBN(C, C, 3, stride, 1, affine),
    "conv_5x5": lambda C, stride, affine: ReLUConvBN(C, C, 5, stride, 2, affine),
    "sep_conv_3x3": lambda C, stride, affine: SepConv(C, C, 3, stride, 1, affine),
    "sep_conv_5x5": lambda C, stride, affine: SepConv(C, C, 5, stride, 2, affine),
}


def check_ops(names) -> tuple:
    """Return ``names`` as a tuple, or raise one error listing the known ops."""
    names = tuple(names)
    unknown = [n for n in names if n not in OPS]
    if unknown:
        raise ValueError(
            f"unknown op(s) {unknown}; known ops are: {', '.join(sorted(OPS))}")
    if len(set(names)) != len(names):
        raise ValueError(f"op list {list(names)} names an op twice")
    return names


def make_op(name: str, C: int, stride: int, affine: bool = False) -> nn.Module:
    check_ops([name])
    return OPS[name](C, stride, affine)


def op_type(name: str) -> str:
    check_ops([name])
    return OP_TYPES[name]


def weight_count(name: str, C: int, stride: int) -> int:
    """Number of weights of op ``name`` at width ``C`` and ``stride`` (closed form).

    sep_conv_k: 2 (k^2 C + C^2); conv_k: k^2 C^2; identity at stride 2
    (FactorizedReduce): C^2; pools and identity at stride 1: 0.  BatchNorms in search
    are not affine and carry none.  A test checks this against the modules.
    """
    check_ops([name])
    t = OP_TYPES[name]
    if t == "pool":
        return 0
    if t == "identity":
        return 0 if stride == 1 else C * C
    k = int(name[-1])
    if name.startswith("sep_conv"):
        return 2 * (k * k * C + C * C)
    return k * k * C * C
