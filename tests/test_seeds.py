"""Several seeds read from results files (hypernas.seeds): mean ± sd, older presets kept
apart, per-seed verdicts and provenance; fake files in the real schema."""
import json
import statistics

import pytest

from hypernas import seeds
from hypernas.presets import config


def _arch(acc, weights, pool, conv, identity, tag):
    return dict(s=[1 / 3] * 3, genotype=dict(normal=[tag] * 14, reduce=[tag] * 14), test_acc=acc,
                soft_supernet_test_acc=acc, weights=weights, weights_measured=weights,
                op_counts=dict(pool=pool, conv=conv, identity=identity), latency_batch1_ms=1.0,
                latency_batch256_ms_per_image=0.1, derive_and_test_s=1.0)


def _write(root, seed, accs, b_conv=0, older=False, segments=None, commit="abc1234"):
    cfg = config("exp1", "authors_code", "paper", seed)
    if older:   # the committed seed-0 runs: the boolean classifier option of before 2026-12-02
        cfg.pop("classifier"); cfg["classifier_from_s"] = True
    prov = dict(profile="paper", preset="authors_code", seed=seed, epochs=10, train_images=30000,
                device="cpu (x86_64, 1 threads)", commit=commit, train_wall_s=600.0)
    if segments is not None:
        prov["training_segments"] = segments
    archs = {"A": _arch(accs[0], 38304, 12, 6, 10, "a"), "B": _arch(accs[1], 5120, 17, b_conv, 11 - b_conv, "b"),
             "C": _arch(accs[2], 143488, 0, 13, 15, "c"), "D": _arch(accs[3], 12320, 18, 9, 1, "d")}
    path = root / "results" / "paper" / f"exp1-authors_code-seed{seed}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(dict(config=cfg, provenance=prov, training={}, architectures=archs)))
    return path


def test_mean_sd_from_files_and_older_preset_kept_apart(tmp_path):
    _write(tmp_path, 0, (0.90, 0.50, 0.50, 0.50), older=True)
    _write(tmp_path, 1, (0.80, 0.70, 0.86, 0.81))
    _write(tmp_path, 2, (0.84, 0.72, 0.84, 0.80), b_conv=1)
    (tmp_path / "results" / "paper" / "exp1-authors_code-seed0-family.json").write_text("{}")
    runs = seeds.collect(tmp_path, "exp1", "authors_code")
    assert [r["seed"] for r in runs] == [0, 1, 2]
    g = seeds.groups(runs)
    assert list(g) == [seeds.CURRENT, "older preset (classifier)"]
    assert [r["seed"] for r in g[seeds.CURRENT]] == [1, 2]
    table = seeds.summary_table(g[seeds.CURRENT], "exp1")
    m, sd = statistics.fmean([80.0, 84.0]), statistics.stdev([80.0, 84.0])
    assert table.loc["A", ("accuracy", "ours, mean ± sd")] == f"{m:.2f} ± {sd:.2f} (n = 2)"
    assert table.loc["A", ("accuracy", "published")] == "82.50"
    assert table.loc["A", ("accuracy", "ours - published")] == f"{m - 82.5:+.2f}"
    assert table.loc["B", ("weights", "ours, mean ± sd")] == "5,120 ± 0 (n = 2)"
    # the older run alone: no sd, n = 1, never mixed into the current mean
    old = seeds.summary_table(g["older preset (classifier)"], "exp1")
    assert old.loc["A", ("accuracy", "ours, mean ± sd")] == "90.00 (n = 1)"
    one = seeds.summary_table(g["older preset (classifier)"], "exp1", single=True)
    assert one.loc["A", ("accuracy", "ours, seed 0")] == "90.00"
    counts = seeds.counts_table(runs, "exp1")
    assert list(counts.columns) == ["seed 0 (older preset)", "seed 1", "seed 2", "published"]
    assert counts.loc["B", "seed 2"] == "17/1/10" and counts.loc["B", "published"] == "17/0/11"
    cur = g[seeds.CURRENT]
    assert seeds.penalty_sentences(cur)[0] == "B has no conv op in 1 of 2 seeds"
    v = seeds.verdicts_by_seed(cur)
    assert v.loc["Penalising conv (B) removes it", "seed 1"] == "supported"
    assert v.loc["Penalising conv (B) removes it", "seed 2"] == "partly supported"
    assert v.loc["Penalising conv (B) removes it", "supported in"] == "1 of 2 seeds"
    alone = seeds.verdicts_by_seed(g["older preset (classifier)"])
    assert alone.loc["Penalising conv (B) removes it", "supported in"] in ("0 of 1 seed", "1 of 1 seed")
    assert seeds.penalty_sentences(g["older preset (classifier)"])[0].endswith("of 1 seed")
    # A (12/6/10 in _write) has pool ops; with none, the caveat is plain for one run, counted for several
    for r in runs:
        r["res"]["architectures"]["A"]["op_counts"]["pool"] = 0
    assert seeds.penalty_sentences(g["older preset (classifier)"])[1] == \
        "C has no pool op in 1 of 1 seed (A has none either)"
    assert seeds.penalty_sentences(cur)[1] == "C has no pool op in 2 of 2 seeds (in 2 of them A has none either)"


def test_one_op_type_sentence_names_seeds_and_architectures(tmp_path):
    _write(tmp_path, 1, (0.80, 0.70, 0.86, 0.81))
    _write(tmp_path, 2, (0.84, 0.72, 0.84, 0.80))
    runs = seeds.collect(tmp_path, "exp1", "authors_code")
    # _write's counts: A 12/6/10, B 17/0/11, C 0/13/15, D 18/9/1 (28 edges): no single type fills 90 %
    assert seeds.one_type(runs[0]["res"], "A") is None
    assert seeds.one_type_sentence(runs) == \
        "No architecture is made of one op type on 90% or more of its edges (2 seeds)."
    # seed 2's A collapses onto pooling (26 of 28 = 92.9 %), its C onto conv (exactly 90 % of 30)
    a = runs[1]["res"]["architectures"]
    a["A"]["op_counts"] = dict(pool=26, conv=1, identity=1)
    a["C"]["op_counts"] = dict(pool=0, conv=27, identity=3)
    assert seeds.one_type(runs[1]["res"], "A") == ("pool", 26, 28)
    assert seeds.one_type(runs[1]["res"], "C") == ("conv", 27, 30)
    assert seeds.one_type(runs[1]["res"], "C", share=0.91) is None
    assert seeds.one_type_sentence(runs) == (
        "Made of one op type on 90% or more of their edges, in 1 of 2 seeds: seed 2: A (pool on "
        "26 of 28 edges), C (conv on 27 of 30 edges). The uniform vector A has weightless ops "
        "(pool, identity) on 90% or more of its edges in 1 of 2 seeds.")
    assert seeds.weightless(runs[1]["res"], "A") == (27, 28, "26 pool + 1 identity")
    # a conv-only A is one type but not weightless
    a["A"]["op_counts"] = dict(pool=0, conv=28, identity=0)
    assert seeds.weightless(runs[1]["res"], "A") is None
    assert seeds.one_type_sentence(runs).endswith("in 0 of 2 seeds.")
    # no single type reaches 90 % (25 of 28 = 89.3 %), but A has no convolution: collapsed, named as mixed
    a["A"]["op_counts"] = dict(pool=3, conv=0, identity=25)
    a["C"]["op_counts"] = dict(pool=0, conv=13, identity=17)
    assert seeds.one_type(runs[1]["res"], "A") is None
    assert seeds.weightless(runs[1]["res"], "A") == (28, 28, "3 pool + 25 identity")
    assert seeds.one_type_sentence(runs) == (
        "No architecture is made of one op type on 90% or more of its edges (2 seeds). The uniform "
        "vector A has weightless ops (pool, identity) on 90% or more of its edges in 1 of 2 seeds "
        "(mixed: seed 2: 3 pool + 25 identity of 28).")
    # 3 conv of 28 leaves 89.3 % weightless: below the share, not collapsed
    a["A"]["op_counts"] = dict(pool=3, conv=3, identity=22)
    assert seeds.weightless(runs[1]["res"], "A") is None
    assert seeds.one_type_sentence(runs) == \
        "No architecture is made of one op type on 90% or more of its edges (2 seeds)."


def test_mean_sd_values():
    assert seeds.mean_sd([1, 2, 3]) == (2.0, 1.0, 3)
    assert seeds.mean_sd([5]) == (5.0, None, 1)
    assert seeds.pm(5.0, None, 1, ".2f") == "5.00 (n = 1)"


def test_provenance_rows_name_dirty_commits_and_segments(tmp_path):
    seg = dict(from_step=900, device="cpu (x86_64, 2 threads)", threads=2, commit="def5678+dirty", started="")
    _write(tmp_path, 3, (0.8,) * 4, segments=[seg], commit="abc1234+dirty")
    _write(tmp_path, 4, (0.8,) * 4)
    t = seeds.provenance_table(seeds.collect(tmp_path, "exp1", "authors_code"))
    row = t.loc["exp1-authors_code-seed3"]
    assert row["commit"] == "abc1234 (uncommitted changes)"
    text = row["training segments and threads"]
    assert "resumed at step 900: 2 thread(s), commit def5678 (uncommitted changes)" in text
    assert text.startswith("1 resumed: steps before 900: not recorded")
    assert t.loc["exp1-authors_code-seed4", "training segments and threads"].startswith("not recorded")
    assert "uncommitted" not in t.loc["exp1-authors_code-seed4", "commit"]


@pytest.mark.parametrize("name,seed", [("exp1-authors_code-seed12.json", 12), ("x-seedA.json", None)])
def test_seed_of(name, seed):
    assert seeds.seed_of(name) == seed


def test_paper_runs_script_queues_unfinished_seeds_only():
    import os
    import subprocess
    from pathlib import Path
    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "DRY_RUN": "1", "SEEDS": "0 97"}          # 97: a seed never committed
    assert not (root / "results" / "paper" / "exp1-authors_code-seed97.json").exists()
    out = subprocess.run(["bash", "scripts/paper_runs.sh", "exp1"], cwd=root, env=env, capture_output=True,
                         text=True, timeout=60, check=True).stdout
    assert "exp1-authors_code-seed0: finished" in out
    assert "train --experiment exp1 --preset authors_code --seed 97 --profile paper" in out
    assert "--seed 0 " not in out
    out = subprocess.run(["bash", "scripts/paper_runs.sh", "exp1"], cwd=root, timeout=60, check=True,
                         env={**env, "MODE": "retrain", "SEEDS": "0", "ARCHS": "B"}, capture_output=True,
                         text=True).stdout
    assert "retrain results/paper/exp1-authors_code-seed0.json --arch B --profile paper" in out
    # the script's own file names (SUFFIX per RETRAIN_PROFILE) are those hypernas.retrain writes
    from hypernas import retrain
    src = retrain.resolve_source(root / "results" / "paper" / "exp1-authors_code-seed0.json", arch="B")
    for profile in ("paper", "short"):
        done = retrain.out_path(src, profile, root / "results")
        out = subprocess.run(["bash", "scripts/paper_runs.sh", "exp1"], cwd=root, timeout=60, check=True,
                             env={**env, "MODE": "retrain", "SEEDS": "0", "ARCHS": "B", "RETRAIN_PROFILE": profile},
                             capture_output=True, text=True).stdout
        assert (f"{done.stem}: retrained already" in out) if done.exists() else (
            f"--profile {profile} " in out and f">> logs/{done.stem}-retrain.out" in out), out
    # ARCHS= (empty) queues no architecture: only the family members asked for
    out = subprocess.run(["bash", "scripts/paper_runs.sh", "exp1"], cwd=root, timeout=60, check=True,
                         env={**env, "MODE": "retrain", "SEEDS": "0", "ARCHS": "", "MEMBERS": "97"},
                         capture_output=True, text=True).stdout
    assert "--arch" not in out and "retrained already" not in out
    assert "exp1-authors_code-seed0-family.json --member 97 --profile paper" in out, out


def test_readme_block_shows_seed_groups_apart(tmp_path):
    from hypernas import report
    _write(tmp_path, 0, (0.90, 0.50, 0.50, 0.50), older=True)
    _write(tmp_path, 1, (0.80, 0.70, 0.86, 0.81))
    _write(tmp_path, 2, (0.84, 0.72, 0.84, 0.80), b_conv=1)
    lines = report._readme_seed_groups(tmp_path, "exp1", "authors_code")
    assert lines[0].startswith("Seeds 1, 2 (current preset; mean ± sd")
    assert "| A | 82.00 ± 2.83 (n = 2) | 82.50 |" in "\n".join(lines)
    assert "| B |" in "\n".join(lines) and "17/0/11, 17/1/10" in "\n".join(lines)
    assert not any("Seeds 0" in x for x in lines)        # the older seed 0 alone: its own table above
    block = report.readme_table(tmp_path)
    assert "| A | 90.00 |" in block and "Seeds 1, 2" in block


def test_readme_block_with_one_current_seed_shows_its_values_not_a_mean(tmp_path):
    """exp2/exp3 today: seed 0 of an older preset and one seed of the current one."""
    from hypernas import report
    _write(tmp_path, 0, (0.90, 0.50, 0.50, 0.50), older=True)
    _write(tmp_path, 1, (0.80, 0.70, 0.86, 0.81), b_conv=1)
    lines = report._readme_seed_groups(tmp_path, "exp1", "authors_code")
    block = "\n".join(lines)
    assert lines[0] == "Seed 1 (current preset; the only run of this group, so no sd):"
    assert "test acc. %, seed 1 |" in block and "mean ± sd" not in block and "(n = 1)" not in block
    assert "| A | 80.00 | 82.50 | 38,304 | 38,304 | 12/6/10 |" in block
    assert "| B | 70.00 | 79.20 | 5,120 | 5,120 | 17/1/10 |" in block
