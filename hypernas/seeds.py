"""Several seeds of one configuration: mean ± sd, op counts of every seed, per-seed
verdicts and each run's provenance, read from the results files under
``results/<profile>/<experiment>-<preset>-seed<N>.json``.

**Older presets are never averaged with the current one.**  A run's training
configuration (every field except :data:`hypernas.presets.RUNTIME_FIELDS` and the seed)
is compared with what ``hypernas train`` trains today (:func:`preset_changes`).  Runs are
grouped by that difference: runs of the current preset form one group, runs of each older
variant (e.g. the committed seed-0 runs, trained with the ``shared`` classifier before
2026-12-02) another, and mean ± sd is computed within a group only.  Every group is shown
with its label and its n; the standard deviation is left out (shown as "n = 1") for a
group of one run.
"""
from __future__ import annotations

import statistics
from pathlib import Path

import pandas as pd

from .ops import TYPE_ORDER
from .report import ARCHS, PUBLISHED, load_results, verdicts

QUANTITIES = {"accuracy": "Test accuracy, %", "weights": "Parameters"}
CURRENT = "current preset"


def seed_of(path: Path):
    tail = Path(path).stem.rsplit("-seed", 1)
    return int(tail[1]) if len(tail) == 2 and tail[1].isdigit() else None


def preset_changes(res) -> list:
    """The training fields in which a run's configuration differs from today's preset."""
    from .presets import RUNTIME_FIELDS, config, upgrade
    then = upgrade(res["config"])
    now = config(then["experiment"], then["preset"], then.get("profile", "paper"), then["seed"])
    ignore = RUNTIME_FIELDS | {"seed", "log_every"}
    return sorted(k for k in set(now) | set(then) if k not in ignore and now.get(k) != then.get(k))


def group_label(changes) -> str:
    return CURRENT if not changes else "older preset (" + ", ".join(changes) + ")"


def collect(root, experiment, preset, profile="paper") -> list:
    """Every finished seed of one configuration: dicts ``seed``, ``path``, ``res``,
    ``changes`` and ``group``, by seed."""
    folder = Path(root) / "results" / profile
    runs = []
    for path in sorted(folder.glob(f"{experiment}-{preset}-seed*.json")):
        seed = seed_of(path)
        if seed is None:
            continue
        res = load_results(path)
        changes = preset_changes(res)
        runs.append(dict(seed=seed, path=path, res=res, changes=changes, group=group_label(changes)))
    return sorted(runs, key=lambda r: r["seed"])


def groups(runs) -> dict:
    """``{label: [run, ...]}``, the current preset first."""
    out = {}
    for r in sorted(runs, key=lambda r: (r["group"] != CURRENT, r["group"], r["seed"])):
        out.setdefault(r["group"], []).append(r)
    return out


def mean_sd(values):
    """(mean, sample sd or None when there is one value, n)."""
    values = [float(v) for v in values]
    sd = statistics.stdev(values) if len(values) > 1 else None
    return statistics.fmean(values), sd, len(values)


def _value(res, k, quantity):
    a = res["architectures"][k]
    return 100 * a["test_acc"] if quantity == "accuracy" else a["weights"]


def pm(mean, sd, n, fmt) -> str:
    return f"{mean:{fmt}} ± {sd:{fmt}} (n = {n})" if sd is not None else f"{mean:{fmt}} (n = 1)"


def summary_table(runs, experiment, single=False) -> pd.DataFrame:
    """One row per architecture: accuracy and weights as mean ± sd over ``runs`` (one
    group), the published value and ours minus published (of the mean).  ``single``:
    one run's own values, in a column "ours, seed N"."""
    rows = {}
    ours = f"ours, seed {runs[0]['seed']}" if single else "ours, mean ± sd"
    for k in ARCHS:
        row = {}
        for q, fmt in (("accuracy", ".2f"), ("weights", ",.0f")):
            m, sd, n = mean_sd(_value(r["res"], k, q) for r in runs)
            pub = PUBLISHED[experiment][QUANTITIES[q]][ARCHS.index(k)]
            row[(q, ours)] = f"{m:{fmt}}" if single else pm(m, sd, n, fmt)
            row[(q, "published")] = f"{pub:{fmt}}"
            row[(q, "ours - published")] = f"{m - pub:+{fmt}}"
        rows[k] = row
    df = pd.DataFrame(rows).T
    df.columns = pd.MultiIndex.from_tuples(df.columns)
    return df


def counts_text(res, k) -> str:
    c = res["architectures"][k]["op_counts"]
    return f"{c['pool']}/{c['conv']}/{c['identity']}"


def counts_table(runs, experiment) -> pd.DataFrame:
    """One row per architecture: pool/conv/identity counts of every seed, and published."""
    rows = {}
    pub = PUBLISHED[experiment]
    for i, k in enumerate(ARCHS):
        row = {seed_label(r): counts_text(r["res"], k) for r in runs}
        row["published"] = f"{pub['Pooling ops'][i]}/{pub['Convolution ops'][i]}/{pub['Identity ops'][i]}"
        rows[k] = row
    return pd.DataFrame(rows).T


def seed_label(run) -> str:
    """``seed N``, marked ``(older preset)`` when the run's preset is not today's."""
    return f"seed {run['seed']}" + ("" if run["group"] == CURRENT else " (older preset)")


def seed_values(runs) -> pd.DataFrame:
    """Accuracy (%) and weights of every seed, long format (for a figure)."""
    return pd.DataFrame([dict(seed=r["seed"], group=r["group"], arch=k,
                              accuracy=_value(r["res"], k, "accuracy"), weights=_value(r["res"], k, "weights"))
                         for r in runs for k in ARCHS])


def verdicts_by_seed(runs) -> pd.DataFrame:
    """One row per claim: the verdict of every seed, and how many seeds support it."""
    rows = {}
    for r in runs:
        for v in verdicts(r["res"]):
            rows.setdefault(v["claim"], {})[f"seed {r['seed']}"] = v["verdict"]
    df = pd.DataFrame(rows).T
    n = len(runs)
    df["supported in"] = [f"{sum(x == 'supported' for x in row)} of {n} seed{'s' if n != 1 else ''}" for row in df.values]
    return df


def penalty_sentences(runs) -> list:
    """'B has no conv op in k of n seeds' for each penalised architecture."""
    from .report import PENALISED
    n = len(runs)
    out = []
    for arch, t in PENALISED.items():
        k = sum(r["res"]["architectures"][arch]["op_counts"][t] == 0 for r in runs)
        both = sum(r["res"]["architectures"][arch]["op_counts"][t] == 0
                   and r["res"]["architectures"]["A"]["op_counts"][t] == 0 for r in runs)
        extra = ("" if not both else " (A has none either)" if n == 1
                 else f" (in {both} of them A has none either)")
        out.append(f"{arch} has no {t} op in {k} of {n} seed{'s' if n != 1 else ''}{extra}")
    return out


#: the share of an architecture's edges one op type must fill to count as "made of one op type"
ONE_TYPE_SHARE = 0.9
#: op types without weights in the cells: an architecture made of them has nothing to learn
#: there (the collapse of differentiable searches onto skip connections, Zela et al. 2020)
WEIGHTLESS = ("pool", "identity")


def one_type(res, k, share=ONE_TYPE_SHARE):
    """``(op type, its count, edges)`` when one op type fills at least ``share`` of
    architecture ``k``'s edges (normal and reduction genotypes together), else ``None``."""
    c = res["architectures"][k]["op_counts"]
    edges = sum(c[t] for t in TYPE_ORDER)
    top = max(TYPE_ORDER, key=lambda t: c[t])
    return (top, c[top], edges) if edges and c[top] >= share * edges else None


def weightless(res, k, share=ONE_TYPE_SHARE):
    """``(weightless edges, edges, "3 pool + 25 identity")`` when the weightless op types
    (:data:`WEIGHTLESS`) fill at least ``share`` of architecture ``k``'s edges, else ``None``.

    This is the collapse test for the uniform vector A: with (almost) no convolution left,
    the penalties of B-D have nothing to remove relative to it.  It does not ask for one
    type: A = 3 pool + 25 identity (exp3 seed 1) has no convolution at all, although no
    single type reaches 90 %.  A run whose A passes it is counted as collapsed."""
    c = res["architectures"][k]["op_counts"]
    edges = sum(c[t] for t in TYPE_ORDER)
    n = sum(c[t] for t in WEIGHTLESS)
    if not edges or n < share * edges:
        return None
    return n, edges, " + ".join(f"{c[t]} {t}" for t in WEIGHTLESS if c[t])


def one_type_sentence(runs, share=ONE_TYPE_SHARE) -> str:
    """Which architectures of which seeds are made of one op type on at least ``share`` of
    their edges: e.g. 'seed 1: A (pool on 27 of 28 edges), B (pool on 28 of 28 edges)';
    then in how many seeds the uniform vector A is collapsed (:func:`weightless`: pool and
    identity together on at least ``share`` of its edges), naming the mixed ones. A
    collapsed A leaves no penalty on B-D anything to remove relative to it, which is why
    such verdicts read "not shown"."""
    n = len(runs)
    per = []
    for r in runs:
        hits = [(k, h) for k in ARCHS if (h := one_type(r["res"], k, share))]
        if hits:
            per.append(f"{seed_label(r)}: " + ", ".join(f"{k} ({t} on {c} of {e} edges)" for k, (t, c, e) in hits))
    seeds_ = f"{n} seed{'s' if n != 1 else ''}"
    first = (f"Made of one op type on {share:.0%} or more of their edges, in {len(per)} of {seeds_}: "
             + "; ".join(per) + "." if per else
             f"No architecture is made of one op type on {share:.0%} or more of its edges ({seeds_}).")
    collapsed = [(r, w) for r in runs if (w := weightless(r["res"], "A", share))]
    mixed = [f"{seed_label(r)}: {text} of {e}" for r, (_, e, text) in collapsed
             if one_type(r["res"], "A", share) is None]     # not already named above
    if not per and not collapsed:
        return first
    return (first + f" The uniform vector A has weightless ops (pool, identity) on {share:.0%} or "
            f"more of its edges in {len(collapsed)} of {seeds_}"
            + (f" (mixed: {'; '.join(mixed)})" if mixed else "") + ".")


def commit_text(commit) -> str:
    """A recorded commit as the provenance tables print it: ``abc1234+dirty`` (the
    work tree had uncommitted changes) becomes ``abc1234 (uncommitted changes)``."""
    c = str(commit)
    return c[:-len("+dirty")] + " (uncommitted changes)" if c.endswith("+dirty") else c


def provenance_row(run) -> dict:
    """What a run shown on the results page ran on: commit (dirty or not), device,
    threads, training segments (each resumed stretch, its threads and commit)."""
    p = run["res"]["provenance"]
    segs = p.get("training_segments")
    if segs is None:
        seg_text = "not recorded (the run predates the record)"
    elif not segs:
        seg_text = "one, uninterrupted"
    else:
        first = "" if segs[0]["from_step"] == 0 else f"steps before {segs[0]['from_step']:,}: not recorded; "
        seg_text = first + "; ".join(
            f"resumed at step {s['from_step']:,}: {s['threads']} thread(s), commit {commit_text(s['commit'])}"
            for s in segs)
    commit = commit_text(p.get("commit", "unknown"))
    if p.get("commit_reported_on_device"):
        commit += f" (git on the device said {p['commit_reported_on_device']})"
    if segs:
        resumed = len([s for s in segs if s["from_step"] > 0])
        seg_text = f"{resumed} resumed: {seg_text}"
    return {"run": Path(run["path"]).stem, "preset group": run["group"], "device": p["device"],
            "commit": commit, "training segments and threads": seg_text,
            "training, min": round(p["train_wall_s"] / 60, 1)}


def provenance_table(runs) -> pd.DataFrame:
    return pd.DataFrame([provenance_row(r) for r in runs]).set_index("run")

