"""Benchmark: the fast supernet against the per-edge reference, in one process.

For each experiment's configuration (width 16, the training batch size) both
implementations get identical weights and data; training steps are timed in
alternating windows (fast, reference, fast, ...) after a warm-up, and the median
throughput of the windows is reported, with their ratio.  Also reported: FLOPs counted
by torch's FlopCounterMode and the achieved GFLOP/s next to a plain 3x3 convolution's
(the practical ceiling of this machine), the memory held for the backward pass (saved
activations; peak allocator memory on CUDA), and for a derived architecture its eval
throughput, its latency per image and the time to derive and evaluate a new ``s``.
On a GPU, whole training steps (data, forward, backward, both optimisers) are also
timed eagerly and replayed from a CUDA graph, from identical states and inputs, with
the largest parameter difference between the two after the same steps.

    hypernas bench [--experiments exp1 exp2 exp3] [--windows 5] [--steps 3]

The last line is ``speedup: X.XXx``, the exp1 training ratio.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import resource
import statistics
import time

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from .fast import kernels
from .data import DATASETS, Splits
from .derived import DerivedNetwork
from .evaluation import derive_and_test, latency
from .files import write_json
from .presets import config
from .provenance import ROOT
from .reference import reference_model
from .fast.process import retain_freed_memory, retained
from .train import Trainer, build_model, pick_device


def _sync(dev):
    if dev.type == "cuda":
        torch.cuda.synchronize()


def _train_step_fn(model, x, y, s, t, dev, no_kernels=False):
    def step():
        with kernels.disabled() if no_kernels else contextlib.nullcontext():
            model.zero_grad(set_to_none=True)
            logits = model(x, s, t, "gumbel")
            F.cross_entropy(logits, y).backward()
        _sync(dev)
    return step


def saved_activation_bytes(fn):
    """Bytes of tensors autograd saves for backward during ``fn()`` (forward only)."""
    total = [0]
    seen = set()

    def pack(t):
        key = (t.data_ptr(), t.numel())
        if key not in seen:
            seen.add(key)
            total[0] += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return total[0]


def count_flops(fn) -> int:
    with FlopCounterMode(display=False) as fc:
        fn()
    return fc.get_total_flops()


def training_flops(model, x, s, t) -> int:
    """FLOPs of one training step, counted as 3x the forward's (backward = 2x forward,
    the usual convention: torch's counter overcounts grouped-conv backward)."""
    with torch.no_grad():
        return 3 * count_flops(lambda: model(x, s, t, "gumbel"))


def conv_ceiling(dev, windows=3, dtype=torch.float32):
    """GFLOP/s of a plain 3x3 convolution (fwd + bwd), 64 -> 64 channels, 28x28, batch 64."""
    x = torch.randn(64, 64, 28, 28, device=dev, dtype=dtype, requires_grad=True).contiguous(memory_format=torch.channels_last)
    w = torch.randn(64, 64, 3, 3, device=dev, dtype=dtype, requires_grad=True)

    def fn():
        F.conv2d(x, w, padding=1).sum().backward()
        _sync(dev)
    with torch.no_grad():
        flops = 3 * count_flops(lambda: F.conv2d(x, w, padding=1))
    fn()
    rates = []
    for _ in range(windows):
        t0 = time.perf_counter(); fn(); rates.append(flops / (time.perf_counter() - t0))
    return statistics.median(rates) / 1e9


def bench_experiment(experiment, dev, windows=5, steps=3, batch=None):
    cfg = config(experiment, "authors_code", "paper")
    B = batch or cfg["batch_size"]
    d = DATASETS[cfg["dataset"]]
    torch.manual_seed(0)
    fast = build_model(cfg, d["channels"]).to(dev).to(memory_format=torch.channels_last).train()
    ref = reference_model(fast).to(dev).to(memory_format=torch.contiguous_format).train()
    ref_cl = reference_model(fast).to(dev).to(memory_format=torch.channels_last).train()
    x_plain = torch.randn(B, d["channels"], d["size"], d["size"], device=dev)
    x = x_plain.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (B,), device=dev)
    k = len(cfg["ops"])
    s = torch.full((k,), 1.0 / k, device=dev)
    t = 1.0
    models = {"fast": (fast, x), "reference": (ref, x_plain), "reference_cl": (ref_cl, x)}
    with_kernels = dev.type == "cpu" and kernels.extension() is not None
    if with_kernels:     # the same supernet without the compiled kernels: what they gain
        models["fast_no_kernels"] = (fast, x)
    steps_fn = {name: _train_step_fn(m, xx, y, s, t, dev, no_kernels=name == "fast_no_kernels")
                for name, (m, xx) in models.items()}

    # equality on this configuration (same Gumbel draws)
    with torch.no_grad():
        torch.manual_seed(1); a = fast(x, s, t, "gumbel")
        torch.manual_seed(1); b = ref(x_plain, s, t, "gumbel")
    max_diff = (a - b).abs().max().item()
    # the same comparison in float64, where rounding cannot hide a difference in the math
    f64, r64 = copy.deepcopy(fast).double(), copy.deepcopy(ref).double()
    with torch.no_grad():
        torch.manual_seed(1); a64 = f64(x.double(), s.double(), t, "gumbel")
        torch.manual_seed(1); b64 = r64(x_plain.double(), s.double(), t, "gumbel")
    max_diff64 = (a64 - b64).abs().max().item()
    del f64, r64

    out = {"experiment": experiment, "ops": cfg["ops"], "batch": B, "kernels": with_kernels, "max_abs_diff": max_diff,
           "max_rel_diff": max_diff / b.abs().max().item(), "max_abs_diff_float64": max_diff64}
    for name, fn in steps_fn.items():
        fn()  # warm-up
        if name == "fast_no_kernels":
            continue
        m, xx = models[name]
        with kernels.disabled():    # torch's counter cannot see inside the compiled kernels,
            out[f"{name}_counted_flops"] = training_flops(m, xx, s, t)   # which do the same arithmetic
        out[f"{name}_saved_MB"] = saved_activation_bytes(lambda: m(xx, s, t, "gumbel")) / 2**20
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats(); fn()
            out[f"{name}_peak_MB"] = torch.cuda.max_memory_allocated() / 2**20
    rates = {name: [] for name in steps_fn}
    faults = {name: ([], []) for name in steps_fn}   # per window: minor page faults, system s
    for _ in range(windows):
        for name, fn in steps_fn.items():
            r0 = resource.getrusage(resource.RUSAGE_SELF)
            t0 = time.perf_counter()
            for _ in range(steps):
                fn()
            rates[name].append(steps * B / (time.perf_counter() - t0))
            r1 = resource.getrusage(resource.RUSAGE_SELF)
            faults[name][0].append((r1.ru_minflt - r0.ru_minflt) / steps)
            faults[name][1].append((r1.ru_stime - r0.ru_stime) / steps)
    # the work of one step is the function's, counted on the plain per-edge reference:
    # the fast supernet computes the same function with some extra multiplies (average
    # pooling as a depthwise convolution of ones), which are not useful work
    out["flops"] = out["reference_counted_flops"]
    for name in rates:
        out[f"{name}_img_s"] = statistics.median(rates[name])
        out[f"{name}_page_faults_per_step"] = statistics.median(faults[name][0])
        out[f"{name}_system_s_per_step"] = statistics.median(faults[name][1])
        out[f"{name}_gflops"] = out["flops"] * out[f"{name}_img_s"] / B / 1e9
    out["speedup"] = out["fast_img_s"] / out["reference_img_s"]
    out["speedup_vs_cl"] = out["fast_img_s"] / out["reference_cl_img_s"]
    if with_kernels:
        out["kernels_gain"] = out["fast_img_s"] / out["fast_no_kernels_img_s"]

    # derived architecture at s = A
    fast.eval()
    sA = torch.tensor(cfg["complexities"]["A"], device=dev)
    t0 = time.perf_counter()
    net = DerivedNetwork(fast, fast.genotype(sA), sA).folded()
    out["derive_s"] = time.perf_counter() - t0
    xe = torch.randn(256, d["channels"], d["size"], d["size"], device=dev)
    out["derived_eval_img_s"] = 1.0 / latency(net, xe.shape[1:], 256, 5, dev)
    out["derived_latency_b1_ms"] = 1e3 * latency(net, xe.shape[1:], 1, 20, dev)
    return out


def synthetic_splits(dataset, n, seed=0) -> Splits:
    """Random pixels in ``dataset``'s shape (speed and equality need no real images)."""
    d = DATASETS[dataset]
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n, d["channels"], d["size"], d["size"]), dtype=torch.uint8, generator=g)
    y = torch.randint(0, d["classes"], (n,), generator=g)
    return Splits(dataset, x, y, x[:n // 4], y[:n // 4], x[:n // 4], y[:n // 4], "synthetic")


def cuda_graph_effect(experiment, dev, steps=20, run_dir="/tmp/hypernas-bench"):
    """Training steps of :class:`~hypernas.train.Trainer` (authors_code, paper profile)
    eager and replayed from a CUDA graph (:class:`~hypernas.train.GraphStep`): img/s of
    each over ``steps`` timed steps after ``steps`` untimed ones (which include the
    warm-up and the capture), and the largest |parameter difference| between the two
    after all ``2 * steps`` steps from the same initial state, batches, ``s`` and
    Gumbel draws."""
    cfg = config(experiment, "authors_code", "paper", progress=False, cuda_graphs=True)
    B = cfg["batch_size"]
    splits = synthetic_splits(cfg["dataset"], B * steps)
    out, states = {"experiment": experiment, "steps": 2 * steps}, {}
    for mode in ("eager", "graph"):
        tr = Trainer(cfg, splits, run_dir, dev)       # seeded: the same initial state
        if mode == "eager":
            tr._graph_step = None                     # same (capturable) optimisers, no graph
        torch.manual_seed(1)                          # the same s and Gumbel draws
        batches = [tr.batch(torch.arange(i * B, (i + 1) * B)) for i in range(steps)]
        sums = torch.zeros(4, dtype=torch.float64, device=dev)
        for x, y in batches:
            sums += tr.train_step(x, y, 1.0)
        _sync(dev)
        t0 = time.perf_counter()
        for x, y in batches:
            sums += tr.train_step(x, y, 1.0)
        _sync(dev)
        out[f"{mode}_img_s"] = steps * B / (time.perf_counter() - t0)
        out[f"{mode}_mean_loss"] = sums[0].item() / (2 * steps)
        states[mode] = {k: v.detach().clone() for k, v in tr.model.state_dict().items()}
    out["speedup"] = out["graph_img_s"] / out["eager_img_s"]
    out["max_abs_param_diff"] = max((states["eager"][k].double() - states["graph"][k].double()).abs().max().item()
                                    for k in states["eager"] if states["eager"][k].is_floating_point())
    return out


def derive_and_evaluate_time(dev, n_bn=500, n_test=2000, repeats=3):
    """Seconds to derive, recalibrate BN and test a new s on a trained-size supernet
    (weights random; the work is the same), as in interactive use: model and data
    loaded, one derivation done before; the median over ``repeats`` new vectors s
    (each a different architecture)."""
    from .data import load
    cfg = config("exp1", "authors_code", "paper")
    splits = load("fashion_mnist", cfg["data_dir"])
    torch.manual_seed(0)
    model = build_model(cfg, 1).to(dev).to(memory_format=torch.channels_last).eval()
    vectors = [(0.33, 0.33, 0.34), (0.2, 0.5, 0.3), (0.7, 0.15, 0.15), (0.15, 0.15, 0.7)][: repeats + 1]
    times = []
    for i, v in enumerate(vectors):
        s = torch.tensor(v, device=dev)
        t0 = time.perf_counter()
        derive_and_test(model, splits, s, n_bn, n_test, dev)
        if i:                       # the first one warms the process up
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def family_time(dev, sample=4):
    """Seconds per family member under the sweep's protocol (:mod:`hypernas.family`:
    BatchNorm on 2,000 training images, 5,000 validation images, the whole test set) on
    one thread, the median over ``sample`` members of the committed exp1 family (a
    random model of the same shape when it is absent), and what the whole exp1 sweep --
    its distinct genotypes on the 0.02 grid and as many random ones, two one-thread
    workers -- would take at that rate (latency timing excluded).

    Also the arithmetic behind that time: the members' mean forward FLOPs per image,
    the FLOPs of one member's evaluation (every BatchNorm, validation and test image
    passes once), the rate this achieves, and the rate the issue's target -- every
    distinct genotype of the grid in five minutes on two one-thread workers -- would
    need (compare it with the convolution ceiling measured above)."""
    from .data import load
    from .family import distinct_genotypes, evaluate_genotype, points
    from .train import load_model
    path = ROOT / "results" / "paper" / "exp1-authors_code-seed0" / "model.pt"
    cfg = config("exp1", "authors_code", "paper")
    model = load_model(path) if path.exists() else build_model(cfg, 1).eval()
    splits = load("fashion_mnist", cfg["data_dir"])
    members = distinct_genotypes(model, points(3))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    times, flops = [], []
    try:
        for m in members[:: max(1, len(members) // sample)][:sample]:
            t0 = time.perf_counter()
            flops.append(evaluate_genotype(model, splits, m["genotype"], m["s"], cfg, dev)["flops"])
            times.append(time.perf_counter() - t0)
    finally:
        torch.set_num_threads(threads)
    per = statistics.median(times)
    images = cfg["bn_images"] + cfg["val_images"] + len(splits.x_test)
    member_flops = statistics.fmean(flops) * images
    return dict(per_member_s=per, members=len(members), model="committed" if path.exists() else "random",
                family_estimate_s=per * 2 * len(members) / 2,
                flops_per_image=statistics.fmean(flops), images_per_member=images,
                achieved_gflops_per_worker=member_flops / statistics.fmean(times) / 1e9,
                needed_gflops_per_worker_for_5_min=member_flops * len(members) / 2 / 300 / 1e9)


def _memory_probe(threads, steps):
    """Run in a fresh process by :func:`memory_setting_effect`: print one JSON line."""
    import json
    torch.set_num_threads(threads)
    dev = torch.device("cpu")
    cfg = config("exp1", "authors_code", "paper")
    torch.manual_seed(0)
    m = build_model(cfg, 1).to(memory_format=torch.channels_last).train()
    x = torch.randn(64, 1, 28, 28).contiguous(memory_format=torch.channels_last)
    y, s = torch.randint(0, 10, (64,)), torch.full((3,), 1 / 3)

    def measure(fn, images):
        fn(); fn(); fn()
        r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        for _ in range(steps):
            fn()
        dt, r1 = time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_SELF)
        return dict(img_s=steps * images / dt, page_faults=(r1.ru_minflt - r0.ru_minflt) / steps,
                    system_s=(r1.ru_stime - r0.ru_stime) / steps)
    retain_freed_memory()
    out = dict(retained=retained(), train=measure(_train_step_fn(m, x, y, s, 1.0, dev), 64))
    m.eval()
    net = DerivedNetwork(m, m.genotype(s), s).folded()
    xe = torch.randn(500, 1, 28, 28).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        out["derived_eval"] = measure(lambda: net(xe), 500)
    print(json.dumps(out))


def memory_setting_effect(threads=1, steps=4):
    """exp1 training steps and derived-network evaluation (batch 500) in two fresh
    processes, freed memory retained (hypernas's default) and returned to the OS (glibc's
    default): a process-wide setting cannot be alternated inside one process."""
    import json
    import os
    import subprocess
    import sys
    code = f"from hypernas.bench import _memory_probe; _memory_probe({int(threads)}, {int(steps)})"
    res = {}
    for name, flag in (("retained", "1"), ("returned", "0")):
        env = {**os.environ, "HYPERNAS_RETAIN_MEMORY": flag, "OMP_NUM_THREADS": str(threads)}
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                             text=True, check=True)
        res[name] = json.loads(out.stdout.strip().splitlines()[-1])
    return res


def main(argv=None):
    p = argparse.ArgumentParser(prog="hypernas bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--experiments", nargs="+", default=["exp1", "exp2", "exp3"])
    p.add_argument("--windows", type=int, default=5)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--output", default=None, help="write the table as JSON here")
    p.add_argument("--no-memory", action="store_true",
                   help="skip the retained-vs-returned memory comparison (two extra processes)")
    p.add_argument("--no-family", action="store_true",
                   help="skip the family-sweep timing (four members under the sweep's protocol)")
    p.add_argument("--note", default="", help="a remark stored with the results (e.g. what else ran)")
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    dev = pick_device(a.device)
    print(f"device: {dev}, torch {torch.__version__}, threads {torch.get_num_threads()}")
    ceiling = conv_ceiling(dev)
    print(f"plain 3x3 conv (64ch, 28x28, batch 64, fwd+bwd): {ceiling:.1f} GFLOP/s")
    try:     # what reduced precision would offer (hypernas trains in float32)
        ceiling_bf16 = conv_ceiling(dev, dtype=torch.bfloat16)
        print(f"the same in bfloat16: {ceiling_bf16:.1f} GFLOP/s")
    except RuntimeError as err:
        ceiling_bf16 = None
        print(f"the same in bfloat16: not supported here ({err})")
    rows = [bench_experiment(e, dev, a.windows, a.steps) for e in a.experiments]
    hdr = (f"{'exp':5} {'ops':>3} {'fast img/s':>10} {'ref img/s':>9} {'ratio':>6} {'refCL img/s':>11} {'ratio':>6} {'fast GF/s':>9} "
           f"{'ref GF/s':>8} {'GFLOP/img':>9} {'fast MB':>8} {'ref MB':>7} {'diff f32':>9} {'diff f64':>9} {'faults/step':>11} "
           f"{'derived img/s':>13} {'b1 ms':>6} {'no-kernels img/s':>16} {'gain':>6}")
    print(hdr)
    for r in rows:
        print(f"{r['experiment']:5} {len(r['ops']):>3} {r['fast_img_s']:>10.1f} {r['reference_img_s']:>9.1f} "
              f"{r['speedup']:>5.2f}x {r['reference_cl_img_s']:>11.1f} {r['speedup_vs_cl']:>5.2f}x {r['fast_gflops']:>9.1f} {r['reference_gflops']:>8.1f} "
              f"{r['flops'] / r['batch'] / 1e9:>9.3f} {r['fast_saved_MB']:>8.0f} {r['reference_saved_MB']:>7.0f} "
              f"{r['max_abs_diff']:>9.1e} {r['max_abs_diff_float64']:>9.1e} {r['fast_page_faults_per_step']:>11.0f} {r['derived_eval_img_s']:>13.0f} {r['derived_latency_b1_ms']:>6.2f}"
              + (f" {r['fast_no_kernels_img_s']:>16.1f} {r['kernels_gain']:>5.2f}x" if r["kernels"] else
                 f" {'(no kernels)':>16} {'':>6}"))
    print("(diff: largest |fast - reference| of the logits, float32 and float64; "
          "MB: tensors saved for backward in one training forward; faults/step: minor page "
          "faults per fast training step, median over the windows; no-kernels: the fast supernet "
          "without the compiled CPU kernels (eager mixture, oneDNN's grouped 1x1 and depthwise convolutions); "
          "img/s: median of "
          f"{a.windows} alternating windows of {a.steps} steps)")
    dt = derive_and_evaluate_time(dev)
    print(f"derive + BN recalibration (500 images) + test (2000 images) for a new s: {dt:.2f} s "
          "(median of 3 new s, model and data loaded)")
    fam = None
    if not a.no_family:
        fam = family_time(dev)
        print(f"family member (BN 2000 + validation 5000 + test 10000 images, 1 thread): {fam['per_member_s']:.1f} s; "
              f"whole exp1 family ({fam['members']} + {fam['members']} random, 2 workers): "
              f"~{fam['family_estimate_s'] / 60:.1f} min ({fam['model']} model)")
        print(f"  its arithmetic: {fam['flops_per_image'] / 1e6:.1f} MFLOP per image x {fam['images_per_member']:,} "
              f"images per member, {fam['achieved_gflops_per_worker']:.1f} GFLOP/s per worker achieved; the "
              f"{fam['members']} members in 5 min on 2 workers would need "
              f"{fam['needed_gflops_per_worker_for_5_min']:.0f} GFLOP/s per worker")
    graphs = None
    if dev.type == "cuda":
        try:
            graphs = [cuda_graph_effect(e, dev) for e in a.experiments]
        except Exception as err:  # a capture that fails is a result too
            graphs = [dict(error=repr(err))]
            print(f"CUDA graph capture failed: {err!r}")
        print(f"{'exp':5} {'eager img/s':>11} {'graph img/s':>11} {'ratio':>6} {'max |param diff|':>16}  "
              "(whole training steps, Trainer, authors_code)")
        for g in (g for g in graphs if "error" not in g):
            print(f"{g['experiment']:5} {g['eager_img_s']:>11.0f} {g['graph_img_s']:>11.0f} {g['speedup']:>5.2f}x "
                  f"{g['max_abs_param_diff']:>16.1e}")
    memory = None
    if not a.no_memory:
        memory = memory_setting_effect(torch.get_num_threads())
        print("freed memory (two fresh processes, exp1):  " + "   ".join(
            f"{k}: train {v['train']['img_s']:.1f} img/s, {v['train']['page_faults']:.0f} faults and "
            f"{v['train']['system_s']:.3f} s system per step; derived eval {v['derived_eval']['img_s']:.0f} img/s"
            for k, v in memory.items()))
    exp1 = [r for r in rows if r["experiment"] == "exp1"]
    if a.output:
        from .experiments import device_name, git_commit
        prov = (f"{device_name(dev)}, torch {torch.__version__}, commit {git_commit()}, "
                f"{a.windows} windows x {a.steps} steps, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
                f"freed memory {'retained' if retained() else 'returned to the OS (HYPERNAS_RETAIN_MEMORY=0)'}"
                + (f"; {a.note}" if a.note else ""))
        out = dict(provenance=prov, conv_ceiling_gflops=ceiling, conv_ceiling_bf16_gflops=ceiling_bf16,
                   derive_and_evaluate_s=dt, family=fam,
                   kernels=kernels.extension() is not None, kernels_error=kernels.error(),
                   retain_memory=retained(), threads=torch.get_num_threads(), memory_setting=memory,
                   speedup=exp1[0]["speedup"] if exp1 else None, rows=rows, cuda_graphs=graphs)
        write_json(out, a.output)
    if exp1:
        print(f"speedup: {exp1[0]['speedup']:.2f}x")
    return rows


if __name__ == "__main__":
    main()
