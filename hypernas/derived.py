"""Derived architectures: the discrete network for one ``s``.

:class:`DerivedNetwork` runs only the chosen op on each edge, with the weights it
inherits from the trained supernet (no retraining).  How it is evaluated (BatchNorm
re-estimation, accuracy, latency) is :mod:`hypernas.evaluation`; its inference copy
(:meth:`DerivedNetwork.folded`) is :mod:`hypernas.fast.inference`.
"""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from . import ops as _ops
from .complexity import check_complexity
from .fast.inference import fold, take_relu, use_kernels
from .genotype import Genotype, cell_edges


class DerivedCell(nn.Module):
    """One cell with one op per edge.  The leading ReLU of the ops is taken out of them
    and computed once per node (``relu_edges``); the cell's inputs arrive with their
    ReLU applied (``pre0``/``pre1`` have theirs taken out too)."""

    def __init__(self, fast_cell, cell_index, net, ops_of_cell):
        super().__init__()
        self.reduction, self.n_nodes = fast_cell.reduction, fast_cell.n_nodes
        self.pre0, self.pre1 = copy.deepcopy(fast_cell.pre0), copy.deepcopy(fast_cell.pre1)
        assert take_relu(self.pre0) and take_relu(self.pre1)
        self.edges = cell_edges(self.n_nodes)
        self.edge_ops = nn.ModuleList(net.export_edge(cell_index, e, net.ops.index(op))
                                      for e, op in enumerate(ops_of_cell))
        self.relu_edges = [_ops.REGISTRY[name].relu_first and take_relu(op)
                           for name, op in zip(ops_of_cell, self.edge_ops)]

    def forward(self, s0, s1, r0=None, r1=None):
        """``r0``, ``r1``: ``relu(s0)``, ``relu(s1)`` when the caller has them."""
        r0 = F.relu(s0) if r0 is None else r0
        r1 = F.relu(s1) if r1 is None else r1
        states = [self.pre0(r0), self.pre1(r1)]
        relus = {}
        for j in range(2, self.n_nodes + 2):
            h, fresh = None, False
            for e, (i, jj) in enumerate(self.edges):
                if jj != j:
                    continue
                x = states[i]
                if self.relu_edges[e]:
                    if i not in relus:
                        relus[i] = F.relu(x)
                    x = relus[i]
                y = self.edge_ops[e](x)
                if h is None:
                    h = y
                elif fresh:       # a tensor this loop made: add in place
                    h = h.add_(y)
                else:             # h may be an input (identity edge): a new tensor
                    h, fresh = h + y, True
            states.append(h)
        return torch.cat(states[2:], dim=1)


class DerivedNetwork(nn.Module):
    """The discrete network of ``genotype``, inheriting ``model``'s weights; the
    classifier is fixed at ``s`` when its weights depend on s."""

    def __init__(self, model, genotype: Genotype, s):
        super().__init__()
        net = model.net
        self.genotype = genotype
        self.stem = copy.deepcopy(net.stem)
        self.cells = nn.ModuleList(
            DerivedCell(c, i, net, genotype.reduce if c.reduction else genotype.normal)
            for i, c in enumerate(net.cells))
        with torch.no_grad():
            W, b = model.classifier.weight_bias(s, model.hypernet)
            self.classifier = nn.Linear(W.shape[1], W.shape[0])
            self.classifier.weight.copy_(W)
            self.classifier.bias.copy_(b)
        use_kernels(self)
        self.to(next(model.parameters()).device).to(memory_format=torch.channels_last)

    def forward(self, x):
        s0 = s1 = self.stem(x)
        r0 = r1 = F.relu(s0)          # each cell output's ReLU, computed once for two cells
        for cell in self.cells:
            s0, s1 = s1, cell(s0, s1, r0, r1)
            r0, r1 = r1, F.relu(s1)
        return self.classifier(F.adaptive_avg_pool2d(s1, 1).flatten(1))

    def folded(self) -> "DerivedNetwork":
        """A copy for inference with every BatchNorm that follows a convolution folded
        into it (:func:`hypernas.fast.inference.fold`); equal to ``self.eval()`` up to
        float rounding, one pass over the activations fewer per convolution."""
        return fold(self)


def derive_network(model, s) -> DerivedNetwork:
    s = check_complexity(s, model.ops).to(next(model.parameters()).device)
    return DerivedNetwork(model, model.genotype(s), s).eval()
