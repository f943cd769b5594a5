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
        fam = path.with_name(path.stem + "-family.json")
        res = report.load_results(path)
        expected = report.model_card(res, report.load_results(fam) if fam.exists() else None)
        assert card.read_text() == expected, f"{card} is stale: run python -m hypernas.report --cards"
        assert f"{100 * res['architectures']['A']['test_acc']:.2f}" in expected
