"""Where a number came from: the commit, the device, the number of torch threads.

Floating-point results depend on the device, on the number of threads (a reduction
split over two threads adds in another order) and on whether the compiled CPU kernels
were used (:mod:`hypernas.fast.kernels`), so a run is reproduced bit for bit only under
the same ones.  :class:`hypernas.train.Trainer` records them for every stretch of
training in its checkpoint (``segments``) and warns when a run is resumed under others.
"""
from __future__ import annotations

import os
import platform
import subprocess
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent


def git_commit() -> str:
    """The repository's commit (``+dirty`` with uncommitted changes to tracked files
    other than ``results/`` and ``figures/``: those are what runs write, e.g. the
    checkpoint of a paper run still training, not code).  ``$HYPERNAS_COMMIT``, when
    set, wins: on a copy of the tree on another machine git may see another (stale)
    history, so whoever made the copy names the commit."""
    if os.environ.get("HYPERNAS_COMMIT"):
        return os.environ["HYPERNAS_COMMIT"]
    if not (ROOT / ".git").exists():   # an installed copy: the folder above it is not ours
        return "unknown"
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                             text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--",
                                ".", ":(exclude)results", ":(exclude)figures"], cwd=ROOT,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        if out.returncode == 0:
            return out.stdout.strip() + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        pass
    return "unknown"


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def cpu_kernels(device: torch.device) -> bool:
    """Whether training on ``device`` uses the compiled CPU kernels (:mod:`hypernas.fast.kernels`),
    which round sums in another order than the eager code."""
    from .fast import kernels
    return device.type == "cpu" and kernels.active()


def segment(device: torch.device, from_step: int) -> dict:
    """The record of one stretch of training that starts at ``from_step``."""
    return dict(from_step=int(from_step), device=device_name(device),
                threads=torch.get_num_threads(), cpu_kernels=cpu_kernels(device),
                commit=git_commit(), started=time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()))


def placement_change(before: dict, now: dict) -> str | None:
    """What differs between two segments' device and thread count (None when nothing
    does), as the advice to resume exactly."""
    kernel_then, kernel_now = before.get("cpu_kernels", False), now.get("cpu_kernels", False)
    if before.get("device") == now["device"] and before.get("threads") == now["threads"]:
        if kernel_then == kernel_now:
            return None
        return (f"the steps before ran {'with' if kernel_then else 'without'} the compiled CPU kernels, "
                f"this process {'with' if kernel_now else 'without'} them; the two round sums in another "
                "order, so the run will not be bit-identical to an uninterrupted one; to resume it "
                f"exactly, {'make the kernels build (hypernas.fast.kernels)' if kernel_then else 'set HYPERNAS_KERNELS=0'}")
    return (f"the steps before ran on {before.get('device')} with {before.get('threads')} torch "
            f"thread(s), this process runs on {now['device']} with {now['threads']}. Results depend "
            "on the device and the thread count (sums are added in another order), so the run "
            "will not be bit-identical to an uninterrupted one; to resume it exactly, run it on "
            f"the same device with OMP_NUM_THREADS={before.get('threads')}")
