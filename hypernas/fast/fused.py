"""Fused and shared forms of the ops: all edges leaving one node of a supernet cell at once.

* a parameter-free op (a pool with its non-affine BatchNorm, the stride-1 identity) gives
  the same result on every edge leaving a node, so it is computed once per node and
  shared (``shared = True``; the per-edge BatchNorms would see identical inputs and keep
  identical running statistics, so one copy of them is exact);
* the convolutions of all ``E`` edges leaving a node read the same input, so they are
  fused into one wider call (depthwise convs as one grouped call over ``E * C``
  channels, the 1x1 convs as one grouped call with ``E`` groups, the BatchNorms as one
  over ``E * C``); the output is ``(B, E * C, H, W)``, one ``C``-channel part per edge;
* an op without a fused form runs as :class:`PerEdge`: its plain module once per edge.

Each form is named by its op's record (:class:`hypernas.ops.OpRecord`) and exports the
state of edge ``t`` as the plain op's state dict (:meth:`export_state`, same keys and
shapes; :func:`hypernas.ops.check_fused` checks it when a network is built).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .dispatch import avg_pool_3x3, depthwise, memory_format, pointwise, relu_subsample


def _uniform_(t: torch.Tensor, fan_in: int):
    """nn.Conv2d's default init (kaiming_uniform with a=sqrt(5)): U(-1/sqrt(fan_in), .)."""
    bound = 1.0 / math.sqrt(fan_in)
    with torch.no_grad():
        t.uniform_(-bound, bound)
    return t


class _BN(nn.Module):
    """Non-affine BatchNorm running statistics for ``n`` channels (F.batch_norm)."""

    def __init__(self, n: int):
        super().__init__()
        self.register_buffer("running_mean", torch.zeros(n))
        self.register_buffer("running_var", torch.ones(n))
        self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long))

    def forward(self, x):
        if self.training:
            self.num_batches_tracked.add_(1)
        return F.batch_norm(x, self.running_mean, self.running_var, None, None,
                            self.training, 0.1, 1e-5)

    def state(self, prefix: str, sl=slice(None)) -> dict:
        """The channels ``sl`` as a non-affine ``nn.BatchNorm2d``'s state under ``prefix``."""
        return {prefix + "running_mean": self.running_mean[sl], prefix + "running_var": self.running_var[sl],
                prefix + "num_batches_tracked": self.num_batches_tracked}


class SharedPool(nn.Module):
    """Pool + BN computed once per source node, shared by all its outgoing edges
    (exports as :class:`hypernas.ops.PoolBN`)."""
    shared = True

    def __init__(self, kind, C, stride):
        super().__init__()
        self.kind, self.C, self.stride = kind, C, stride
        self.bn = _BN(C)

    def forward(self, x):
        if self.kind == "max":
            y = F.max_pool2d(x, 3, self.stride, 1)
        else:
            y = avg_pool_3x3(x, self.stride)
        return self.bn(y)

    def export_state(self, t):
        return self.bn.state("bn.")


class SharedIdentity(nn.Module):
    """The stride-1 identity, shared by all outgoing edges (exports as :class:`hypernas.ops.Identity`)."""
    shared = True

    def forward(self, x):
        return x

    def export_state(self, t):
        return {}


class FusedSepConv(nn.Module):
    """``E`` SepConv ops (one per outgoing edge) as six kernel calls (exports as
    :class:`hypernas.ops.SepConv`)."""
    shared = False

    def __init__(self, C, E, stride, k):
        super().__init__()
        self.C, self.E, self.k, self.stride = C, E, k, stride
        self.dw1 = nn.Parameter(_uniform_(torch.empty(E * C, 1, k, k), k * k))
        self.pw1 = nn.Parameter(_uniform_(torch.empty(E * C, C, 1, 1), C))
        self.dw2 = nn.Parameter(_uniform_(torch.empty(E * C, 1, k, k), k * k))
        self.pw2 = nn.Parameter(_uniform_(torch.empty(E * C, C, 1, 1), C))
        self.bn1, self.bn2 = _BN(E * C), _BN(E * C)

    def forward(self, x):
        E = self.E
        h = depthwise(F.relu(x), self.dw1, self.stride)
        h = self.bn1(pointwise(h, self.pw1, E))
        h = depthwise(F.relu(h), self.dw2, 1)
        return self.bn2(pointwise(h, self.pw2, E))

    def export_state(self, t):
        sl = slice(t * self.C, (t + 1) * self.C)
        return {"net.0.net.1.weight": self.dw1[sl], "net.0.net.2.weight": self.pw1[sl],
                **self.bn1.state("net.0.net.3.", sl),
                "net.1.net.1.weight": self.dw2[sl], "net.1.net.2.weight": self.pw2[sl],
                **self.bn2.state("net.1.net.3.", sl)}


class FusedConv(nn.Module):
    """``E`` ReLU-Conv-BN ops (the thesis text's k x k convolution) as one call (exports
    as :class:`hypernas.ops.ReLUConvBN`)."""
    shared = False

    def __init__(self, C, E, stride, k):
        super().__init__()
        self.C, self.E, self.k, self.stride = C, E, k, stride
        self.weight = nn.Parameter(_uniform_(torch.empty(E * C, C, k, k), C * k * k))
        self.bn = _BN(E * C)

    def forward(self, x):
        h = F.conv2d(F.relu(x), self.weight, None, self.stride, self.k // 2)
        return self.bn(h)

    def export_state(self, t):
        sl = slice(t * self.C, (t + 1) * self.C)
        return {"net.1.weight": self.weight[sl], **self.bn.state("net.2.", sl)}


class FusedFactorizedReduce(nn.Module):
    """``E`` identities on stride-2 edges (FactorizedReduce) as two convs (exports as
    :class:`hypernas.ops.FactorizedReduce`)."""
    shared = False

    def __init__(self, C, E):
        super().__init__()
        self.C, self.E = C, E
        h = C // 2
        self.conv1 = nn.Parameter(_uniform_(torch.empty(E * h, C, 1, 1), C))
        self.conv2 = nn.Parameter(_uniform_(torch.empty(E * h, C, 1, 1), C))
        self.bn = _BN(E * C)

    def forward(self, x):
        E, h = self.E, self.C // 2
        # the convs read the pixels they use (see SubsampledFactorizedReduce), as one
        # convolution of two groups: channels (a_0 .. a_E-1, b_0 .. b_E-1) ...
        y = F.conv2d(relu_subsample(x), torch.cat([self.conv1, self.conv2]), None, 1, 0, 1, 2)
        # ... put in edge order (a_0, b_0, a_1, b_1, ...) by one copy in channels-last
        # order, whose backward is a channels-last copy too
        y = y.permute(0, 2, 3, 1).unflatten(3, (2, E, h)).transpose(3, 4).flatten(3).permute(0, 3, 1, 2)
        return self.bn(y.contiguous(memory_format=memory_format(x)))

    def export_state(self, t):
        h = self.C // 2
        return {"conv1.weight": self.conv1[t * h:(t + 1) * h], "conv2.weight": self.conv2[t * h:(t + 1) * h],
                **self.bn.state("bn.", slice(t * self.C, (t + 1) * self.C))}


class PerEdge(nn.Module):
    """The form of an op that has no fused one: its plain module once per edge, the
    outputs stacked on the channels ``(B, E * C, H, W)``."""
    shared = False

    def __init__(self, modules):
        super().__init__()
        self.edges = nn.ModuleList(modules)

    def forward(self, x):
        return torch.cat([m(x) for m in self.edges], 1)

    def export_state(self, t):
        return self.edges[t].state_dict()
