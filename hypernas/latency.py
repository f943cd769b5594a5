"""Latency on a device: a table of measured parts, and an architecture's latency as their sum.

A derived network (:meth:`hypernas.derived.DerivedNetwork.folded`, the form inference
runs) is a stem, ``n_cells`` cells and a classifier.  :func:`profile` times, on the
current device, every candidate op at every place it can sit and every part that does
not depend on the genotype; :func:`predicted_latency_ms` adds them up for a genotype:

    T(g, B) = sum_fixed F_p(B)
            + sum_cells k sum_edges e  E(k, stride(e), op_e(g), B)
            + sum_cells k sum_nodes i  [some edge leaving i reads ReLU(i)] * R(k, stride(i), B)

* ``E(k, s, op, B)``: the op as the folded network runs it (BatchNorm folded into the
  convolutions, :class:`~hypernas.fast.inference.KernelConv2d`, ``AvgPoolBN``,
  ``SubsampledFactorizedReduce`` for the identity on a stride-2 edge), *without* its
  leading ReLU.  Positions: ``cell<k>/s1`` (a normal cell's edges, and a reduction cell's
  edges between intermediate nodes, at the cell's output resolution) and ``cell<k>/s2``
  (a reduction cell's edges leaving its input nodes 0 and 1, at the input resolution).
  Edges at one position run the same module on the same shape, so one entry serves all.
* ``R(k, s, B)``: the ReLU of one node.  :class:`~hypernas.derived.DerivedCell` takes the
  leading ReLU out of the ops and computes it once per source node, when at least one
  edge leaving that node has an op that reads it (convolutions, and the identity on a
  stride-2 edge, FactorizedReduce); pools and the stride-1 identity read the node
  itself.  So the ReLU is charged per source node, not per edge nor as a fixed part;
  which ops read it is recorded in the table (``relu_inputs``).
* fixed parts ``F_p``: ``stem`` (its convolution and the ReLU of its output, computed once
  for the first two cells), for every cell ``cell<k>/pre0`` and ``cell<k>/pre1`` (1x1
  ReLU-Conv-BN without its ReLU, or FactorizedReduce when the cell before reduced),
  ``cell<k>/glue`` and ``cell<k>/out_relu`` (the ReLU of the cell's output, which the
  network computes once for the next two cells -- after the last cell too), then
  ``classifier`` (global average pooling and the linear layer).  ``glue`` is the rest of
  :meth:`DerivedCell.forward`: the Python loop over the edges, the node sums (``j - 1``
  additions into node ``j``) and the concatenation of the intermediate nodes.  It is
  measured as the real cell with every op (``pre0``, ``pre1`` and the edges) replaced by
  an identity, on inputs at the output resolution, minus ``n_edges + 2`` times the cost
  of calling one identity module (``call_ms``, timed on a 1-element tensor).
* onnxruntime: every part is timed as its own graph, so every part carries one
  ``session.run`` overhead that the whole network pays once: there the table stores every
  part minus ``call_ms`` (a one-``Identity``-node graph run on a 1-element tensor; clamped
  at 0) and adds one fixed part ``session`` (= ``call_ms``).  The stride-1 identity is no
  node of an exported network (its input is wired through), so its entries are 0 there.

Protocol: random weights and random inputs (latency does not depend on the values;
inputs of ops that read a ReLU are non-negative, as in the network), ``torch.no_grad``,
channels-last tensors as the derived network uses (onnxruntime: NCHW arrays).  For each
batch size, ``warmup`` rounds and then ``repeats`` rounds; in each round every part is
called once, in a fresh random order (so that a busy machine's slow stretches spread over
all parts, and each call finds the cache as other parts left it, as in the network), and
each call is timed alone with ``time.perf_counter`` (CUDA: synchronised before and
after).  Reported: median, 10th and 90th percentile in **milliseconds per call on a batch
of B images** (not per image).  The compiled CPU kernels (:mod:`hypernas.fast.kernels`) are
used where the network uses them (torch runtime); onnxruntime runs each part exported by
:func:`export_onnx`'s route (kernels disabled, plain ops; FactorizedReduce in its
strided-convolution form), with ``intra_op_num_threads = threads`` and
``inter_op_num_threads = 1``, dynamic batch axis.

What the sum misses: cross-part effects -- in eager torch, whether the previous op's
output is still in cache, the allocator's state, the few Python statements of
``DerivedNetwork.forward`` between cells; on onnxruntime much more: the whole graph is
optimised at once (Conv+Add/ReLU fusion, one NCHWc layout kept across convolutions where
each part alone converts its input and output, one memory plan), so there the sum
over-counts, by about 1.2-3x on a 2-core EPYC.  Every table therefore carries a
``validation`` section: the whole network with one op on every edge, timed end to end,
next to the table's sum for it.  On a busy machine a long call is interrupted more often
than a short one, so medians of whole networks grow faster than medians of parts.  On
CUDA, synchronising around every part adds a launch latency per part that an
asynchronous whole network overlaps, so the sum over-counts there too (the CUDA path is
small and untested on this machine).

Table layout (plain JSON, written by :func:`write_table`)::

    {"format": "hypernas-latency-table/1",
     "device": "cpu-amd-epyc-1thread", "runtime": "torch" | "onnxruntime" | "cuda", "threads": 1,
     "provenance": {"processor", "threads", "torch", "onnxruntime", "onnx", "hypernas",
                    "commit", "date", "wall_s", "cpu_kernels", "load_average"},
     "protocol": {"warmup", "repeats", "batches": [1, 64], "timer": "perf_counter",
                  "statistic": "median", "spread": "p10, p90", "unit": ..., "order": ..., ...},
     "ops": ["max_pool_3x3", ...],
     "networks": {"<dataset>": {
         "dataset", "in_channels", "image_size", "width", "n_cells", "n_nodes",
         "entries":     {"1": {"cell0/s1/sep_conv_3x3": {"median_ms", "p10_ms", "p90_ms"}, ...}, "64": ...},
         "relu":        {"1": {"cell0/s1": {...}, "cell1/s2": {...}, ...}, "64": ...},
         "relu_inputs": {"cell0/s1": ["sep_conv_3x3", ...], "cell1/s2": [..., "skip_connect"], ...},
         "fixed":       {"1": {"stem": {...}, "cell0/pre0": {...}, ..., "classifier": {...}}, "64": ...},
         "call_ms":     {"1": {...}, "64": {...}},
         "validation":  {"1": {"sep_conv_3x3": {"predicted_ms", "measured_median_ms",
                                                "measured_p10_ms", "measured_p90_ms"}, ...}, ...}}}}

One file per device (runtime and thread count), holding one network geometry per data
set it was measured for (``--dataset all``: both); :func:`check_table` and
:func:`predicted_latency_ms` pick the section of ``cfg["dataset"]``.

The device's complexity vector (:func:`table_complexity`): the thesis's cost is linear in
``s``, ``Cost = sum_cells sum_edges sum_m gamma_m s_m`` with one ``s_m`` for every edge,
so the ``s`` whose penalty is proportional to a genotype's latency (up to the fixed
parts, and up to how latency varies between positions) has ``s_m`` proportional to op
``m``'s latency summed over all edges of all cells:
``cost_m = T(all edges m, B) - sum_fixed F_p(B)`` (its node ReLUs included) and
``s_m = cost_m / sum_j cost_j``.
"""
from __future__ import annotations

import contextlib
import copy
import io
import json
import math
import os
import platform
import random
import re
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .errors import UserError
from .files import replacing, write_json

from .fast import kernels
from .fast.inference import AvgPoolBN, SubsampledFactorizedReduce
from .genotype import Genotype, cell_edges, cell_layout
from .fast.dispatch import pool_inverse_count
from .ops import OPS, FactorizedReduce, Identity, check_ops
from .presets import OP_SETS

FORMAT = "hypernas-latency-table/1"
RUNTIMES = ("torch", "onnxruntime", "cuda")
#: every op of every preset's op sets (the 5-op sets' orders first)
ALL_OPS = tuple(dict.fromkeys([*(op for sets in OP_SETS.values() for op in sets[max(sets)]),
                               *(op for sets in OP_SETS.values() for ops in sets.values() for op in ops)]))
DEVICES_DIR = Path(__file__).resolve().parent.parent / "results" / "devices"
_STAT_KEYS = ("median_ms", "p10_ms", "p90_ms")
_NETWORK_KEYS = ("dataset", "in_channels", "image_size", "width", "n_cells", "n_nodes",
                 "entries", "relu", "relu_inputs", "fixed", "call_ms")


class TableError(UserError):
    """A latency table file that cannot be used (missing, not JSON, wrong format, incomplete)."""


class TableMismatch(UserError):
    """A latency table measured for another network than the one asked about."""


# -- naming -------------------------------------------------------------------------------

def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def _slug(text: str) -> str:
    text = re.sub(r"\((r|tm)\)|\bcpu\b|\bprocessor\b|@", " ", text.lower())
    return re.sub(r"[^a-z0-9]+", "-", text).strip("-") or "unknown"


def _check_runtime(runtime):
    if runtime not in RUNTIMES:
        raise ValueError(f"unknown runtime {runtime!r}; choose one of {', '.join(RUNTIMES)}")
    if runtime == "cuda" and not torch.cuda.is_available():
        raise ValueError("runtime 'cuda' needs a CUDA device, and torch sees none here; "
                         "use --runtime torch or --runtime onnxruntime")
    if runtime == "onnxruntime":
        try:
            import onnxruntime  # noqa: F401
        except ImportError as err:
            raise ValueError(f"runtime 'onnxruntime' needs the onnxruntime package ({err}); "
                             "install it with `pip install onnxruntime onnx`") from None


def _threads(threads):
    if threads is None:
        return torch.get_num_threads()
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads must be a positive whole number, got {threads!r}")
    return threads


def device_name(runtime: str = "torch", threads=None) -> str:
    """``cpu-amd-epyc-1thread``, ``onnxruntime-cpu-amd-epyc-2threads``, ``cuda-nvidia-h200``:
    the runtime, the processor (``/proc/cpuinfo``'s model name) and the thread count."""
    if runtime not in RUNTIMES:
        raise ValueError(f"unknown runtime {runtime!r}; choose one of {', '.join(RUNTIMES)}")
    if runtime == "cuda":
        name = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "unknown"
        return f"cuda-{_slug(name)}"
    n = _threads(threads)
    cpu = f"cpu-{_slug(_cpu_model())}-{n}thread{'s' if n != 1 else ''}"
    return cpu if runtime == "torch" else f"{runtime}-{cpu}"


def default_path(runtime: str = "torch", threads=None) -> Path:
    """``results/devices/<device_name>.json``."""
    return DEVICES_DIR / f"{device_name(runtime, threads)}.json"


def positions(n_cells: int = 3):
    """``[(cell, stride, key)]``: every place an op can sit (``key`` = ``cell<k>/s<stride>``)."""
    out = []
    for k, (red, _mult) in enumerate(cell_layout(n_cells)):
        for stride in ((2, 1) if red else (1,)):
            out.append((k, stride, f"cell{k}/s{stride}"))
    return out


def fixed_keys(n_cells: int = 3, runtime: str = "torch"):
    keys = ["stem"]
    for k in range(n_cells):
        keys += [f"cell{k}/pre0", f"cell{k}/pre1", f"cell{k}/glue", f"cell{k}/out_relu"]
    keys.append("classifier")
    if runtime == "onnxruntime":
        keys.append("session")
    return keys


# -- the parts of a network -----------------------------------------------------------------

class _Stem(nn.Module):
    def __init__(self, stem):
        super().__init__()
        self.stem = stem

    def forward(self, x):
        return F.relu(self.stem(x))


class _ReLU(nn.Module):
    def forward(self, x):
        return F.relu(x)


class _Head(nn.Module):
    def __init__(self, classifier):
        super().__init__()
        self.classifier = classifier

    def forward(self, x):
        return self.classifier(F.adaptive_avg_pool2d(x, 1).flatten(1))


class _Glue(nn.Module):
    """A cell with every op an identity: what is left is its loop, sums and concatenation."""

    def __init__(self, cell):
        super().__init__()
        cell = copy.deepcopy(cell)
        cell.pre0, cell.pre1 = Identity(), Identity()
        cell.edge_ops = nn.ModuleList(Identity() for _ in cell.edge_ops)
        cell.relu_edges = [False] * len(cell.edge_ops)
        self.cell = cell

    def forward(self, a, b):
        return self.cell(a, b, a, b)


class _AvgPoolBNConst(AvgPoolBN):
    """``AvgPoolBN`` with ``1 / count`` a constant for one input size: traced as it is, the
    export would compute it from the input's shape on every run."""

    def forward(self, x):
        return F.conv2d(x, self.weight, None, self.stride, 1, 1, self.C) * self.inverse_count + self.shift


def _exportable(module: nn.Module, args) -> nn.Module:
    """A copy of ``module`` (run on ``args``) that the ONNX exporter traces faithfully and
    well: ``SubsampledFactorizedReduce`` fills a tensor in place inside an autograd
    function, which tracing records as a constant, so it goes back to ``FactorizedReduce``
    (the same function and weights); ``AvgPoolBN`` gets its ``1 / count`` as a constant."""
    module = copy.deepcopy(module).cpu().eval()
    sizes = {}
    hooks = [m.register_forward_pre_hook(lambda m, a: sizes.__setitem__(m, tuple(a[0].shape[-2:])))
             for m in module.modules() if isinstance(m, AvgPoolBN)]
    with kernels.disabled(), torch.no_grad():
        module(*args)
    for h in hooks:
        h.remove()
    for m in module.modules():
        if isinstance(m, SubsampledFactorizedReduce):
            m.__class__ = FactorizedReduce
        elif m in sizes:
            m.register_buffer("inverse_count", pool_inverse_count(*sizes[m], m.stride, torch.device("cpu"),
                                                                  m.weight.dtype).clone())
            m.__class__ = _AvgPoolBNConst
    return module


def _distinct_ops(ops):
    """``{op: op measured for it}``: ops built by one constructor (``identity`` and
    ``skip_connect``) are the same module and are measured once."""
    rep = {}
    for op in ops:
        rep[op] = next(o for o in ops if OPS[o] is OPS[op])
    return rep


def _build_parts(dataset, width, n_cells, n_nodes, ops, device):
    """``[(section, key, module, input shapes without the batch, relu'd input)]`` and the
    network section's static facts."""
    from .data import DATASETS
    from .derived import DerivedNetwork
    from .model import HyperSupernet
    facts = DATASETS[dataset]
    in_ch, size = facts["channels"], facts["size"]
    rep = _distinct_ops(ops)
    measured = list(dict.fromkeys(rep.values()))
    model = HyperSupernet(measured, width, n_cells, n_nodes, in_ch, facts["classes"],
                          classifier="linear").eval()
    n_edges = len(cell_edges(n_nodes))
    s = torch.full((len(measured),), 1.0 / len(measured))
    nets = {op: DerivedNetwork(model, Genotype((op,) * n_edges, (op,) * n_edges), s).folded()
            for op in measured}
    base = nets[measured[0]]
    # shapes: run the network once with hooks on every cell
    seen = {}
    hooks = [c.register_forward_hook(lambda m, args, out, k=k: seen.__setitem__(k, (args, out)))
             for k, c in enumerate(base.cells)]
    with torch.no_grad():
        base(torch.randn(1, in_ch, size, size).contiguous(memory_format=torch.channels_last))
    for h in hooks:
        h.remove()
    edges = cell_edges(n_nodes)
    parts = [("fixed", "stem", _Stem(base.stem), [(in_ch, size, size)], False)]
    node_in = None
    for k, cell in enumerate(base.cells):
        (s0, s1, r0, r1), out = seen[k]
        with torch.no_grad():
            node_in = tuple(cell.pre1(r1).shape[1:])          # nodes 0, 1
        node_out = (node_in[0],) + tuple(out.shape[2:])       # intermediate nodes
        parts += [("fixed", f"cell{k}/pre0", cell.pre0, [tuple(r0.shape[1:])], True),
                  ("fixed", f"cell{k}/pre1", cell.pre1, [tuple(r1.shape[1:])], True),
                  ("fixed", f"cell{k}/glue", _Glue(cell), [node_out, node_out], False),
                  ("fixed", f"cell{k}/out_relu", _ReLU(), [tuple(out.shape[1:])], False)]
        for kk, stride, pos in positions(n_cells):
            if kk != k:
                continue
            e = next(e for e, (i, _j) in enumerate(edges) if (stride == 2) == (cell.reduction and i < 2))
            shape = node_in if stride == 2 else node_out
            parts.append(("relu", pos, _ReLU(), [shape], False))
            for op in measured:
                c = nets[op].cells[k]
                parts.append(("entries", f"{pos}/{op}", c.edge_ops[e], [shape], c.relu_edges[e]))
        if k == len(base.cells) - 1:
            parts.append(("fixed", "classifier", _Head(base.classifier), [tuple(out.shape[1:])], False))
    parts.append(("call", "call", Identity(), [(1, 1, 1)], False))   # one number, at batch 1 always
    section = dict(dataset=dataset, in_channels=in_ch, image_size=size, width=width,
                   n_cells=n_cells, n_nodes=n_nodes)
    parts = [(sec, key, m.to(device).eval(), shapes, relu) for sec, key, m, shapes, relu in parts]
    return parts, section, rep, {op: n.to(device).eval() for op, n in nets.items()}


# -- timing -----------------------------------------------------------------------------------

def _stats(seconds):
    p10, p50, p90 = np.percentile(np.asarray(seconds) * 1e3, [10, 50, 90])
    return dict(median_ms=float(p50), p10_ms=float(p10), p90_ms=float(p90))


def _time_round_robin(calls: dict, repeats: int, warmup: int, sync=None, seed=0):
    """Median / p10 / p90 of single timed calls, every callable once per round, in a
    fresh random order each round."""
    rng = random.Random(seed)
    keys = list(calls)
    times = {k: [] for k in keys}
    for r in range(warmup + repeats):
        rng.shuffle(keys)
        for k in keys:
            fn = calls[k]
            if sync:
                sync()
            t0 = time.perf_counter()
            fn()
            if sync:
                sync()
            dt = time.perf_counter() - t0
            if r >= warmup:
                times[k].append(dt)
    return {k: _stats(v) for k, v in times.items()}


@contextlib.contextmanager
def _torch_threads(n):
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _ort_session(model_bytes_or_path, threads):
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    return ort.InferenceSession(model_bytes_or_path, so, providers=["CPUExecutionProvider"])


def _export(module, args, f, names=None, out="out"):
    """Export ``module(*args)`` with inputs ``names`` (default ``in0, in1, ...``) and
    output ``out``, batch dynamic."""
    names = names or [f"in{i}" for i in range(len(args))]
    axes = {n: {0: "batch"} for n in names + [out]}
    with kernels.disabled(), torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        args = tuple(a.cpu() for a in args)
        torch.onnx.export(_exportable(module, args), args, f, dynamo=False,
                          input_names=names, output_names=[out], dynamic_axes=axes)


def _ort_call(sess, arrays):
    names = {i.name for i in sess.get_inputs()}   # the exporter drops unused inputs
    feeds = {f"in{i}": a for i, a in enumerate(arrays) if f"in{i}" in names}
    return lambda: sess.run(None, feeds)


def _inputs(shapes, batch, relu, device, gen):
    xs = []
    for shape in shapes:
        x = torch.randn((batch,) + tuple(shape), generator=gen)
        if relu:
            x = x.relu_()
        xs.append(x.to(device).contiguous(memory_format=torch.channels_last))
    return xs


# -- profile ------------------------------------------------------------------------------------

def check_settings(dataset, runtime, threads, batches, repeats, warmup, width, n_cells, n_nodes, ops):
    """:func:`profile`'s arguments, validated and resolved (datasets, threads, batches, ops),
    or ``ValueError`` saying what to give instead; nothing is measured."""
    from .data import DATASETS
    datasets = sorted(DATASETS) if dataset == "all" else (
        [dataset] if isinstance(dataset, str) else list(dataset))
    for d in datasets:
        if d not in DATASETS:
            raise ValueError(f"unknown dataset {d!r}; choose one of {', '.join(sorted(DATASETS))} or all")
    _check_runtime(runtime)
    threads = _threads(threads)
    batches = [batches] if isinstance(batches, int) else list(batches)
    if not batches or any(isinstance(b, bool) or not isinstance(b, int) or b < 1 for b in batches):
        raise ValueError(f"batches must be positive whole numbers, got {batches!r}")
    batches = sorted(set(batches))
    for name, v, low in (("repeats", repeats, 1), ("warmup", warmup, 0), ("n_cells", n_cells, 1),
                         ("n_nodes", n_nodes, 1)):
        if isinstance(v, bool) or not isinstance(v, int) or v < low:
            raise ValueError(f"{name} must be a whole number >= {low}, got {v!r}")
    if isinstance(width, bool) or not isinstance(width, int) or width < 2 or width % 2:
        raise ValueError(f"width must be an even whole number >= 2 (FactorizedReduce halves it), got {width!r}")
    ops = check_ops(ALL_OPS if ops is None else ops)
    if not ops:
        raise ValueError("ops is empty; give at least one op")
    return datasets, threads, batches, ops


def profile(dataset="fashion_mnist", runtime="torch", threads=None, batches=(1, 64), repeats=50,
            warmup=10, width=16, n_cells=3, n_nodes=4, ops=None, seed=0) -> dict:
    """Measure the latency table of this device (layout and protocol: the module's
    docstring).  ``dataset``: a name, a list of names or ``"all"``; ``ops``: default
    :data:`ALL_OPS`; ``threads``: default torch's current thread count."""
    datasets, threads, batches, ops = check_settings(dataset, runtime, threads, batches, repeats,
                                                      warmup, width, n_cells, n_nodes, ops)
    t_start = time.perf_counter()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    device = torch.device("cuda" if runtime == "cuda" else "cpu")
    sync = torch.cuda.synchronize if runtime == "cuda" else None
    gen = torch.Generator().manual_seed(seed)
    networks, whole = {}, {}
    torch_state = torch.random.get_rng_state()
    torch.manual_seed(seed)   # the random weights; restored below
    try:
        with _torch_threads(threads), torch.no_grad():
            for ds in datasets:
                networks[ds], whole[ds] = _profile_network(ds, runtime, threads, batches, repeats, warmup,
                                                           width, n_cells, n_nodes, ops, device, sync, gen, seed)
    finally:
        torch.random.set_rng_state(torch_state)
    table = dict(
        format=FORMAT, device=device_name(runtime, threads), runtime=runtime, threads=threads,
        provenance=_provenance(runtime, threads, time.perf_counter() - t_start, load),
        protocol=dict(
            warmup=warmup, repeats=repeats, batches=batches, timer="perf_counter", statistic="median",
            spread="p10_ms, p90_ms (10th and 90th percentile)",
            unit="milliseconds per call on a batch of B images (not per image)",
            order="round robin: every part called once per round, in a fresh random order; "
                  "each call timed alone" + (", CUDA synchronised before and after" if sync else ""),
            inputs="random, channels-last (onnxruntime: NCHW arrays); non-negative where the op "
                   "reads a ReLU; weights random, BatchNorm folded (DerivedNetwork.folded)",
            relu="charged once per source node with an op that reads it (relu_inputs)",
            glue="DerivedCell.forward with identity ops, minus (edges + 2) x call_ms: loop, node "
                 "sums, concatenation" if runtime != "onnxruntime" else
                 "the cell's sums and concatenation as one graph, minus call_ms",
            onnxruntime=("every part minus call_ms (one session.run of an Identity graph on a "
                         "1-element tensor; clamped at 0), plus one fixed part 'session'; the "
                         "stride-1 identity costs 0 (no node in an exported network); "
                         "intra_op_num_threads = threads, inter_op_num_threads = 1"
                         if runtime == "onnxruntime" else None),
            same_module=sorted(f"{op} = {r}" for op, r in _distinct_ops(ops).items() if op != r)),
        ops=list(ops), networks=networks)
    n_edges = len(cell_edges(n_nodes))
    for ds, net in networks.items():
        cfg = dict(dataset=ds, ops=list(ops), width=width, n_cells=n_cells, n_nodes=n_nodes)
        net["validation"] = {str(b): {op: dict(
            predicted_ms=predicted_latency_ms(table, Genotype((op,) * n_edges, (op,) * n_edges), cfg, b),
            **{f"measured_{k}": v for k, v in whole[ds][b][op].items()}) for op in ops} for b in batches}
    table["protocol"]["validation"] = (
        "networks.<dataset>.validation: for each op, the whole folded network with that op on "
        f"every edge, timed end to end ({max(1, warmup // 5)} + {max(3, repeats // 5)} rounds), "
        "next to the table's sum for it")
    return table


def _profile_network(ds, runtime, threads, batches, repeats, warmup, width, n_cells, n_nodes, ops,
                     device, sync, gen, seed):
    parts, section, rep, nets = _build_parts(ds, width, n_cells, n_nodes, ops, device)
    n_edges = len(cell_edges(n_nodes))
    # onnxruntime: a stride-1 identity is no node of the whole graph (the exporter wires the
    # input through), so it costs 0 there; alone it would be an Identity node, a copy
    through = {key for sec, key, module, _s, _r in parts
               if runtime == "onnxruntime" and sec == "entries" and isinstance(module, Identity)}
    sessions = {}
    if runtime == "onnxruntime":
        for sec, key, module, shapes, relu in parts:
            if key not in through:
                f = io.BytesIO()
                _export(module, _inputs(shapes, 1, relu, "cpu", gen), f)
                sessions[key] = _ort_session(f.getvalue(), threads)
    measured = {}
    for b in batches:
        calls = {}
        for sec, key, module, shapes, relu in parts:
            if key in through:
                continue
            xs = _inputs(shapes, 1 if sec == "call" else b, relu, device, gen)
            if runtime == "onnxruntime":
                calls[key] = _ort_call(sessions[key], [x.cpu().contiguous().numpy() for x in xs])
            else:
                calls[key] = (lambda m, xs: lambda: m(*xs))(module, xs)
        measured[b] = _time_round_robin(calls, repeats, warmup, sync, seed + b)
        measured[b].update((key, dict.fromkeys(_STAT_KEYS, 0.0)) for key in through)
    out = dict(section, entries={}, relu={}, relu_inputs={}, fixed={}, call_ms={})
    for b, res in measured.items():
        call = res["call"]
        per_call = call["median_ms"]
        sb = str(b)
        for name in ("entries", "relu", "fixed"):
            out[name][sb] = {}
        out["call_ms"][sb] = call
        for sec, key, module, shapes, relu in parts:
            if sec == "call":
                continue
            st = dict(res[key])
            if runtime == "onnxruntime" and key not in through:
                st = {k: max(0.0, v - per_call) for k, v in st.items()}
            elif key.endswith("/glue"):
                st = {k: max(0.0, v - (n_edges + 2) * per_call) for k, v in st.items()}
            out[sec][sb][key] = st
        if runtime == "onnxruntime":
            out["fixed"][sb]["session"] = dict(call)
        for op, r in rep.items():          # ops measured under another name
            if op != r:
                for _k, _s, pos in positions(n_cells):
                    out["entries"][sb][f"{pos}/{op}"] = dict(out["entries"][sb][f"{pos}/{r}"])
        out["entries"][sb] = {f"{pos}/{op}": out["entries"][sb][f"{pos}/{op}"]
                              for _k, _s, pos in positions(n_cells) for op in ops}
        out["fixed"][sb] = {k: out["fixed"][sb][k] for k in fixed_keys(n_cells, runtime)}
    for _k, _s, pos in positions(n_cells):
        out["relu_inputs"][pos] = _relu_inputs(parts, pos, ops, rep)
    # whole networks with one op on every edge, to compare with the sums (validation)
    shape = (section["in_channels"], section["image_size"], section["image_size"])
    whole = {}
    if runtime == "onnxruntime":
        for op, n in nets.items():
            f = io.BytesIO()
            _export(n, _inputs([shape], 1, False, "cpu", gen), f)
            nets[op] = _ort_session(f.getvalue(), threads)
    for b in batches:
        x = _inputs([shape], b, False, device, gen)
        calls = {op: (_ort_call(n, [x[0].cpu().contiguous().numpy()]) if runtime == "onnxruntime"
                      else (lambda n: lambda: n(*x))(n)) for op, n in nets.items()}
        res = _time_round_robin(calls, max(3, repeats // 5), max(1, warmup // 5), sync, seed + b)
        whole[b] = {op: res[r] for op, r in rep.items()}
    return out, whole


def _relu_inputs(parts, pos, ops, rep):
    reads = {key.rsplit("/", 1)[1] for sec, key, _m, _s, relu in parts
             if sec == "entries" and key.startswith(pos + "/") and relu}
    return [op for op in ops if rep[op] in reads]


def _provenance(runtime, threads, wall_s, load):
    from . import __version__
    from .provenance import git_commit

    def version(mod):
        try:
            return __import__(mod).__version__
        except ImportError:
            return None
    return dict(processor=(torch.cuda.get_device_name(0) if runtime == "cuda" else _cpu_model()),
                cpu=_cpu_model(), threads=threads, torch=torch.__version__,
                onnxruntime=version("onnxruntime"), onnx=version("onnx"), hypernas=__version__,
                commit=git_commit(), date=time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
                wall_s=round(wall_s, 2), cpu_kernels=(runtime == "torch" and kernels.active()),
                load_average=load)


# -- files ----------------------------------------------------------------------------------------

def write_table(table: dict, path) -> Path:
    """Write ``table`` as JSON to ``path`` atomically (:func:`hypernas.files.write_json`),
    without the keys :func:`load_table` adds (``_``-prefixed)."""
    return write_json({k: v for k, v in table.items() if not k.startswith("_")}, path)


def load_table(path) -> dict:
    """Read and validate a table written by :func:`write_table`; raises :class:`TableError`
    (one line, naming the file) when it is missing, not JSON, of another format or
    incomplete.  The returned dict remembers its file under ``_source``."""
    path = Path(path)
    how = "measure one with `hypernas profile` (see hypernas.latency)"
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise TableError(f"latency table {path} does not exist; {how}") from None
    except (OSError, UnicodeDecodeError) as err:
        raise TableError(f"latency table {path} cannot be read ({type(err).__name__}: {err}); {how}") from None
    try:
        table = json.loads(text)
    except json.JSONDecodeError as err:
        raise TableError(f"latency table {path} is not valid JSON ({err.msg} at line {err.lineno} "
                         f"column {err.colno}; truncated?); {how}") from None
    problem = _table_problem(table)
    if problem:
        raise TableError(f"latency table {path} {problem}; {how}")
    table["_source"] = str(path)
    return table


def _table_problem(t):
    """What is wrong with a table's structure (None when nothing is)."""
    if not isinstance(t, dict):
        return f"is not a JSON object but {type(t).__name__}"
    if t.get("format") != FORMAT:
        return f"has format {t.get('format')!r}, expected {FORMAT!r}"
    for key in ("device", "runtime", "threads", "provenance", "protocol", "ops", "networks"):
        if key not in t:
            return f"has no key {key!r}"
    if t["runtime"] not in RUNTIMES:
        return f"has runtime {t['runtime']!r}, expected one of {', '.join(RUNTIMES)}"
    batches = t["protocol"].get("batches") if isinstance(t["protocol"], dict) else None
    if not isinstance(batches, list) or not batches:
        return "has no protocol.batches"
    if not isinstance(t["ops"], list) or not t["ops"] or not isinstance(t["networks"], dict) or not t["networks"]:
        return "has no ops or no networks"
    for ds, net in t["networks"].items():
        if not isinstance(net, dict):
            return f"has a network {ds!r} that is not an object"
        for key in _NETWORK_KEYS:
            if key not in net:
                return f"has no key networks.{ds}.{key}"
        try:
            pos = positions(int(net["n_cells"]))
        except (TypeError, ValueError):
            return f"has an invalid networks.{ds}.n_cells {net['n_cells']!r}"
        for b in map(str, batches):
            want = {"entries": [f"{p}/{op}" for _k, _s, p in pos for op in t["ops"]],
                    "relu": [p for _k, _s, p in pos],
                    "fixed": fixed_keys(int(net["n_cells"]), t["runtime"])}
            for sec, keys in want.items():
                got = net[sec].get(b) if isinstance(net[sec], dict) else None
                if not isinstance(got, dict):
                    return f"has no networks.{ds}.{sec} for batch {b}"
                for key in keys:
                    st = got.get(key)
                    if not isinstance(st, dict) or not _finite(st.get("median_ms")):
                        return f"has no number networks.{ds}.{sec}.{b}.{key}.median_ms"
        for _k, _s, p in pos:
            if not isinstance(net["relu_inputs"].get(p), list):
                return f"has no list networks.{ds}.relu_inputs.{p}"
    return None


def _finite(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v >= 0


# -- using a table --------------------------------------------------------------------------------

def _name(table):
    return f"latency table {table['_source']}" if table.get("_source") else "the latency table"


def check_table(table: dict, cfg: dict) -> dict:
    """The table's section for ``cfg``'s network (``cfg``: a run's config with keys ``ops``,
    ``width``, ``n_cells``, ``n_nodes``, ``dataset``), or :class:`TableMismatch` naming every
    field that differs and how to measure a matching table."""
    from .data import DATASETS
    name, ds = _name(table), cfg["dataset"]
    redo = (f"profile again with `hypernas profile --runtime {table.get('runtime', 'torch')} "
            f"--threads {table.get('threads', 1)} --dataset {ds} --width {cfg['width']} "
            f"--n-cells {cfg['n_cells']} --n-nodes {cfg['n_nodes']} --ops {' '.join(cfg['ops'])}`")
    nets = table.get("networks", {})
    if ds not in nets:
        raise TableMismatch(f"{name} was measured for dataset(s) {', '.join(sorted(nets)) or 'none'}, "
                            f"the model is for {ds}; {redo}")
    net, diffs = nets[ds], []
    for key in ("width", "n_cells", "n_nodes"):
        if net[key] != cfg[key]:
            diffs.append(f"{key} {net[key]}, the model has {key} {cfg[key]}")
    if ds in DATASETS:
        geo = DATASETS[ds]
        for key, want in (("in_channels", geo["channels"]), ("image_size", geo["size"])):
            if net[key] != want:
                diffs.append(f"{key} {net[key]} for {ds}, which has {key} {want}")
    missing = [op for op in cfg["ops"] if op not in table.get("ops", [])]
    if missing:
        diffs.append(f"ops {table.get('ops')}, which lack the model's op(s) {missing}")
    if diffs:
        raise TableMismatch(f"{name} was measured for " + "; ".join(diffs) + f"; {redo}")
    return net


def _batch(table, net, batch):
    b = str(batch)
    if b not in net["entries"]:
        raise TableMismatch(f"{_name(table)} has no batch {batch} (measured: "
                            f"{', '.join(sorted(net['entries'], key=int))}); profile with that batch "
                            "(hypernas.latency.profile(batches=...))")
    return b


def _genotype(genotype, n_edges):
    if isinstance(genotype, dict):
        genotype = Genotype(tuple(genotype["normal"]), tuple(genotype["reduce"]))
    for kind in ("normal", "reduce"):
        if len(getattr(genotype, kind)) != n_edges:
            raise TableMismatch(f"the genotype's {kind} cell has {len(getattr(genotype, kind))} edges, "
                                f"the table's network {n_edges}")
    return genotype


def fixed_ms(table: dict, cfg: dict, batch: int = 1) -> float:
    """The genotype-independent part of the latency (the sum of the fixed parts)."""
    net = check_table(table, cfg)
    return sum(v["median_ms"] for v in net["fixed"][_batch(table, net, batch)].values())


def predicted_latency_ms(table: dict, genotype, cfg: dict, batch: int = 1) -> float:
    """Predicted latency (ms per call on a batch of ``batch`` images) of the folded derived
    network of ``genotype`` (a :class:`Genotype` or ``{"normal": [...], "reduce": [...]}``):

        T = sum_p fixed[p] + sum_k sum_e entries[cell<k>/s<stride(e)>/<op_e>]
            + sum_k sum_{source nodes i with an op reading ReLU(i)} relu[cell<k>/s<stride(i)>]

    with ``stride = 2`` on a reduction cell's edges leaving nodes 0 and 1, else 1 (medians)."""
    net = check_table(table, cfg)
    b = _batch(table, net, batch)
    edges = cell_edges(net["n_nodes"])
    genotype = _genotype(genotype, len(edges))
    for op in set(genotype.normal) | set(genotype.reduce):
        if op not in table["ops"]:
            raise TableMismatch(f"{_name(table)} has no op {op!r} (it has {table['ops']}); {op} is in the "
                                "genotype: profile with it (hypernas profile --ops ...)")
    entries, relu = net["entries"][b], net["relu"][b]
    total = sum(v["median_ms"] for v in net["fixed"][b].values())
    for k, (red, _mult) in enumerate(cell_layout(net["n_cells"])):
        relu_nodes = set()
        for (i, _j), op in zip(edges, genotype.reduce if red else genotype.normal):
            pos = f"cell{k}/s{2 if red and i < 2 else 1}"
            total += entries[f"{pos}/{op}"]["median_ms"]
            if op in net["relu_inputs"][pos]:
                relu_nodes.add((i, pos))
        total += sum(relu[pos]["median_ms"] for _i, pos in relu_nodes)
    return total


def table_complexity(table: dict, ops, cfg: dict, batch: int = 1) -> list:
    """The device's complexity vector in the order of ``ops``:
    ``cost_m = T(op m on every edge) - sum_p fixed[p]`` (all positions of all cells, the node
    ReLUs that op m makes the network compute included), ``s_m = cost_m / sum_j cost_j``.
    Why proportional: the search cost ``sum_edges sum_m gamma_m s_m`` then grows like the
    latency of the ops chosen, one ``s_m`` standing for op ``m`` at every position."""
    ops = list(ops)
    cfg = dict(cfg, ops=ops)
    net = check_table(table, cfg)
    n_edges = len(cell_edges(net["n_nodes"]))
    base = fixed_ms(table, cfg, batch)
    costs = [predicted_latency_ms(table, Genotype((op,) * n_edges, (op,) * n_edges), cfg, batch) - base
             for op in ops]
    total = sum(costs)
    if not total > 0:
        raise ValueError(f"every op costs 0 ms in {_name(table)} at batch {batch} ({dict(zip(ops, costs))}); "
                         "no complexity vector follows from it: profile again, with more repeats")
    return [c / total for c in costs]


# -- whole networks ----------------------------------------------------------------------------------

def export_onnx(net: nn.Module, shape, path, verify: bool = True, atol: float = 1e-4) -> dict:
    """Export a (derived, folded) network to ONNX at ``path`` (input ``x`` of shape
    ``(batch, *shape)``, the batch dynamic, the image size fixed; output ``logits``), with
    the compiled kernels disabled so that plain ops are exported (torch's TorchScript
    exporter, ``dynamo=False``: about 3 s a network against 18 s for the ``torch.export``
    one, and no ``onnxscript`` needed).  With
    ``verify``, onnxruntime runs the file on a random batch of 2 and the largest
    difference from PyTorch must be at most ``atol``, else ``RuntimeError`` and no file.
    Written atomically.  Returns ``{"path", "max_abs_diff"}`` (``None`` without ``verify``)."""
    path = Path(path)
    shape = tuple(int(v) for v in shape)
    path.parent.mkdir(parents=True, exist_ok=True)
    cpu = copy.deepcopy(net).cpu().eval()
    x = torch.randn(2, *shape).contiguous(memory_format=torch.channels_last)
    with replacing(path) as tmp:
        _export(cpu, [x], str(tmp), ["x"], "logits")
        diff = None
        if verify:
            with torch.no_grad():
                want = cpu(x).numpy()
            got = _ort_session(str(tmp), 1).run(None, {"x": x.contiguous().numpy()})[0]
            diff = float(np.abs(got - want).max())
            if not diff <= atol:
                raise RuntimeError(f"the ONNX export of {type(net).__name__} differs from PyTorch by "
                                   f"{diff:.3g} > {atol} on a random input; {path} was not written")
    return dict(path=str(path), max_abs_diff=diff)


def measure_network_ms(net: nn.Module, shape, batch: int = 1, runtime: str = "torch", threads=None,
                       repeats: int = 50, warmup: int = 10) -> dict:
    """End-to-end latency of a whole network on a random batch (``median_ms``, ``p10_ms``,
    ``p90_ms``, ms per call on the batch), timed as :func:`profile` times a part: the torch
    runtime runs ``net`` as it is (channels-last, ``no_grad``), onnxruntime its export."""
    _check_runtime(runtime)
    threads = _threads(threads)
    shape = tuple(int(v) for v in shape)
    x = torch.randn(batch, *shape).contiguous(memory_format=torch.channels_last)
    with _torch_threads(threads), torch.no_grad():
        if runtime == "onnxruntime":
            with tempfile.TemporaryDirectory() as tmp:
                f = Path(tmp) / "net.onnx"
                export_onnx(net, shape, f, verify=False)
                sess = _ort_session(str(f), threads)
            feeds = {"x": x.contiguous().numpy()}
            call = lambda: sess.run(None, feeds)  # noqa: E731
            sync = None
        else:
            dev = torch.device("cuda" if runtime == "cuda" else "cpu")
            net = net.eval()
            if dev.type == "cuda":
                net = copy.deepcopy(net).to(dev)
                x = x.to(dev)
            call = lambda: net(x)  # noqa: E731
            sync = torch.cuda.synchronize if dev.type == "cuda" else None
        return _time_round_robin({"net": call}, repeats, warmup, sync)["net"]


def entries_frame(table: dict, dataset: str, batch: int = 1):
    """The table's op entries for one data set and batch as a DataFrame (rows: ops,
    columns: positions ``cell<k>/s<stride>``; median ms), with the node ReLU per
    position as a last row and the fixed parts' total as a caption-ready attribute."""
    import pandas as pd
    net = table["networks"][dataset]
    rows = {}
    for key, v in net["entries"][str(batch)].items():
        cell, stride, op = key.split("/")
        rows.setdefault(op, {})[f"{cell}/{stride}"] = v["median_ms"]
    df = pd.DataFrame(rows).T
    df.loc["ReLU of a node"] = {k: v["median_ms"] for k, v in net["relu"][str(batch)].items()}
    df.attrs["fixed_ms"] = sum(v["median_ms"] for v in net["fixed"][str(batch)].values())
    return df[sorted(df.columns)]
