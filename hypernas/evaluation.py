"""The evaluation protocol: BatchNorm re-estimation, accuracy and latency, for the
supernet's validation during training (:meth:`hypernas.train.Trainer.validate`), the
tables' derived networks (:func:`evaluate`) and the family sweep (:mod:`hypernas.family`).

A derived network's BatchNorm statistics are re-estimated on training images
(:func:`recalibrate_bn`) before testing, since the supernet's running statistics were
collected under a mixture of ops; it is then tested as its inference copy
(:meth:`~hypernas.derived.DerivedNetwork.folded`).
"""
from __future__ import annotations

import statistics
import time

import torch
from torch import nn

from .complexity import check_complexity
from .derived import DerivedNetwork
from .genotype import op_counts, weight_count_of


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
    """Top-1 accuracy of ``fn`` on the first ``n_images`` (None: all) of ``split`` ("test"
    or "val"), in batches of ``batch`` (100 by default: why, the performance page)."""
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


def recalibrated(model, splits, genotype, s, bn_images, device="cpu"):
    """The derived network of ``genotype`` (classifier at ``s``) with BatchNorm
    re-estimated on ``bn_images`` training images, and its inference copy."""
    net = DerivedNetwork(model, genotype, s)
    recalibrate_bn(net, splits, bn_images, device=device)
    return net, net.folded()


def derive_and_test(model, splits, s, bn_images, test_images, device="cpu"):
    """What a new ``s`` costs: its genotype, the derived network with BatchNorm
    re-estimated on ``bn_images`` training images, the network's inference copy
    (:meth:`~hypernas.derived.DerivedNetwork.folded`) and that copy's accuracy on ``test_images``."""
    genotype = model.genotype(s)
    net, inference = recalibrated(model, splits, genotype, s, bn_images, device)
    return genotype, net, inference, accuracy(inference, splits, test_images, device=device)


@torch.no_grad()
def supernet_accuracy(model, splits, s, temperature, n_images=None, batch=100, device="cpu", split="test"):
    """Accuracy of the soft supernet (``softmax`` op weights at ``temperature``) at ``s``;
    ``model`` is evaluated in eval mode and left in the mode it was in."""
    training = model.training
    model.eval()
    try:
        return accuracy(lambda xb: model(xb, s, temperature, "softmax"), splits, n_images, batch, device, split)
    finally:
        model.train(training)


def evaluate(model, splits, s, cfg, device="cpu", final_temperature=None):
    """Everything the tables report for one complexity vector ``s``."""
    model.eval()
    s = check_complexity(s, model.ops).to(device)
    t0 = time.perf_counter()
    genotype, net, inference, acc = derive_and_test(model, splits, s, cfg["bn_images"],
                                                    cfg["test_images"], device)
    derive_s = time.perf_counter() - t0
    t = final_temperature if final_temperature is not None else 1.0
    soft = supernet_accuracy(model, splits, s, t, cfg["test_images"], device=device)
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
