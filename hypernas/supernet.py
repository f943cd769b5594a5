"""The search network (supernet), computed fast.

The plain DARTS supernet runs every candidate op on every edge separately: 14 edges x k
ops per cell, each a handful of small kernel calls.  Here the cell is computed *per
source node* instead, with the same arithmetic:

* a parameter-free op (a pool with its non-affine BatchNorm, the stride-1 identity) gives
  the same result on every edge leaving a node, so it is computed once per node and
  shared (the per-edge BatchNorms would see identical inputs and keep identical running
  statistics, so one copy of them is exact);
* the convolutions of all edges leaving a node read the same input, so they are fused
  into one wider call (depthwise convs as one grouped call over ``E * C`` channels, the
  1x1 convs as one grouped call with ``E`` groups, the BatchNorms as one over ``E * C``);
* the weighted sum over ops, added into every target node, is one pass over the
  activations on CPUs (a compiled kernel, :mod:`hypernas.kernels`) and a few broadcast
  multiply-adds elsewhere (:func:`mix_eager`).

Weights are stored fused, but each edge's op can be exported as a plain
:mod:`hypernas.ops` module (:meth:`SourceOps.export`): the reference supernet
(:mod:`hypernas.reference`) and derived networks (:mod:`hypernas.derived`) are built that
way, and tests check that the fast supernet equals the reference within 1e-5.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from . import kernels
from .genotype import cell_edges, cell_layout
from .ops import (OP_TYPES, FactorizedReduce, PoolBN, ReLUConvBN, SepConv, SubsampledFactorizedReduce,
                  check_ops, memory_format, pool_inverse_count, relu_subsample)


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

    def copy_to(self, bn: nn.BatchNorm2d, sl=slice(None)):
        bn.running_mean.copy_(self.running_mean[sl])
        bn.running_var.copy_(self.running_var[sl])
        bn.num_batches_tracked.copy_(self.num_batches_tracked)


_POOL_ONES = {}


def avg_pool_3x3(x, stride):
    """``F.avg_pool2d(x, 3, stride, 1, count_include_pad=False)`` on a CPU as a depthwise
    convolution with weights 1, times ``1 / count`` (how many in-image pixels each window
    covers): the same function up to float rounding, and 2-4x faster forward and backward
    at 28x28 (:func:`depthwise` against ATen's pooling loop).  Other devices pool."""
    if x.device.type != "cpu":
        return F.avg_pool2d(x, 3, stride, 1, count_include_pad=False)
    C = x.shape[1]
    if (C, x.dtype) not in _POOL_ONES:
        _POOL_ONES[C, x.dtype] = torch.ones(C, 1, 3, 3, dtype=x.dtype)
    return (depthwise(x, _POOL_ONES[C, x.dtype], stride)
            * pool_inverse_count(*x.shape[-2:], stride, x.device, x.dtype))


class SharedPool(nn.Module):
    """Pool + BN computed once per source node, shared by all its outgoing edges."""
    shared = True

    def __init__(self, name, C, stride):
        super().__init__()
        self.name, self.C, self.stride = name, C, stride
        self.bn = _BN(C)

    def forward(self, x):
        if self.name == "max_pool_3x3":
            y = F.max_pool2d(x, 3, self.stride, 1)
        else:
            y = avg_pool_3x3(x, self.stride)
        return self.bn(y)

    def export(self, t):
        m = PoolBN("max" if self.name == "max_pool_3x3" else "avg", self.C, self.stride)
        self.bn.copy_to(m.bn)
        return m


class SharedIdentity(nn.Module):
    shared = True

    def forward(self, x):
        return x

    def export(self, t):
        from .ops import Identity
        return Identity()


def depthwise(x, weight, stride):
    """``F.conv2d(torch.cat([x] * E, 1), weight, None, stride, K // 2, 1, E * C)`` for
    ``weight`` ``(E * C, 1, K, K)``: a depthwise convolution of ``E`` copies of ``x`` (one
    per outgoing edge), by the
    compiled kernel where it applies (CPUs, :mod:`hypernas.kernels`), which reads ``x``
    once; oneDNN on the copies otherwise."""
    if kernels.depthwise_repeat_usable(x, weight, stride):
        return kernels.depthwise_repeat(x, weight, stride)
    copies = weight.shape[0] // x.shape[1]
    if copies > 1:
        x = torch.cat([x] * copies, 1)
    return F.conv2d(x, weight, None, stride, weight.shape[-1] // 2, 1, weight.shape[0])


def _pointwise(x, weight, groups):
    """A grouped 1x1 convolution: the compiled kernel where it applies (CPUs, 16 channels
    per group, :mod:`hypernas.kernels`), oneDNN otherwise."""
    if kernels.pointwise_usable(x, weight, groups):
        return kernels.pointwise(x, weight, groups)
    return F.conv2d(x, weight, None, 1, 0, 1, groups)


class FusedSepConv(nn.Module):
    """``E`` SepConv ops (one per outgoing edge) as six kernel calls."""
    shared = False

    def __init__(self, name, C, E, stride):
        super().__init__()
        k = int(name[-1])
        self.name, self.C, self.E, self.k, self.stride = name, C, E, k, stride
        self.dw1 = nn.Parameter(_uniform_(torch.empty(E * C, 1, k, k), k * k))
        self.pw1 = nn.Parameter(_uniform_(torch.empty(E * C, C, 1, 1), C))
        self.dw2 = nn.Parameter(_uniform_(torch.empty(E * C, 1, k, k), k * k))
        self.pw2 = nn.Parameter(_uniform_(torch.empty(E * C, C, 1, 1), C))
        self.bn1, self.bn2 = _BN(E * C), _BN(E * C)

    def forward(self, x):
        E = self.E
        h = depthwise(F.relu(x), self.dw1, self.stride)
        h = self.bn1(_pointwise(h, self.pw1, E))
        h = depthwise(F.relu(h), self.dw2, 1)
        return self.bn2(_pointwise(h, self.pw2, E))

    def export(self, t):
        C = self.C
        sl = slice(t * C, (t + 1) * C)
        m = SepConv(C, C, self.k, self.stride, self.k // 2)
        a, b = m.net[0].net, m.net[1].net
        with torch.no_grad():
            a[1].weight.copy_(self.dw1[sl]); a[2].weight.copy_(self.pw1[sl])
            b[1].weight.copy_(self.dw2[sl]); b[2].weight.copy_(self.pw2[sl])
        self.bn1.copy_to(a[3], sl)
        self.bn2.copy_to(b[3], sl)
        return m


class FusedConv(nn.Module):
    """``E`` ReLU-Conv-BN ops (the thesis text's k x k convolution) as one call."""
    shared = False

    def __init__(self, name, C, E, stride):
        super().__init__()
        k = int(name[-1])
        self.name, self.C, self.E, self.k, self.stride = name, C, E, k, stride
        self.weight = nn.Parameter(_uniform_(torch.empty(E * C, C, k, k), C * k * k))
        self.bn = _BN(E * C)

    def forward(self, x):
        h = F.conv2d(F.relu(x), self.weight, None, self.stride, self.k // 2)
        return self.bn(h)

    def export(self, t):
        C = self.C
        sl = slice(t * C, (t + 1) * C)
        m = ReLUConvBN(C, C, self.k, self.stride, self.k // 2)
        with torch.no_grad():
            m.net[1].weight.copy_(self.weight[sl])
        self.bn.copy_to(m.net[2], sl)
        return m


class FusedFactorizedReduce(nn.Module):
    """``E`` identities on stride-2 edges (FactorizedReduce) as two convs."""
    shared = False

    def __init__(self, name, C, E, stride):
        super().__init__()
        assert stride == 2
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

    def export(self, t):
        C, h = self.C, self.C // 2
        m = FactorizedReduce(C, C)
        with torch.no_grad():
            m.conv1.weight.copy_(self.conv1[t * h:(t + 1) * h])
            m.conv2.weight.copy_(self.conv2[t * h:(t + 1) * h])
        self.bn.copy_to(m.bn, slice(t * C, (t + 1) * C))
        return m


def _fused_op(name, C, E, stride):
    t = OP_TYPES[name]
    if t == "pool":
        return SharedPool(name, C, stride)
    if t == "identity":
        return SharedIdentity() if stride == 1 else FusedFactorizedReduce(name, C, E, stride)
    if name.startswith("sep_conv"):
        return FusedSepConv(name, C, E, stride)
    return FusedConv(name, C, E, stride)


def mix_eager(gamma, fused, shared, accs):
    """:meth:`SourceOps.forward`'s mixture in plain torch ops (GPUs, and CPUs without the
    compiled kernel of :mod:`hypernas.kernels`, which computes the same)."""
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


class SourceOps(nn.Module):
    """All candidate ops on all edges leaving one node of a cell."""

    def __init__(self, ops, C, source, targets, edge_ids, stride):
        super().__init__()
        self.source, self.targets, self.edge_ids, self.stride, self.C = source, targets, edge_ids, stride, C
        self.ops = nn.ModuleList(_fused_op(o, C, len(targets), stride) for o in ops)

    def forward(self, x, gamma, accs, skip_zero=False):
        """Every target's node sum after this node's edges are added: a list with, per
        outgoing edge ``t``, ``accs[t] + sum_m gamma[:, t, m] * op_m(x)`` (``accs[t]`` None
        when nothing has reached the target yet).

        ``gamma``: op weights of this node's edges, ``(B or 1, E, k)``.  The fused ops
        give ``(B, E*C, H, W)`` (one C-channel part per edge), the shared ones ``(B, C, H,
        W)`` for every edge.  ``skip_zero``: skip ops whose weight is zero on every edge."""
        fused, shared = [], []
        for m, op in enumerate(self.ops):
            if skip_zero and not bool(gamma[:, :, m].any()):
                continue
            (shared if op.shared else fused).append((m, op(x)))
        if not fused and not shared:
            return list(accs)
        if kernels.usable(x, self.C):
            return kernels.mix(gamma.expand(x.shape[0], -1, -1), fused, shared, accs)
        return mix_eager(gamma, fused, shared, accs)

    def export(self, t, m):
        """The op ``m`` of the ``t``-th outgoing edge as a plain module."""
        return self.ops[m].export(t)


class SearchCell(nn.Module):
    def __init__(self, ops, n_nodes, C_pp, C_p, C, reduction_p, reduction):
        super().__init__()
        self.reduction, self.n_nodes = reduction, n_nodes
        self.pre0 = SubsampledFactorizedReduce(C_pp, C) if reduction_p else ReLUConvBN(C_pp, C, 1, 1, 0)
        self.pre1 = ReLUConvBN(C_p, C, 1, 1, 0)
        edges = cell_edges(n_nodes)
        self.sources = nn.ModuleList()
        for i in range(n_nodes + 1):
            targets = [j for j in range(max(2, i + 1), n_nodes + 2)]
            ids = [edges.index((i, j)) for j in targets]
            stride = 2 if reduction and i < 2 else 1
            self.sources.append(SourceOps(ops, C, i, targets, ids, stride))

    def forward(self, s0, s1, gamma, skip_zero=False):
        """``gamma``: ``(B or 1, edges, k)`` op weights of this cell type."""
        states = [self.pre0(s0), self.pre1(s1)]
        acc = {}              # node j's sum over the edges computed so far
        for src in self.sources:
            x = states[src.source] if src.source < 2 else acc[src.source]
            if src.source >= 2:
                states.append(x)
            sums = src(x, gamma[:, src.edge_ids], [acc.get(j) for j in src.targets], skip_zero)
            acc.update((j, y) for j, y in zip(src.targets, sums) if y is not None)
        states.append(acc[self.n_nodes + 1])
        return torch.cat(states[2:], dim=1)


class SearchNetwork(nn.Module):
    """Stem -> ``n_cells`` search cells -> global average pooling -> features.

    The classifier lives in :class:`hypernas.model.HyperSupernet` (it may depend on s).
    """

    def __init__(self, ops, C=16, n_cells=3, n_nodes=4, in_channels=1, stem_multiplier=3):
        super().__init__()
        self.ops = check_ops(ops)
        self.C, self.n_cells, self.n_nodes, self.in_channels = C, n_cells, n_nodes, in_channels
        C_stem = stem_multiplier * C
        self.stem = nn.Sequential(nn.Conv2d(in_channels, C_stem, 3, 1, 1, bias=False),
                                  nn.BatchNorm2d(C_stem))
        C_pp, C_p, red_p = C_stem, C_stem, False
        self.cells = nn.ModuleList()
        for red, mult in cell_layout(n_cells):
            cell = SearchCell(self.ops, n_nodes, C_pp, C_p, C * mult, red_p, red)
            self.cells.append(cell)
            C_pp, C_p, red_p = C_p, n_nodes * C * mult, red
        self.out_channels = C_p

    @property
    def cell_counts(self):
        """How many cells use the normal and the reduction cell type."""
        n_red = sum(c.reduction for c in self.cells)
        return (len(self.cells) - n_red, n_red)

    def forward(self, x, gamma, skip_zero=False):
        """Features ``(B, out_channels)``; ``gamma``: ``(B or 1, 2, edges, k)``."""
        s0 = s1 = self.stem(x)
        for cell in self.cells:
            s0, s1 = s1, cell(s0, s1, gamma[:, int(cell.reduction)], skip_zero)
        # global average pooling; as a sum its gradient is an expanded view that keeps the
        # cells' channels-last layout (adaptive_avg_pool2d's and mean's are NCHW tensors)
        return s1.sum((2, 3)) * (1.0 / (s1.shape[2] * s1.shape[3]))

    def export_edge(self, cell_index: int, edge: int, op: int) -> nn.Module:
        """Op ``op`` of edge ``edge`` in cell ``cell_index`` as a plain module."""
        cell = self.cells[cell_index]
        for src in cell.sources:
            if edge in src.edge_ids:
                return src.export(src.edge_ids.index(edge), op)
        raise IndexError(f"cell has no edge {edge}")
