"""The whole searchable model: supernet weights ``w`` + hypernetwork ``a``.

One forward API for every use::

    logits = model(x, s, temperature=t, mode="gumbel" | "softmax" | "discrete")

``s`` is one complexity vector ``(k,)`` (the same for the whole batch) or one per image
``(B, k)``.  ``mode`` picks how op weights come from the logits ``alpha(s)``
(:mod:`hypernas.relax`).  ``weights()`` / ``hypernet_parameters()`` split the parameters
into the two optimiser groups.
"""
from __future__ import annotations

import torch
from torch import nn

from .complexity import check_complexity
from .genotype import Genotype, cell_edges, derive
from .hypernet import HyperNetwork
from .relax import MODES, op_weights
from .supernet import SearchNetwork


class Classifier(nn.Module):
    """Linear classifier on pooled features; with ``from_s`` its weights are interpolated
    from ``s`` with the hypernetwork's weights ``w_r(s)`` (authors' code)."""

    def __init__(self, C_in, n_classes, n_reference=0):
        super().__init__()
        self.n_reference = n_reference
        if n_reference:
            lin = [nn.Linear(C_in, n_classes) for _ in range(n_reference)]
            self.weight = nn.Parameter(torch.stack([m.weight.detach() for m in lin]))
            self.bias = nn.Parameter(torch.stack([m.bias.detach() for m in lin]))
        else:
            self.linear = nn.Linear(C_in, n_classes)

    def forward(self, h, w_ref=None):
        if not self.n_reference:
            return self.linear(h)
        W = torch.einsum("...r,rod->...od", w_ref, self.weight)
        b = torch.einsum("...r,ro->...o", w_ref, self.bias)
        if W.dim() == 2:
            return h @ W.t() + b
        return torch.einsum("bd,bod->bo", h, W) + b


class HyperSupernet(nn.Module):
    def __init__(self, ops, C=16, n_cells=3, n_nodes=4, in_channels=1, n_classes=10,
                 n_reference=5, learn_points=True, rbf_sign=-1.0, reference_init="randn",
                 classifier_from_s=False, per_image=True):
        super().__init__()
        self.net = SearchNetwork(ops, C, n_cells, n_nodes, in_channels)
        self.ops = self.net.ops
        self.per_image = per_image
        n_edges = len(cell_edges(n_nodes))
        self.hypernet = HyperNetwork(self.ops, n_edges, 2, n_reference, learn_points,
                                     rbf_sign, reference_init)
        self.classifier = Classifier(self.net.out_channels, n_classes,
                                     n_reference if classifier_from_s else 0)

    # -- optimiser groups (pt.darts style) -------------------------------------------
    def weights(self):
        """Network weights ``w``: stem, cells, classifier."""
        yield from self.net.parameters()
        yield from self.classifier.parameters()

    def hypernet_parameters(self):
        """Hypernetwork parameters ``a``: reference points (if learned) and logits."""
        yield from self.hypernet.parameters()

    # -- architecture ------------------------------------------------------------------
    def alpha(self, s) -> torch.Tensor:
        """Logits ``alpha(s)``: ``(2, edges, k)`` or ``(B, 2, edges, k)``."""
        return self.hypernet(s)

    @torch.no_grad()
    def genotype(self, s) -> Genotype:
        s = check_complexity(s, self.ops)
        if s.dim() != 1:
            raise ValueError("genotype() takes one complexity vector s of shape (k,)")
        return derive(self.alpha(s.to(self.hypernet.reference_logits.device)), self.ops)

    def gamma(self, alpha, temperature, mode, batch_size):
        """Op weights ``(B or 1, 2, edges, k)`` from logits ``alpha``."""
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; choose one of {MODES}")
        if mode == "gumbel" and self.per_image and alpha.dim() == 3:
            return op_weights(alpha, temperature, mode, (batch_size,))
        g = op_weights(alpha, temperature, mode)
        return g if g.dim() == 4 else g.unsqueeze(0)

    def run(self, x, s, alpha, temperature=1.0, mode="gumbel"):
        """Forward with precomputed ``alpha = self.alpha(s)`` (training uses it twice)."""
        gamma = self.gamma(alpha, temperature, mode, x.shape[0])
        # in eval mode a discrete architecture skips the ops it does not use (in train
        # mode they still run, so every BatchNorm's running statistics stay updated)
        h = self.net(x, gamma, skip_zero=(mode == "discrete" and not self.training))
        w_ref = self.hypernet.interpolation_weights(s) if self.classifier.n_reference else None
        return self.classifier(h, w_ref)

    def forward(self, x, s, temperature=1.0, mode="gumbel"):
        s = check_complexity(s, self.ops).to(x.device)
        if s.dim() == 2 and s.shape[0] != x.shape[0]:
            raise ValueError(f"got {s.shape[0]} complexity vectors for a batch of {x.shape[0]}")
        return self.run(x, s, self.alpha(s), temperature, mode)
