"""Tables, claims and figures: our results beside the thesis's published ones.

``PUBLISHED`` holds Tables 1-3 exactly as printed in the thesis (they are shown labelled
"published", never mixed with ours).  Everything else here is computed from a results
file written by :mod:`hypernas.experiments`.
"""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from .genotype import cell_edges
from .ops import OP_TYPES
from .presets import LABELS

ARCHS = ("A", "B", "C", "D")
ROWS = ("Test accuracy, %", "Parameters", "Pooling ops", "Convolution ops", "Identity ops")

#: Tables 1-3 of the thesis, as published
PUBLISHED = {
    "exp1": {"Test accuracy, %": (82.5, 79.2, 85.0, 81.4), "Parameters": (38304, 5120, 143488, 12320),
             "Pooling ops": (12, 17, 0, 18), "Convolution ops": (6, 0, 13, 9), "Identity ops": (10, 11, 15, 1)},
    "exp2": {"Test accuracy, %": (85.62, 82.37, 85.63, 85.60), "Parameters": (93888, 25280, 137632, 72928),
             "Pooling ops": (16, 22, 4, 22), "Convolution ops": (8, 1, 13, 6), "Identity ops": (4, 5, 11, 0)},
    "exp3": {"Test accuracy, %": (71.02, 52.37, 73.77, 68.43), "Parameters": (113984, 10240, 159456, 8800),
             "Pooling ops": (4, 12, 0, 17), "Convolution ops": (18, 0, 9, 11), "Identity ops": (6, 16, 19, 0)},
}
#: which op type each architecture penalises most (B: conv, C: pool, D: identity)
PENALISED = {"B": "conv", "C": "pool", "D": "identity"}
TYPE_ROW = {"pool": "Pooling ops", "conv": "Convolution ops", "identity": "Identity ops"}


def load_results(path) -> dict:
    return json.loads(Path(path).read_text())


def ours_table(res) -> pd.DataFrame:
    a = res["architectures"]
    rows = {
        "Test accuracy, %": [100 * a[k]["test_acc"] for k in ARCHS],
        "Parameters": [a[k]["weights"] for k in ARCHS],
        "Pooling ops": [a[k]["op_counts"]["pool"] for k in ARCHS],
        "Convolution ops": [a[k]["op_counts"]["conv"] for k in ARCHS],
        "Identity ops": [a[k]["op_counts"]["identity"] for k in ARCHS],
    }
    return pd.DataFrame(rows, index=list(ARCHS)).T


def published_table(experiment) -> pd.DataFrame:
    return pd.DataFrame(PUBLISHED[experiment], index=list(ARCHS)).T


def comparison(res) -> pd.DataFrame:
    """The thesis's layout, ours / published / difference for each architecture."""
    ours, pub = ours_table(res), published_table(res["config"]["experiment"])
    cols = {}
    for k in ARCHS:
        cols[(k, "ours")] = ours[k]
        cols[(k, "published")] = pub[k]
        cols[(k, "ours - published")] = ours[k] - pub[k]
    df = pd.DataFrame(cols)
    df.columns = pd.MultiIndex.from_tuples(df.columns)
    return df


def extra_rows(res) -> pd.DataFrame:
    """Rows the thesis lacks: soft supernet accuracy, latency, derivation time."""
    a = res["architectures"]
    rows = {
        "Soft supernet accuracy at s, %": [100 * a[k]["soft_supernet_test_acc"] for k in ARCHS],
        "Latency, batch 1, ms/image": [a[k]["latency_batch1_ms"] for k in ARCHS],
        "Latency, batch 256, ms/image": [a[k]["latency_batch256_ms_per_image"] for k in ARCHS],
        "Derive + BN recalibration + test, s": [a[k]["derive_and_test_s"] for k in ARCHS],
    }
    return pd.DataFrame(rows, index=list(ARCHS)).T


def replicate_table(runs: dict, experiment: str) -> pd.DataFrame:
    """Two or more runs of one configuration (other device, other random draws) and the
    published table, side by side: ``runs`` maps a label to a results dict."""
    cols = {}
    for k in ARCHS:
        for label, res in runs.items():
            cols[(k, label)] = ours_table(res)[k]
        cols[(k, "published")] = published_table(experiment)[k]
    df = pd.DataFrame(cols)
    df.columns = pd.MultiIndex.from_tuples(df.columns)
    return df.drop(index="Parameters")


def provenance(res) -> pd.DataFrame:
    p = dict(res["provenance"])
    p["train_wall_min"] = round(p["train_wall_s"] / 60, 1)
    if "training_segments" in p:
        p["training_segments"] = segments_text(p["training_segments"])
    return pd.DataFrame({"value": {k: str(v) for k, v in p.items()}})


def segments_text(segments) -> str:
    """Where each stretch of a run's training ran, in one line."""
    if not segments:
        return "not recorded (the run's checkpoints predate the record)"
    first = "" if segments[0]["from_step"] == 0 else (
        f"steps before {segments[0]['from_step']}: not recorded; ")
    return first + "; ".join(
        f"from step {r['from_step']}: {r['device']}, {r['threads']} thread(s), commit {r['commit']}"
        for r in segments)


#: the verdicts, strongest first
VERDICTS = ("supported", "partly supported", "not shown", "not supported")


def _genotypes(a) -> dict:
    return {k: (tuple(a[k]["genotype"]["normal"]), tuple(a[k]["genotype"]["reduce"])) for k in ARCHS}


def _same_as(genos, k) -> list:
    return [j for j in ARCHS if j != k and genos[j] == genos[k]]


def _extreme(values: dict, k, most: bool):
    """(is k the extreme, the architectures that tie with it there)."""
    best = max(values.values()) if most else min(values.values())
    at = [j for j in ARCHS if values[j] == best]
    return values[k] == best, [j for j in at if j != k]


def _rank_reversals(ours: dict, published: dict) -> list:
    """Architectures whose published weight count is in the lower half of A-D while ours
    is the (possibly tied) largest, or in the upper half while ours is the smallest."""
    order = sorted(ARCHS, key=lambda j: published[j])
    low, high = order[:2], order[2:]
    big, small = max(ours.values()), min(ours.values())
    out = []
    for j in ARCHS:
        rank = {0: "smallest", 1: "second smallest", 2: "second largest", 3: "largest"}[order.index(j)]
        if j in low and ours[j] == big:
            out.append(f"{j} is the published {rank} ({published[j]:,}) but our largest ({ours[j]:,})")
        elif j in high and ours[j] == small:
            out.append(f"{j} is the published {rank} ({published[j]:,}) but our smallest ({ours[j]:,})")
    return out


def verdicts(res) -> list:
    """The thesis's claims, judged on one run: a list of dicts ``claim``, ``verdict``
    (one of :data:`VERDICTS`), ``evidence`` (the numbers it rests on) and ``caveat`` (the
    tie, absent op or reversal that keeps it from "supported"; empty when none).

    A claim is never "supported" when it holds only by a tie (two architectures identical
    or with equal weights / accuracy at the extreme), when the reference architecture A
    lacks the op anyway, or when ours reverses the published direction."""
    a = res["architectures"]
    genos = _genotypes(a)
    out = []

    def add(claim, verdict, evidence, caveat=""):
        out.append(dict(claim=claim, verdict=verdict, evidence=evidence, caveat=caveat))

    for arch, t in PENALISED.items():
        n, n_a = a[arch]["op_counts"][t], a["A"]["op_counts"][t]
        claim = f"Penalising {t} ({arch}) removes it"
        ev = f"{t} ops: {arch} {n}, A {n_a}"
        if "A" in _same_as(genos, arch):
            add(claim, "not shown", ev, f"tie: {arch} is the same architecture as A")
        elif n == 0 and n_a == 0:
            add(claim, "not shown", ev, f"absent op: A has no {t} op either")
        elif n == 0:
            add(claim, "supported", ev)
        elif n < n_a:
            add(claim, "partly supported", ev, f"{arch} keeps {n} {t} op(s)")
        elif n == n_a:
            add(claim, "not supported", ev, f"tie: {arch} has as many {t} ops as A")
        else:
            add(claim, "not supported", ev, f"reversal: {arch} has more {t} ops than A")

    w = {k: a[k]["weights"] for k in ARCHS}
    ev = "weights: " + ", ".join(f"{k} {w[k]:,}" for k in ARCHS)
    claim = "B (conv penalised) has the fewest weights, C (pool penalised) the most"
    b_min, b_tie = _extreme(w, "B", most=False)
    c_max, c_tie = _extreme(w, "C", most=True)
    if b_min and c_max and not b_tie and not c_tie:
        add(claim, "supported", ev)
    elif b_min and c_max:
        ties = [f"{'B' if x is b_tie else 'C'} = {' = '.join(x)}" for x in (b_tie, c_tie) if x]
        add(claim, "not shown", ev, "tie: " + "; ".join(ties))
    elif w["B"] < w["C"]:
        who = [f"{j} has the {'fewest' if w[j] == min(w.values()) else 'most'}"
               for j in ARCHS if j not in "BC" and w[j] in (min(w.values()), max(w.values()))]
        add(claim, "partly supported", ev, "B < C, but " + ", ".join(who))
    else:
        add(claim, "not supported", ev, "reversal: B has at least as many weights as C")

    exp = res.get("config", {}).get("experiment")
    if exp in PUBLISHED:
        pub = dict(zip(ARCHS, PUBLISHED[exp]["Parameters"]))
        claim = "The weights of A-D are in the published order"
        ours_order = sorted(ARCHS, key=lambda j: w[j])
        pub_order = sorted(ARCHS, key=lambda j: pub[j])
        ev2 = f"ours {' < '.join(ours_order)}, published {' < '.join(pub_order)}"
        rev = _rank_reversals(w, pub)
        tied = len(set(w.values())) < 4
        if rev:
            add(claim, "not supported", ev2, "reversal: " + "; ".join(rev))
        elif ours_order == pub_order and not tied:
            add(claim, "supported", ev2)
        elif ours_order == pub_order:
            add(claim, "not shown", ev2, "tie: two architectures have equal weights")
        else:
            add(claim, "partly supported", ev2, "the order differs, without a reversal of the extremes")

    acc = {k: a[k]["test_acc"] for k in ARCHS}
    claim = "B has the lowest accuracy, C the highest"
    ev = "accuracy %: " + ", ".join(f"{k} {100 * acc[k]:.2f}" for k in ARCHS)
    b_low, b_tie = _extreme(acc, "B", most=False)
    c_high, c_tie = _extreme(acc, "C", most=True)
    twins = [f"{k} = {'='.join(_same_as(genos, k))}" for k in "BC" if _same_as(genos, k)]
    if b_low and c_high and not b_tie and not c_tie and not twins:
        add(claim, "supported", ev)
    elif b_low and c_high:
        add(claim, "not shown", ev, "tie: " + ("identical architectures " + ", ".join(twins)
                                               if twins else "equal accuracy at an extreme"))
    elif b_low or c_high:
        add(claim, "partly supported", ev, "only " + ("B is the lowest" if b_low else "C is the highest"))
    else:
        add(claim, "not supported", ev, "neither B is the lowest nor C the highest")

    claim = "One trained model gives four different architectures"
    pairs = sorted({"=".join(sorted([k, *_same_as(genos, k)])) for k in ARCHS if _same_as(genos, k)})
    n_distinct = len(set(genos.values()))
    ev = f"{n_distinct} distinct architecture(s) among A-D"
    if n_distinct == 4:
        add(claim, "supported", ev)
    else:
        add(claim, "partly supported" if n_distinct > 1 else "not supported", ev,
            "tie: identical architectures " + ", ".join(pairs))
    return out


def verdict_table(res) -> pd.DataFrame:
    """The verdicts of one run, each with its evidence and caveat beside it."""
    return pd.DataFrame(verdicts(res))[["claim", "verdict", "evidence", "caveat"]]


def claims(res) -> list:
    """One sentence per thesis claim: its verdict on this run, with the evidence."""
    return [f"{v['claim']}: {v['verdict']} ({v['evidence']}{'; ' + v['caveat'] if v['caveat'] else ''})."
            for v in verdicts(res)]


# -- figures ------------------------------------------------------------------------------

def figure2(results: dict, experiment: str, path_stem=None):
    """Op counts per type for A-D (grouped bars), ours beside the published numbers."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    recs = []
    for label, table in (("ours", ours_table(results)), ("published (thesis)", published_table(experiment))):
        for t, row in TYPE_ROW.items():
            for k in ARCHS:
                recs.append(dict(source=label, arch=k, op_type=t, count=float(table.loc[row, k])))
    df = pd.DataFrame(recs)
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), sharey=True)
    for ax, (label, sub) in zip(axes, df.groupby("source", sort=False)):
        sns.barplot(data=sub, x="arch", y="count", hue="op_type", ax=ax,
                    hue_order=["pool", "conv", "identity"], palette="Set2")
        ax.set_title(label)
        ax.set_xlabel("architecture (A uniform, B conv, C pool, D identity penalised)")
        ax.set_ylabel("number of ops (normal + reduction genotype)")
    axes[1].get_legend().remove()
    fig.suptitle(f"Figure 2 ({experiment}): operations of each type in A-D")
    fig.tight_layout()
    if path_stem:
        Path(path_stem).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(f"{path_stem}.png", dpi=120)
        fig.savefig(f"{path_stem}.svg")
    return fig


def training_curves(log: list):
    import matplotlib.pyplot as plt

    steps = [r for r in log if r["event"] == "step"]
    epochs = [r for r in log if r["event"] == "epoch"]
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.2))
    gs = [r["global_step"] for r in steps]
    axes[0].plot(gs, [r["task"] for r in steps]); axes[0].set_title("task loss (cross-entropy)")
    axes[1].plot(gs, [r["cost"] for r in steps]); axes[1].set_title("cost term (before kappa)")
    axes[2].plot(gs, [r["train_acc"] for r in steps], label="train (Gumbel, random s)")
    axes[2].plot([r["global_step"] for r in epochs], [r["val_acc_soft_uniform"] for r in epochs], "o-",
                 label="validation (softmax, uniform s)")
    axes[2].set_title("accuracy"); axes[2].legend(fontsize=8)
    for ax in axes:
        ax.set_xlabel("step")
    fig.tight_layout()
    return fig


_COLORS = {"pool": "#66c2a5", "conv": "#fc8d62", "identity": "#8da0cb"}


def draw_cell(ops_of_cell, title="", ax=None):
    """Draw a derived cell: nodes 0,1 (inputs), 2..n+1 (intermediate), every edge
    labelled with its op and coloured by op type."""
    import matplotlib.pyplot as plt

    n_nodes = {2: 1, 5: 2, 9: 3, 14: 4, 20: 5}[len(ops_of_cell)]
    edges = cell_edges(n_nodes)
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 3.4))
    pos = {0: (0, 1.0), 1: (0, -1.0)}
    for j in range(2, n_nodes + 2):
        pos[j] = (j - 1, 0.9 * (-1) ** j * 0.6)
    for (i, j), op in zip(edges, ops_of_cell):
        (x0, y0), (x1, y1) = pos[i], pos[j]
        rad = 0.25 if j - i > 1 else 0.0
        ax.annotate("", xy=(x1, y1), xytext=(x0, y0),
                    arrowprops=dict(arrowstyle="-|>", color=_COLORS[OP_TYPES[op]], lw=2,
                                    shrinkA=11, shrinkB=11, connectionstyle=f"arc3,rad={rad}"))
        mx, my = (x0 + x1) / 2, (y0 + y1) / 2 + rad * 0.5
        ax.text(mx, my, op.replace("_3x3", "").replace("_5x5", "5"), fontsize=6, ha="center",
                va="center", bbox=dict(boxstyle="round,pad=0.1", fc="white", ec="none", alpha=0.8))
    for node, (x, y) in pos.items():
        ax.add_patch(plt.Circle((x, y), 0.16, color="#333" if node < 2 else "#bbb", zorder=3))
        ax.text(x, y, str(node), color="white" if node < 2 else "black", ha="center", va="center",
                zorder=4, fontsize=8)
    ax.set_xlim(-0.5, n_nodes + 0.5); ax.set_ylim(-1.5, 1.5)
    ax.set_aspect("equal"); ax.axis("off")
    ax.set_title(title, fontsize=9)
    handles = [plt.Line2D([], [], color=c, lw=2, label=t) for t, c in _COLORS.items()]
    ax.legend(handles=handles, fontsize=6, loc="lower right", frameon=False)
    return ax


def draw_architectures(res):
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(4, 2, figsize=(11, 11))
    for row, k in zip(axes, ARCHS):
        g = res["architectures"][k]["genotype"]
        draw_cell(g["normal"], f"{k} ({LABELS[k]}): normal cell", row[0])
        draw_cell(g["reduce"], f"{k}: reduction cell", row[1])
    fig.tight_layout()
    return fig


#: the results files the README's table shows (the committed paper runs), and their commands
README_RUNS = (("exp1", "authors_code"), ("exp1", "thesis_text"), ("exp2", "authors_code"),
               ("exp3", "authors_code"))
README_BEGIN = "<!-- results table: generated by `python -m hypernas.report --readme`; do not edit -->"
README_END = "<!-- end of results table -->"


def readme_table(root) -> str:
    """The README's results block: for each committed paper run, ours beside the
    published per architecture (test accuracy, weights, pool/conv/identity counts), the
    number of seeds, and the command that produces it."""
    from .presets import RUNTIME_FIELDS, config, run_name, upgrade
    out = [README_BEGIN, ""]
    for exp, preset in README_RUNS:
        seeds = sorted(Path(root, "results", "paper").glob(f"{exp}-{preset}-seed*.json"))
        seeds = [p for p in seeds if p.stem.rsplit("seed", 1)[1].isdigit()]
        path = Path(root, "results", "paper", f"{run_name(config(exp, preset, 'paper', 0))}.json")
        if not path.exists():
            continue
        res = load_results(path)
        ours, pub = ours_table(res), published_table(exp)
        p = res["provenance"]
        now, then = config(exp, preset, "paper", 0), upgrade(res["config"])
        changed = sorted(k for k in set(now) | set(then) if k not in RUNTIME_FIELDS and now.get(k) != then.get(k))
        note = (f" The preset has changed since this run (`{'`, `'.join(changed)}`); the command now "
                "trains the current preset." if changed else "")
        out += [f"**{exp}, `{preset}`** ({len(seeds)} seed{'s' if len(seeds) != 1 else ''}; shown: seed 0, "
                f"{p['epochs']} epochs, {p['device']}, commit {p['commit']}):",
                f"`hypernas train --experiment {exp} --preset {preset} --profile paper`.{note}", "",
                "| | test acc. %, ours | published | weights, ours | published | pool/conv/identity, ours | published |",
                "|---|---:|---:|---:|---:|---|---|"]
        for k in ARCHS:
            counts = lambda t: "/".join(str(int(t[k][r])) for r in ("Pooling ops", "Convolution ops", "Identity ops"))  # noqa: E731
            out.append(f"| {k} | {ours[k]['Test accuracy, %']:.2f} | {pub[k]['Test accuracy, %']:.2f} | "
                       f"{int(ours[k]['Parameters']):,} | {int(pub[k]['Parameters']):,} | {counts(ours)} | {counts(pub)} |")
        out.append("")
        out += _readme_seed_groups(root, exp, preset)
    out += _readme_retrain(root)
    out += _readme_audit()
    out.append(README_END)
    return "\n".join(out)


def _readme_seed_groups(root, exp, preset) -> list:
    """Mean ± sd over the seeds of each configuration group (older presets apart) that
    holds more than seed 0, with the op counts of every seed."""
    from . import seeds
    out = []
    for label, runs in seeds.groups(seeds.collect(root, exp, preset)).items():
        if [r["seed"] for r in runs] == [0]:
            continue
        one = len(runs) == 1
        t = seeds.summary_table(runs, exp, single=one)
        col = f"ours, seed {runs[0]['seed']}" if one else "ours, mean ± sd"
        head = (f"Seed {runs[0]['seed']} ({label}; the only run of this group, so no sd):" if one else
                f"Seeds {', '.join(str(r['seed']) for r in runs)} ({label}; mean ± sd, n runs, "
                "never averaged across preset groups):")
        what = f"seed {runs[0]['seed']}" if one else "mean ± sd"
        out += [head, "",
                f"| | test acc. %, {what} | published | weights, {what} | published | "
                f"pool/conv/identity of {'this' if one else 'each'} seed |", "|---|---:|---:|---:|---:|---|"]
        for k in ARCHS:
            every = ", ".join(seeds.counts_text(r["res"], k) for r in runs)
            out.append(f"| {k} | {t.loc[k, ('accuracy', col)]} | {t.loc[k, ('accuracy', 'published')]} | "
                       f"{t.loc[k, ('weights', col)]} | {t.loc[k, ('weights', 'published')]} | {every} |")
        out.append("")
    return out


def _readme_retrain(root) -> list:
    """The retrainings from scratch that have finished (hypernas.retrain): inherited beside
    retrained accuracy, the protocol's epochs actually run, the wall time; Kendall's tau per
    run and protocol where two or more distinct architectures are retrained."""
    from . import retrain
    files = retrain.collect(root, "paper")
    if not files:
        return []
    out = ["Retrained from scratch (`hypernas retrain`; epochs: run of the authors' protocol, fewer for the "
           "short proxy; last epoch's test accuracy):", "",
           "| run | arch | weights | inherited % | retrained % | epochs | wall, h (threads) |",
           "|---|---|---:|---:|---:|---|---:|"]
    for r in files:
        inh = r["inherited_test_acc"]
        out.append(f"| {r['source']['run']} | {r['source']['label']} | {r['architecture']['weights']:,} | "
                   f"{'n/a' if inh is None else f'{100 * inh:.2f}'} | {100 * r['retrained']['final_test_acc']:.2f} | "
                   f"{r['protocol']['epochs_run']} of {r['protocol']['epochs']} | "
                   f"{r['cost']['measured_wall_s'] / 3600:.2f} ({r['cost']['threads']}) |")
    out.append("")
    for sentence in retrain.kendall_sentences(files):
        out += [sentence, ""]
    return out


def _readme_audit() -> list:
    """One line: what the audit of the published tables found (hypernas.audit)."""
    from . import audit
    s = audit.summary()
    cols = lambda keys: ", ".join(f"{e} {k}" for e, k in keys) or "none"  # noqa: E731
    return [f"Audit of the published tables under our weight convention (`hypernas.audit`): "
            f"{len(s['unique'])} of {sum(map(len, s.values()))} columns fit exactly one composition; "
            f"ambiguous: {cols(s['ambiguous'])}; impossible with the printed op counts: "
            f"{cols(s['impossible'])}.", ""]


def update_readme(root) -> bool:
    """Rewrite the README's results block in place; True if it changed."""
    readme = Path(root, "README.md")
    text = readme.read_text()
    start, end = text.index(README_BEGIN), text.index(README_END) + len(README_END)
    new = text[:start] + readme_table(root) + text[end:]
    if new != text:
        readme.write_text(new)
    return new != text


def model_card(res: dict, family: dict | None = None, siblings: list | None = None,
               retrained: list | None = None) -> str:
    """A short card for a shipped model (``results/<profile>/<run>/MODEL_CARD.md``):
    what it is, data, training, evaluation protocol, results, limits, and the device its
    latency figures were measured on.  Every figure is read from the run's files.
    ``siblings``: the committed runs of its configuration (:func:`hypernas.seeds.collect`),
    for the limits' sentence on seeds; ``retrained``: the finished retrainings of its
    architectures (:func:`hypernas.retrain.collect`, this run's only)."""
    from .presets import upgrade
    cfg, p, t = upgrade(res["config"]), res["provenance"], res["training"]
    a = res["architectures"]
    lines = [
        f"# Model card: {cfg['experiment']}-{cfg['preset']}-seed{cfg['seed']}", "",
        "<!-- generated by `python -m hypernas.report --cards` from the run's results files; do not edit -->", "",
        "**What it is.** A trained supernet and complexity-conditioned hypernetwork (hypernas, "
        f"preset `{cfg['preset']}`): give it a complexity vector s over the ops "
        f"{', '.join(f'`{o}`' for o in cfg['ops'])} (in that order, on the simplex) and it "
        "gives an architecture, whose weights it also holds. Load it with "
        "`hypernas.train.load_model(path)`; `hypernas derive` / `hypernas select` use it.", "",
        f"**Data.** {cfg['dataset']}: the first half of the official training set trains "
        f"({p['train_images']:,} images), the second half validates, the official test set tests; "
        f"source `{p.get('data_source')}`; augmentation `{cfg['augment']}`.", "",
        f"**Training.** {p['epochs']} epochs, batch {cfg['batch_size']}, seed {cfg['seed']}, "
        f"kappa {cfg['kappa']}, width {cfg['width']}, {cfg['n_cells']} cells of {cfg['n_nodes']} nodes, "
        f"classifier `{cfg['classifier']}`, optimiser `{cfg['optimizer']}`; "
        f"{p['train_wall_s'] / 60:.0f} min on {p['device']}, commit {p['commit']}, torch {p['torch']}, "
        f"finished {p['finished']}.", "",
        "**Evaluation protocol.** Each architecture is the argmax op on every edge for its s; it "
        f"inherits the supernet's weights (no retraining), its BatchNorm statistics are re-estimated on "
        f"{cfg['bn_images']:,} training images, and it is tested on the whole test set.", "",
        "| | s | test accuracy, % | weights | pool/conv/identity |", "|---|---|---:|---:|---|"]
    for k in ARCHS:
        c = a[k]["op_counts"]
        lines.append(f"| {k} | ({', '.join(f'{v:.3f}' for v in a[k]['s'])}) | {100 * a[k]['test_acc']:.2f} | "
                     f"{a[k]['weights']:,} | {c['pool']}/{c['conv']}/{c['identity']} |")
    lines.append("")
    if retrained:
        lines += ["**Retrained from scratch** (`hypernas retrain`; test accuracy after the epochs run, "
                  "inherited in brackets): " + "; ".join(
                      f"{r['source']['label']} {100 * r['retrained']['final_test_acc']:.2f} %"
                      + (f" ({100 * r['inherited_test_acc']:.2f})" if r["inherited_test_acc"] is not None else "")
                      + f", {r['protocol']['epochs_run']} of {r['protocol']['epochs']} epochs"
                      for r in retrained)
                  + ". Fewer epochs than the protocol's are a proxy (the book's Results chapter: *Two "
                  "evaluation protocols*)" + ("; mN is member N of the family file"
                                             if any(r["source"]["kind"] == "family" for r in retrained)
                                             else "") + ".", ""]
    if family:
        fp, lat = family["provenance"], family["provenance"]["latency"]
        lines += [f"**Latency figures** (the family file `{cfg['experiment']}-{cfg['preset']}-seed{cfg['seed']}"
                  f"-family.json`): measured at batch {lat['batch']} on {lat['threads']} thread(s) of "
                  f"{lat['processor']} ({lat['runtime']}), median of {lat['repeats']}, {lat['date']}; the "
                  f"family has {fp['distinct_genotypes']} distinct architectures over {fp['grid_points']} points "
                  f"of s, {family['weights_range'][0]:,} to {family['weights_range'][1]:,} weights.", ""]
    else:
        lines += ["**Latency figures.** The results file's latencies were measured at the end of training "
                  f"on {p['device']}, with other work possibly running; no family sweep yet.", ""]
    lines += ["**Limits.** " + seed_sentence(cfg["seed"], siblings or []) + " The weights are "
              "inherited from a supernet trained on a mixture of ops, not retrained per architecture. "
              "Latencies hold for the device and runtime named above only. The model file is a "
              "PyTorch state dict with a plain-data configuration.", ""]
    return "\n".join(lines)


def seed_sentence(seed: int, siblings: list) -> str:
    """What a model card says of seeds: one seed alone, or the accuracy range of A-D over
    the runs of this seed's preset group (older presets apart, as in :mod:`hypernas.seeds`)."""
    from . import seeds
    mine = next((r for r in siblings if r["seed"] == seed), None)
    group = [r for r in siblings if mine is not None and r["group"] == mine["group"]]
    if len(group) < 2:
        others = len(siblings) - (mine is not None)
        return ("One seed: seed-to-seed differences are not measured for this configuration."
                if not others else
                f"Seed {seed} is the only run of its preset group ({mine['group'] if mine else 'unknown'}); "
                f"the {others} other committed seed{'s' if others > 1 else ''} of this configuration "
                f"{'were' if others > 1 else 'was'} trained with another version of the preset, so its "
                "seed-to-seed spread is not measured.")
    ranges = "; ".join(
        f"{k} {min(v):.2f}-{max(v):.2f}" for k in ARCHS
        for v in [[100 * r["res"]["architectures"][k]["test_acc"] for r in group]])
    return (f"This is one seed of {len(group)} committed runs of its preset group ({mine['group']}; seeds "
            f"{', '.join(str(r['seed']) for r in group)}), whose test accuracies span (min-max, %): {ranges} "
            "(the book's Results chapter gives mean ± sd); a single seed's differences from the "
            "published table may be seed noise.")


def card_for(path) -> str:
    """The model card of one committed run's results file, from the files around it."""
    from . import retrain, seeds
    path = Path(path)
    cfg = load_results(path)["config"]
    fam_path = path.with_name(path.stem + "-family.json")
    root, profile = path.parents[2], path.parent.name
    siblings = seeds.collect(root, cfg["experiment"], cfg["preset"], profile=profile)
    retrained = [r for r in retrain.collect(root, profile) if r["source"]["run"] == path.stem]
    return model_card(load_results(path), load_results(fam_path) if fam_path.exists() else None,
                      siblings, retrained)


def write_cards(root) -> list:
    """Write every committed paper run's model card; returns the paths that changed."""
    changed = []
    for path in sorted(Path(root, "results", "paper").glob("*-seed[0-9]*.json")):
        if path.stem.endswith("-family") or not (path.with_suffix("") / "model.pt").exists():
            continue
        card = card_for(path)
        out = path.with_suffix("") / "MODEL_CARD.md"
        if not out.exists() or out.read_text() != card:
            out.write_text(card)
            changed.append(out)
    return changed


if __name__ == "__main__":
    import sys
    root = Path(__file__).resolve().parent.parent
    args = sys.argv[1:]
    if not args or set(args) - {"--readme", "--cards"}:
        sys.exit("usage: python -m hypernas.report [--readme] [--cards]  (after a run or a retraining "
                 "lands, both)")
    if "--readme" in args:
        print("README.md updated" if update_readme(root) else "README.md already up to date")
    if "--cards" in args:
        print("\n".join(str(p) for p in write_cards(root)) or "model cards already up to date")
