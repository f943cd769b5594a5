"""Latency tables (hypernas.latency): sums, mismatches, files, the device's s, real timings, ONNX."""
import copy
import json
import math
import re

import numpy as np
import pytest
import torch

from hypernas import cli, latency
from hypernas.derived import DerivedNetwork
from hypernas.genotype import Genotype
from hypernas.latency import TableError, TableMismatch
from hypernas.model import HyperSupernet

OPS3 = ["avg_pool_3x3", "skip_connect", "sep_conv_3x3"]
# DARTS edge order for 4 intermediate nodes, written out (not taken from the library)
EDGES = [(0, 2), (1, 2), (0, 3), (1, 3), (2, 3), (0, 4), (1, 4), (2, 4), (3, 4),
         (0, 5), (1, 5), (2, 5), (3, 5), (4, 5)]
# 3 cells: normal, reduce, reduce
POSITIONS = ["cell0/s1", "cell1/s2", "cell1/s1", "cell2/s2", "cell2/s1"]
FIXED = ["stem", "cell0/pre0", "cell0/pre1", "cell0/glue", "cell0/out_relu",
         "cell1/pre0", "cell1/pre1", "cell1/glue", "cell1/out_relu",
         "cell2/pre0", "cell2/pre1", "cell2/glue", "cell2/out_relu", "classifier"]
READS_RELU = {"cell0/s1": ["sep_conv_3x3"], "cell1/s2": ["skip_connect", "sep_conv_3x3"],
              "cell1/s1": ["sep_conv_3x3"], "cell2/s2": ["skip_connect", "sep_conv_3x3"],
              "cell2/s1": ["sep_conv_3x3"]}


def st(ms):
    return {"median_ms": ms, "p10_ms": ms * 0.9, "p90_ms": ms * 1.2}


def hand_table(entry, relu, fixed, ops=OPS3, width=16, dataset="fashion_mnist", batches=(1,)):
    """A table written by hand: ``entry(pos, op)``, ``relu(pos)``, ``fixed(key)`` in ms."""
    net = dict(dataset=dataset, in_channels=1, image_size=28, width=width, n_cells=3, n_nodes=4,
               entries={}, relu={}, fixed={}, call_ms={}, relu_inputs=READS_RELU)
    for b in batches:
        net["entries"][str(b)] = {f"{p}/{op}": st(entry(p, op) * b) for p in POSITIONS for op in ops}
        net["relu"][str(b)] = {p: st(relu(p) * b) for p in POSITIONS}
        net["fixed"][str(b)] = {k: st(fixed(k) * b) for k in FIXED}
        net["call_ms"][str(b)] = st(0.001)
    return {"format": "hypernas-latency-table/1", "device": "cpu-test-1thread", "runtime": "torch",
            "threads": 1, "provenance": {}, "protocol": {"batches": list(batches)}, "ops": list(ops),
            "networks": {dataset: net}}


OP_VALUE = {"avg_pool_3x3": 1.0, "skip_connect": 0.0, "sep_conv_3x3": 5.0}
CELL_SCALE = {"cell0": 1.0, "cell1": 0.5, "cell2": 0.25}


def entry(pos, op):
    cell, stride = pos.split("/")
    v = OP_VALUE[op] + (0.3 if stride == "s2" else 0.0)
    if op == "skip_connect" and stride == "s2":   # FactorizedReduce
        v += 2.0
    return v * CELL_SCALE[cell]


def relu(pos):
    return 0.01 * (1 + POSITIONS.index(pos))


def fixed(key):
    return 0.1 * (1 + FIXED.index(key))


def cfg(**kw):
    c = dict(dataset="fashion_mnist", ops=list(OPS3), width=16, n_cells=3, n_nodes=4)
    c.update(kw)
    return c


def test_predicted_latency_is_the_sum_of_the_genotypes_entries(tmp_path):
    table = hand_table(entry, relu, fixed, batches=(1, 8))
    path = latency.write_table(table, tmp_path / "dev.json")
    table = latency.load_table(path)
    normal = ("sep_conv_3x3", "avg_pool_3x3", "sep_conv_3x3", "skip_connect", "avg_pool_3x3",
              "skip_connect", "avg_pool_3x3", "avg_pool_3x3", "sep_conv_3x3", "skip_connect",
              "skip_connect", "avg_pool_3x3", "avg_pool_3x3", "skip_connect")
    reduce = ("avg_pool_3x3", "skip_connect", "sep_conv_3x3", "avg_pool_3x3", "skip_connect",
              "avg_pool_3x3", "avg_pool_3x3", "skip_connect", "sep_conv_3x3", "avg_pool_3x3",
              "avg_pool_3x3", "avg_pool_3x3", "avg_pool_3x3", "avg_pool_3x3")
    g = Genotype(normal, reduce)
    for b in (1, 8):
        want = sum(fixed(k) for k in FIXED)
        for cell, red in (("cell0", False), ("cell1", True), ("cell2", True)):
            relu_nodes = set()
            for (i, _j), op in zip(EDGES, reduce if red else normal):
                pos = f"{cell}/s{2 if red and i < 2 else 1}"
                want += entry(pos, op)
                if op in READS_RELU[pos]:
                    relu_nodes.add((i, pos))
            want += sum(relu(pos) for _i, pos in relu_nodes)
        # normal: node 0 (two sep_convs) and node 3 read ReLU; reductions: nodes 0, 1 (skip on
        # a stride-2 edge = FactorizedReduce, sep_conv) and node 3
        got = latency.predicted_latency_ms(table, g, cfg(), batch=b)
        assert got == pytest.approx(want * b, rel=1e-12)
    # a genotype as results files store it
    as_dict = {"normal": list(normal), "reduce": list(reduce)}
    assert latency.predicted_latency_ms(table, as_dict, cfg()) == pytest.approx(
        latency.predicted_latency_ms(table, g, cfg()))
    with pytest.raises(TableMismatch, match="no batch 64"):
        latency.predicted_latency_ms(table, g, cfg(), batch=64)


@pytest.mark.parametrize("change, words", [
    (dict(width=32), ["width 16", "width 32"]),
    (dict(n_cells=5), ["n_cells 3", "n_cells 5"]),
    (dict(n_nodes=3), ["n_nodes 4", "n_nodes 3"]),
    (dict(ops=["max_pool_3x3", "skip_connect", "sep_conv_3x3"]), ["max_pool_3x3"]),
    (dict(dataset="cifar10"), ["fashion_mnist", "cifar10"]),
])
def test_mismatched_table_names_the_field(tmp_path, change, words):
    path = latency.write_table(hand_table(entry, relu, fixed), tmp_path / "dev.json")
    table = latency.load_table(path)
    latency.check_table(table, cfg())          # the matching config passes
    with pytest.raises(TableMismatch) as err:
        latency.check_table(table, cfg(**change))
    msg = str(err.value)
    assert str(path) in msg and "hypernas profile" in msg and "\n" not in msg
    for w in words:
        assert w in msg
    with pytest.raises(TableMismatch):
        latency.predicted_latency_ms(table, Genotype(("skip_connect",) * 14, ("skip_connect",) * 14),
                                     cfg(**change))


def test_table_geometry_must_match_the_dataset(tmp_path):
    t = hand_table(entry, relu, fixed)
    t["networks"]["fashion_mnist"]["image_size"] = 32
    table = latency.load_table(latency.write_table(t, tmp_path / "dev.json"))
    with pytest.raises(TableMismatch, match="image_size 32 for fashion_mnist, which has image_size 28"):
        latency.check_table(table, cfg())


def test_bad_table_files_raise_table_error_naming_the_file(tmp_path):
    good = json.dumps(hand_table(entry, relu, fixed))
    cases = {"missing.json": None, "notjson.json": "this is not json", "truncated.json": good[:len(good) // 2],
             "format.json": good.replace("hypernas-latency-table/1", "other/2"),
             "list.json": "[1, 2]"}
    incomplete = hand_table(entry, relu, fixed)
    del incomplete["networks"]["fashion_mnist"]["entries"]["1"]["cell2/s2/sep_conv_3x3"]
    cases["incomplete.json"] = json.dumps(incomplete)
    nokey = hand_table(entry, relu, fixed)
    del nokey["networks"]["fashion_mnist"]["fixed"]
    cases["nokey.json"] = json.dumps(nokey)
    for name, text in cases.items():
        p = tmp_path / name
        if text is not None:
            p.write_text(text)
        with pytest.raises(TableError) as err:
            latency.load_table(p)
        assert str(p) in str(err.value) and "\n" not in str(err.value), name
        assert isinstance(err.value, ValueError)
    with pytest.raises(TableError, match="cell2/s2/sep_conv_3x3"):
        latency.load_table(tmp_path / "incomplete.json")


def test_write_table_is_atomic(tmp_path):
    p = tmp_path / "dev.json"
    latency.write_table(hand_table(entry, relu, fixed), p)
    before = p.read_text()
    broken = hand_table(entry, relu, fixed)
    broken["provenance"]["oops"] = object()   # not JSON: fails half way through writing
    with pytest.raises(TypeError):
        latency.write_table(broken, p)
    assert p.read_text() == before
    assert [q.name for q in tmp_path.iterdir()] == ["dev.json"]


@pytest.mark.parametrize("args", [["--runtime", "tpu"], ["--threads", "0"], ["--threads", "two"],
                                  ["--dataset", "mnist"], ["--repeats", "0"], ["--ops", "conv_9x9"],
                                  ["--width", "5"], ["--batches", "1", "-3"]])
def test_profile_cli_bad_input_is_one_line_and_writes_nothing(tmp_path, capsys, args):
    out = tmp_path / "sub" / "dev.json"
    rc = cli.main(["profile", "--out", str(out), *args])
    err = capsys.readouterr().err
    assert rc != 0
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("hypernas: error: "), err
    assert not out.exists() and not (tmp_path / "sub").exists()


def test_table_complexity_is_proportional_to_the_all_op_cost():
    table = hand_table(entry, relu, fixed, batches=(1, 4))
    # closed form: 14 edges at cell0/s1, 8 at s2 and 6 at s1 in cells 1 and 2; an op reading
    # ReLU makes every source node compute it: 5 nodes in cell0, 2 (s2) + 3 (s1) per reduction
    def cost(op):
        c = 14 * entry("cell0/s1", op)
        for cell in ("cell1", "cell2"):
            c += 8 * entry(f"{cell}/s2", op) + 6 * entry(f"{cell}/s1", op)
        if op == "sep_conv_3x3":
            c += 5 * relu("cell0/s1") + sum(2 * relu(f"{k}/s2") + 3 * relu(f"{k}/s1") for k in ("cell1", "cell2"))
        if op == "skip_connect":
            c += sum(2 * relu(f"{k}/s2") for k in ("cell1", "cell2"))
        return c
    costs = [cost(op) for op in OPS3]
    for b in (1, 4):
        s = latency.table_complexity(table, OPS3, cfg(), batch=b)
        assert s == pytest.approx([c / sum(costs) for c in costs], rel=1e-12)
        assert sum(s) == pytest.approx(1.0)
    # another order gives the same vector permuted
    rev = latency.table_complexity(table, OPS3[::-1], cfg())
    assert rev == pytest.approx(latency.table_complexity(table, OPS3, cfg())[::-1])
    zero = hand_table(lambda p, op: 0.0, lambda p: 0.0, fixed)
    with pytest.raises(ValueError, match="every op costs 0 ms"):
        latency.table_complexity(zero, OPS3, cfg())


def test_device_name():
    assert re.fullmatch(r"cpu-[a-z0-9-]+-1thread", latency.device_name("torch", 1))
    assert re.fullmatch(r"cpu-[a-z0-9-]+-2threads", latency.device_name("torch", 2))
    assert re.fullmatch(r"onnxruntime-cpu-[a-z0-9-]+-1thread", latency.device_name("onnxruntime", 1))
    assert latency._slug("Intel(R) Xeon(R) CPU @ 2.20GHz") == "intel-xeon-2-20ghz"
    with pytest.raises(ValueError, match="unknown runtime"):
        latency.device_name("tpu", 1)


def _complete_and_positive(table, ops, n_cells=3, strictly=True):
    for ds, net in table["networks"].items():
        for b in map(str, table["protocol"]["batches"]):
            keys = {"entries": [f"{p}/{op}" for p in POSITIONS[:2 * n_cells - 1] for op in ops],
                    "relu": POSITIONS[:2 * n_cells - 1],
                    "fixed": FIXED + (["session"] if table["runtime"] == "onnxruntime" else [])}
            for sec, want in keys.items():
                assert sorted(net[sec][b]) == sorted(want), (sec, b)
                for k, v in net[sec][b].items():
                    for stat in ("median_ms", "p10_ms", "p90_ms"):
                        x = v[stat]
                        assert math.isfinite(x) and (x > 0 if strictly else x >= 0), (ds, sec, b, k, stat, x)


def test_real_profile_torch(tmp_path, one_thread):
    ops = latency.ALL_OPS
    t = latency.profile("fashion_mnist", "torch", threads=1, batches=(1, 2), repeats=2, warmup=1, width=4)
    assert t["ops"] == list(ops) and t["device"] == latency.device_name("torch", 1)
    _complete_and_positive(t, ops)
    net = t["networks"]["fashion_mnist"]
    assert (net["in_channels"], net["image_size"], net["width"]) == (1, 28, 4)
    # the same module under two names is measured once
    assert net["entries"]["1"]["cell1/s2/identity"] == net["entries"]["1"]["cell1/s2/skip_connect"]
    assert "skip_connect" in net["relu_inputs"]["cell1/s2"]         # FactorizedReduce reads ReLU
    assert "skip_connect" not in net["relu_inputs"]["cell0/s1"]     # the identity does not
    assert t["provenance"]["wall_s"] > 0 and t["provenance"]["threads"] == 1
    for b in ("1", "2"):     # whole networks timed next to the sums
        assert sorted(net["validation"][b]) == sorted(ops)
        assert all(v["measured_median_ms"] > 0 and v["predicted_ms"] > 0 for v in net["validation"][b].values())
    loaded = latency.load_table(latency.write_table(t, tmp_path / "t.json"))  # valid on disk
    s = latency.table_complexity(loaded, OPS3, cfg(width=4))
    assert len(s) == 3 and sum(s) == pytest.approx(1.0) and min(s) > 0


def test_real_profile_onnxruntime_and_cli(tmp_path, one_thread, capsys):
    pytest.importorskip("onnxruntime")
    out = tmp_path / "ort.json"
    rc = cli.main(["profile", "--runtime", "onnxruntime", "--threads", "1", "--dataset", "cifar10",
                   "--width", "4", "--repeats", "2", "--warmup", "1", "--batches", "1", "--ops", *OPS3,
                   "--out", str(out)])
    assert rc == 0
    assert str(out) in capsys.readouterr().out
    t = latency.load_table(out)
    assert t["runtime"] == "onnxruntime" and list(t["networks"]) == ["cifar10"]
    _complete_and_positive(t, OPS3, strictly=False)   # parts minus the session call: >= 0
    assert t["networks"]["cifar10"]["fixed"]["1"]["session"]["median_ms"] > 0


def small_network(width=16, seed=0):
    """A derived network with every op type, stride-2 identities (FactorizedReduce) and
    BatchNorm statistics that are not the identity, folded."""
    torch.manual_seed(seed)
    ops = ("max_pool_3x3", "avg_pool_3x3", "skip_connect", "sep_conv_3x3", "conv_3x3")
    model = HyperSupernet(ops, width, 3, 4, 1, 10, classifier="linear").eval()
    g = Genotype(tuple(ops[i % 5] for i in range(14)), tuple(ops[(i + 2) % 5] for i in range(14)))
    net = DerivedNetwork(model, g, torch.full((5,), 0.2))
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    return net.eval().folded(), g, list(ops)


def test_export_onnx_matches_torch(tmp_path, one_thread):
    ort = pytest.importorskip("onnxruntime")
    net, _g, _ops = small_network()
    res = latency.export_onnx(net, (1, 28, 28), tmp_path / "net.onnx")
    assert res["max_abs_diff"] <= 1e-4
    sess = ort.InferenceSession(str(tmp_path / "net.onnx"), providers=["CPUExecutionProvider"])
    x = torch.randn(3, 1, 28, 28)
    got = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
    with torch.no_grad():
        want = net(x.contiguous(memory_format=torch.channels_last)).numpy()   # as torch runs it (kernels)
    assert got.shape == (3, 10)
    assert np.abs(got - want).max() <= 1e-4
    # a failed check leaves no file
    with pytest.raises(RuntimeError, match="differs from PyTorch"):
        latency.export_onnx(net, (1, 28, 28), tmp_path / "bad.onnx", atol=-1.0)
    assert sorted(q.name for q in tmp_path.iterdir()) == ["net.onnx"]
    onnx = pytest.importorskip("onnx")
    kinds = {n.op_type for n in onnx.load(str(tmp_path / "net.onnx")).graph.node}
    assert not kinds & {"Shape", "ConstantOfShape", "Reciprocal"}, kinds   # avg pools' 1/count is a constant
    m = latency.measure_network_ms(net, (1, 28, 28), runtime="onnxruntime", threads=1, repeats=3, warmup=1)
    assert 0 < m["p10_ms"] <= m["median_ms"] <= m["p90_ms"] < math.inf


def test_predicted_and_measured_latency_are_of_the_same_order(one_thread):
    """Only a sanity check (a busy shared machine, few repeats): the sum of the table's parts
    is within a factor 5 of timing the whole folded network."""
    net, g, ops = small_network(width=8)
    table = latency.profile("fashion_mnist", "torch", threads=1, batches=(1,), repeats=5, warmup=2,
                            width=8, ops=ops)
    predicted = latency.predicted_latency_ms(table, g, cfg(ops=ops, width=8))
    measured = latency.measure_network_ms(copy.deepcopy(net), (1, 28, 28), threads=1, repeats=10, warmup=3)
    assert measured["median_ms"] / 5 < predicted < measured["median_ms"] * 5, (predicted, measured)
