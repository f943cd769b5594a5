"""Candidate operations: one record per op (:class:`OpRecord`), the plain modules they build.

Two op sets live here side by side (see the reproduction notes in the book):

* the thesis text's: ``conv_3x3`` / ``conv_5x5`` (ReLU-Conv-BN), ``max_pool_3x3``,
  ``avg_pool_3x3`` and ``identity``;
* the authors' code's (DARTS): ``sep_conv_3x3`` / ``sep_conv_5x5``, ``avg_pool_3x3``
  (``count_include_pad=False``), ``max_pool_3x3`` and ``skip_connect``.

Every op maps ``C`` channels to ``C`` channels; on a stride-2 edge it halves the
resolution (identity becomes ``FactorizedReduce``).  During search all BatchNorms are
``affine=False`` and pools are followed by a BatchNorm, as in DARTS' search phase.

These per-edge modules are the *plain* implementation: the reference supernet in
:mod:`hypernas.reference` and the derived (discrete) networks are built from them.  The
fast supernet (:mod:`hypernas.supernet`) stores the same weights in each record's fused
or shared form (:mod:`hypernas.fast.fused`) and exports them as these modules.

Adding an op is one :func:`register_op` call: its name, type (pool, conv or identity),
plain constructor, weight count, and optionally a fused form (without one, the supernet
runs the plain module once per edge, :class:`~hypernas.fast.fused.PerEdge`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import torch
from torch import nn

from .fast import fused as _fused

TYPE_ORDER = ("pool", "conv", "identity")


class ReLUConvBN(nn.Module):
    """ReLU -> Conv(k x k) -> BN: the thesis text's convolution op and DARTS' 1x1
    preprocessing (``StdConv``)."""

    def __init__(self, C_in, C_out, kernel_size, stride, padding, affine=False):
        super().__init__()
        self.net = nn.Sequential(
            nn.ReLU(inplace=False),
            nn.Conv2d(C_in, C_out, kernel_size, stride, padding, bias=False),
            nn.BatchNorm2d(C_out, affine=affine),
        )

    def forward(self, x):
        return self.net(x)


class DilConv(nn.Module):
    """ReLU -> depthwise k x k -> pointwise 1x1 -> BN."""

    def __init__(self, C_in, C_out, kernel_size, stride, padding, affine=False):
        super().__init__()
        self.net = nn.Sequential(
            nn.ReLU(inplace=False),
            nn.Conv2d(C_in, C_in, kernel_size, stride, padding, groups=C_in, bias=False),
            nn.Conv2d(C_in, C_out, 1, 1, 0, bias=False),
            nn.BatchNorm2d(C_out, affine=affine),
        )

    def forward(self, x):
        return self.net(x)


class SepConv(nn.Module):
    """DARTS' separable conv: two DilConv blocks, the first one carrying the stride."""

    def __init__(self, C_in, C_out, kernel_size, stride, padding, affine=False):
        super().__init__()
        self.net = nn.Sequential(
            DilConv(C_in, C_in, kernel_size, stride, padding, affine),
            DilConv(C_in, C_out, kernel_size, 1, padding, affine),
        )

    def forward(self, x):
        return self.net(x)


class PoolBN(nn.Module):
    """3x3 max or average pool followed by a non-affine BatchNorm (DARTS search)."""

    def __init__(self, kind, C, stride, affine=False):
        super().__init__()
        if kind == "max":
            self.pool = nn.MaxPool2d(3, stride, 1)
        else:
            self.pool = nn.AvgPool2d(3, stride, 1, count_include_pad=False)
        self.bn = nn.BatchNorm2d(C, affine=affine)

    def forward(self, x):
        return self.bn(self.pool(x))


class FactorizedReduce(nn.Module):
    """Halve the resolution with two 1x1 stride-2 convs on offset grids (identity on a
    stride-2 edge, and the preprocessing after a reduction cell)."""

    def __init__(self, C_in, C_out, affine=False):
        super().__init__()
        assert C_out % 2 == 0, "FactorizedReduce needs an even number of output channels"
        self.relu = nn.ReLU(inplace=False)
        self.conv1 = nn.Conv2d(C_in, C_out // 2, 1, 2, 0, bias=False)
        self.conv2 = nn.Conv2d(C_in, C_out // 2, 1, 2, 0, bias=False)
        self.bn = nn.BatchNorm2d(C_out, affine=affine)

    def forward(self, x):
        x = self.relu(x)
        return self.bn(torch.cat([self.conv1(x), self.conv2(x[:, :, 1:, 1:])], dim=1))


class Identity(nn.Module):
    def forward(self, x):
        return x


def _identity(C, stride, affine):
    return Identity() if stride == 1 else FactorizedReduce(C, C, affine)


@dataclass(frozen=True)
class OpRecord:
    """Everything the library knows about one candidate op.

    ``plain(C, stride, affine) -> nn.Module`` builds the per-edge module (reference
    supernet, derived networks); ``weights(C, stride) -> int`` is its weight count in
    closed form (the thesis's convention; a test checks it against ``plain``);
    ``fused(C, E, stride) -> nn.Module`` builds the form that computes the op for the
    ``E`` edges leaving one node at once (:mod:`hypernas.fast.fused`; None: the plain
    module once per edge), whose ``export_state(t)`` must load into ``plain`` with strict
    keys; ``relu_first``: ``plain``'s first submodule is a ReLU applied to the input, which
    a derived network may compute once per node instead (:mod:`hypernas.fast.inference`)."""
    name: str
    type: str
    plain: Callable
    weights: Callable
    fused: Optional[Callable] = None
    relu_first: bool = False

    def __post_init__(self):
        if self.type not in TYPE_ORDER:
            raise ValueError(f"op {self.name!r}: type {self.type!r} is none of {TYPE_ORDER}")

    def build_fused(self, C: int, E: int, stride: int) -> nn.Module:
        """The fused (or shared) form of this op for ``E`` edges."""
        if self.fused is None:
            return _fused.PerEdge([self.plain(C, stride, False) for _ in range(E)])
        return self.fused(C, E, stride)


#: name -> record, in registration order
REGISTRY: dict = {}
#: name -> plain constructor(C, stride, affine) and name -> op type: views of REGISTRY
OPS: dict = {}
OP_TYPES: dict = {}


def register_op(record: OpRecord) -> OpRecord:
    """Add ``record`` to the op set (a name registered already is an error)."""
    if record.name in REGISTRY:
        raise ValueError(f"op {record.name!r} is registered already")
    REGISTRY[record.name] = record
    OPS[record.name] = record.plain
    OP_TYPES[record.name] = record.type
    return record


def unregister_op(name: str) -> None:
    """Remove op ``name`` (for tests and experiments that add one for a while)."""
    for table in (REGISTRY, OPS, OP_TYPES):
        table.pop(name, None)


def _conv(k):
    return OpRecord(f"conv_{k}x{k}", "conv",
                    plain=lambda C, stride, affine: ReLUConvBN(C, C, k, stride, k // 2, affine),
                    weights=lambda C, stride: k * k * C * C,
                    fused=lambda C, E, stride: _fused.FusedConv(C, E, stride, k), relu_first=True)


def _sep_conv(k):
    return OpRecord(f"sep_conv_{k}x{k}", "conv",
                    plain=lambda C, stride, affine: SepConv(C, C, k, stride, k // 2, affine),
                    weights=lambda C, stride: 2 * (k * k * C + C * C),
                    fused=lambda C, E, stride: _fused.FusedSepConv(C, E, stride, k), relu_first=True)


def _pool(kind):
    return OpRecord(f"{kind}_pool_3x3", "pool",
                    plain=lambda C, stride, affine: PoolBN(kind, C, stride, affine),
                    weights=lambda C, stride: 0,
                    fused=lambda C, E, stride: _fused.SharedPool(kind, C, stride))


def _identity_record(name):
    return OpRecord(name, "identity", plain=_identity,
                    weights=lambda C, stride: 0 if stride == 1 else C * C,
                    fused=lambda C, E, stride: (_fused.SharedIdentity() if stride == 1
                                                else _fused.FusedFactorizedReduce(C, E)),
                    relu_first=True)


for _record in (_pool("max"), _pool("avg"), _identity_record("identity"), _identity_record("skip_connect"),
                _conv(3), _conv(5), _sep_conv(3), _sep_conv(5)):
    register_op(_record)


def check_ops(names) -> tuple:
    """Return ``names`` as a tuple, or raise one error listing the known ops."""
    names = tuple(names)
    unknown = [n for n in names if n not in REGISTRY]
    if unknown:
        raise ValueError(
            f"unknown op(s) {unknown}; known ops are: {', '.join(sorted(REGISTRY))}")
    if len(set(names)) != len(names):
        raise ValueError(f"op list {list(names)} names an op twice")
    return names


def record(name: str) -> OpRecord:
    check_ops([name])
    return REGISTRY[name]


def make_op(name: str, C: int, stride: int, affine: bool = False) -> nn.Module:
    return record(name).plain(C, stride, affine)


def op_type(name: str) -> str:
    return record(name).type


def weight_count(name: str, C: int, stride: int) -> int:
    """Number of weights of op ``name`` at width ``C`` and ``stride`` (closed form, from
    its record): sep_conv_k: 2 (k^2 C + C^2); conv_k: k^2 C^2; identity at stride 2
    (FactorizedReduce): C^2; pools and identity at stride 1: 0.  BatchNorms in search
    are not affine and carry none.  A test checks this against the modules."""
    return record(name).weights(C, stride)


_check_cache = set()


def check_fused(name: str, module: nn.Module, C: int, E: int, stride: int) -> None:
    """Raise when ``module`` (op ``name``'s fused form for ``E`` edges) does not export
    every edge as a state dict with exactly the keys and shapes of the plain op.  Called
    when a supernet is built; the plain op is built on the meta device, the random number
    generator left as it was."""
    key = (name, type(module), C, E, stride)
    if key in _check_cache:
        return
    with torch.random.fork_rng(devices=[]), torch.device("meta"):
        want = {k: tuple(v.shape) for k, v in REGISTRY[name].plain(C, stride, False).state_dict().items()}
    for t in range(E):
        got = {k: tuple(v.shape) for k, v in module.export_state(t).items()}
        if got != want:
            missing, extra = sorted(set(want) - set(got)), sorted(set(got) - set(want))
            shapes = sorted(k for k in set(want) & set(got) if want[k] != got[k])
            raise ValueError(f"op {name!r}: its fused form {type(module).__name__} exports edge {t} "
                             f"with a state that does not load into the plain op (missing {missing}, "
                             f"unexpected {extra}, other shapes {shapes})")
    _check_cache.add(key)


def export(name: str, module: nn.Module, t: int, C: int, stride: int) -> nn.Module:
    """Edge ``t`` of the fused form ``module`` of op ``name`` as a plain module (strict keys)."""
    m = REGISTRY[name].plain(C, stride, False)
    m.load_state_dict(module.export_state(t), strict=True)
    return m
