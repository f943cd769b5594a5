"""The ``hypernas`` command.

    hypernas reproduce [--profile quick] [--experiments exp1 exp2 exp3] [--preset authors_code]
                       [--output DIR] [--results-root DIR]
    hypernas train --experiment exp1 [--profile paper] [--stop-after-steps N] [--results-root DIR]
    hypernas derive MODEL.pt --s 0.2 0.5 0.3 [--evaluate] [--export DIR]   (or --device TABLE)
    hypernas family MODEL.pt [--table TABLE]                   every architecture of the simplex
    hypernas select MODEL.pt --latency-ms 5 [--device TABLE]   the best one within a budget
    hypernas retrain RESULTS.json --arch A [--profile smoke|paper]   (or MODEL.pt --s ...)
    hypernas bench
    hypernas profile [--runtime torch|onnxruntime|cuda] [--threads N] [--dataset all] [--out PATH]

A mistake in the arguments or the files they name is reported as one line,
``hypernas: error: <what, and how to fix it>``, with exit status 2 (1 when a run could
not be done: another process trains it, or training diverged); ``--debug`` adds the
traceback.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import traceback
from pathlib import Path

from .errors import UserError, check_writable_folder
from .fast.process import retain_freed_memory
from .presets import CHOICES, EXPERIMENTS, PRESETS, PROFILES, experiment_title
from .experiments import ROOT, is_checkout, workspace

#: the experiment notebook, shipped inside the package (package data)
NOTEBOOK = Path(__file__).resolve().parent / "experiment.md"
#: where a source checkout keeps the executed notebooks for the book
GENERATED = ROOT / "book" / "generated"


class _Parser(argparse.ArgumentParser):
    """argparse, with its errors in the command's one-line form (exit status 2)."""

    def error(self, message):
        raise UserError(f"{message} (see {self.prog} --help)")


def _debug_option(p):
    # SUPPRESS: the subcommand's default does not overwrite `hypernas --debug CMD`
    p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                   help="show the traceback of an error")


def _common(p):
    p.add_argument("--preset", default="authors_code", choices=list(PRESETS))
    p.add_argument("--profile", default="quick", choices=list(PROFILES))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="auto (a GPU when present), cpu, cuda, cuda:1 ...")
    p.add_argument("--data-dir", default=None,
                   help="folder with the data (must exist; only this copy is used, or a download into "
                        "it); default: $HYPERNAS_DATA, Debian's Fashion-MNIST, else torchvision's download")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--kappa", type=float, default=None)
    p.add_argument("--width", type=int, default=None)
    p.add_argument("--classifier", default=None, choices=list(CHOICES["classifier"]),
                   help="how the classifier depends on s (default: the preset's; see hypernas.model.Classifier)")


def notebook_name(experiment, preset):
    return experiment if preset == "authors_code" else f"{experiment}-{preset}"


def execute_notebook(parameters: dict, output: Path, copies=()):
    """Execute the experiment notebook with papermill into ``output``, atomically: the
    output (and each copy) is replaced only when every cell succeeded."""
    import jupytext
    import papermill

    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "experiment.ipynb"
        jupytext.write(jupytext.read(NOTEBOOK), src)
        out_tmp = output.with_name(f".{output.stem}.running.ipynb")
        try:
            # the kernel runs in the book's folder of a checkout, else in the current one
            # (never in the installed package's folder)
            cwd = ROOT / "book" if is_checkout() else Path.cwd()
            papermill.execute_notebook(str(src), str(out_tmp), parameters=parameters,
                                       kernel_name="python3", language="python", cwd=str(cwd),
                                       progress_bar=False)
        except BaseException as err:
            if out_tmp.exists():
                failed = output.with_name(f"{output.stem}.failed.ipynb")
                os.replace(out_tmp, failed)
                if hasattr(err, "add_note"):
                    err.add_note(f"the notebook's partial output is in {failed}; {output} was left as it was")
            raise
        _retitle(out_tmp, parameters)
        for c in copies:
            c = Path(c)
            if c.resolve() == output.resolve():
                continue
            c.parent.mkdir(parents=True, exist_ok=True)
            c.write_bytes(out_tmp.read_bytes())
        os.replace(out_tmp, output)


def _retitle(path, parameters):
    """Give the executed notebook its experiment's title (the book's page title)."""
    import nbformat
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "markdown" and cell.source.startswith("# Experiment"):
            first, _, rest = cell.source.partition("\n")
            title = experiment_title(parameters["experiment"])
            cell.source = (f"# {title} ({parameters['preset']}, {parameters['profile']} profile)"
                           + "\n" + rest)
            break
    nbformat.write(nb, path)


class NotebookFailed(UserError):
    """An experiment notebook stopped with an error."""

    exit_code = 1


def _reproduce_one(job):
    params, out, copy, threads = job
    if threads:
        os.environ["OMP_NUM_THREADS"] = str(threads)  # inherited by the notebook's kernel
    print(f"[hypernas] {params['experiment']} ({params['preset']}, {params['profile']}) -> {out}", flush=True)
    try:
        execute_notebook(params, out, copies=[copy])
    except Exception as err:
        ename, evalue = getattr(err, "ename", None), getattr(err, "evalue", None)
        if ename is None:       # not an error of a cell (papermill, jupyter): as it is
            raise
        failed = Path(out).with_name(f"{Path(out).stem}.failed.ipynb")
        first = (str(evalue or "").strip().splitlines() or [""])[0]
        raise NotebookFailed(f"{params['experiment']}: {ename}: {first} (the notebook's output "
                             f"is in {failed})") from None
    return out


def _check_options(**values):
    """Counts given on the command line must be positive (``0`` allowed where noted)."""
    for option, (value, least) in values.items():
        if value is not None and value < least:
            raise UserError(f"--{option.replace('_', '-')} must be at least {least}; got {value}")


def _check_run_options(a):
    """What every training command checks before it starts (and before it writes):
    the configuration of each experiment, the device and the data directory."""
    from .data import check_data_dir
    from .presets import config
    from .train import check_device
    experiments = a.experiments if hasattr(a, "experiments") else [a.experiment]
    for exp in experiments:
        config(exp, a.preset, a.profile, a.seed, epochs=a.epochs, kappa=a.kappa, width=a.width,
               classifier=a.classifier, device=a.device, data_dir=a.data_dir)
    check_device(a.device)
    check_data_dir(a.data_dir)


def cmd_reproduce(a):
    """Execute the notebook once per experiment.  Runs and results files go under
    ``--results-root`` (default ``results/`` of :func:`~hypernas.experiments.workspace`:
    the source tree, or the current folder for an installed hypernas), each executed
    notebook into ``--output`` (default: ``book/generated/`` of a source tree, where the
    book takes them; else beside the results files) and a copy beside the results files."""
    _check_options(jobs=(a.jobs, 1))
    if a.classifier is not None:      # the notebook has no such parameter: not silently ignored
        raise UserError("reproduce does not take --classifier (the experiment notebook uses the "
                        "preset's); train with it instead: hypernas train --classifier ...")
    _check_run_options(a)
    results_root = Path(a.results_root).resolve() if a.results_root else workspace() / "results"
    output = Path(a.output) if a.output else GENERATED if is_checkout() else None
    check_writable_folder(output or results_root, "notebook folder (--output)")
    check_writable_folder(results_root / a.profile, "results folder (--results-root)")
    jobs = []
    for exp in a.experiments:
        params = dict(experiment=exp, preset=a.preset, profile=a.profile, seed=a.seed,
                      device=a.device, data_dir=a.data_dir, epochs=a.epochs, kappa=a.kappa,
                      width=a.width)
        if a.results_root or not is_checkout():   # a checkout's notebooks keep the default
            params["results_root"] = str(results_root)
        copy = results_root / a.profile / f"{exp}-{a.preset}-seed{a.seed}.ipynb"
        out = copy if output is None else output / f"{notebook_name(exp, a.preset)}.ipynb"
        jobs.append((params, out, copy))
    cpus = os.cpu_count() or 1
    n = a.jobs or (1 if a.profile == "paper" else min(len(jobs), cpus))
    if n <= 1:
        for params, out, copy in jobs:
            _reproduce_one((params, out, copy, None))
        return 0
    # several experiments at once, one process each with its share of the cores: small
    # convolutions scale poorly across threads, so this uses a CPU better than one
    # experiment at a time with all threads
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor
    threads = max(1, cpus // n)
    failed = []
    with ProcessPoolExecutor(n, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = {pool.submit(_reproduce_one, (*job, threads)): job for job in jobs}
        for fut, job in futures.items():
            try:
                fut.result()
            except Exception as err:  # report every failure, not just the first
                failed.append(str(err)[:500] if isinstance(err, NotebookFailed)
                              else f"{job[0]['experiment']}: {type(err).__name__}: {str(err)[:500]}")
    if failed:
        raise NotebookFailed(f"{len(failed)} of {len(jobs)} experiments failed: " + "; ".join(failed))
    return 0


def cmd_train(a):
    from .experiments import results_path, run
    from .presets import config
    _check_options(stop_after_steps=(a.stop_after_steps, 0))
    _check_run_options(a)
    cfg = config(a.experiment, a.preset, a.profile, a.seed, epochs=a.epochs, kappa=a.kappa,
                 width=a.width, classifier=a.classifier, device=a.device, data_dir=a.data_dir)
    check_writable_folder(results_path(cfg, a.results_root).parent, "results folder (--results-root)")
    res = run(cfg, results_root=a.results_root, stop_after_steps=a.stop_after_steps)
    if res is None:
        print("[hypernas] stopped early; run the same command again to resume")
    else:
        for k, v in res["architectures"].items():
            print(k, f"acc={v['test_acc']:.4f}", f"params={v['weights']}", v["op_counts"])
    return 0


def cmd_derive(a):
    import torch
    from .complexity import check_complexity
    from .evaluation import evaluate
    from .genotype import op_counts, weight_count_of
    from .train import load_model
    model = load_model(a.model, "cpu")
    cfg = model.cfg
    if (a.s is None) == (a.table is None):
        raise UserError("give either --s (a complexity vector) or --device (a latency table)")
    if a.table:
        from .latency import check_table, load_table, table_complexity
        table = load_table(a.table)
        check_table(table, cfg)
        a.s = [round(v, 6) for v in table_complexity(table, model.ops, cfg)]
    try:
        s = check_complexity(torch.tensor(a.s, dtype=torch.float32), model.ops)
    except UserError as err:
        raise UserError(f"--s: {err}") from None
    if a.export:
        check_writable_folder(a.export, "export folder (--export)")
    g = model.genotype(s)
    out = dict(ops=list(model.ops), s=a.s, normal=list(g.normal), reduce=list(g.reduce),
               op_counts=op_counts(g), weights=weight_count_of(g, cfg["width"], cfg["n_cells"]))
    splits = None
    if a.evaluate or a.export:
        from .data import load
        splits = load(cfg["dataset"], a.data_dir)
    if a.evaluate:
        res = evaluate(model, splits, s, dict(cfg, test_images=None), "cpu")
        out.update(test_acc=res["test_acc"], latency_batch1_ms=res["latency_batch1_ms"])
    if a.export:
        from .export import export_derived
        export_derived(model, s, a.export, splits, source=a.model)
        out.update(exported=str(a.export))
    print(json.dumps(out, indent=1))
    return 0


def _results_of_model(model_path: Path) -> Path:
    """``results/<profile>/<run>.json`` of a run folder's ``model.pt``."""
    model_path = Path(model_path)
    return model_path.parent.with_suffix(".json")


def family_path(model_path) -> Path:
    """Where the family of a run's model is kept: beside its results file."""
    res = _results_of_model(model_path)
    return res.with_name(res.stem + "-family.json")


def cmd_family(a):
    from .family import sweep
    from .files import write_json
    from .latency import load_table
    table = load_table(a.table) if a.table else None
    out = Path(a.out) if a.out else family_path(a.model)
    res = sweep(a.model, table=table, steps=a.steps, workers=a.workers,
                progress=lambda i, n: print(f"[hypernas] {i}/{n} architectures evaluated", flush=True)
                if i % 10 == 0 or i == n else None)
    write_json(res, out)
    hv = res["hypervolume"]["latency_ms"]
    print(f"[hypernas] {len(res['members'])} architectures, front of {len(res['front']['latency_ms'])}, "
          f"weights {res['weights_range'][0]:,}-{res['weights_range'][1]:,}; hypervolume "
          f"{hv['family'] / hv['box']:.3f} (random {hv['random'] / hv['box']:.3f}) -> {out}")
    return 0


def cmd_select(a):
    from .family import add_predictions, load_family, select
    from .latency import load_table
    from .train import load_model
    if not a.latency_ms > 0:
        raise UserError(f"--latency-ms must be a positive number of milliseconds, not {a.latency_ms:g}")
    path = Path(a.family) if a.family else family_path(a.model)
    if not path.exists():
        raise UserError(f"no family file {path}; make it with: hypernas family {a.model}"
                                + (f" --table {a.device}" if a.device else ""))
    model = load_model(a.model)
    fam = load_family(path, model.ops)
    key = "latency_ms"
    if a.device:
        add_predictions(fam, load_table(a.device), model.cfg)
        key = "predicted_latency_ms"
    m = select(fam, a.latency_ms, key)
    print(json.dumps(dict(budget_ms=a.latency_ms, latency=key, s=m["s"], genotype=m["genotype"],
                          weights=m["weights"], op_counts=m["op_counts"], val_acc=m["val_acc"],
                          test_acc=m["test_acc"], latency_ms=m["latency_ms"],
                          predicted_latency_ms=m.get("predicted_latency_ms")), indent=1))
    return 0


def cmd_profile(a):
    """Measure this device's latency table (hypernas.latency) and write it atomically;
    bad input: one line ``hypernas: error: ...``, exit 2, nothing written."""
    from . import latency
    from .genotype import Genotype, cell_edges

    def whole(name, value, low):
        try:
            v = int(value)
        except (TypeError, ValueError):
            raise ValueError(f"--{name} takes a whole number, got {value!r}") from None
        if v < low:
            raise ValueError(f"--{name} must be at least {low}, got {v}")
        return v

    try:
        threads = None if a.threads is None else whole("threads", a.threads, 1)
        repeats = whole("repeats", a.repeats, 1)
        warmup = whole("warmup", a.warmup, 0)
        batches = [whole("batches", b, 1) for b in a.batches]
        width, n_cells, n_nodes = (whole(n, v, 1) for n, v in
                                   (("width", a.width), ("n-cells", a.n_cells), ("n-nodes", a.n_nodes)))
        datasets, threads, batches, ops = latency.check_settings(
            a.dataset, a.runtime, threads, batches, repeats, warmup, width, n_cells, n_nodes, a.ops)
        out = Path(a.out) if a.out else latency.default_path(a.runtime, threads)
        if out.is_dir():
            raise ValueError(f"--out {out} is a folder; give a file name such as {out / 'device.json'}")
        if any(p.exists() and not p.is_dir() for p in out.parents):
            raise ValueError(f"--out {out}: a parent of it is a file, not a folder")
        print(f"[hypernas] profiling {', '.join(ops)} on {latency.device_name(a.runtime, threads)} "
              f"({', '.join(datasets)}; batches {batches}; {warmup} + {repeats} rounds) ...", flush=True)
        table = latency.profile(a.dataset, a.runtime, threads, batches, repeats, warmup, width, n_cells,
                                n_nodes, ops)
        latency.write_table(table, out)
    except (ValueError, ImportError, OSError) as err:
        print(f"hypernas: error: {' '.join(str(err).split())}", file=sys.stderr)
        return 2
    print(f"[hypernas] wrote {out} ({table['provenance']['wall_s']:.1f} s)")
    for ds, net in table["networks"].items():
        cfg = dict(dataset=ds, ops=list(ops), width=width, n_cells=n_cells, n_nodes=n_nodes)
        n_edges = len(cell_edges(n_nodes))
        for b in batches:
            every = {op: latency.predicted_latency_ms(table, Genotype((op,) * n_edges, (op,) * n_edges), cfg, b)
                     for op in ops}
            print(f"  {ds} batch {b}: fixed parts {latency.fixed_ms(table, cfg, b):.3f} ms; op on every edge: "
                  + ", ".join(f"{op} {t:.3f}" for op, t in every.items()) + " ms")
    return 0


def build_parser():
    p = _Parser(prog="hypernas", description=__doc__,
                formatter_class=argparse.RawDescriptionHelpFormatter)
    _debug_option(p)
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("reproduce", help="execute the experiment notebooks with papermill")
    _common(r)
    _debug_option(r)
    r.add_argument("--experiments", nargs="+", default=list(EXPERIMENTS), choices=list(EXPERIMENTS))
    r.add_argument("--output", default=None,
                   help="folder for the executed notebooks (default: book/generated/ of a source "
                        "tree, else beside the results files)")
    r.add_argument("--results-root", default=None,
                   help="folder for runs and results files (default: results/ of the source tree, "
                        "else of the current folder)")
    r.add_argument("--jobs", type=int, default=None,
                   help="experiments run at once (default: one per core for smoke/quick, 1 for paper)")
    t = sub.add_parser("train", help="train (or resume) one experiment and evaluate A-D")
    _common(t)
    _debug_option(t)
    t.add_argument("--experiment", default="exp1", choices=list(EXPERIMENTS))
    t.add_argument("--stop-after-steps", type=int, default=None,
                   help="stop (checkpointed) after this many steps; rerun to resume")
    t.add_argument("--results-root", default=None,
                   help="folder for the run (default results/ of the source tree, else of the current "
                        "folder; another one keeps a timing run apart from the committed paper runs, "
                        "e.g. results/cpu-idle-2threads)")
    d = sub.add_parser("derive", help="derive the architecture of a trained model for a new s")
    _debug_option(d)
    d.add_argument("model", help="model.pt or checkpoint.pt of a trained run")
    d.add_argument("--s", type=float, nargs="+", default=None, help="complexity vector, in the run's op order")
    d.add_argument("--device", default=None, dest="table",
                   help="a latency table (hypernas profile): use that device's complexity vector")
    d.add_argument("--evaluate", action="store_true", help="also test it (BN recalibrated)")
    d.add_argument("--export", default=None, metavar="DIR",
                   help="write the derived network into DIR: genotype.json, weights.pt (BatchNorm "
                        "re-estimated on training images) and model.onnx (see hypernas.export)")
    d.add_argument("--data-dir", default=None)
    f = sub.add_parser("family", help="sweep the simplex: every distinct architecture of a trained model, "
                                      "evaluated and timed; fronts and hypervolume")
    _debug_option(f)
    f.add_argument("model", help="model.pt of a trained run")
    f.add_argument("--table", default=None, help="latency table of this device (hypernas profile) for predictions")
    f.add_argument("--steps", type=int, default=None, help="grid divisions (default 50 for 3 ops, 10 for 5)")
    f.add_argument("--workers", type=int, default=2, help="processes of one thread each")
    f.add_argument("--out", default=None, help="default: <run>-family.json beside the run's results file")
    sl = sub.add_parser("select", help="the most accurate (validation) family member within a latency budget")
    _debug_option(sl)
    sl.add_argument("model", help="model.pt of a trained run")
    sl.add_argument("--latency-ms", type=float, required=True, help="budget at batch 1, in ms")
    sl.add_argument("--device", default=None, help="a latency table: judge by its predicted latency "
                                                   "instead of the latency measured in the sweep")
    sl.add_argument("--family", default=None, help="family file (default: beside the run's results file)")
    sub.add_parser("bench", help="fast supernet vs per-edge reference", add_help=False)
    pr = sub.add_parser("profile", help="measure this device's latency table (hypernas.latency)")
    _debug_option(pr)
    pr.add_argument("--runtime", default="torch", help="torch (CPU), onnxruntime (CPU) or cuda")
    pr.add_argument("--threads", default=None, help="CPU threads (default: torch's current count)")
    pr.add_argument("--dataset", default="all", help="fashion_mnist, cifar10 or all (one file, one section each)")
    pr.add_argument("--repeats", default="50", help="timed rounds per batch size")
    pr.add_argument("--warmup", default="10", help="untimed rounds first")
    pr.add_argument("--batches", nargs="+", default=["1", "64"], help="batch sizes")
    pr.add_argument("--width", default="16")
    pr.add_argument("--n-cells", default="3")
    pr.add_argument("--n-nodes", default="4")
    pr.add_argument("--ops", nargs="+", default=None, help="ops to measure (default: every preset's)")
    pr.add_argument("--out", default=None, help="default results/devices/<device>.json")
    from .retrain import add_parser as retrain_parser
    retrain_parser(sub, _debug_option)
    return p


COMMANDS = {"reproduce": cmd_reproduce, "train": cmd_train, "derive": cmd_derive,
            "family": cmd_family, "select": cmd_select, "profile": cmd_profile,
            "retrain": lambda a: __import__("hypernas.retrain", fromlist=["cmd_retrain"]).cmd_retrain(a)}


def _report(err, debug, message=None, code=None):
    """Print an error as the command's one line (with the traceback under --debug)."""
    if debug:
        traceback.print_exception(err)
    lines = (message or str(err)).strip().splitlines() or [type(err).__name__]
    print(f"hypernas: error: {lines[0]}", *lines[1:], sep="\n", file=sys.stderr)
    return code if code is not None else getattr(err, "exit_code", 1)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    debug = "--debug" in argv
    retain_freed_memory()     # the fast path's process setting (HYPERNAS_RETAIN_MEMORY=0: off)
    try:
        a, rest = build_parser().parse_known_args(argv)
        if a.cmd == "bench":
            from .bench import main as bench_main
            bench_main(rest)
            return 0
        if rest:
            raise UserError(f"unrecognized arguments: {' '.join(rest)} (see hypernas {a.cmd} --help)")
        return COMMANDS[a.cmd](a)
    except UserError as err:
        return _report(err, debug)
    except OSError as err:
        if err.filename is None:      # not about a file the user named: a bug, in full
            raise
        return _report(err, debug, f"{err.strerror or err}: {err.filename}; check the path and "
                                   "that you may write there", 1)
    except KeyboardInterrupt as err:
        return _report(err, debug, "interrupted; a training run resumes from its last checkpoint "
                                   "when the same command is run again", 130)


if __name__ == "__main__":
    sys.exit(main())
