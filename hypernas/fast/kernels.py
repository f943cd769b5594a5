"""Three hand-written CPU kernels for the supernet, compiled on first use.

Where the fast supernet's time goes on a CPU (``book/performance.md``):

* the *op mixture* -- every edge's weighted sum of its ops' outputs, added into its
  target node -- is in eager PyTorch a chain of small elementwise kernels (a multiply, an
  ``addcmul`` per op and edge, an add per target), each a full pass over the
  activations, and as many again backward (its share of a step: the performance
  page).  :func:`mix` does one source node's whole mixture in one pass forward and one
  backward (``hypernas/fast/csrc/mix.cpp``), the same function as
  :func:`hypernas.fast.dispatch.mix_eager`;
* the separable convolutions' *grouped 1x1 convolutions* (one group per edge) run in
  oneDNN several times slower than a dense 1x1 convolution of the same size.  For groups
  of 16 channels (the supernet's first cells at width 16) :func:`pointwise` keeps a
  group's weights in vector registers (``hypernas/fast/csrc/pointwise.cpp``), the same function
  as ``F.conv2d(x, w, groups=G)``;
* the separable convolutions' first *depthwise convolution* reads one input for all
  ``E`` edges of a node, which eager code copies ``E`` times (``torch.cat``) for one
  grouped call, and whose gradient is then the sum of ``E`` slices.
  :func:`depthwise_repeat` convolves the input once per edge without the copies
  (``hypernas/fast/csrc/depthwise.cpp``, 3x3 and 5x5 at stride 1 or 2, a row of 16 channels
  per vector register), the same function as ``F.conv2d(torch.cat([x] * E, 1), w,
  groups=E*C)``; it also takes the second depthwise convolution (``E = 1``) and the
  average pooling's.

Tests compare all three with the eager code (values and gradients; the mixture also in
float64, the convolutions against float64 convolutions).  They are compiled with
:func:`torch.utils.cpp_extension.load` the first time a process needs them (about a minute; cached in ``TORCH_EXTENSIONS_DIR``, by default under
``~/.cache``, under a name that includes this CPU's instruction set, since the code is
compiled for it) and need a C++ compiler.  ``HYPERNAS_KERNELS`` chooses:

* ``auto`` (default): use them on CPUs when they build; otherwise warn once, with the
  reason, and use the eager code;
* ``0``: never use them (the eager code everywhere);
* ``require``: use them, and raise if they cannot be built (CI sets this, so a broken
  build fails the tests instead of quietly running slower).

They change how things are computed, never what: results differ from the eager code
only by float rounding (summation order).
"""
from __future__ import annotations

import contextlib
import logging
import os
import sys
import warnings
from pathlib import Path

import torch

CL = torch.channels_last
CSRC = Path(__file__).parent / "csrc"
SOURCES = [CSRC / "bindings.cpp", CSRC / "mix.cpp", CSRC / "pointwise.cpp", CSRC / "depthwise.cpp"]
MAX_CHANNELS = 1024           # per edge (kMaxChannels in mix.cpp)
POINTWISE_GROUP = 16          # channels per group of pointwise.cpp
DEPTHWISE_MAX_EDGES = 4       # copies of the input in depthwise.cpp (kMaxEdges)
_state = {"ext": None, "tried": False, "error": None, "disabled": 0}


def setting() -> str:
    v = os.environ.get("HYPERNAS_KERNELS", "auto").strip().lower()
    if v in ("0", "off", "false", "no"):
        return "off"
    if v not in ("auto", "1", "on", "require"):
        raise ValueError(f"HYPERNAS_KERNELS={v!r}: use auto (default), 0 (off) or require")
    return "require" if v == "require" else "auto"


def _cpu_tag() -> str:
    """A short hash of this CPU's model and instruction set: the build is compiled for the
    CPU it runs on (``-march=native``), so a cache shared by other machines must not hand
    it to them."""
    import hashlib
    import platform
    info = platform.machine() + platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("model name", "flags", "Features")):
                info += line
                if line.startswith(("flags", "Features")):
                    break
    except OSError:
        pass
    # and of the source folder: two checkouts (git worktrees) sharing one torch
    # extensions cache would otherwise rebuild over each other's build in turn
    return hashlib.sha1((info + str(CSRC.resolve())).encode()).hexdigest()[:8]


def _build():
    import sysconfig
    from torch.utils import cpp_extension
    omp = ["-fopenmp"] if os.name == "posix" and not _is_macos() else []
    # the ninja that pip installs sits beside this interpreter, on PATH only in an activated venv
    path = os.environ.get("PATH", "")
    os.environ["PATH"] = os.pathsep.join([sysconfig.get_path("scripts"), os.path.dirname(sys.executable), path])
    try:
        try:
            return cpp_extension.load(f"hypernas_kernels_{_cpu_tag()}", [str(p) for p in SOURCES],
                                      extra_cflags=["-O3", "-march=native", *omp], extra_ldflags=omp,
                                      verbose=False)
        except Exception:   # a compiler without -march=native: the portable build
            return cpp_extension.load("hypernas_kernels_portable", [str(p) for p in SOURCES],
                                      extra_cflags=["-O3", *omp], extra_ldflags=omp, verbose=False)
    finally:
        os.environ["PATH"] = path


def _is_macos():
    return sys.platform == "darwin"


def extension():
    """The compiled module, or None (off, or the build failed: see :func:`error`)."""
    if _state["tried"]:
        return _state["ext"]
    mode = setting()
    _state["tried"] = True
    if mode == "off":
        return None
    quiet = logging.getLogger("torch.utils.cpp_extension")
    level = quiet.level
    quiet.setLevel(logging.ERROR)     # "No CUDA runtime is found": irrelevant to a CPU kernel
    try:
        _state["ext"] = _build()
    except Exception as e:            # no compiler, no ninja, a failed build ...
        _state["error"] = f"{type(e).__name__}: {str(e).strip().splitlines()[-1] if str(e).strip() else ''}"
        if mode == "require":
            raise RuntimeError(f"HYPERNAS_KERNELS=require, but the kernels ({CSRC}) did not "
                               f"build: {_state['error']}. Install a C++ compiler and ninja, or unset "
                               "HYPERNAS_KERNELS to fall back to the eager code.") from e
        warnings.warn(f"hypernas: the CPU kernels did not build ({_state['error']}); using the "
                      "slower eager code. Set HYPERNAS_KERNELS=0 to skip the attempt.", stacklevel=2)
    finally:
        quiet.setLevel(level)
    return _state["ext"]


def error():
    """Why the kernels are not in use (None if they are, or were not tried)."""
    return _state["error"]


@contextlib.contextmanager
def disabled():
    """Use the eager code inside this block (the benchmark's A/B of the kernels)."""
    _state["disabled"] += 1
    try:
        yield
    finally:
        _state["disabled"] -= 1


def active() -> bool:
    """Whether the kernels are in use here (built, and not :func:`disabled`)."""
    return not _state["disabled"] and extension() is not None


def usable(x: torch.Tensor, channels_per_edge: int) -> bool:
    """Whether :func:`mix` can take a source node whose input is ``x``."""
    return (x.device.type == "cpu" and x.dtype in (torch.float32, torch.float64) and x.dim() == 4
            and channels_per_edge <= MAX_CHANNELS and active())


def _cl(t):
    return t if t.is_contiguous(memory_format=CL) else t.contiguous(memory_format=CL)


class _Mix(torch.autograd.Function):
    @staticmethod
    def forward(ctx, gamma, fused_idx, shared_idx, n_fused, n_shared, *tensors):
        fused = [_cl(t) for t in tensors[:n_fused]]
        shared = [_cl(t) for t in tensors[n_fused:n_fused + n_shared]]
        accs = [None if a is None else _cl(a) for a in tensors[n_fused + n_shared:]]
        out = _state["ext"].mix_forward(gamma, fused, fused_idx, shared, shared_idx, accs)
        ctx.save_for_backward(gamma, *fused, *shared)
        ctx.meta = (fused_idx, shared_idx, n_fused, [a is not None for a in accs])
        return tuple(out)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, *grads):
        fused_idx, shared_idx, n_fused, has_acc = ctx.meta
        gamma, *ys = ctx.saved_tensors
        fused, shared = ys[:n_fused], ys[n_fused:]
        some = next(g for g in grads if g is not None)
        grads = [torch.zeros_like(some, memory_format=CL) if g is None else _cl(g) for g in grads]
        dgamma, *dys = _state["ext"].mix_backward(gamma, fused, fused_idx, shared, shared_idx, grads)
        d_accs = [g if h else None for g, h in zip(grads, has_acc)]
        return (dgamma, None, None, None, None, *dys, *d_accs)


def mix(gamma, fused, shared, accs):
    """One source node's mixture with the compiled kernel.

    ``gamma``: ``(B, E, k)`` op weights of the node's ``E`` edges; ``fused``: ``(m, y)``
    pairs, ``y`` the op ``m``'s output for all edges ``(B, E*C, H, W)``; ``shared``: ``(m,
    y)``, ``y`` ``(B, C, H, W)`` the same for every edge; ``accs``: per edge, what its target
    has gathered so far, or None.  Returns per edge ``acc + sum_m gamma[:, t, m] * y_m``
    (channels-last).  Call :func:`usable` first."""
    return list(_Mix.apply(gamma.contiguous(), [m for m, _ in fused], [m for m, _ in shared], len(fused), len(shared),
                           *(y for _, y in fused), *(y for _, y in shared), *accs))




def pointwise_usable(x: torch.Tensor, weight: torch.Tensor, groups: int) -> bool:
    """Whether :func:`pointwise` can take ``F.conv2d(x, weight, groups=groups)``."""
    return (x.device.type == "cpu" and x.dtype == torch.float32 and x.dim() == 4
            and weight.shape[2:] == (1, 1) and weight.shape[0] == x.shape[1] == groups * POINTWISE_GROUP
            and weight.shape[1] == POINTWISE_GROUP and active())


class _Pointwise(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, groups):
        x = _cl(x)
        W = weight.detach().view(groups, POINTWISE_GROUP, POINTWISE_GROUP)    # (g, out, in)
        ctx.save_for_backward(x, weight)
        ctx.groups = groups
        return _state["ext"].pointwise_rows(x, W.transpose(1, 2).contiguous())

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, dy):
        x, weight = ctx.saved_tensors
        dy = _cl(dy)
        W = weight.detach().view(ctx.groups, POINTWISE_GROUP, POINTWISE_GROUP)
        dx = _state["ext"].pointwise_rows(dy, W.contiguous()) if ctx.needs_input_grad[0] else None
        dw = (_state["ext"].pointwise_weight_grad(x, dy).view_as(weight)
              if ctx.needs_input_grad[1] else None)
        return dx, dw, None


def pointwise(x, weight, groups):
    """``F.conv2d(x, weight, None, 1, 0, 1, groups)`` for 1x1 ``weight`` with 16 channels per
    group, channels-last out (call :func:`pointwise_usable` first)."""
    return _Pointwise.apply(x, weight, groups)


def depthwise_repeat_usable(x: torch.Tensor, weight: torch.Tensor, stride: int) -> bool:
    """Whether :func:`depthwise_repeat` can take ``x`` and the depthwise ``weight`` of
    ``E`` copies of it (CPUs, float32, stride 1 or 2, 3x3 or 5x5, 16k channels, 1 to 4
    copies)."""
    C = x.shape[1] if x.dim() == 4 else 0
    return (x.device.type == "cpu" and x.dtype == torch.float32 and x.dim() == 4 and stride in (1, 2)
            and C % 16 == 0 and weight.dim() == 4 and weight.shape[1] == 1
            and weight.shape[2] == weight.shape[3] and weight.shape[2] in (3, 5)
            and weight.shape[0] % C == 0 and weight.shape[0] // C <= DEPTHWISE_MAX_EDGES and active())


def _blocks(weight):
    """``(E*C, 1, K, K)`` depthwise weights as ``(E*C/16, K*K, 16)`` (depthwise.cpp)."""
    n, K = weight.shape[0], weight.shape[2]
    return weight.detach().reshape(n // 16, 16, K * K).transpose(1, 2).contiguous()


class _DepthwiseRepeat(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, stride):
        x = _cl(x)
        E, K = weight.shape[0] // x.shape[1], weight.shape[2]
        wb = _blocks(weight)
        ctx.save_for_backward(x, weight)
        ctx.meta = (E, K, stride, wb)
        return _state["ext"].depthwise_forward(x, wb, E, K, stride)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g):
        x, weight = ctx.saved_tensors
        E, K, stride, wb = ctx.meta
        g = _cl(g)
        dx = (_state["ext"].depthwise_input_grad(g, wb, E, K, stride, x.shape[2], x.shape[3])
              if ctx.needs_input_grad[0] else None)
        dw = (_state["ext"].depthwise_weight_grad(x, g, E, K, stride).view_as(weight)
              if ctx.needs_input_grad[1] else None)
        return dx, dw, None


def depthwise_repeat(x, weight, stride=1):
    """``F.conv2d(torch.cat([x] * E, 1), weight, None, stride, K // 2, 1, E * C)`` for
    depthwise ``weight`` ``(E*C, 1, K, K)``, without the ``E`` copies (call
    :func:`depthwise_repeat_usable` first); channels-last out."""
    return _DepthwiseRepeat.apply(x, weight, stride)


def report() -> str:
    """Build now if needed, and say what happened (``make setup`` prints it)."""
    ext = extension()
    if ext is not None:
        return f"hypernas CPU kernels: built ({ext.__file__})"
    if setting() == "off":
        return "hypernas CPU kernels: off (HYPERNAS_KERNELS=0)"
    return f"hypernas CPU kernels: not built ({error()}); the eager code will be used"
