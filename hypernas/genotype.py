"""Derived architectures: genotypes, op counts and the thesis's weight-count convention.

A cell has 2 input nodes (0, 1) and ``n_nodes`` intermediate nodes; every pair ``i < j``
with ``j >= 2`` is an edge, in the order of DARTS: (0,2), (1,2), (0,3), (1,3), (2,3), ...
A :class:`Genotype` keeps the argmax op of *every* edge (the authors' code keeps all 14;
DARTS would keep the top 2 per node) for the normal and the reduction cell type.
"""
from __future__ import annotations

from collections import Counter, namedtuple

import torch

from .ops import OP_TYPES, TYPE_ORDER, weight_count

Genotype = namedtuple("Genotype", "normal reduce")


def cell_edges(n_nodes: int = 4):
    """List of edges ``(i, j)`` of a cell, DARTS order."""
    return [(i, j) for j in range(2, n_nodes + 2) for i in range(j)]


def derive(alpha: torch.Tensor, ops) -> Genotype:
    """Argmax op per edge of logits ``alpha`` (``(2, edges, k)``)."""
    if alpha.dim() != 3 or alpha.shape[0] != 2:
        raise ValueError(f"derive() needs the logits of one s, shape (2, edges, k); got {tuple(alpha.shape)}")
    idx = alpha.argmax(-1).tolist()
    return Genotype(tuple(ops[i] for i in idx[0]), tuple(ops[i] for i in idx[1]))


def op_counts(genotype: Genotype) -> dict:
    """Ops per type summed over the normal and the reduction genotype (14 + 14 = 28 for
    4 intermediate nodes), as in the thesis's tables."""
    c = Counter(OP_TYPES[op] for op in genotype.normal + genotype.reduce)
    return {t: c.get(t, 0) for t in TYPE_ORDER}


def cell_layout(n_cells: int = 3):
    """``[(is_reduction, width_multiplier)]`` for each cell: reduction cells at n//3 and
    2n//3, the width doubling at each (normal-reduce-reduce for n = 3)."""
    layout, mult = [], 1
    for i in range(n_cells):
        red = i in (n_cells // 3, 2 * n_cells // 3)
        if red:
            mult *= 2
        layout.append((red, mult))
    return layout


def weight_count_of(genotype: Genotype, C: int = 16, n_cells: int = 3) -> int:
    """The authors' parameter-count convention: the weights of the chosen op on each edge
    of every cell (stem, preprocessing and classifier excluded).  Together with the
    published op counts it fits 11 of the 12 published columns (all of Table 1, e.g.
    38304, 5120, 143488, 12320); Table 3's C fits only with its conv and identity counts
    swapped (:mod:`hypernas.audit`)."""
    edges = cell_edges(_n_nodes(len(genotype.normal)))
    total = 0
    for red, mult in cell_layout(n_cells):
        ops = genotype.reduce if red else genotype.normal
        for (i, _j), op in zip(edges, ops):
            total += weight_count(op, C * mult, 2 if (red and i < 2) else 1)
    return total


def _n_nodes(n_edges: int) -> int:
    n = 0
    while sum(range(2, n + 2)) < n_edges:
        n += 1
    if sum(range(2, n + 2)) != n_edges:
        raise ValueError(f"{n_edges} edges do not make a DARTS cell")
    return n
