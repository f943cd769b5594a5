"""The README's results table is what the committed results files say."""
from pathlib import Path

from hypernas import report

ROOT = Path(__file__).resolve().parent.parent


def test_readme_results_table_is_generated_from_the_results_files():
    text = (ROOT / "README.md").read_text()
    start = text.index(report.README_BEGIN)
    end = text.index(report.README_END) + len(report.README_END)
    assert text[start:end] == report.readme_table(ROOT), \
        "README.md's results table is stale: run python -m hypernas.report --readme"
    # every committed paper run's A-D accuracy appears in it
    for exp, preset in report.README_RUNS:
        res = report.load_results(ROOT / "results" / "paper" / f"{exp}-{preset}-seed0.json")
        for k in report.ARCHS:
            assert f"| {k} | {100 * res['architectures'][k]['test_acc']:.2f} |" in text[start:end]


def test_model_cards_are_generated_from_the_results_files(tmp_path):
    """Each committed paper model has a card, equal to what its files give today."""
    for path in sorted((ROOT / "results" / "paper").glob("*-seed[0-9].json")):
        card = path.with_suffix("") / "MODEL_CARD.md"
        assert card.exists(), f"{card} missing: run python -m hypernas.report --cards"
        res = report.load_results(path)
        expected = report.card_for(path)
        assert card.read_text() == expected, f"{card} is stale: run python -m hypernas.report --cards"
        assert f"{100 * res['architectures']['A']['test_acc']:.2f}" in expected


def test_model_card_seed_sentence_spans_the_preset_group_only():
    """The card's limits name the accuracy span of its own preset group; an older-preset
    run is never pooled with it, and a lone run says the spread is not measured."""
    def run(seed, group, accs):
        arch = {k: {"test_acc": a} for k, a in zip(report.ARCHS, accs)}
        return dict(seed=seed, group=group, res={"architectures": arch})
    cur, old = "current preset", "older preset (classifier)"
    sibs = [run(0, old, (0.99, 0.99, 0.99, 0.99)), run(1, cur, (0.80, 0.70, 0.85, 0.81)),
            run(2, cur, (0.84, 0.62, 0.86, 0.75))]
    text = report.seed_sentence(2, sibs)
    assert "one seed of 2 committed runs" in text and "seeds 1, 2" in text
    assert "A 80.00-84.00; B 62.00-70.00; C 85.00-86.00; D 75.00-81.00" in text
    assert "99.00" not in text
    lone = report.seed_sentence(0, sibs)
    assert "only run of its preset group (older preset (classifier))" in lone
    assert "the 2 other committed seeds" in lone and "not measured" in lone
    assert report.seed_sentence(0, sibs[:1]).startswith("One seed: seed-to-seed differences are not measured")


def test_model_card_lists_this_runs_retrainings():
    """The card shows each retraining of its run with the epochs run and the inherited value."""
    res = report.load_results(ROOT / "results" / "paper" / "exp1-authors_code-seed0.json")
    def rt(label, kind, acc, inh, run="exp1-authors_code-seed0"):
        return dict(source=dict(label=label, kind=kind, run=run), retrained=dict(final_test_acc=acc),
                    inherited_test_acc=inh, protocol=dict(epochs_run=10, epochs=100))
    card = report.model_card(res, None, [], [rt("B", "results", 0.5, 0.4), rt("m7", "family", 0.625, None)])
    assert "B 50.00 % (40.00), 10 of 100 epochs; m7 62.50 %, 10 of 100 epochs" in card
    assert "mN is member N of the family file" in card
    assert "mN is member" not in report.model_card(res, None, [], [rt("B", "results", 0.5, 0.4)])
    assert "Retrained from scratch" not in report.model_card(res, None, [], [])
