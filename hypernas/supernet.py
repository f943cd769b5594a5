"""The search network (supernet), computed fast.

The plain DARTS supernet runs every candidate op on every edge separately: 14 edges x k
ops per cell, each a handful of small kernel calls.  Here the cell is computed *per
source node* instead, with the same arithmetic: each op runs in its record's fused or
shared form (:mod:`hypernas.fast.fused`) for all edges leaving the node at once, and the
weighted sum over ops, added into every target node, is one call
(:func:`hypernas.fast.dispatch.mix`: a compiled kernel on CPUs, a few broadcast
multiply-adds elsewhere).

Weights are stored fused, but each edge's op can be exported as a plain
:mod:`hypernas.ops` module (:meth:`SourceOps.export`, strict keys): the reference
supernet (:mod:`hypernas.reference`) and derived networks (:mod:`hypernas.derived`) are
built that way, and tests check that the fast supernet equals the reference within 1e-5.
"""
from __future__ import annotations

import torch
from torch import nn

from . import ops as _ops
from .fast.dispatch import mix
from .fast.inference import SubsampledFactorizedReduce
from .genotype import cell_edges, cell_layout
from .ops import ReLUConvBN, check_ops


class SourceOps(nn.Module):
    """All candidate ops on all edges leaving one node of a cell."""

    def __init__(self, ops, C, source, targets, edge_ids, stride):
        super().__init__()
        self.source, self.targets, self.edge_ids, self.stride, self.C = source, targets, edge_ids, stride, C
        self.names = tuple(ops)
        E = len(targets)
        self.ops = nn.ModuleList(_ops.REGISTRY[o].build_fused(C, E, stride) for o in ops)
        for name, op in zip(self.names, self.ops):
            _ops.check_fused(name, op, C, E, stride)

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
        return mix(x, self.C, gamma, fused, shared, accs)

    def export(self, t, m):
        """The op ``m`` of the ``t``-th outgoing edge as a plain module."""
        return _ops.export(self.names[m], self.ops[m], t, self.C, self.stride)


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
