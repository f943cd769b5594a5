"""The complexity cost of an architecture under a complexity vector ``s``.

    Cost(gamma_bar; s) = sum_cells sum_edges sum_m gamma_bar_m s_m

with ``gamma_bar = softmax(alpha / t)`` (thesis text, justified there by Theorem 2.1) or
``softmax(alpha)`` (authors' code).  The sum runs over every cell of the network, so a
cell type used by several cells (the reduction genotype, in two cells for n = 3) counts
once per cell.  The loss adds ``kappa * Cost``.
"""
from __future__ import annotations

import torch


def cost(alpha: torch.Tensor, s: torch.Tensor, cell_counts, temperature: float = 1.0,
         weights: str = "softmax_t") -> torch.Tensor:
    """Cost of logits ``alpha`` (``(..., n_cell_types, edges, k)``) under ``s``
    (``(k,)`` or ``(B, k)``, matching ``alpha``'s leading dims).

    ``cell_counts[c]``: how many cells of the network use cell type ``c``.
    ``weights``: ``"softmax_t"`` (text: softmax(alpha/t)) or ``"softmax"`` (code).
    Returns a scalar, averaged over a batch of ``s`` if there is one.
    """
    if weights == "softmax_t":
        gamma_bar = torch.softmax(alpha / temperature, dim=-1)
    elif weights == "softmax":
        gamma_bar = torch.softmax(alpha, dim=-1)
    else:
        raise ValueError(f"unknown cost weights {weights!r}; choose 'softmax_t' or 'softmax'")
    counts = torch.as_tensor(cell_counts, dtype=alpha.dtype, device=alpha.device)
    per_type = (gamma_bar * s.unsqueeze(-2).unsqueeze(-2)).sum((-1, -2))  # (..., types)
    return (per_type * counts).sum(-1).mean()
