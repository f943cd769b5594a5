"""Process settings that make the CPU runs fast: keep freed memory instead of returning it.

A supernet step allocates and frees hundreds of activation tensors of 1-100 MB.  glibc's
``malloc`` serves blocks that large with ``mmap`` and gives them back with ``munmap`` when
freed, so every new tensor is fresh memory: the kernel zeroes it page by page on first
touch, which costs page faults and system time on every step (measured: the performance
page, ``book/performance.md``).  :func:`retain_freed_memory` tells glibc to serve every
block from its heap and never trim it, so freed tensors are reused as they are (what
tcmalloc or jemalloc do when preloaded).  The price: the process keeps its peak memory
until it exits.

The CLI (:func:`hypernas.cli.main`) and :class:`hypernas.train.Trainer` apply it;
importing :mod:`hypernas` does not.  Set ``HYPERNAS_RETAIN_MEMORY=0`` to turn it off.  It
changes where memory comes from, never what is computed.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_MAX = -1, -2, -4
_state = {"applied": False}


def retain_freed_memory() -> bool:
    """Configure glibc malloc (Linux only) to reuse freed memory; True if it did."""
    if _state["applied"]:
        return True
    if not sys.platform.startswith("linux") or os.environ.get("HYPERNAS_RETAIN_MEMORY", "1") == "0":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl, ...): nothing to do
        return False
    ok = (mallopt(_M_MMAP_MAX, 0) == 1                 # never mmap: every block from the heap
          and mallopt(_M_TRIM_THRESHOLD, 1 << 40) == 1  # never give the heap's top back
          and mallopt(_M_TOP_PAD, 256 << 20) == 1)      # grow the heap 256 MB at a time
    _state["applied"] = ok
    return ok


def retained() -> bool:
    """Whether :func:`retain_freed_memory` is in effect in this process."""
    return _state["applied"]
