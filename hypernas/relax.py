"""The continuous relaxation: architecture weights gamma from logits alpha.

Three modes turn logits ``alpha`` (shape ``(..., k)``, one row per edge) into op weights:

* ``"gumbel"``: ``gamma ~ GumbelSoftmax(alpha, t)``, i.e. ``softmax((alpha + g) / t)``
  with ``g`` i.i.d. standard Gumbel, drawn with torch's own
  :class:`torch.distributions.RelaxedOneHotCategorical` (reparameterised, as in the
  authors' code).  Drawing one sample per image and edge (authors' code) or one per
  batch and edge (the text) is the caller's ``sample_shape`` (see
  :meth:`hypernas.model.HyperSupernet.gamma`, option ``per_image``).
* ``"softmax"``: the deterministic ``softmax(alpha / t)``.
* ``"discrete"``: the one-hot argmax, the derived architecture.

Temperature schedules (per epoch): the text's linear 1.0 -> 0.2 over the epochs and the
code's ``1.0 - 0.08 * epoch``, which we never let fall below ``floor``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

MODES = ("gumbel", "softmax", "discrete")


def gumbel_softmax(alpha: torch.Tensor, temperature: float, sample_shape=()) -> torch.Tensor:
    """Reparameterised Gumbel-Softmax sample(s) of ``alpha`` (``(..., k)``), of shape
    ``sample_shape + alpha.shape``: ``softmax((log_softmax(alpha) + g) / t)`` with
    ``g = -log(-log(u))``, ``u ~ U(0, 1)``.

    The arithmetic of ``torch.distributions.RelaxedOneHotCategorical(t, logits=alpha)
    .rsample(sample_shape)``, op for op (the same numbers from the same random state),
    without the distribution's argument checks: they read the logits back from a GPU
    every step, which stalls it and forbids capturing the step as a CUDA graph."""
    logits = alpha - alpha.logsumexp(dim=-1, keepdim=True)
    eps = torch.finfo(alpha.dtype).eps
    u = torch.rand(torch.Size(sample_shape) + alpha.shape, dtype=alpha.dtype,
                   device=alpha.device).clamp(min=eps, max=1 - eps)
    gumbels = -((-(u.log())).log())
    scores = (logits + gumbels) / torch.as_tensor(float(temperature))
    return (scores - scores.logsumexp(dim=-1, keepdim=True)).exp()


def op_weights(alpha: torch.Tensor, temperature: float, mode: str,
               sample_shape=()) -> torch.Tensor:
    """Op weights gamma for logits ``alpha`` under ``mode`` (see module docstring);
    ``sample_shape`` only matters for ``"gumbel"`` (independent samples)."""
    if mode == "gumbel":
        return gumbel_softmax(alpha, temperature, sample_shape)
    if mode == "softmax":
        return F.softmax(alpha / temperature, dim=-1)
    if mode == "discrete":
        return F.one_hot(alpha.argmax(-1), alpha.shape[-1]).to(alpha.dtype)
    raise ValueError(f"unknown mode {mode!r}; choose one of {MODES}")


def temperature(epoch: int, epochs: int, schedule: str = "linear",
                start: float = 1.0, end: float = 0.2, step: float = 0.08,
                floor: float = 0.2) -> float:
    """Temperature for ``epoch`` (0-based) of ``epochs``.

    ``linear`` (thesis text): ``start`` at the first epoch, ``end`` at the last.
    ``step`` (authors' code): ``start - step * epoch``, clamped at ``floor`` (the code
    itself has no floor and goes negative after 12 epochs).
    """
    if schedule == "linear":
        if epochs <= 1:
            return float(start)
        return float(start + (end - start) * epoch / (epochs - 1))
    if schedule == "step":
        return float(max(start - step * epoch, floor))
    raise ValueError(f"unknown temperature schedule {schedule!r}; choose 'linear' or 'step'")
