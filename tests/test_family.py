"""The family of one model: distinct genotypes over the simplex, fronts, hypervolume,
choosing a member for a budget."""
import itertools
import json
import math
import random

import pytest
import torch

from hypernas.family import (NoMemberFits, distinct_genotypes, hypervolume, kendall_tau,
                             pareto_front, points, random_genotypes, select)
from hypernas.model import HyperSupernet
from hypernas.presets import OP_SETS


def test_grid_sizes():
    assert len(points(3)) == math.comb(50 + 2, 2) == 1326      # step 0.02
    assert len(points(5)) == math.comb(10 + 4, 4) == 1001      # step 0.1, >= 1,000 points
    assert torch.allclose(points(3).sum(1), torch.ones(1326))


def test_distinct_genotypes_match_an_independent_count():
    torch.manual_seed(3)
    model = HyperSupernet(OP_SETS["authors_code"][3], C=4, in_channels=1, rbf_sign=1.0).eval()
    pts = points(3, 20)
    fam = distinct_genotypes(model, pts)
    # independently: derive every point through the public genotype() and count
    seen = {}
    for p in pts:
        g = model.genotype(p)
        seen.setdefault((g.normal, g.reduce), []).append(p)
    assert len(fam) == len(seen)
    assert sum(m["n_points"] for m in fam) == len(pts)
    for m in fam:
        g = m["genotype"]
        # the representative maps to its own genotype, and the group size is right
        assert model.genotype(torch.tensor(m["s"])) == g
        assert m["n_points"] == len(seen[(g.normal, g.reduce)])


def test_pareto_front_by_hand():
    costs = [1.0, 2.0, 2.0, 3.0, 4.0, 0.5]
    accs = [0.5, 0.7, 0.6, 0.65, 0.9, 0.4]
    # 0.5 -> 0.4, 1 -> 0.5, 2 -> 0.7, 4 -> 0.9 are non-dominated; (2, 0.6) and (3, 0.65) are not
    assert pareto_front(costs, accs) == [5, 0, 1, 4]


def test_hypervolume_closed_form():
    # a staircase: (1, 0.5), (2, 0.7), (4, 0.9) against the reference (5, 0.1):
    # (5-1)(0.5-0.1) + (5-2)(0.7-0.5) + (5-4)(0.9-0.7) = 1.6 + 0.6 + 0.2
    costs, accs = [1.0, 2.0, 4.0, 3.0], [0.5, 0.7, 0.9, 0.6]
    assert hypervolume(costs, accs, (5.0, 0.1)) == pytest.approx(2.4)
    # a point outside the reference box adds nothing; one point is a rectangle
    assert hypervolume(costs + [6.0], accs + [0.95], (5.0, 0.1)) == pytest.approx(2.4)
    assert hypervolume([2.0], [0.6], (5.0, 0.1)) == pytest.approx(3 * 0.5)
    # a Monte Carlo estimate of the same area agrees
    rng = random.Random(0)
    hits = 0
    n = 40000
    for _ in range(n):
        c, a = rng.uniform(0, 5), rng.uniform(0.1, 1.0)
        hits += any(c >= ci and a <= ai for ci, ai in zip(costs, accs))
    assert hits / n * 5 * 0.9 == pytest.approx(2.4, abs=0.05)


def _family():
    members = [dict(latency_ms=1.0, val_acc=0.70, test_acc=0.71),
               dict(latency_ms=2.0, val_acc=0.80, test_acc=0.78),
               dict(latency_ms=2.5, val_acc=0.80, test_acc=0.83),
               dict(latency_ms=3.0, val_acc=0.85, test_acc=0.80),
               dict(latency_ms=5.0, val_acc=0.90, test_acc=0.90)]
    return dict(members=members)


def test_select_returns_the_most_accurate_member_within_budget():
    fam = _family()
    for budget in (1.0, 1.5, 2.0, 2.4, 2.5, 2.9, 3.0, 4.0, 5.0, 10.0):
        got = select(fam, budget)
        fits = [m for m in fam["members"] if m["latency_ms"] <= budget]
        assert got["latency_ms"] <= budget
        assert got["val_acc"] == max(m["val_acc"] for m in fits)
    # a tie in validation accuracy goes to the faster member (never to the test set)
    assert select(fam, 2.6)["latency_ms"] == 2.0


def test_select_names_the_fastest_member_when_nothing_fits():
    with pytest.raises(NoMemberFits, match=r"fastest takes 1\.000 ms"):
        select(_family(), 0.5)


def test_random_genotypes_draw_every_op():
    ops = OP_SETS["authors_code"][3]
    gs = random_genotypes(ops, 50, 14, seed=1)
    assert len(gs) == 50 and all(len(g.normal) == len(g.reduce) == 14 for g in gs)
    assert {op for g in gs for op in g.normal + g.reduce} == set(ops)
    assert random_genotypes(ops, 50, 14, seed=1) == gs


def test_kendall_tau_against_pair_counting():
    rng = random.Random(2)
    a = [rng.random() for _ in range(30)]
    b = [x + rng.gauss(0, 0.3) for x in a]
    conc = sum((a[i] - a[j]) * (b[i] - b[j]) > 0 for i, j in itertools.combinations(range(30), 2))
    pairs = 30 * 29 // 2
    assert kendall_tau(a, b) == pytest.approx((2 * conc - pairs) / pairs)
    assert kendall_tau(a, a) == pytest.approx(1.0)
    assert kendall_tau(a, [-x for x in a]) == pytest.approx(-1.0)


def test_a_stopped_evaluation_resumes_from_its_journal(tmp_path, monkeypatch):
    """The journal gets one line per finished member; a second run evaluates only what is
    missing (a torn last line counts as missing) and returns the same numbers."""
    from hypernas import family
    from hypernas.train import load_model
    path = "results/paper/exp1-authors_code-seed0/model.pt"
    cfg = dict(load_model(path).cfg, bn_images=50, val_images=50, test_images=100, data_dir=None)
    journal = tmp_path / "journal.jsonl"
    calls = []
    real = family._worker_eval
    monkeypatch.setattr(family, "_worker_eval", lambda job: calls.append(job) or real(job))
    first = family.evaluate_family(path, cfg, steps=2, n_random=2, workers=1, journal=journal)
    n = len(first["members"]) + len(first["random_baseline"]["members"])
    assert len(calls) == n and len(journal.read_text().splitlines()) == n
    lines = journal.read_text().splitlines()
    journal.write_text("\n".join(lines[:2]) + "\n" + lines[2][: len(lines[2]) // 2])
    calls.clear()
    again = family.evaluate_family(path, cfg, steps=2, n_random=2, workers=1, journal=journal)
    assert len(calls) == n - 2
    assert again["provenance"]["jobs_read_from_journal"] == 2
    assert again["members"] == first["members"]
    assert again["random_baseline"] == first["random_baseline"]
    calls.clear()
    family.evaluate_family(path, cfg, steps=2, n_random=2, workers=1, journal=journal)
    assert calls == []                   # the records written after the torn line read back


MODEL = "results/paper/exp1-authors_code-seed0/model.pt"
FAMILY = "results/paper/exp1-authors_code-seed0-family.json"


def test_select_cli_returns_the_most_accurate_member_within_budget(capsys):
    from hypernas import cli
    fam = json.loads(open(FAMILY).read())
    budget = sorted(m["latency_ms"] for m in fam["members"])[len(fam["members"]) // 2]
    assert cli.main(["select", MODEL, "--latency-ms", str(budget)]) == 0
    got = json.loads(capsys.readouterr().out)
    fits = [m for m in fam["members"] if m["latency_ms"] <= budget]
    assert got["latency_ms"] <= budget
    assert got["val_acc"] == max(m["val_acc"] for m in fits)


@pytest.mark.parametrize("content, words", [
    ("{not json", "not JSON"),
    ('{"members": [{"s": [1, 0, 0]}]}', "needs 'members'"),
    (None, "ops"),                       # the family of another op set
])
def test_select_cli_bad_family_file_is_one_line(tmp_path, capsys, content, words):
    from hypernas import cli
    bad = tmp_path / "fam.json"
    if content is None:
        fam = json.loads(open(FAMILY).read())
        fam["provenance"]["ops"] = ["max_pool_3x3", "identity", "conv_3x3"]
        content = json.dumps(fam)
    bad.write_text(content)
    rc = cli.main(["select", MODEL, "--latency-ms", "5", "--family", str(bad)])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc != 0 and len(err) == 1 and err[0].startswith("hypernas: error: ") and words in err[0], err
    assert str(bad) in err[0] or words == "ops"


@pytest.mark.parametrize("budget", ["0", "-2", "1e-6"])
def test_select_cli_impossible_budget_is_one_line(capsys, budget):
    from hypernas import cli
    rc = cli.main(["select", MODEL, "--latency-ms", budget])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc != 0 and len(err) == 1 and err[0].startswith("hypernas: error: "), err
    if budget == "1e-6":
        fastest = min(m["latency_ms"] for m in json.loads(open(FAMILY).read())["members"])
        assert f"{fastest:.3f} ms" in err[0]
