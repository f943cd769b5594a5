"""Derived architectures: the discrete network for one ``s``, and its evaluation.

:class:`DerivedNetwork` runs only the chosen op on each edge, with the weights it
inherits from the trained supernet (no retraining).  Its BatchNorm statistics are
re-estimated on training images (:func:`recalibrate_bn`) before testing, since the
supernet's running statistics were collected under a mixture of ops.
"""
from __future__ import annotations

import copy
import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn

from . import ops as _ops
from .complexity import check_complexity
from .fast.inference import fold, take_relu, use_kernels
from .genotype import Genotype, cell_edges, op_counts, weight_count_of


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


def _batches(splits, x, y, n, batch, device):
    n = len(x) if n is None else min(n, len(x))
    for i in range(0, n, batch):
        xb = splits.normalize(x[i:min(i + batch, n)]).to(device).contiguous(memory_format=torch.channels_last)
        yield xb, y[i:min(i + batch, n)].to(device)


@torch.no_grad()
def recalibrate_bn(net, splits, n_images=2000, batch=250, device="cpu"):
    """Re-estimate every BatchNorm's running statistics on ``n_images`` training images
    (cumulative average over the batches)."""
    bns = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats(); m.momentum = None
    net.train()
    for xb, _ in _batches(splits, splits.x_train, splits.y_train, n_images, batch, device):
        net(xb)
    for m, mom in zip(bns, saved):
        m.momentum = mom
    return net.eval()


@torch.no_grad()
def accuracy(fn, splits, n_images=None, batch=100, device="cpu", split="test"):
    """Top-1 accuracy of ``fn`` on ``n_images`` of ``split``.  Batches of 100: on the
    2-core CPU a derived network evaluated 2,000 images in about 1.6 s at batch 100-250
    and 2.1-2.5 s at batch 500 (28x28 activations of 500 images no longer fit in cache)."""
    x, y = (splits.x_test, splits.y_test) if split == "test" else (splits.x_val, splits.y_val)
    correct = total = 0
    for xb, yb in _batches(splits, x, y, n_images, batch, device):
        correct += (fn(xb).argmax(1) == yb).sum().item()
        total += len(yb)
    return correct / total


@torch.no_grad()
def latency(net, shape, batch, repeats=20, device="cpu"):
    """Median seconds per image of ``net`` on random input of ``batch`` images."""
    x = torch.randn(batch, *shape, device=device).contiguous(memory_format=torch.channels_last)
    net.eval()
    for _ in range(2):
        net(x)
    times = []
    for _ in range(repeats):
        if x.is_cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        net(x)
        if x.is_cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) / batch


def derive_and_test(model, splits, s, bn_images, test_images, device="cpu"):
    """What a new ``s`` costs: its genotype, the derived network with BatchNorm
    re-estimated on ``bn_images`` training images, the network's inference copy
    (:meth:`DerivedNetwork.folded`) and that copy's accuracy on ``test_images``."""
    genotype = model.genotype(s)
    net = DerivedNetwork(model, genotype, s)
    recalibrate_bn(net, splits, bn_images, device=device)
    inference = net.folded()
    return genotype, net, inference, accuracy(inference, splits, test_images, device=device)


def evaluate(model, splits, s, cfg, device="cpu", final_temperature=None):
    """Everything the tables report for one complexity vector ``s``."""
    model.eval()
    s = check_complexity(s, model.ops).to(device)
    t0 = time.perf_counter()
    genotype, net, inference, acc = derive_and_test(model, splits, s, cfg["bn_images"],
                                                    cfg["test_images"], device)
    derive_s = time.perf_counter() - t0
    t = final_temperature if final_temperature is not None else 1.0
    soft = accuracy(lambda xb: model(xb, s, t, "softmax"), splits, cfg["test_images"], device=device)
    shape = tuple(splits.x_test.shape[1:])
    return dict(
        s=s.tolist(), genotype=dict(normal=list(genotype.normal), reduce=list(genotype.reduce)),
        test_acc=acc, soft_supernet_test_acc=soft,
        weights=weight_count_of(genotype, cfg["width"], cfg["n_cells"]),
        weights_measured=sum(p.numel() for c in net.cells for p in c.edge_ops.parameters()),
        op_counts=op_counts(genotype),
        latency_batch1_ms=1e3 * latency(inference, shape, 1, cfg["latency_repeats"], device),
        latency_batch256_ms_per_image=1e3 * latency(inference, shape, 256, max(3, cfg["latency_repeats"] // 5), device),
        derive_and_test_s=derive_s,
    )
