"""Audit of the published Tables 1-3: which genotypes give each column's numbers?

For every column (experiment, architecture) of the thesis's tables we enumerate every
*composition* of a derived architecture under our weight convention
(:func:`hypernas.genotype.weight_count_of`, built from :func:`hypernas.ops.weight_count`):

* how many convolutions of each kind sit in the normal genotype (one normal cell, C = 16)
  and in the reduction genotype (used by both reduction cells, C = 32 and 64);
* how many identities sit on a stride-2 edge of the reduction genotype (there an identity
  is a ``FactorizedReduce``, C^2 weights per reduction cell); pools and stride-1
  identities hold no weights.

A composition *fits* a column when its weight count equals the published one and its op
counts can equal the published pool / conv / identity counts (14 edges per genotype, 8 of
the reduction genotype's edges at stride 2, 6 at stride 1).  A column is **unique** when
one composition fits, **ambiguous** when several do (all listed), **impossible** when none
does; then the nearest compositions are listed (closest weight count with the published op
counts, and the compositions with the published weight count whatever their op counts).

Only the op *types* appear in the tables, so a composition is the same for every way of
placing pools and identities on the remaining edges: the audit says how many convolutions
and stride-2 identities each column needs, not which edges hold them.
"""
from __future__ import annotations

import itertools

import pandas as pd

from .genotype import cell_edges, cell_layout
from .ops import OP_TYPES, weight_count
from .presets import OP_SETS

EDGES = 14
STRIDE2 = sum(i < 2 for i, _ in cell_edges(4))     # 8 edges leave the two inputs
STRIDE1 = EDGES - STRIDE2                           # 6 edges between intermediate nodes


def unit_weights(conv_ops, identity_op="skip_connect", C=16, n_cells=3) -> dict:
    """Weights of one op placed in the normal genotype / the reduction genotype, summed
    over the cells that use it, from :func:`hypernas.ops.weight_count`."""
    layout = cell_layout(n_cells)
    normal = [C * m for red, m in layout if not red]
    reduce = [C * m for red, m in layout if red]
    units = {}
    for op in conv_ops:
        units[(op, "normal")] = sum(weight_count(op, c, 1) for c in normal)
        units[(op, "reduce")] = sum(weight_count(op, c, 2) for c in reduce)
    units[(identity_op, "stride2")] = sum(weight_count(identity_op, c, 2) for c in reduce)
    return units


def compositions(conv_ops, units):
    """Every (conv counts per op and cell type, stride-2 identities) with its weight
    count: yields ``(normal_convs, reduce_convs, f, weights)`` where the conv counts are
    tuples in the order of ``conv_ops``."""
    ident = [k for k in units if k[1] == "stride2"][0]
    per_cell = [c for c in itertools.product(range(EDGES + 1), repeat=len(conv_ops)) if sum(c) <= EDGES]
    for cn in per_cell:
        wn = sum(n * units[(op, "normal")] for n, op in zip(cn, conv_ops))
        for cr in per_cell:
            wr = sum(n * units[(op, "reduce")] for n, op in zip(cr, conv_ops))
            for f in range(0, min(STRIDE2, EDGES - sum(cr)) + 1):
                yield cn, cr, f, wn + wr + f * units[ident]


def counts_feasible(cn: int, cr: int, f: int, pool: int, conv: int, identity: int) -> bool:
    """Can a genotype pair with ``cn`` / ``cr`` convolutions in the normal / reduction
    genotype and ``f`` stride-2 identities have exactly these op counts?"""
    if cn + cr != conv or pool + conv + identity != 2 * EDGES or f > identity:
        return False
    rest = identity - f                                  # identities in the normal genotype
    room = (EDGES - cn) + min(STRIDE1, EDGES - cr - f)   # or on stride-1 reduction edges
    return 0 <= rest <= room


def describe(conv_ops, cn, cr, f) -> str:
    def part(counts):
        return " + ".join(f"{n} {op}" for n, op in zip(counts, conv_ops) if n) or "no conv"
    return f"normal: {part(cn)}; reduction: {part(cr)}; {f} stride-2 identit{'y' if f == 1 else 'ies'}"


def audit_column(weights, pool, conv, identity, conv_ops=("sep_conv_3x3",), C=16, n_cells=3,
                 nearest=3) -> dict:
    """The audit of one column: ``status`` (unique / ambiguous / impossible), ``fits``
    (descriptions), and for an impossible column ``nearest`` (the closest weight counts
    with the published op counts) and ``same_weights`` (compositions with the published
    weight count and other conv counts)."""
    units = unit_weights(conv_ops, C=C, n_cells=n_cells)
    fits, near, same = [], [], []
    for cn, cr, f, w in compositions(conv_ops, units):
        ok = counts_feasible(sum(cn), sum(cr), f, pool, conv, identity)
        if ok and w == weights:
            fits.append(dict(normal=cn, reduce=cr, stride2_identities=f, weights=w,
                             text=describe(conv_ops, cn, cr, f)))
        elif ok:
            near.append((abs(w - weights), w, describe(conv_ops, cn, cr, f)))
        elif w == weights:
            same.append(f"{describe(conv_ops, cn, cr, f)} ({sum(cn) + sum(cr)} conv, "
                        f"at least {f} identities)")
    status = "unique" if len(fits) == 1 else "ambiguous" if fits else "impossible"
    out = dict(status=status, fits=fits)
    if not fits:
        near.sort()
        out["nearest"] = [f"{text}: {w:,} weights ({w - weights:+,})" for _, w, text in near[:nearest]]
        out["same_weights"] = same
        out["permuted_rows"] = permuted_fits(weights, (pool, conv, identity), units, conv_ops)
    return out


def permuted_fits(weights, counts, units, conv_ops) -> list:
    """For an impossible column: the orders of its (pool, conv, identity) counts, other
    than the printed one, that some composition fits (a hint that two rows of the
    printed table may have been swapped), as ``(pool, conv, identity, description)``."""
    out = []
    for perm in sorted(set(itertools.permutations(counts)) - {tuple(counts)}):
        for cn, cr, f, w in compositions(conv_ops, units):
            if w == weights and counts_feasible(sum(cn), sum(cr), f, *perm):
                out.append((*perm, describe(conv_ops, cn, cr, f)))
    return out


def conv_ops_of(experiment: str, preset: str = "authors_code"):
    n_ops = 5 if experiment == "exp2" else 3
    return tuple(op for op in OP_SETS[preset][n_ops] if OP_TYPES[op] == "conv")


def audit_published(published=None, preset: str = "authors_code") -> dict:
    """``{(experiment, arch): audit_column(...)}`` for every column of Tables 1-3."""
    from .report import ARCHS, PUBLISHED
    published = PUBLISHED if published is None else published
    out = {}
    for exp, table in published.items():
        for i, k in enumerate(ARCHS):
            out[(exp, k)] = audit_column(table["Parameters"][i], table["Pooling ops"][i],
                                         table["Convolution ops"][i], table["Identity ops"][i],
                                         conv_ops_of(exp, preset))
    return out


def audit_table(audit=None) -> pd.DataFrame:
    """One row per published column: its status and the compositions (or the nearest)."""
    audit = audit_published() if audit is None else audit
    rows = []
    for (exp, k), a in audit.items():
        if a["fits"]:
            detail = " | ".join(f["text"] for f in a["fits"])
        else:
            detail = "nearest: " + " | ".join(a["nearest"])
            if a["same_weights"]:
                detail += "; same weight count only with: " + " | ".join(a["same_weights"][:3])
            for p, c, i, text in a["permuted_rows"]:
                detail += f"; fits if the counts were pool {p} / conv {c} / identity {i}: {text}"
        rows.append(dict(experiment=exp, architecture=k, status=a["status"],
                         compositions=len(a["fits"]), detail=detail))
    return pd.DataFrame(rows)


def summary(audit=None) -> dict:
    """``{status: [(experiment, arch), ...]}``."""
    audit = audit_published() if audit is None else audit
    out = {"unique": [], "ambiguous": [], "impossible": []}
    for key, a in audit.items():
        out[a["status"]].append(key)
    return out
