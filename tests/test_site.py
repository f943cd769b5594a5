"""Browser check of the built book (scripts/check_site.py) and a test that the checker fails.

test_built_site needs `make book` first; it fails (does not skip) when the site is missing.
Deselect it with `-m "not book"`.
"""
import importlib.util
import shutil
import sys
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
        "<p>our A reaches {glue:md}`acc_A` % on <span class='pasted-text'>(1, 920)</span> images</p>"
        "<p>ranked over <span class='pasted-text'>the runs of `exp1-seed0`</span></p>"
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
    assert any("glued value rendered as a tuple: (1, 920)" in f for f in res), text
    assert any("raw Markdown in glued text: the runs of `exp1-seed0`" in f for f in res), text
    assert not any("raw Markdown" in f and "920" in f for f in res), text
    assert any("horizontal overflow" in f and "<table" in f and "past the main column" in f for f in res), text
    assert any("horizontal overflow" in f and "scroll bar" in f for f in res), text
    assert any("code cell of 20 lines" in f and "x0 = 0" in f for f in res), text
    assert not any("folded = 1" in f for f in res), text          # a folded cell is fine
    # the same long cell on a page that is not a results/experiment/performance page is allowed
    (site / "results.html").rename(site / "chapter.html")
    failures = _load_checker().check_site(site, screenshot_dir=tmp_path / "shots", log=lambda *a: None)
    assert not any("code cell" in f for f in failures), "\n".join(failures)
    assert {p.name for p in (tmp_path / "shots").glob("*.png")} == {"index.png", "other.png", "chapter.png"}


@pytest.mark.slow
def test_cached_execution_still_fails_the_build(tmp_path):
    """The book's `execute:` settings (execute_notebooks: cache) must not hide a failing
    cell: a page whose cell raises fails the build, and again on the next build (a failed
    notebook is not cached), while a page that succeeds is cached."""
    yaml = pytest.importorskip("yaml")
    # the venv's own jupyter-book first: `make test` calls .venv/bin/pytest without the venv on PATH
    jb = shutil.which("jupyter-book", path=str(Path(sys.executable).parent)) or shutil.which("jupyter-book")
    if jb is None:
        pytest.skip("jupyter-book not installed")
    import subprocess
    execute = yaml.safe_load((ROOT / "_config.yml").read_text())["execute"]
    assert execute["execute_notebooks"] == "cache" and execute["raise_on_error"] is True
    book = tmp_path / "book"
    book.mkdir()
    (book / "_config.yml").write_text(yaml.safe_dump({"title": "t", "execute": execute}))
    (book / "_toc.yml").write_text("format: jb-book\nroot: intro\nchapters:\n  - file: page\n")
    header = "---\nkernelspec:\n  name: python3\n  display_name: Python 3\njupytext:\n  text_representation:\n    format_name: myst\n---\n"
    (book / "intro.md").write_text(header + "# Intro\n\n```{code-cell} ipython3\nprint('fine')\n```\n")
    (book / "page.md").write_text(header + "# Page\n\n```{code-cell} ipython3\nraise ValueError('boom')\n```\n")

    def build():
        return subprocess.run([jb, "build", str(book), "-W", "--keep-going"], capture_output=True,
                              text=True, timeout=600)

    for attempt in (1, 2):
        r = build()
        out = r.stdout + r.stderr
        assert r.returncode != 0, f"build {attempt} passed with a failing cell:\n{out[-3000:]}"
        assert "page" in out and ("ExecutionError" in out or "Executing notebook failed" in out), out[-3000:]
    # fixed: the build passes, and the next one reuses the cache instead of executing again
    (book / "page.md").write_text(header + "# Page\n\n```{code-cell} ipython3\nprint('fixed')\n```\n")
    r = build()
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    r = build()
    assert r.returncode == 0 and "Executing notebook" not in r.stdout, r.stdout[-3000:]


@pytest.mark.slow
def test_checker_plotly_explorer(tmp_path):
    """The explorer rule: a plotly figure served with plotly.js from the site passes (drawn,
    hover label on a point); the same figure without plotly.js on the site fails."""
    _need_browser()
    plotly = pytest.importorskip("plotly")
    import plotly.graph_objects as go

    from hypernas.bookutil import plotly_html

    site = tmp_path / "html"
    (site / "_static" / "plotly").mkdir(parents=True)
    shutil.copy(Path(plotly.__file__).parent / "package_data" / "plotly.min.js",
                site / "_static" / "plotly" / "plotly.min.js")
    fig = go.Figure(go.Scatterternary(a=[0.2, 0.5], b=[0.3, 0.2], c=[0.5, 0.3], mode="markers",
                                      marker=dict(size=30), hovertemplate="test accuracy %{a}<extra></extra>"))
    body = plotly_html(fig, static_prefix="_static")
    (site / "explorer.html").write_text(f"<!DOCTYPE html><html><body><article class='bd-article'>{body}"
                                        "</article></body></html>")
    (site / "broken.html").write_text("<!DOCTYPE html><html><body>"
                                      + body.replace("_static/plotly/plotly.min.js", "_static/none.js")
                                      + "</body></html>")
    failures = _load_checker().check_site(site, screenshot_dir=None, log=lambda *a: None)
    text = "\n".join(failures)
    assert not any(f.startswith("explorer.html") for f in failures), text
    assert any(f.startswith("broken.html") and "plotly.js did not load" in f for f in failures), text
