"""The family of one trained model: every architecture its hypernetwork gives over the
simplex, evaluated, and the accuracy-latency front it spans.

One training yields a map ``s -> genotype(s) = argmax alpha(s)``.  The *family* is its
image over a dense set of points ``S`` of the simplex (:func:`points`: every point with
coordinates in multiples of 0.02 for three ops, 1,326 points; multiples of 0.1 for five,
1,001 points).  Points with the same genotype are one *member*; a member is evaluated
once, at its *representative* ``s``: the point of its group nearest the group's mean
(the classifier of the ``shared`` and ``own`` forms depends on ``s`` too, so two points
of a group give the same cells but slightly different classifiers).

Each member is evaluated by the protocol of the tables (:mod:`hypernas.evaluation`): the
derived network inherits the supernet's weights, its BatchNorm statistics are
re-estimated on ``bn_images`` training images, then

* ``val_acc``: accuracy on ``val_images`` images of the held-out half of the training
  set (what :func:`select` ranks by, so that choosing never looks at the test set),
* ``test_acc``: accuracy on the whole test set,
* ``weights``: the published convention (:func:`hypernas.genotype.weight_count_of`),
* ``flops``: floating-point operations of one image's forward pass (torch's counter,
  ``2 x`` multiply-accumulates of convolutions and the classifier),
* ``latency_ms``: the measured median latency of the inference copy at batch 1,
* ``predicted_latency_ms``: the latency table's sum for the genotype (when a table is
  given; :func:`hypernas.latency.predicted_latency_ms`).

The **front** is the set of non-dominated members (no other member is at least as fast
and at least as accurate, and strictly better in one); its **hypervolume** is the area
it dominates up to a reference point ``(latency_ref, acc_ref)`` (:func:`hypervolume`).
The **random baseline** is as many genotypes drawn uniformly (each edge's op
independently), evaluated the same way with the classifier at the uniform ``s``, and
judged against the same reference point.
"""
from __future__ import annotations

import math
import random
import statistics
import time

import torch

from .complexity import simplex_grid
from .errors import UserError
from .genotype import Genotype, op_counts, weight_count_of

#: grid steps per op count (1/step is the coordinate spacing)
GRID_STEPS = {3: 50, 5: 10}


def points(k: int, steps: int | None = None) -> torch.Tensor:
    """The sweep's points: the regular grid of the simplex with ``steps`` divisions
    (default :data:`GRID_STEPS`: 0.02 for three ops, 0.1 for five)."""
    steps = steps or GRID_STEPS.get(k) or max(2, round(1000 ** (1 / (k - 1))))
    return simplex_grid(k, steps)


def _key(g: Genotype) -> tuple:
    return tuple(g.normal) + tuple(g.reduce)


@torch.no_grad()
def distinct_genotypes(model, pts: torch.Tensor) -> list[dict]:
    """Group the points by genotype.  Returns one dict per distinct genotype, in order of
    first appearance: ``genotype``, ``s`` (the representative), ``n_points``."""
    alpha = model.alpha(pts.to(next(model.hypernet_parameters()).device), check=False)  # grid: on the simplex
    idx = alpha.argmax(-1).flatten(1).cpu()                   # (P, 2 * edges)
    groups: dict[tuple, list[int]] = {}
    for p, row in enumerate(idx.tolist()):
        groups.setdefault(tuple(row), []).append(p)
    ops, n_edges = model.ops, alpha.shape[-2]
    out = []
    for row, members in groups.items():
        g = Genotype(tuple(ops[i] for i in row[:n_edges]), tuple(ops[i] for i in row[n_edges:]))
        sub = pts[members]
        rep = members[int(((sub - sub.mean(0)) ** 2).sum(1).argmin())]
        out.append(dict(genotype=g, s=[round(v, 6) for v in pts[rep].tolist()], n_points=len(members)))
    return out


def random_genotypes(ops, n: int, n_edges: int = 14, seed: int = 0) -> list[Genotype]:
    """``n`` genotypes with every edge's op drawn uniformly and independently."""
    rng = random.Random(seed)
    return [Genotype(tuple(rng.choice(ops) for _ in range(n_edges)),
                     tuple(rng.choice(ops) for _ in range(n_edges))) for _ in range(n)]


# -- the front ---------------------------------------------------------------------------

def pareto_front(costs, accs) -> list[int]:
    """Indices of the non-dominated points (lower cost and higher accuracy are better),
    sorted by cost.  Ties: of equal points the first is kept."""
    order = sorted(range(len(costs)), key=lambda i: (costs[i], -accs[i]))
    front, best = [], -math.inf
    for i in order:
        if accs[i] > best:
            front.append(i)
            best = accs[i]
    return front


def hypervolume(costs, accs, reference) -> float:
    """Area dominated by the points up to ``reference = (cost_ref, acc_ref)``: the union
    of the rectangles ``[cost_i, cost_ref] x [acc_ref, acc_i]`` (points outside the
    reference box count for nothing).  On the front sorted by cost (accuracy rising),
    ``HV = sum_i (cost_ref - cost_i) * (acc_i - acc_{i-1})``, ``acc_0 = acc_ref``."""
    c_ref, a_ref = reference
    inside = [i for i in range(len(costs)) if costs[i] < c_ref and accs[i] > a_ref]
    front = pareto_front([costs[i] for i in inside], [accs[i] for i in inside])
    hv, prev = 0.0, a_ref
    for j in front:
        i = inside[j]
        hv += (c_ref - costs[i]) * (accs[i] - prev)
        prev = accs[i]
    return hv


# -- evaluation --------------------------------------------------------------------------

def _flops(net, shape) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    from .fast import kernels
    x = torch.zeros(1, *shape).contiguous(memory_format=torch.channels_last)
    with kernels.disabled(), FlopCounterMode(display=False) as fc, torch.no_grad():
        net(x)
    return int(fc.get_total_flops())


def evaluate_genotype(model, splits, genotype, s, cfg, device="cpu"):
    """One member's numbers (the module docstring's protocol), except its measured
    latency (:func:`measure_latencies`, run apart on an idle core) and its predicted one
    (:func:`add_predictions`)."""
    from .evaluation import accuracy, recalibrated
    s = torch.as_tensor(s, dtype=torch.float32, device=device)
    net, inference = recalibrated(model, splits, genotype, s, cfg["bn_images"], device)
    shape = tuple(splits.x_test.shape[1:])
    out = dict(s=s.tolist(), genotype=dict(normal=list(genotype.normal), reduce=list(genotype.reduce)),
               op_counts=op_counts(genotype),
               val_acc=accuracy(inference, splits, cfg["val_images"], device=device, split="val"),
               test_acc=accuracy(inference, splits, cfg.get("test_images"), device=device),
               weights=weight_count_of(genotype, cfg["width"], cfg["n_cells"]),
               flops=_flops(net, shape))
    return out


def measure_latencies(model, members, shape, repeats=30, device="cpu"):
    """``latency_ms`` (median) and its p10/p90 at batch 1 for every member, in place:
    the inference copy (:meth:`~hypernas.derived.DerivedNetwork.folded`) of each
    genotype, after two warm-up calls.  BatchNorm statistics do not change the work, so
    the networks are not recalibrated here."""
    from .derived import DerivedNetwork
    x = torch.randn(1, *shape, device=device).contiguous(memory_format=torch.channels_last)
    for m in members:
        g = Genotype(tuple(m["genotype"]["normal"]), tuple(m["genotype"]["reduce"]))
        net = DerivedNetwork(model, g, torch.tensor(m["s"], device=device)).eval().folded()
        with torch.no_grad():
            for _ in range(3):
                net(x)
            times = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                net(x)
                times.append(1e3 * (time.perf_counter() - t0))
        q = statistics.quantiles(times, n=10)
        m.update(latency_ms=statistics.median(times), latency_p10_ms=q[0], latency_p90_ms=q[-1])
    return members


# -- the sweep ---------------------------------------------------------------------------

_WORKER = {}


def _worker_init(model_path, cfg):
    from .data import load
    from .fast.process import retain_freed_memory
    from .train import load_model
    retain_freed_memory()     # a spawned worker: the CLI's process setting, here too
    torch.set_num_threads(1)
    _WORKER.update(model=load_model(model_path), splits=load(cfg["dataset"], cfg["data_dir"]),
                   cfg=cfg)


def _worker_eval(job):
    g, s = job
    w = _WORKER
    return evaluate_genotype(w["model"], w["splits"], Genotype(*g), s, w["cfg"])


def _evaluate_all(model_path, cfg, jobs, workers, progress, journal=None):
    """``evaluate_genotype`` for every ``(genotype, s)`` job, in ``workers`` processes of
    one thread each (small convolutions scale poorly across threads).

    ``journal``: a JSON-lines file that gets one line per finished job as it finishes
    (flushed and synced), so that a run stopped part-way resumes where it stopped: jobs
    already in the journal are read back instead of evaluated again.  A torn last line
    (a process killed mid-write) is ignored and that job evaluated again."""
    import json
    import os
    keys = [json.dumps([list(map(list, g)), list(s)]) for g, s in jobs]
    done = {}
    if journal is not None and os.path.exists(journal):
        with open(journal) as f:
            for line in f:
                try:
                    rec = json.loads(line)
                except ValueError:
                    continue
                done[rec["job"]] = rec["result"]
    todo = [i for i, k in enumerate(keys) if k not in done]
    log = open(journal, "a") if journal is not None else None
    if log is not None and log.tell() and not open(journal).read().endswith("\n"):
        log.write("\n")                  # end a torn line, so the next record starts its own

    def record(i, res, n_done):
        done[keys[i]] = res
        if log is not None:
            log.write(json.dumps(dict(job=keys[i], result=res)) + "\n")
            log.flush()
            os.fsync(log.fileno())
        progress(n_done, len(jobs))

    try:
        base = len(jobs) - len(todo)
        if workers <= 1 or len(todo) <= 1:
            threads = torch.get_num_threads()
            try:          # in this process: its thread count is given back afterwards
                _worker_init(model_path, cfg)
                for n, i in enumerate(todo):
                    record(i, _worker_eval(jobs[i]), base + n + 1)
            finally:
                torch.set_num_threads(threads)
        else:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor
            with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                     initializer=_worker_init, initargs=(str(model_path), cfg)) as pool:
                for n, (i, res) in enumerate(zip(todo, pool.map(_worker_eval, [jobs[i] for i in todo],
                                                                chunksize=1))):
                    record(i, res, base + n + 1)
    finally:
        if log is not None:
            log.close()
    return [done[k] for k in keys], len(jobs) - len(todo)


def sweep(model_path, cfg=None, table=None, steps=None, n_random=None, workers=2,
          latency_repeats=30, seed=0, progress=None) -> dict:
    """The family of the model at ``model_path`` (see the module docstring): every
    distinct genotype of :func:`points`, the random baseline, the fronts and their
    hypervolumes, as one plain dict (the ``<run>-family.json`` file's content):
    :func:`evaluate_family`, then :func:`finish`.

    ``cfg``: the run's configuration (default: the model file's); ``table``: a latency
    table of this device (:mod:`hypernas.latency`) for the predicted latencies;
    ``n_random``: size of the random baseline (default: as many as the family's
    members)."""
    result = evaluate_family(model_path, cfg, table, steps, n_random, workers, seed, progress)
    return finish(result, model_path, table, latency_repeats)


def evaluate_family(model_path, cfg=None, table=None, steps=None, n_random=None, workers=2,
                    seed=0, progress=None, journal=None) -> dict:
    """Members and random baseline with their accuracies, weights and FLOPs (no
    latencies yet: :func:`finish` measures them, best on an otherwise idle machine).
    ``journal``: a file that makes the evaluation resumable (:func:`_evaluate_all`)."""
    from .train import load_model
    progress = progress or (lambda i, n: None)
    model = load_model(model_path)
    cfg = dict(model.cfg if cfg is None else cfg)
    if table is not None:
        from .latency import check_table
        check_table(table, cfg)
    pts = points(len(model.ops), steps)
    family = distinct_genotypes(model, pts)
    n_edges = len(family[0]["genotype"].normal)
    uniform = [round(1 / len(model.ops), 6)] * len(model.ops)
    randoms = [dict(genotype=g, s=uniform, n_points=0)
               for g in random_genotypes(model.ops, n_random or len(family), n_edges, seed)]
    jobs = [(tuple(m["genotype"]), m["s"]) for m in family + randoms]
    t0 = time.perf_counter()
    evaluated, resumed = _evaluate_all(model_path, cfg, jobs, workers, progress, journal)
    for m, res in zip(family + randoms, evaluated):
        res["n_points"] = m["n_points"]
        m.clear()
        m.update(res)
    from . import __version__
    from .provenance import git_commit
    step = 1 / (steps or GRID_STEPS.get(len(model.ops)) or round(len(pts) ** (1 / (len(model.ops) - 1))))
    provenance = dict(
        model=str(model_path), run=f"{cfg['experiment']}-{cfg['preset']}-seed{cfg['seed']}",
        profile=cfg["profile"], ops=list(model.ops), grid_points=len(pts), grid_step=round(step, 6),
        distinct_genotypes=len(family), random_genotypes=len(randoms), random_seed=seed,
        bn_images=cfg["bn_images"], val_images=cfg["val_images"],
        test_images=cfg.get("test_images") or "all",
        workers=workers, threads_per_worker=1, commit=git_commit(), hypernas=__version__,
        torch=torch.__version__, processor=_processor(),
        evaluate_wall_s=round(time.perf_counter() - t0, 1), jobs_read_from_journal=resumed,
        date=time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()))
    return dict(members=family, random_baseline=dict(members=randoms, seed=seed),
                provenance=provenance)


def finish(result: dict, model_path, table=None, latency_repeats=30) -> dict:
    """Measure every member's latency (batch 1, one thread, here and now), add the
    table's predictions, the fronts, hypervolumes and the weight range; in place."""
    from .train import load_model
    model = load_model(model_path)
    family, randoms = result["members"], result["random_baseline"]["members"]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    try:
        measure_latencies(model, family + randoms, _input_shape(model.cfg), latency_repeats)
    finally:
        torch.set_num_threads(threads)
    prov = result["provenance"]
    prov["latency"] = dict(batch=1, threads=1, repeats=latency_repeats, warmup=3, statistic="median",
                           runtime="torch, hypernas inference copy (DerivedNetwork.folded)",
                           processor=_processor(), wall_s=round(time.perf_counter() - t0, 1),
                           date=time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()))
    if table is not None:
        add_predictions(result, table, model.cfg)
    result.update(_fronts(family, randoms))
    result["weights_range"] = [min(m["weights"] for m in family), max(m["weights"] for m in family)]
    return result


def add_predictions(result: dict, table: dict, cfg: dict) -> dict:
    """Every member's ``predicted_latency_ms`` from ``table`` and the prediction's
    quality against the measured latencies; in place."""
    from .latency import check_table, predicted_latency_ms
    check_table(table, cfg)
    members = result["members"] + result["random_baseline"]["members"]
    for m in members:
        g = Genotype(tuple(m["genotype"]["normal"]), tuple(m["genotype"]["reduce"]))
        m["predicted_latency_ms"] = predicted_latency_ms(table, g, cfg)
    result["prediction"] = dict(table=table.get("device"), **prediction_quality(members))
    return result


def _input_shape(cfg):
    from .data import DATASETS
    d = DATASETS[cfg["dataset"]]
    return (d["channels"], d["size"], d["size"])


def _processor():
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform
    return platform.processor() or platform.machine()


def _fronts(family, randoms) -> dict:
    """Fronts (test accuracy against measured latency and against weights) and their
    hypervolumes for the family and the random baseline, against one reference point:
    10 % above the largest latency (weights) of either set, and chance accuracy (0.1)."""
    both = family + randoms
    out = {"front": {}, "hypervolume": {}, "reference_point": {}}
    for cost in ("latency_ms", "weights"):
        ref = (1.1 * max(m[cost] for m in both), 0.1)
        out["reference_point"][cost] = list(ref)
        fam_c, fam_a = [m[cost] for m in family], [m["test_acc"] for m in family]
        rnd_c, rnd_a = [m[cost] for m in randoms], [m["test_acc"] for m in randoms]
        out["front"][cost] = pareto_front(fam_c, fam_a)
        out["random_front_" + cost] = pareto_front(rnd_c, rnd_a)
        out["hypervolume"][cost] = dict(family=hypervolume(fam_c, fam_a, ref),
                                        random=hypervolume(rnd_c, rnd_a, ref),
                                        box=(ref[0]) * (1 - ref[1]))
    return out


def prediction_quality(members) -> dict:
    """How well the table's sum predicts measured latency: Spearman's and Kendall's rank
    correlations and the mean absolute percentage error over ``members``."""
    pred = [m["predicted_latency_ms"] for m in members]
    meas = [m["latency_ms"] for m in members]
    return dict(n=len(members), spearman=_spearman(pred, meas), kendall_tau=kendall_tau(pred, meas),
                mape=statistics.fmean(abs(p - y) / y for p, y in zip(pred, meas)),
                mean_ratio=statistics.fmean(p / y for p, y in zip(pred, meas)))


def _ranks(xs):
    order = sorted(range(len(xs)), key=xs.__getitem__)
    ranks = [0.0] * len(xs)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and xs[order[j + 1]] == xs[order[i]]:
            j += 1
        for t in range(i, j + 1):
            ranks[order[t]] = (i + j) / 2
        i = j + 1
    return ranks


def _spearman(a, b) -> float:
    ra, rb = _ranks(a), _ranks(b)
    return statistics.correlation(ra, rb)


def kendall_tau(a, b) -> float:
    """Kendall's tau-b (ties in either list counted as neither concordant nor
    discordant)."""
    n, conc, disc, ta, tb = len(a), 0, 0, 0, 0
    for i in range(n):
        for j in range(i + 1, n):
            da, db = a[i] - a[j], b[i] - b[j]
            if da == 0 and db == 0:
                continue
            if da == 0:
                ta += 1
            elif db == 0:
                tb += 1
            elif (da > 0) == (db > 0):
                conc += 1
            else:
                disc += 1
    denom = math.sqrt((conc + disc + ta) * (conc + disc + tb))
    return (conc - disc) / denom if denom else float("nan")


# -- choosing a member ---------------------------------------------------------------------

MEMBER_KEYS = ("s", "genotype", "val_acc", "test_acc", "weights", "latency_ms")


def load_family(path, ops=None) -> dict:
    """A family file (``<run>-family.json``), checked: readable JSON with ``members``,
    each having :data:`MEMBER_KEYS`, and -- given the model's ``ops`` -- made for that
    op set.  Anything else is a :class:`~hypernas.errors.UserError` naming the file."""
    import json
    from pathlib import Path
    path = Path(path)
    try:
        fam = json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"no family file {path}; make it with: hypernas family MODEL") from None
    except (ValueError, UnicodeDecodeError) as err:
        raise UserError(f"{path} is not a family file (not JSON: {err}); make it again with "
                        "hypernas family MODEL") from None
    members = fam.get("members") if isinstance(fam, dict) else None
    if not isinstance(members, list) or not members or not all(
            isinstance(m, dict) and all(k in m for k in MEMBER_KEYS) for m in members):
        raise UserError(f"{path} is not a family file (it needs 'members', each with "
                        f"{', '.join(MEMBER_KEYS)}); make it again with hypernas family MODEL")
    made_for = fam.get("provenance", {}).get("ops")
    if ops is not None and made_for is not None and list(made_for) != list(ops):
        raise UserError(f"{path} is the family of a model with ops {made_for}, not {list(ops)}; "
                        "pass the family file of this model (--family) or make it: hypernas family MODEL")
    return fam


class NoMemberFits(UserError):
    """No member of the family meets the budget."""


def select(family: dict, budget_ms: float, latency_key="latency_ms") -> dict:
    """The member with the best validation accuracy whose latency (``latency_key``:
    measured ``latency_ms`` or ``predicted_latency_ms``) is within ``budget_ms``; ties
    go to the faster member."""
    members = family["members"]
    fits = [m for m in members if m[latency_key] <= budget_ms]
    if not fits:
        fastest = min(m[latency_key] for m in members)
        raise NoMemberFits(f"no member of the family has a latency within {budget_ms:g} ms; "
                           f"the fastest takes {fastest:.3f} ms ({latency_key}); raise the budget")
    return max(fits, key=lambda m: (m["val_acc"], -m[latency_key]))
