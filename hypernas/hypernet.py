"""The hypernetwork: complexity vector ``s`` -> architecture logits of every edge.

    w_r(s)   = softmax_r( sign * ||s - s_ref_r||^2 )          (sign = -1 in the text)
    alpha(s) = sum_r w_r(s) * alpha_ref_r                      (one alpha_ref per edge)

``reference_points`` (``m x k``) lie on the simplex; ``reference_logits`` hold one set of
logits per reference point, cell type (normal, reduce) and edge: ``(m, 2, edges, k)``.
The text keeps the points fixed and learns the logits; the authors' code learns both
(``randn`` init) and uses ``sign = +1``.
"""
from __future__ import annotations

import torch
from torch import nn

from .complexity import check_complexity


def rbf_weights(s: torch.Tensor, points: torch.Tensor, sign: float) -> torch.Tensor:
    """``softmax_r(sign * ||s - p_r||^2)`` over reference points ``points`` ``(m, k)``, for
    ``s`` of shape ``(k,)`` or ``(B, k)``; returns ``(..., m)``."""
    d2 = ((s.unsqueeze(-2) - points) ** 2).sum(-1)
    return torch.softmax(sign * d2, dim=-1)


def simplex_vertices_and_centre(k: int) -> torch.Tensor:
    """``k + 1`` fixed reference points: the simplex's vertices and its barycentre."""
    return torch.cat([torch.eye(k), torch.full((1, k), 1.0 / k)])


class HyperNetwork(nn.Module):
    def __init__(self, ops, n_edges: int = 14, n_cell_types: int = 2,
                 n_reference: int = 5, learn_points: bool = True, sign: float = -1.0,
                 init: str = "randn", init_scale: float = 1.0):
        super().__init__()
        self.ops = tuple(ops)
        k = len(self.ops)
        if sign not in (-1.0, 1.0, -1, 1):
            raise ValueError(f"sign must be -1 (thesis text) or +1 (authors' code), got {sign}")
        self.sign = float(sign)
        if init == "randn":
            points = torch.randn(n_reference, k)
        elif init == "simplex":
            points = simplex_vertices_and_centre(k)
            if n_reference != k + 1:
                raise ValueError(
                    f"init='simplex' places k + 1 = {k + 1} reference points; "
                    f"got n_reference={n_reference}")
        else:
            raise ValueError(f"unknown init {init!r}; choose 'randn' or 'simplex'")
        if learn_points:
            self.reference_points = nn.Parameter(points)
        else:
            self.register_buffer("reference_points", points)
        self.reference_logits = nn.Parameter(
            init_scale * torch.randn(n_reference, n_cell_types, n_edges, k))

    @property
    def k(self) -> int:
        return len(self.ops)

    def interpolation_weights(self, s: torch.Tensor) -> torch.Tensor:
        """``w_r(s)`` for ``s`` of shape ``(k,)`` or ``(B, k)``; returns ``(..., m)``."""
        return rbf_weights(s, self.reference_points, self.sign)

    def forward(self, s: torch.Tensor, check: bool = True) -> torch.Tensor:
        """Logits ``alpha(s)``: ``(2, edges, k)`` for one ``s``, ``(B, 2, edges, k)`` for a
        batch of them."""
        if check:
            s = check_complexity(s, self.ops)
        w = self.interpolation_weights(s)
        return torch.einsum("...r,rcek->...cek", w, self.reference_logits)
