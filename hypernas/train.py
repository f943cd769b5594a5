"""Single-level training of supernet weights ``w`` and hypernetwork ``a``, resumable.

Each step: draw ``s ~ Uniform(simplex)`` for the batch, compute ``alpha(s)``, sample op
weights ``gamma ~ GS(alpha(s), t)``, and minimise

    CE(supernet(x; gamma), y) + kappa * Cost(gamma_bar(s); s)

with both optimisers on the same batch (authors' code) or one Adam (text).

A run lives in a folder: ``checkpoint.pt`` (model, hypernetwork, optimisers,
schedulers, every RNG state, the position in the epoch), ``log.jsonl`` (metrics) and,
when done, ``model.pt`` (weights only).  Running again in the same folder resumes from
the checkpoint; on CPU the resumed run is bit-identical to an uninterrupted one.
While a process trains a run it holds the folder's lock (:mod:`hypernas.runlock`); a
loss or parameter that is no longer finite stops training (:class:`~hypernas.errors.Diverged`)
before anything of it is saved.  Both files hold only tensors and plain data and are
read without unpickling code (:func:`load_state`).
"""
from __future__ import annotations

import json
import math
import pickle
import sys
import time
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F

from . import __version__
from .complexity import sample_simplex
from .data import augment
from .errors import Diverged, UserError
from .evaluation import supernet_accuracy
from .model import HyperSupernet
from .presets import RUNTIME_FIELDS, upgrade, validate
from .provenance import placement_change, segment
from .relax import temperature
from .fast.graphs import GraphStep
from .fast.process import retain_freed_memory
from .files import replacing, write_text
from .runlock import run_lock


def check_device(device="auto") -> torch.device:
    """The :class:`torch.device` that ``device`` names (``"auto"``: a GPU when there is
    one), or :class:`~hypernas.errors.UserError` when it is no device or is not here."""
    if isinstance(device, torch.device):
        dev = device
    elif device == "auto":
        dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        try:
            dev = torch.device(device)
        except (RuntimeError, TypeError):
            raise UserError(f"unknown device {device!r}; use auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda":
        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if n == 0:
            raise UserError(f"device {device!r}: no CUDA GPU is visible here; use --device cpu (or auto)")
        if dev.index is not None and dev.index >= n:
            raise UserError(f"device {device!r}: there are {n} CUDA GPU(s) here, cuda:0 to cuda:{n - 1}")
    return dev


def pick_device(device: str = "auto") -> torch.device:
    """``"auto"``: a GPU when there is one.  On a GPU, float32 stays float32: TF32
    (PyTorch's default for cuDNN convolutions) is turned off, so that GPU and CPU runs
    compute in the same precision.  A device that does not exist here is a
    :class:`~hypernas.errors.UserError`."""
    dev = check_device(device)
    if dev.type == "cuda":
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False
    return dev


def build_model(cfg, in_channels, n_classes=10) -> HyperSupernet:
    return HyperSupernet(cfg["ops"], cfg["width"], cfg["n_cells"], cfg["n_nodes"], in_channels,
                         n_classes, cfg["n_reference"], cfg["learn_points"], cfg["rbf_sign"],
                         cfg["reference_init"], cfg["classifier"], cfg["per_image"])


def build_optimizers(model, cfg, capturable=False):
    """``capturable``: Adam keeps its step count on the GPU, so that a CUDA graph can
    replay ``step()`` (same update; only for parameters on a GPU)."""
    if cfg["optimizer"] == "sgd+adam":
        w_opt = torch.optim.SGD(model.weights(), cfg["w_lr"], momentum=cfg["w_momentum"],
                                weight_decay=cfg["w_weight_decay"])
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(w_opt, cfg["epochs"], eta_min=cfg["w_lr_min"])
    elif cfg["optimizer"] == "adam":
        w_opt = torch.optim.Adam(model.weights(), cfg["w_lr"], weight_decay=cfg["w_weight_decay"],
                                 capturable=capturable)
        sched = None
    else:
        raise ValueError(f"unknown optimizer {cfg['optimizer']!r}; choose 'sgd+adam' or 'adam'")
    h_opt = torch.optim.Adam(model.hypernet_parameters(), cfg["h_lr"], betas=tuple(cfg["h_betas"]),
                             weight_decay=cfg["h_weight_decay"], capturable=capturable)
    return w_opt, h_opt, sched


def epoch_temperature(cfg, epoch):
    return temperature(epoch, cfg["epochs"], cfg["temperature_schedule"], start=cfg["temperature_start"],
                       end=cfg["temperature_end"], step=cfg["temperature_step"], floor=cfg["temperature_floor"])


def _atomic_save(obj, path: Path):
    with replacing(path) as tmp:
        torch.save(obj, tmp)


def config_mismatch(saved: dict, cfg: dict) -> list:
    """Fields (other than runtime ones) in which two configurations differ."""
    keys = (set(saved) | set(cfg)) - RUNTIME_FIELDS
    return sorted(f"{k}: checkpoint {saved.get(k)!r} != now {cfg.get(k)!r}"
                  for k in keys if saved.get(k) != cfg.get(k))


WINDOW_KEYS = ("loss", "task", "cost", "acc")


class Trainer:
    """Train one configuration on in-memory ``splits`` in folder ``run_dir``."""

    def __init__(self, cfg, splits, run_dir, device="auto"):
        self.cfg, self.splits = cfg, splits
        self.run_dir = Path(run_dir)
        self.device = pick_device(device)
        retain_freed_memory()     # the fast path's process setting (HYPERNAS_RETAIN_MEMORY=0: off)
        torch.manual_seed(cfg["seed"])
        self.model = build_model(cfg, splits.x_train.shape[1]).to(self.device)
        self.model = self.model.to(memory_format=torch.channels_last)
        # CUDA graphs: opt-in (cuda_graphs=True) until a GPU run has checked them; see GraphStep
        self.graphs = self.device.type == "cuda" and bool(cfg.get("cuda_graphs", False))
        self.w_opt, self.h_opt, self.sched = build_optimizers(self.model, cfg, capturable=self.graphs)
        self._graph_step = GraphStep(self) if self.graphs else None
        self.k = len(cfg["ops"])
        n = len(splits.x_train) if cfg["train_images"] is None else min(cfg["train_images"], len(splits.x_train))
        self.n_train = n
        self.steps_per_epoch = n // cfg["batch_size"]  # drop the last partial batch
        if self.steps_per_epoch == 0:
            raise ValueError(f"{n} training images make no batch of {cfg['batch_size']}")
        self.epoch, self.step, self.global_step, self.elapsed = 0, 0, 0, 0.0
        self.data_gen = torch.Generator().manual_seed(cfg["seed"] + 1)
        self.perm = None
        self.log_lines = 0
        self.done = False
        self.window = self._fresh_window()
        self._sums = None      # the window's sums on the device while fit() runs
        #: one record per stretch of training (fit call): first step, device, threads, commit
        self.segments = []
        #: the last step at which the loss / the parameters were checked finite
        self._good_step = dict(loss=0, parameters=0)
        self._saved_step = None  # the step of the checkpoint on disk
        self._bar = None         # fit()'s progress bar

    @staticmethod
    def _fresh_window():
        """Sums of the metrics since the last log line (checkpointed, so that a resumed
        run logs the same averages as an uninterrupted one)."""
        return dict(loss=0.0, task=0.0, cost=0.0, acc=0.0, n=0)

    # -- state -------------------------------------------------------------------------
    def state(self):
        if self._sums is not None:
            self.window.update(zip(WINDOW_KEYS, self._sums.tolist()))
        return dict(format=FILE_FORMAT, hypernas=__version__,
                    cfg=self.cfg, model=self.model.state_dict(), w_opt=self.w_opt.state_dict(),
                    h_opt=self.h_opt.state_dict(),
                    sched=self.sched.state_dict() if self.sched else None,
                    epoch=self.epoch, step=self.step, global_step=self.global_step,
                    elapsed=self.elapsed, perm=self.perm, log_lines=self.log_lines, done=self.done,
                    window=dict(self.window), segments=[dict(r) for r in self.segments],
                    rng=dict(torch=torch.get_rng_state(), data=self.data_gen.get_state(),
                             cuda=torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None))

    def save(self):
        """Checkpoint, after checking that the state is finite (a diverged state is never
        saved: the checkpoint on disk stays the last good one)."""
        st = self.state()
        self._check_finite(self.window, params=True)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        _atomic_save(st, self.run_dir / "checkpoint.pt")
        self._saved_step = self.global_step

    def _check_finite(self, window, params=False):
        """Raise :class:`~hypernas.errors.Diverged` when the window's metric sums (read
        back already) or, with ``params``, any parameter or buffer of the model is not
        finite.  One device synchronisation for all parameters; called only at log
        lines, checkpoints and epoch ends, so that a training step never waits."""
        bad = [k for k in WINDOW_KEYS if not math.isfinite(window[k])]
        if params and not bad:
            tensors = [t for t in self.model.state_dict().values() if t.is_floating_point()]
            if not bool(torch.stack([torch.isfinite(t).all() for t in tensors]).all()):
                bad = ["parameters"]
        if not bad:
            self._good_step["loss"] = self.global_step
            if params:
                self._good_step["parameters"] = self.global_step
            return
        what = "the parameters" if bad == ["parameters"] else "the loss" if "loss" in bad else ", ".join(bad)
        since = self._good_step["parameters" if bad == ["parameters"] else "loss"]
        kept = (f"the checkpoint {self.run_dir / 'checkpoint.pt'} (step {self._saved_step}) is the "
                "last good state and was kept" if self._saved_step is not None
                else "no checkpoint was written")
        raise Diverged(
            f"training diverged: {what} became non-finite (NaN or infinite) between steps "
            f"{since + 1} and {self.global_step} (epoch {self.epoch}); {kept}, and no "
            "results were written; lower the learning rates (w_lr, h_lr) or kappa and train in a "
            "new run folder (resuming this one repeats the same steps)")

    def load(self, path):
        st = load_state(path, self.device, "checkpoint")
        diff = config_mismatch(upgrade(st["cfg"]), self.cfg)
        if diff:
            raise UserError(f"checkpoint {path} was written by another configuration ("
                            + "; ".join(diff) + "); train in another folder (another --results-root), "
                            "or delete the run folder to start over")
        try:
            self.model.load_state_dict(st["model"])
            self.w_opt.load_state_dict(st["w_opt"]); self.h_opt.load_state_dict(st["h_opt"])
            if self.sched:
                self.sched.load_state_dict(st["sched"])
            for key in ("epoch", "step", "global_step", "elapsed", "perm", "log_lines", "done"):
                setattr(self, key, st[key])
        except (KeyError, RuntimeError, ValueError) as err:
            raise UserError(f"checkpoint {path} does not fit this hypernas {__version__} "
                            f"({_state_dict_problem(err)}); it was written by another version: resume it "
                            "with that version, or delete the run folder to start over") from None
        self._saved_step = self.global_step
        self._good_step = dict(loss=self.global_step, parameters=self.global_step)
        self.window = dict(st.get("window") or self._fresh_window())
        self.segments = [dict(r) for r in st.get("segments") or []]
        torch.set_rng_state(st["rng"]["torch"])
        self.data_gen.set_state(st["rng"]["data"])
        if st["rng"]["cuda"] is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(st["rng"]["cuda"])
        self._truncate_log()

    def _truncate_log(self):
        """Drop log lines written after the checkpoint (they will be written again)."""
        log = self.run_dir / "log.jsonl"
        if log.exists():
            lines = log.read_text().splitlines(keepends=True)[: self.log_lines]
            write_text("".join(lines), log)

    def log(self, **record):
        record = {"time": round(self.elapsed, 3), **record}
        self.run_dir.mkdir(parents=True, exist_ok=True)
        with open(self.run_dir / "log.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")
        self.log_lines += 1

    # -- data --------------------------------------------------------------------------
    def batch(self, idx):
        x = self.splits.x_train[idx]
        y = self.splits.y_train[idx]
        x = self.splits.normalize(x)
        x = augment(x, self.cfg["augment"], self.data_gen)
        return self._to_device(x).contiguous(memory_format=torch.channels_last), self._to_device(y)

    def _to_device(self, t):
        """To the device without waiting for it (a copy from pageable memory would wait
        for the GPU to finish the queued work)."""
        if self.device.type != "cuda":
            return t
        return t.pin_memory().to(self.device, non_blocking=True)

    # -- training ----------------------------------------------------------------------
    def train_step(self, x, y, t):
        """One optimisation step on batch ``(x, y)`` at temperature ``t``; returns the
        device tensor ``[loss, task loss, cost, accuracy]`` (float64), without waiting
        for the device.  On a GPU the step is replayed from a CUDA graph."""
        s = self._to_device(sample_simplex(self.k))
        if self._graph_step is not None:
            return self._graph_step(x, y, s, t)
        self.w_opt.zero_grad(set_to_none=True)
        self.h_opt.zero_grad(set_to_none=True)
        return self._step(x, y, s, t)

    def _step(self, x, y, s, t):
        """The step's device work: no host synchronisation, no host-to-device copy, so
        that it can be captured as a CUDA graph."""
        cfg, model = self.cfg, self.model
        alpha = model.alpha(s, check=False)      # s ~ Uniform(simplex) needs no check
        logits = model.run(x, s, alpha, t, "gumbel")
        task = F.cross_entropy(logits, y)
        c = model.cost(alpha, s, t, cfg["cost_weights"])
        loss = task + cfg["kappa"] * c
        loss.backward()
        if cfg["grad_clip"]:
            torch.nn.utils.clip_grad_norm_(list(model.weights()), cfg["grad_clip"])
        self.w_opt.step()
        self.h_opt.step()
        acc = (logits.argmax(1) == y).float().mean()
        return torch.stack([loss.detach(), task.detach(), c.detach(), acc]).double()

    def validate(self, t):
        """The soft supernet's accuracy at the uniform ``s`` on the validation images."""
        s = torch.full((self.k,), 1.0 / self.k, device=self.device)
        return supernet_accuracy(self.model, self.splits, s, t, self.cfg["val_images"], batch=500,
                                 device=self.device, split="val")

    def fit(self, stop_after_steps=None, progress=None):
        """Train to the end (or for ``stop_after_steps`` more steps, for tests and
        time-boxed sessions), checkpointing every ``checkpoint_every`` steps.  Holds the
        run folder's lock meanwhile (:class:`~hypernas.errors.RunLocked` at once if
        another process trains it); raises :class:`~hypernas.errors.Diverged` if the
        loss or a parameter stops being finite."""
        with run_lock(self.run_dir):
            try:
                return self._fit(stop_after_steps, progress)
            finally:
                if self._bar is not None:     # closed before an error is reported, too
                    self._bar.close()
                    self._bar = None

    def _fit(self, stop_after_steps, progress):
        """The training loop: resume, then epochs of steps, each epoch ending in
        validation and a checkpoint, and the final model written."""
        self._resume()
        if self.done:
            return self
        self._open_segment()
        bar = self._open_progress_bar(progress)
        self.model.train()
        self._open_window()
        taken = 0
        while self.epoch < self.cfg["epochs"]:
            t = epoch_temperature(self.cfg, self.epoch)
            self._shuffle()
            while self.step < self.steps_per_epoch:
                if stop_after_steps is not None and taken >= stop_after_steps:
                    self.save()
                    return self
                self._take_step(t, bar)
                taken += 1
            self._end_epoch(t)
        self._finish()
        return self

    # -- the loop's steps, in the order they run ----------------------------------------
    def _resume(self):
        """Load the run folder's checkpoint, if there is one."""
        ckpt = self.run_dir / "checkpoint.pt"
        if ckpt.exists():
            self.load(ckpt)

    def _open_segment(self):
        """Record this stretch of training (device, threads, commit); warn when it differs
        from the stretch before in a way that changes the numbers."""
        now = segment(self.device, self.global_step)
        if self.segments and self.global_step > 0:
            change = placement_change(self.segments[-1], now)
            if change:
                warnings.warn(f"{self.run_dir}: resuming at step {self.global_step}: {change}",
                              stacklevel=3)
        self.segments.append(now)

    def _open_progress_bar(self, progress):
        cfg = self.cfg
        if not (cfg["progress"] if progress is None else progress):
            return None
        from tqdm import tqdm
        self._bar = tqdm(total=cfg["epochs"] * self.steps_per_epoch, initial=self.global_step,
                         file=sys.stderr, mininterval=15, ascii=True, dynamic_ncols=False, ncols=100,
                         desc=f"{cfg['experiment']} {cfg['preset']}")
        return self._bar

    def _open_window(self):
        """Running sums of [loss, task, cost, acc] on the device (float64, added in the
        same order as Python floats would be), read back only when a line is logged."""
        self._sums = torch.tensor([self.window[key] for key in WINDOW_KEYS], dtype=torch.float64,
                                  device=self.device)
        self._window_t0 = time.perf_counter()

    def _shuffle(self):
        """This epoch's order of the training images (kept when resuming inside an epoch)."""
        if self.perm is None:
            self.perm = torch.randperm(len(self.splits.x_train), generator=self.data_gen)[: self.n_train]

    def _take_step(self, t, bar):
        """One training step on the epoch's next batch; a log line and a checkpoint when due."""
        cfg = self.cfg
        t0 = time.perf_counter()
        b = cfg["batch_size"]
        x, y = self.batch(self.perm[self.step * b:(self.step + 1) * b])
        self._sums += self.train_step(x, y, t)
        self.step += 1; self.global_step += 1
        self.window["n"] += 1
        if bar:
            bar.update(1)
        if self.global_step % cfg["log_every"] == 0 or self.step == self.steps_per_epoch:
            self._log_window(t, t0)
        else:
            self.elapsed += time.perf_counter() - t0
        if self.step < self.steps_per_epoch and self.global_step % cfg["checkpoint_every"] == 0:
            self.save()

    def _log_window(self, t, t0):
        """Log the window's averages (waits for the device), check them finite, start a new window."""
        window, sums, b = self.window, self._sums, self.cfg["batch_size"]
        n = window["n"]
        window.update(zip(WINDOW_KEYS, sums.tolist()))   # waits for the device
        self._check_finite(window)
        wall = time.perf_counter() - self._window_t0
        self.elapsed += time.perf_counter() - t0
        self.log(event="step", epoch=self.epoch, step=self.step, global_step=self.global_step,
                 temperature=t, loss=window["loss"] / n, task=window["task"] / n,
                 cost=window["cost"] / n, train_acc=window["acc"] / n,
                 img_per_s=n * b / wall if wall > 0 else None)
        window.update(self._fresh_window())
        sums.zero_()
        self._window_t0 = time.perf_counter()

    def _end_epoch(self, t):
        """Validate, step the learning-rate schedule, log the epoch, checkpoint."""
        self._check_finite(self.window, params=True)    # before validating a diverged model
        t0 = time.perf_counter()
        val_acc = self.validate(t)
        self.elapsed += time.perf_counter() - t0
        lr = self.w_opt.param_groups[0]["lr"]
        if self.sched:
            self.sched.step()
        self.log(event="epoch", epoch=self.epoch, temperature=t, val_acc_soft_uniform=val_acc, w_lr=lr,
                 global_step=self.global_step)
        self.epoch += 1
        self.step = 0
        self.perm = None
        self.save()

    def _finish(self):
        """Mark the run done, checkpoint it and write ``model.pt`` (weights only)."""
        self.done = True
        self.save()
        _atomic_save(dict(format=FILE_FORMAT, hypernas=__version__, cfg=self.cfg,
                          model=self.model.state_dict()), self.run_dir / "model.pt")


def read_log(run_dir):
    path = Path(run_dir) / "log.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


#: the layout of ``model.pt`` and ``checkpoint.pt``: a dict of tensors and plain data with
#: ``cfg`` and ``model`` (the state dict); files before the key was written are format 1
FILE_FORMAT = 1


def _unsafe_global(err) -> str:
    import re
    m = re.search(r"GLOBAL (\S+)", str(err))
    return f"it names {m.group(1)}" if m else "an object torch's safe loader does not allow"


def _state_dict_problem(err) -> str:
    """The first problem ``load_state_dict`` names (its message starts with a header line)."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    detail = lines[1] if len(lines) > 1 else (lines[0] if lines else type(err).__name__)
    return detail if len(detail) <= 300 else detail[:297] + "..."


def _first_line(err) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__


def load_state(path, device="cpu", what="model file") -> dict:
    """The dict stored in a hypernas ``model.pt`` or ``checkpoint.pt``, read with
    ``torch.load(..., weights_only=True)``; :class:`~hypernas.errors.UserError` (one
    line, with the fix) for a file that is missing, not a model, truncated, unsafe or
    of a newer format.

    **Why a file cannot run code.**  A ``.pt`` file is a zip of tensor data and a pickle
    of the objects around them, and an ordinary unpickler calls whatever callable the
    pickle names: a crafted ``model.pt`` could run any command when loaded.  With
    ``weights_only=True`` torch uses its restricted unpickler, which rebuilds tensors
    and plain data only (dicts, lists, tuples, strings, numbers, booleans, None, and a
    few torch types such as dtypes) and refuses any other global before calling
    anything.  Every file hypernas writes holds nothing else: the configuration is a
    dict of plain values, the optimiser and scheduler states are dicts of tensors and
    numbers, the RNG states and the epoch's permutation are tensors, the training
    segments are dicts.  The files committed in ``results/`` (written before this
    check) load the same way, unchanged.

    **Why not safetensors.**  safetensors stores a flat map of names to tensors (plus
    string metadata) and has no code path at all, which is its advantage.  A hypernas
    checkpoint is a nested structure -- configuration, two optimiser states with their
    parameter groups, a scheduler state, RNG states, the log window, the training
    segments -- which would have to be flattened into names and JSON strings and put
    back together on loading: a second file format to keep in step with the first, an
    added dependency, and a conversion of every committed run.  The restricted
    unpickler gives the property that matters here (loading runs no code named by the
    file) for the files as they are; a model exported for use outside hypernas is
    plain weights plus JSON (:mod:`hypernas.export`).
    """
    path = Path(path)
    fix = "pass the model.pt or checkpoint.pt of a hypernas run (results/<profile>/<run>/)"
    if not path.exists():
        raise UserError(f"{what} {path} does not exist; {fix}")
    if path.is_dir():
        raise UserError(f"{what} {path} is a folder; {fix}")
    with open(path, "rb") as f:
        head = f.read(4)
    if head != b"PK\x03\x04":     # torch.save writes a zip archive
        raise UserError(f"{path} is not a hypernas {what} (not a PyTorch archive); {fix}")
    try:
        st = torch.load(path, map_location=device, weights_only=True)
    except pickle.UnpicklingError as err:
        raise UserError(
            f"refusing to load {path}: it holds Python objects other than tensors and plain data, "
            f"and unpickling them could run code ({_unsafe_global(err)}); hypernas never writes such "
            "files, so this one was made or altered elsewhere: do not use it, take the model from "
            "its run folder") from None
    except (RuntimeError, EOFError, OSError, ValueError, KeyError) as err:
        raise UserError(f"{path} is truncated or corrupted ({_first_line(err).split('. ')[0]}); "
                        "copy the file again, or train the run again") from None
    if not (isinstance(st, dict) and isinstance(st.get("cfg"), dict) and isinstance(st.get("model"), dict)):
        holds = "a dict without cfg and model" if isinstance(st, dict) else f"a {type(st).__name__}"
        raise UserError(f"{path} is not a hypernas {what}: it holds {holds}; {fix}")
    fmt = st.get("format", 1)
    if not isinstance(fmt, int) or fmt > FILE_FORMAT:
        raise UserError(f"{path} was written by hypernas {st.get('hypernas', 'of a newer version')} "
                        f"(file format {fmt}); this hypernas {__version__} reads format {FILE_FORMAT} "
                        "and older: install the newer hypernas to load it")
    return st


def load_model(path, device="cpu") -> HyperSupernet:
    """A trained :class:`HyperSupernet` from ``model.pt`` or ``checkpoint.pt``, read
    without unpickling code (:func:`load_state`); a file of another version or an
    inconsistent configuration is a :class:`~hypernas.errors.UserError`."""
    st = load_state(path, device)
    cfg = upgrade(st["cfg"])
    from .data import DATASETS
    try:
        validate(cfg)
        model = build_model(cfg, DATASETS[cfg["dataset"]]["channels"])
    except (KeyError, TypeError, ValueError) as err:
        detail = f"no {err}" if isinstance(err, KeyError) else _first_line(err)
        raise UserError(f"{path} has a configuration this hypernas {__version__} cannot build a "
                        f"model from ({detail}); it was written by another version of hypernas, or "
                        "altered: load it with the version that wrote it") from None
    try:
        model.load_state_dict(st["model"])
    except RuntimeError as err:
        raise UserError(f"{path}: its weights do not fit its configuration under this hypernas "
                        f"{__version__} ({_state_dict_problem(err)}); it was written by another "
                        "version of hypernas, or altered: load it with the version that wrote it") from None
    model.cfg = cfg
    return model.to(device).eval()
