"""Browser check of the built book (scripts/check_site.py) and a test that the checker fails.

test_built_site needs `make book` first; it fails (does not skip) when the site is missing.
Deselect it with `-m "not book"`.
"""
import importlib.util
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HTML = ROOT / "_build" / "html"
CHROMIUM = "/usr/bin/chromium"


def _load_checker():
    spec = importlib.util.spec_from_file_location("check_site", ROOT / "scripts" / "check_site.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _need_browser():
    pytest.importorskip("playwright")
    if not Path(CHROMIUM).exists() and shutil.which("chromium") is None:
        pytest.skip(f"no Chromium at {CHROMIUM}")


@pytest.mark.book
@pytest.mark.slow
def test_built_site():
    if not (HTML / "index.html").is_file():
        pytest.fail("build the book first: make book")
    _need_browser()
    failures = _load_checker().check_site(HTML, screenshot_dir=ROOT / "_build" / "screenshots")
    assert failures == [], "\n".join(failures)


@pytest.mark.slow
def test_checker_reports_failures(tmp_path):
    _need_browser()
    site = tmp_path / "html"
    site.mkdir()
    (site / "index.html").write_text(
        "<!DOCTYPE html><html><head><title>fake</title></head><body>"
        "<p>Raw formula left by a broken MathJax setup: $$x^2$$</p>"
        '<img src="missing.png" alt="broken">'
        '<a href="nowhere.html">a broken internal link</a>'
        '<a href="other.html">a working internal link</a>'
        "</body></html>"
    )
    (site / "other.html").write_text(
        "<!DOCTYPE html><html><body><p>fine</p><a href='index.html'>back</a></body></html>"
    )
    code = "\n".join(f"x{i} = {i}" for i in range(20))
    (site / "results.html").write_text(
        "<!DOCTYPE html><html><body><article class='bd-article' style='width:600px'>"
        "<p>our A reaches {glue:md}`acc_A` %</p>"
        "<table style='width:3000px'><tr><td>too wide</td></tr></table>"
        f"<div class='cell_input'><pre>{code}</pre></div>"
        f"<details><summary>show</summary><div class='cell_input'><pre>folded = 1\n{code}</pre></div></details>"
        "<div style='width:500px;overflow-x:auto'><div style='width:900px'>scrolls</div></div>"
        "</article></body></html>"
    )
    failures = _load_checker().check_site(site, screenshot_dir=None, log=lambda *a: None)
    text = "\n".join(failures)
    assert any("raw TeX" in f and "x^2" in f for f in failures), text
    assert any("image did not load" in f and "missing.png" in f for f in failures), text
    assert any("broken internal link nowhere.html" in f for f in failures), text
    assert not any("other.html" in f for f in failures), text
    res = [f for f in failures if f.startswith("results.html")]
    assert any("unrendered glue role {glue:md}" in f for f in res), text
    assert any("horizontal overflow" in f and "<table" in f and "past the main column" in f for f in res), text
    assert any("horizontal overflow" in f and "scroll bar" in f for f in res), text
    assert any("code cell of 20 lines" in f and "x0 = 0" in f for f in res), text
    assert not any("folded = 1" in f for f in res), text          # a folded cell is fine
    # the same long cell on a page that is not a results/experiment/performance page is allowed
    (site / "results.html").rename(site / "chapter.html")
    failures = _load_checker().check_site(site, screenshot_dir=tmp_path / "shots", log=lambda *a: None)
    assert not any("code cell" in f for f in failures), "\n".join(failures)
    assert {p.name for p in (tmp_path / "shots").glob("*.png")} == {"index.png", "other.png", "chapter.png"}
