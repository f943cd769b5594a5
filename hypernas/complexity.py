"""Complexity vectors ``s`` on the simplex: validation and uniform sampling."""
from __future__ import annotations

import math

import torch

from .errors import UserError

TOLERANCE = 1e-3


def check_complexity(s, ops, tol: float = TOLERANCE) -> torch.Tensor:
    """Return ``s`` as a float tensor of shape ``(k,)`` or ``(B, k)``, or raise one
    :class:`~hypernas.errors.UserError` (a ``ValueError``) naming ``k`` and the op order."""
    ops = tuple(ops)
    k = len(ops)
    how = (f"a complexity vector s must be a finite, non-negative vector of length k={k} "
           f"summing to 1 (within {tol}), one penalty per op in the order {list(ops)}")
    try:
        t = torch.as_tensor(s, dtype=torch.get_default_dtype()) if not torch.is_tensor(s) else s
    except (TypeError, ValueError) as err:
        raise UserError(f"{how}; got {s!r}") from err
    if not t.is_floating_point():
        t = t.to(torch.get_default_dtype())
    if t.dim() not in (1, 2) or t.shape[-1] != k:
        got = f"{len(t)} values {_values(t)}" if t.dim() == 1 else f"shape {tuple(t.shape)}"
        raise UserError(f"{how}; got {got}")
    with torch.no_grad():
        if not bool(torch.isfinite(t).all()):
            raise UserError(f"{how}; got non-finite values {_values(t)}")
        if bool((t < 0).any()):
            raise UserError(f"{how}; got negative values {_values(t)}")
        sums = t.sum(-1)
        if bool(((sums - 1).abs() > tol).any()):
            raise UserError(f"{how}; got sum(s) = {_values(sums)}")
    return t


def _values(t):
    """``t``'s values as a list, rounded for a message (float32 prints 0.2 as 0.2000000029...)."""
    return [round(v, 6) if isinstance(v, float) else _values(v) for v in t.tolist()] if t.dim() else round(t.item(), 6)


def sample_simplex(k: int, n: int | None = None, generator=None) -> torch.Tensor:
    """Uniform samples on the (k-1)-simplex (normalised i.i.d. exponentials =
    Dirichlet(1,...,1)); shape ``(k,)`` or ``(n, k)``."""
    shape = (k,) if n is None else (n, k)
    e = -torch.log(torch.rand(shape, generator=generator).clamp_min(torch.finfo(torch.float32).tiny))
    return e / e.sum(-1, keepdim=True)


def simplex_grid(k: int, steps: int) -> torch.Tensor:
    """All points of the simplex with coordinates in multiples of ``1/steps``."""
    if k == 1:
        return torch.ones(1, 1)
    rows = []

    def rec(prefix, left, depth):
        if depth == k - 1:
            rows.append(prefix + [left])
            return
        for v in range(left + 1):
            rec(prefix + [v], left - v, depth + 1)

    rec([], steps, 0)
    g = torch.tensor(rows, dtype=torch.get_default_dtype()) / steps
    assert len(g) == math.comb(steps + k - 1, k - 1)
    return g
