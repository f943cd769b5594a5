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
from .cost import cost
from .genotype import Genotype, cell_edges, derive
from .hypernet import HyperNetwork, rbf_weights
from .relax import MODES, op_weights
from .supernet import SearchNetwork


#: how the classifier depends on ``s`` (config key ``classifier``)
CLASSIFIERS = ("linear", "shared", "own")


class Classifier(nn.Module):
    """The final linear layer on pooled features, in one of three forms:

    * ``"linear"`` (thesis text): one ``nn.Linear``, the same for every ``s``;
    * ``"shared"``: ``W(s) = sum_r w_r(s) W_r``, ``b(s) = sum_r w_r(s) b_r`` with the
      architecture hypernetwork's interpolation weights ``w_r(s)`` (its reference points,
      trained by its optimiser); ``W_r, b_r`` start as ``nn.Linear``'s default;
    * ``"own"`` (the authors' code, ``HyperLinear``): ``W`` and ``b`` each have their own
      reference points, ``W(s) = sum_r v_r(s) W_r`` with
      ``v_r(s) = softmax_r(sign * ||s - p_r||^2)`` and ``b(s) = sum_r u_r(s) b_r`` with
      ``u_r(s) = softmax_r(sign * ||s - q_r||^2)``; points, ``W_r`` and ``b_r`` all start
      from N(0, 1) and are network weights (trained with them by SGD, under their weight
      decay and gradient clip).
    """

    def __init__(self, C_in, n_classes, form="linear", n_reference=0, k=0, sign=1.0):
        super().__init__()
        if form not in CLASSIFIERS:
            raise ValueError(f"unknown classifier {form!r}; choose one of {CLASSIFIERS}")
        self.form = form
        self.n_reference = n_reference if form != "linear" else 0
        self.sign = float(sign)
        if form == "shared":
            lin = [nn.Linear(C_in, n_classes) for _ in range(n_reference)]
            self.weight = nn.Parameter(torch.stack([m.weight.detach() for m in lin]))
            self.bias = nn.Parameter(torch.stack([m.bias.detach() for m in lin]))
        elif form == "own":
            self.weight = nn.Parameter(torch.randn(n_reference, n_classes, C_in))
            self.bias = nn.Parameter(torch.randn(n_reference, n_classes))
            self.weight_points = nn.Parameter(torch.randn(n_reference, k))
            self.bias_points = nn.Parameter(torch.randn(n_reference, k))
        else:
            self.linear = nn.Linear(C_in, n_classes)

    def weight_bias(self, s, hypernet):
        """``W(s)``, ``b(s)``: ``(out, in)``, ``(out,)`` for one ``s``; with a leading
        batch dimension for ``s`` of shape ``(B, k)``."""
        if self.form == "linear":
            return self.linear.weight, self.linear.bias
        if self.form == "shared":
            w_W = w_b = hypernet.interpolation_weights(s)
        else:
            w_W = rbf_weights(s, self.weight_points, self.sign)
            w_b = rbf_weights(s, self.bias_points, self.sign)
        W = torch.einsum("...r,rod->...od", w_W, self.weight)
        b = torch.einsum("...r,ro->...o", w_b, self.bias)
        return W, b

    def forward(self, h, s, hypernet):
        if self.form == "linear":
            return self.linear(h)
        W, b = self.weight_bias(s, hypernet)
        if W.dim() == 2:
            return h @ W.t() + b
        return torch.einsum("bd,bod->bo", h, W) + b


class HyperSupernet(nn.Module):
    def __init__(self, ops, C=16, n_cells=3, n_nodes=4, in_channels=1, n_classes=10,
                 n_reference=5, learn_points=True, rbf_sign=-1.0, reference_init="randn",
                 classifier="linear", per_image=True):
        super().__init__()
        self.net = SearchNetwork(ops, C, n_cells, n_nodes, in_channels)
        self.ops = self.net.ops
        self.per_image = per_image
        n_edges = len(cell_edges(n_nodes))
        self.hypernet = HyperNetwork(self.ops, n_edges, 2, n_reference, learn_points,
                                     rbf_sign, reference_init)
        self.classifier = Classifier(self.net.out_channels, n_classes, classifier, n_reference,
                                     len(self.ops), rbf_sign)
        # how many cells use each cell type (the cost's weights); not saved with the weights
        self.register_buffer("cell_counts", torch.tensor(self.net.cell_counts, dtype=torch.float32),
                             persistent=False)

    # -- optimiser groups (pt.darts style) -------------------------------------------
    def weights(self):
        """Network weights ``w``: stem, cells, classifier."""
        yield from self.net.parameters()
        yield from self.classifier.parameters()

    def hypernet_parameters(self):
        """Hypernetwork parameters ``a``: reference points (if learned) and logits."""
        yield from self.hypernet.parameters()

    # -- architecture ------------------------------------------------------------------
    def alpha(self, s, check: bool = True) -> torch.Tensor:
        """Logits ``alpha(s)``: ``(2, edges, k)`` or ``(B, 2, edges, k)``; ``check=False``
        skips the check that ``s`` lies on the simplex (training draws it there)."""
        return self.hypernet(s, check=check)

    def cost(self, alpha, s, temperature: float = 1.0, weights: str = "softmax_t") -> torch.Tensor:
        """The complexity cost of logits ``alpha`` under ``s`` summed over this network's
        cells (:func:`hypernas.cost.cost`)."""
        return cost(alpha, s, self.cell_counts, temperature, weights)

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
        return self.classifier(h, s, self.hypernet)

    def forward(self, x, s, temperature=1.0, mode="gumbel"):
        s = check_complexity(s, self.ops).to(x.device)
        if s.dim() == 2 and s.shape[0] != x.shape[0]:
            raise ValueError(f"got {s.shape[0]} complexity vectors for a batch of {x.shape[0]}")
        return self.run(x, s, self.alpha(s), temperature, mode)
