"""Faster drop-in forms of plain modules (same state dict, same function up to float
rounding) and the inference rewrite of a derived network.

* :class:`SubsampledFactorizedReduce`: FactorizedReduce whose 1x1 convolutions read only
  the pixels they use (the supernet's preprocessing after a reduction cell, folded
  derived networks);
* :class:`KernelConv2d`: ``nn.Conv2d`` on the compiled CPU kernels where they apply;
* :class:`AvgPoolBN`: average pooling and its BatchNorm as one depthwise convolution;
* :func:`take_relu`: take an op's leading ReLU out, so that ops reading one node share one
  ReLU pass;
* :func:`fold`: the inference copy of a derived network (BatchNorms folded into the
  convolutions, the forms above swapped in).
"""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval, fuse_conv_bn_weights

from ..ops import FactorizedReduce, PoolBN
from .dispatch import conv2d, pool_inverse_count, relu_subsample


class SubsampledFactorizedReduce(FactorizedReduce):
    """The same function and state as :class:`FactorizedReduce`, faster on a CPU: the two
    1x1 convolutions read only the pixels they use (``x[::2, ::2]``, ``x[1::2, 1::2]``,
    gathered once by :func:`~hypernas.fast.dispatch.relu_subsample`) as one convolution
    of two groups at stride 1, instead of strided convolutions over ``x`` and over a copy
    of ``x[1:, 1:]``.  Used by the fast supernet and by folded derived networks (whose
    convolutions carry the BatchNorm as a bias, ``bn`` an identity)."""

    def forward(self, x):
        w = torch.cat([self.conv1.weight, self.conv2.weight])
        b = None if self.conv1.bias is None else torch.cat([self.conv1.bias, self.conv2.bias])
        # a derived network takes the ReLU out (nn.Identity) when its input has it already
        z = relu_subsample(x, relu=isinstance(self.relu, nn.ReLU))
        return self.bn(F.conv2d(z, w, b, 1, 0, 1, 2))


class KernelConv2d(nn.Conv2d):
    """``nn.Conv2d`` (same weights and state) that runs on the compiled CPU kernels where
    they apply (:func:`hypernas.fast.dispatch.conv2d`) and as ``nn.Conv2d`` elsewhere.  A
    derived network's separable convolutions at width 16 are such shapes, which oneDNN
    runs slowly."""

    def forward(self, x):
        y = conv2d(x, self)
        return super().forward(x) if y is None else y


class AvgPoolBN(nn.Module):
    """``avg_pool_3x3`` (``count_include_pad=False``) and its BatchNorm, for inference:
    one depthwise 3x3 convolution whose weights are the BatchNorm's scale, times
    ``1 / count`` (how many in-image pixels each window covers), plus the BatchNorm's
    shift.  The same function as ``PoolBN.eval()`` up to float rounding, and faster on
    a CPU (oneDNN's depthwise convolution against ATen's pooling loop)."""

    def __init__(self, pool_bn: PoolBN):
        super().__init__()
        bn, C = pool_bn.bn, pool_bn.bn.num_features
        scale = 1.0 / torch.sqrt(bn.running_var + bn.eps)
        if bn.weight is not None:
            scale = scale * bn.weight
        shift = -bn.running_mean * scale + (bn.bias if bn.bias is not None else 0.0)
        self.register_buffer("weight", scale.detach().view(C, 1, 1, 1).expand(C, 1, 3, 3).contiguous())
        self.register_buffer("shift", shift.detach().view(1, C, 1, 1))
        self.stride, self.C = pool_bn.pool.stride, C

    def forward(self, x):
        y = F.conv2d(x, self.weight, None, self.stride, 1, 1, self.C)
        return y.mul_(pool_inverse_count(*x.shape[-2:], self.stride, x.device, x.dtype)).add_(self.shift)


def take_relu(op: nn.Module) -> bool:
    """Replace ``op``'s first submodule, when it is a ReLU, by an identity (the caller
    applies the ReLU, once per input tensor); True if it did.  Only for ops whose first
    submodule is a ReLU applied to the input (:attr:`hypernas.ops.OpRecord.relu_first`)."""
    parent, name = None, None
    for qualified, m in op.named_modules():
        if not list(m.children()):        # the first leaf
            if not isinstance(m, nn.ReLU):
                return False
            *path, name = qualified.split(".")
            parent = op.get_submodule(".".join(path))
            break
    if parent is None:
        return False
    if isinstance(parent, nn.Sequential):
        parent[int(name)] = nn.Identity()
    else:
        setattr(parent, name, nn.Identity())
    return True


def use_kernels(net: nn.Module) -> nn.Module:
    """Run every plain ``nn.Conv2d`` of ``net`` as :class:`KernelConv2d` (same object and state)."""
    for m in net.modules():
        if type(m) is nn.Conv2d:
            m.__class__ = KernelConv2d
    return net


def _fuse_part(conv, bn, sl):
    """``conv`` followed by the channels ``sl`` of ``bn``, as one conv with a bias."""
    fused = copy.deepcopy(conv)
    w, b = (t[sl] if t is not None else None for t in (bn.weight, bn.bias))
    fused.weight, fused.bias = fuse_conv_bn_weights(
        fused.weight, fused.bias, bn.running_mean[sl], bn.running_var[sl], bn.eps, w, b)
    return fused


def fold(net: nn.Module) -> nn.Module:
    """An inference copy of ``net`` (a derived network) with every BatchNorm that follows
    a convolution folded into it (``w * gamma / sigma``, a bias), FactorizedReduce as
    :class:`SubsampledFactorizedReduce` and every average pool with its BatchNorm as
    :class:`AvgPoolBN`; equal to ``net.eval()`` up to float rounding."""
    net = copy.deepcopy(net).eval()
    for m in list(net.modules()):
        if isinstance(m, nn.Sequential):
            for i in range(len(m) - 1):
                if isinstance(m[i], nn.Conv2d) and isinstance(m[i + 1], nn.BatchNorm2d):
                    m[i] = fuse_conv_bn_eval(m[i], m[i + 1])
                    m[i + 1] = nn.Identity()
        elif isinstance(m, FactorizedReduce):
            h = m.conv1.out_channels
            m.conv1 = _fuse_part(m.conv1, m.bn, slice(0, h))
            m.conv2 = _fuse_part(m.conv2, m.bn, slice(h, 2 * h))
            m.bn = nn.Identity()
            m.__class__ = SubsampledFactorizedReduce
    for parent in list(net.modules()):
        for name, child in parent.named_children():
            if isinstance(child, PoolBN) and isinstance(child.pool, nn.AvgPool2d):
                setattr(parent, name, AvgPoolBN(child))
    return net
