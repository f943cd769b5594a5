"""Helpers for the book's pages: reader-style tables, numbers glued into the prose, the
family explorer and the execution-status table.

Nothing here computes a result: every function formats or reads what the library or a
committed results file already holds. Published values come from
:data:`hypernas.report.PUBLISHED` and are always labelled "published".
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd

from . import report

#: the quantities of Tables 1-3, in the reader's words
QUANTITIES = (("Test accuracy, %", "accuracy, %", "pct"), ("Parameters", "weights", "int"),
              ("Pooling ops", "pool ops", "int"), ("Convolution ops", "conv ops", "int"),
              ("Identity ops", "identity ops", "int"))


def fmt_int(x) -> str:
    """An integer with thousands separators (``133792`` -> ``133,792``)."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    if float(x) != round(float(x)):
        raise ValueError(f"not an integer: {x!r}")
    return f"{int(round(float(x))):,}"


def fmt_pct(x, decimals: int = 2) -> str:
    """A percentage with a fixed number of decimals (the number only, no % sign)."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    return f"{float(x):.{decimals}f}"


def fmt_diff(x, kind: str, decimals: int = 2) -> str:
    """A signed difference, ``+1,024`` or ``-0.35``."""
    if kind == "int":
        return ("+" if x > 0 else "−" if x < 0 else "±") + fmt_int(abs(x))
    return ("+" if x > 0 else "−" if x < 0 else "±") + fmt_pct(abs(x), decimals)


def _fmt(x, kind):
    return fmt_int(x) if kind == "int" else fmt_pct(x)


def reader_tables(res, decimals: int = 2):
    """Ours vs published in two narrow tables, one row per architecture:
    (1) accuracy and weights, each as ours / published / difference;
    (2) op counts per type, each as ours / published.
    Returns two pandas Stylers (strings already formatted, so integers print as integers)."""
    ours = report.ours_table(res)
    pub = report.published_table(res["config"]["experiment"])
    first, second = {}, {}
    for key, label, kind in QUANTITIES:
        for arch in report.ARCHS:
            o, p = float(ours.loc[key, arch]), float(pub.loc[key, arch])
            if key in ("Test accuracy, %", "Parameters"):
                first.setdefault((label, "ours"), {})[arch] = _fmt(o, kind)
                first.setdefault((label, "published"), {})[arch] = _fmt(p, kind)
                first.setdefault((label, "difference"), {})[arch] = fmt_diff(o - p, kind, decimals)
            else:
                second.setdefault((label, "ours"), {})[arch] = _fmt(o, kind)
                second.setdefault((label, "published"), {})[arch] = _fmt(p, kind)
    out = []
    for cols in (first, second):
        df = pd.DataFrame(cols)
        df.columns = pd.MultiIndex.from_tuples(df.columns)
        df.index.name = "architecture"
        out.append(df.style.set_properties(**{"text-align": "right"}))
    return out


def extra_table(res):
    """Rows the thesis lacks (soft supernet accuracy, latency, derivation time), one row
    per architecture, fixed decimals."""
    a = res["architectures"]
    df = pd.DataFrame({
        "soft supernet accuracy, %": {k: fmt_pct(100 * a[k]["soft_supernet_test_acc"]) for k in report.ARCHS},
        "latency batch 1, ms/image": {k: f"{a[k]['latency_batch1_ms']:.3f}" for k in report.ARCHS},
        "latency batch 256, ms/image": {k: f"{a[k]['latency_batch256_ms_per_image']:.3f}" for k in report.ARCHS},
        "derive + recalibrate + test, s": {k: f"{a[k]['derive_and_test_s']:.1f}" for k in report.ARCHS},
    })
    df.index.name = "architecture"
    return df.style.set_properties(**{"text-align": "right"})


def glue_md(key: str, text: str):
    """Glue ``text`` (Markdown) under ``key`` for ``{glue:md}`key``` in the prose."""
    from IPython.display import Markdown
    from myst_nb import glue
    glue(key, Markdown(str(text)), display=False)


def glue_architectures(res, prefix: str = ""):
    """Glue, for each architecture X: ``{prefix}acc_X``, ``{prefix}acc_pub_X``,
    ``{prefix}w_X``, ``{prefix}w_pub_X`` and the op counts ``{prefix}ops_X`` (formatted)."""
    ours = report.ours_table(res)
    pub = report.published_table(res["config"]["experiment"])
    for k in report.ARCHS:
        glue_md(f"{prefix}acc_{k}", fmt_pct(ours.loc["Test accuracy, %", k]))
        glue_md(f"{prefix}acc_pub_{k}", fmt_pct(pub.loc["Test accuracy, %", k]))
        glue_md(f"{prefix}w_{k}", fmt_int(ours.loc["Parameters", k]))
        glue_md(f"{prefix}w_pub_{k}", fmt_int(pub.loc["Parameters", k]))
        c = res["architectures"][k]["op_counts"]
        glue_md(f"{prefix}ops_{k}", ", ".join(f"{fmt_int(n)} {t}" for t, n in c.items()))


# -- the family explorer ------------------------------------------------------------------

def family_files(root) -> list[Path]:
    """Every committed family sweep, ``results/paper/<run>-family.json`` (whichever exist)."""
    return sorted((Path(root) / "results" / "paper").glob("*-family.json"))


def _type_of(op: str) -> str:
    from .ops import OP_TYPES
    return OP_TYPES[op]


def family_frame(path, model_file=None) -> tuple[pd.DataFrame, dict]:
    """The family of a sweep file, with s projected on the three op types (pool, conv,
    identity): for three ops this is s itself; for more (exp2: five ops) the coordinates of
    ops of one type are summed, a linear projection of the simplex onto the triangle of types.

    With the run's ``model_file``, one row per point of the sweep's grid: the hypernetwork
    gives each point its architecture, which must be one of the file's members, and each
    member must cover exactly its recorded ``n_points`` (else ``ValueError``). Without it,
    one row per member, at its representative s."""
    d = json.loads(Path(path).read_text())
    ops = d["provenance"]["ops"]
    types = [_type_of(o) for o in ops]
    by_key = {tuple(m["genotype"]["normal"]) + tuple(m["genotype"]["reduce"]): m for m in d["members"]}
    if model_file is not None:
        import torch

        from .family import points
        from .train import load_model
        model = load_model(model_file)
        if list(model.ops) != list(ops):
            raise ValueError(f"{model_file}: ops {model.ops} != the sweep's {ops}")
        pts = points(len(ops), round(1 / d["provenance"]["grid_step"]))
        if len(pts) != d["provenance"]["grid_points"]:
            raise ValueError(f"{len(pts)} grid points, the sweep recorded {d['provenance']['grid_points']}")
        with torch.no_grad():
            idx = model.alpha(pts, check=False).argmax(-1).flatten(1).tolist()
        placed, count = [], {}
        for p, row in zip(pts.tolist(), idx):
            key = tuple(ops[i] for i in row)
            if key not in by_key:
                raise ValueError(f"grid point {p}: its architecture is not a member of {path}")
            count[key] = count.get(key, 0) + 1
            placed.append((p, by_key[key]))
        wrong = [k for k, m in by_key.items() if count.get(k, 0) != m["n_points"]]
        if wrong:
            raise ValueError(f"{len(wrong)} member(s) of {path} cover another number of grid points")
    else:
        placed = [(m["s"], m) for m in d["members"]]
    rows = []
    for s, m in placed:
        proj = {t: sum(v for v, tt in zip(s, types) if tt == t) for t in ("pool", "conv", "identity")}
        rows.append({
            **{f"s_{t}": v for t, v in proj.items()},
            "s": ", ".join(f"{o} {v:.2f}" for o, v in zip(ops, s)),
            "ops": ", ".join(f"{m['op_counts'].get(t, 0)} {t}" for t in ("pool", "conv", "identity")),
            "normal": " ".join(short_op(o) for o in m["genotype"]["normal"]),
            "reduce": " ".join(short_op(o) for o in m["genotype"]["reduce"]),
            "test_acc": 100 * m["test_acc"], "val_acc": 100 * m["val_acc"],
            "weights": int(m["weights"]), "flops": int(m["flops"]), "n_points": int(m["n_points"]),
            "latency_ms": m["latency_ms"], "predicted_latency_ms": m["predicted_latency_ms"],
        })
    info = {"run": d["provenance"].get("run", Path(path).stem.removesuffix("-family")),
            "ops": ops, "types": types, "projected": len(ops) > 3, "grid": model_file is not None,
            "members": len(d["members"]), "provenance": d["provenance"]}
    return pd.DataFrame(rows), info


_SHORT = {"skip_connect": "I", "identity": "I", "avg_pool_3x3": "Pa", "max_pool_3x3": "Pm",
          "sep_conv_3x3": "S3", "sep_conv_5x5": "S5", "conv_3x3": "C3", "conv_5x5": "C5"}


def short_op(op: str) -> str:
    """Two-letter code of an op (I identity or skip connection, Pa/Pm average/max pooling,
    S3/S5 separable and C3/C5 plain convolution 3x3/5x5)."""
    return _SHORT.get(op, op)


def explorer_figure(frames: dict):
    """A plotly figure: one ternary subplot per family run; each member at its (projected)
    s, coloured by test accuracy, sized by the number of grid points it covers; hovering
    shows the architecture, accuracy, weights and latency."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    names = list(frames)
    cols = min(2, len(names))
    rows = math.ceil(len(names) / cols)
    fig = make_subplots(rows=rows, cols=cols, specs=[[{"type": "ternary"}] * cols] * rows,
                        subplot_titles=names, vertical_spacing=0.12)
    lo = min(df["test_acc"].min() for df, _ in frames.values())
    hi = max(df["test_acc"].max() for df, _ in frames.values())
    for i, (name, (df, info)) in enumerate(frames.items()):
        r, c = divmod(i, cols)
        size = (7 if info["grid"] else 6 + 14 * (df["n_points"] / df["n_points"].max()) ** 0.5)
        custom = df[["ops", "normal", "reduce", "test_acc", "weights", "latency_ms",
                     "predicted_latency_ms", "s", "n_points"]].to_numpy()
        fig.add_trace(go.Scatterternary(
            a=df["s_pool"], b=df["s_conv"], c=df["s_identity"], mode="markers",
            name=name, customdata=custom, showlegend=False,
            marker=dict(size=size, color=df["test_acc"], colorscale="Viridis", cmin=lo, cmax=hi,
                        showscale=(i == 0), colorbar=dict(title="test acc., %", len=0.5),
                        line=dict(width=0.5, color="white")),
            hovertemplate=("<b>s</b> = %{customdata[7]}<br>"
                           "ops: %{customdata[0]}<br>"
                           "normal: %{customdata[1]}<br>reduce: %{customdata[2]}<br>"
                           "test accuracy %{customdata[3]:.2f} %<br>"
                           "weights %{customdata[4]:,}<br>"
                           "latency %{customdata[5]:.2f} ms (table predicts %{customdata[6]:.2f})<br>"
                           "this architecture covers %{customdata[8]} grid points<extra></extra>")),
            row=r + 1, col=c + 1)
    axis = dict(min=0, linewidth=1, ticks="outside")
    fig.update_ternaries(aaxis=dict(title="s pool", **axis), baxis=dict(title="s conv", **axis),
                         caxis=dict(title="s identity", **axis))
    fig.update_layout(height=470 * rows, width=None, autosize=True,
                      margin=dict(l=60, r=60, t=100, b=60), hoverlabel=dict(align="left"))
    fig.update_annotations(yshift=40)          # the run's name above the "s pool" corner
    return fig


def plotly_html(fig, static_prefix: str = "../_static") -> str:
    """The figure as an HTML fragment that loads plotly.js from the built site
    (``_static/plotly/plotly.min.js``, copied there by scripts/build_book.sh), never a CDN."""
    div = fig.to_html(full_html=False, include_plotlyjs=False, include_mathjax=False,
                      config={"displaylogo": False, "responsive": True,
                              "modeBarButtonsToRemove": ["toImage"]})
    return f'<script src="{static_prefix}/plotly/plotly.min.js"></script>\n{div}'


# -- the execution-status page -------------------------------------------------------------

def papermill_status(generated: Path, root: Path) -> pd.DataFrame:
    """One row per notebook written by papermill (``book/generated/*.ipynb``): run time,
    profile, preset, the commit of its results file and when it ran."""
    import nbformat
    rows = []
    for nb_path in sorted(Path(generated).glob("*.ipynb")):
        if nb_path.name.startswith(".") or nb_path.name.endswith(".failed.ipynb"):
            continue
        nb = nbformat.read(nb_path, as_version=4)
        pm = nb.metadata.get("papermill", {})
        params = pm.get("parameters", {})
        prov = _results_provenance(root, params) or {}
        commit = prov.get("commit", "?")
        train_min = f"{prov['train_wall_s'] / 60:.1f}" if "train_wall_s" in prov else "?"
        rows.append({"page": nb_path.stem, "profile": params.get("profile", "?"),
                     "preset": params.get("preset", "?"), "seed": params.get("seed", "?"),
                     "notebook run time, s": f"{pm['duration']:.1f}" if pm.get("duration") else "?",
                     "training, min": train_min,
                     "executed (UTC)": (pm.get("end_time") or "?")[:19].replace("T", " "),
                     "results commit": str(commit),
                     "cells": sum(c.cell_type == "code" for c in nb.cells)})
    return pd.DataFrame(rows).set_index("page") if rows else pd.DataFrame()


def _results_provenance(root: Path, params: dict):
    try:
        from .presets import config, run_name
        cfg = config(params["experiment"], params["preset"], params["profile"], params["seed"])
        base = Path(params.get("results_root") or Path(root) / "results")
        path = base / params["profile"] / f"{run_name(cfg)}.json"
        return json.loads(path.read_text()).get("provenance")
    except (KeyError, FileNotFoundError, ValueError):   # no results file: the page says "?"
        return None
