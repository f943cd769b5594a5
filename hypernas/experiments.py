"""One experiment end to end: train (or resume), derive A-D, evaluate, write results.

    results/<profile>/<experiment>-<preset>-seed<N>.json     the results file
    results/<profile>/<experiment>-<preset>-seed<N>/          the run folder
        checkpoint.pt, log.jsonl, model.pt

The results file is written atomically, and only after everything succeeded; while a
process runs an experiment it holds the run folder's lock (:mod:`hypernas.runlock`).
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from . import __version__
from .data import load
from .evaluation import evaluate
from .errors import check_writable_folder
from .files import write_json
from .presets import PLACEMENT_FIELDS, config, run_name, upgrade, validate
from .provenance import ROOT, device_name, git_commit
from .runlock import run_lock
from .train import Trainer, epoch_temperature, pick_device, read_log


def is_checkout() -> bool:
    """Whether hypernas runs from its source tree (the folder above the package holds
    ``pyproject.toml`` and ``book/``), as opposed to an installed copy."""
    return (ROOT / "pyproject.toml").is_file() and (ROOT / "book").is_dir()


def workspace() -> Path:
    """The folder that runs, results files and figures go under by default: the source
    tree when hypernas runs from one (``results/``, ``figures/`` beside the book, as the
    Makefile and the book expect), else the current directory -- never the folder an
    installed hypernas lives in."""
    return ROOT if is_checkout() else Path.cwd()


def results_path(cfg, root=None) -> Path:
    root = Path(root) if root else workspace() / "results"
    return root / cfg["profile"] / f"{run_name(cfg)}.json"


def run(cfg=None, results_root=None, data_dir=None, device=None, stop_after_steps=None,
        reevaluate=False, **kw):
    """Run the experiment of ``cfg`` (or ``config(**kw)``) and return its results dict.

    ``results_root``: the folder of the results files and run folders (default
    ``results/`` of :func:`workspace`).  A finished run whose results file was written
    under the same configuration is returned as it is (re-executing a notebook of a
    finished paper run takes seconds); ``reevaluate=True`` derives and tests A-D again.
    Returns None when ``stop_after_steps`` stopped training early (checkpoint saved).
    A configuration no run could use, or a results folder that cannot be written, is a
    :class:`~hypernas.errors.UserError` before anything is written."""
    cfg = cfg or config(**kw)
    validate(cfg)
    if data_dir is not None:
        cfg["data_dir"] = data_dir
    if device is not None:
        cfg["device"] = device
    out = results_path(cfg, results_root)
    check_writable_folder(out.parent, "results folder")
    run_dir = out.with_suffix("")
    if out.exists() and not reevaluate:
        old = json.loads(out.read_text())
        if all(upgrade(old["config"]).get(k) == v for k, v in cfg.items() if k not in PLACEMENT_FIELDS):
            return old
    dev = pick_device(cfg["device"])
    splits = load(cfg["dataset"], cfg["data_dir"])
    with run_lock(run_dir):     # one process per run, from training to the results file
        return _train_and_evaluate(cfg, splits, run_dir, dev, out, stop_after_steps)


def _train_and_evaluate(cfg, splits, run_dir, dev, out, stop_after_steps):
    trainer = Trainer(cfg, splits, run_dir, dev)
    trainer.fit(stop_after_steps=stop_after_steps)
    if not trainer.done:
        return None
    model = trainer.model.eval()
    t_final = epoch_temperature(cfg, cfg["epochs"] - 1)
    archs = {}
    for name, s in cfg["complexities"].items():
        archs[name] = evaluate(model, splits, torch.tensor(s), cfg, dev, t_final)
    log = read_log(run_dir)
    epochs = [r for r in log if r["event"] == "epoch"]
    steps = [r for r in log if r["event"] == "step"]
    results = dict(
        config=cfg,
        provenance=dict(profile=cfg["profile"], preset=cfg["preset"], seed=cfg["seed"],
                        epochs=cfg["epochs"], train_images=trainer.n_train,
                        device=device_name(dev), commit=git_commit(), hypernas=__version__,
                        torch=torch.__version__, train_wall_s=round(trainer.elapsed, 1),
                        data_source=splits.source,
                        # each stretch of training: first step, device, threads, commit
                        # (recorded since 2026-11-29; older checkpoints have none)
                        training_segments=trainer.segments,
                        finished=time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())),
        training=dict(final_temperature=t_final,
                      val_acc_soft_uniform=[r["val_acc_soft_uniform"] for r in epochs],
                      final_train_loss=steps[-1]["loss"] if steps else None,
                      final_train_acc=steps[-1]["train_acc"] if steps else None,
                      median_img_per_s=_median([r["img_per_s"] for r in steps if r.get("img_per_s")])),
        architectures=archs,
    )
    write_json(results, out)
    return results


def _median(xs):
    xs = sorted(xs)
    return xs[len(xs) // 2] if xs else None
