"""The plain per-edge supernet (pt.darts' MixedOp), kept as the reference.

Each edge holds k separate op modules and computes ``sum_m gamma_m o_m(x)`` on its own.
It is built from a fast :class:`hypernas.supernet.SearchNetwork` by exporting every
edge's ops (so both hold the same weights) and exists to prove the fast one right
(tests) and to measure the speed-up (benchmark).
"""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from .genotype import cell_edges
from .ops import FactorizedReduce


class MixedOp(nn.Module):
    def __init__(self, ops):
        super().__init__()
        self.ops = nn.ModuleList(ops)

    def forward(self, x, gamma):
        """``gamma``: ``(B or 1, k)``; per-image weights broadcast over C, H, W."""
        g = gamma.reshape(gamma.shape[0], -1, 1, 1, 1)
        return sum(g[:, m] * op(x) for m, op in enumerate(self.ops))


class ReferenceCell(nn.Module):
    def __init__(self, fast_cell, cell_index, net):
        super().__init__()
        self.reduction, self.n_nodes = fast_cell.reduction, fast_cell.n_nodes
        self.pre0, self.pre1 = copy.deepcopy(fast_cell.pre0), copy.deepcopy(fast_cell.pre1)
        if isinstance(self.pre0, FactorizedReduce):
            self.pre0.__class__ = FactorizedReduce      # the plain DARTS op, same state
        k = len(net.ops)
        self.edges = cell_edges(self.n_nodes)
        self.mixed = nn.ModuleList(
            MixedOp([net.export_edge(cell_index, e, m) for m in range(k)])
            for e in range(len(self.edges)))

    def forward(self, s0, s1, gamma):
        states = [self.pre0(s0), self.pre1(s1)]
        for j in range(2, self.n_nodes + 2):
            states.append(sum(self.mixed[e](states[i], gamma[:, e])
                              for e, (i, jj) in enumerate(self.edges) if jj == j))
        return torch.cat(states[2:], dim=1)


class ReferenceNetwork(nn.Module):
    """Same interface as :class:`SearchNetwork`: ``forward(x, gamma) -> features``."""

    def __init__(self, fast):
        super().__init__()
        self.ops = fast.ops
        self.stem = copy.deepcopy(fast.stem)
        self.cells = nn.ModuleList(ReferenceCell(c, i, fast) for i, c in enumerate(fast.cells))
        self.train(fast.training)

    def forward(self, x, gamma, skip_zero=False):
        s0 = s1 = self.stem(x)
        for cell in self.cells:
            s0, s1 = s1, cell(s0, s1, gamma[:, int(cell.reduction)])
        return F.adaptive_avg_pool2d(s1, 1).flatten(1)


def reference_model(model):
    """A copy of a :class:`HyperSupernet` whose network is the per-edge reference."""
    ref = copy.deepcopy(model)
    ref.net = ReferenceNetwork(model.net)
    return ref
