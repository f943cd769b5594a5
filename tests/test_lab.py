"""JupyterLab (`make lab`): a chapter opens as a notebook, runs with a changed parameter and
is saved back to its .md without outputs; in Chromium the Lab page shows it as a notebook.

A Jupyter server (this venv's JupyterLab, with the repository's jupyter/ config folder on
JUPYTER_CONFIG_PATH, as `make lab` starts it) serves a temporary copy of book/ on a free
localhost port behind a random token, so nothing is written into the repository (except the
screenshot, _build/lab/). The chapter is book/gumbel.md: its parameter `alpha` (the logits
of one edge) is printed with its softmax by the second cell, and the whole chapter executes
in about ten seconds on one thread.
"""
import ast
import json
import math
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [  # as scripts/check_site.py, plus no first-run and sync (closed network)
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
CHAPTER = "gumbel.md"
ALPHA_LINE = re.compile(r"^alpha = (\[[^\]]*\])", re.M)  # in the parameters cell
NEW_ALPHA = [0.0, 2.0, -1.0]
SCREENSHOT = ROOT / "_build" / "lab" / "gumbel.png"

pytestmark = pytest.mark.slow


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Lab:
    def __init__(self, url, token, book, log=None):
        self.url, self.token, self.book, self.log = url, token, book, log

    def log_tail(self, chars=3000):
        return self.log.read_text(errors="replace")[-chars:] if self.log else ""

    def request(self, method, path, body=None, token=True):
        headers = {"Content-Type": "application/json"}
        if token:
            headers["Authorization"] = f"token {self.token}"
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=60) as resp:
                return resp.status, json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as err:
            return err.code, None


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    pytest.importorskip("jupyterlab")
    pytest.importorskip("jupytext")
    tmp = tmp_path_factory.mktemp("lab")
    book = tmp / "book"
    shutil.copytree(ROOT / "book", book,
                    ignore=shutil.ignore_patterns("generated", ".ipynb_checkpoints", "_build"))
    token, port = secrets.token_hex(16), _free_port()
    env = dict(os.environ)
    env.update(
        JUPYTER_CONFIG_PATH=str(ROOT / "jupyter"),   # the repository's server config
        JUPYTER_CONFIG_DIR=str(tmp / "config"),      # no user config
        JUPYTER_RUNTIME_DIR=str(tmp / "runtime"),
        JUPYTER_TOKEN=token,
        PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p),
        OMP_NUM_THREADS=env.get("OMP_NUM_THREADS", "1"),
    )
    cmd = [sys.executable, "-m", "jupyterlab", f"--notebook-dir={book}", f"--port={port}",
           "--ServerApp.port_retries=0", f"--LabApp.user_settings_dir={tmp / 'user-settings'}",
           f"--LabApp.workspaces_dir={tmp / 'workspaces'}"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd.append("--allow-root")
    log = open(tmp / "server.log", "w+")
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=tmp)
    server = Lab(f"http://127.0.0.1:{port}", token, book, tmp / "server.log")
    deadline = time.monotonic() + 90
    while True:
        if proc.poll() is not None:
            log.seek(0)
            pytest.fail(f"jupyter lab exited with {proc.returncode}:\n{log.read()[-3000:]}")
        try:
            if server.request("GET", "/api/status")[0] == 200:
                break
        except OSError:
            pass
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail("jupyter lab did not answer within 90 s")
        time.sleep(0.5)
    try:
        yield server
    finally:
        try:  # shuts down the kernels Lab started, then the server
            server.request("POST", "/api/shutdown")
            proc.wait(timeout=20)
        except Exception:
            proc.kill()
            proc.wait()
        log.close()


def _parameters_cell(nb):
    cells = [c for c in nb["cells"] if "parameters" in c["metadata"].get("tags", [])]
    assert len(cells) == 1, f"{len(cells)} cells tagged parameters, not 1"
    return cells[0]


def _split_header(text):
    """(front matter as a dict, the rest) of a MyST notebook."""
    import yaml

    assert text.startswith("---\n"), text[:200]
    front, body = text[4:].split("\n---\n", 1)
    return yaml.safe_load(front), body


def _files(folder):
    return {str(p.relative_to(folder)) for p in folder.rglob("*")
            if p.is_file() and ".ipynb_checkpoints" not in p.parts}


def _wait_for_kernel_idle(page, lab, path, timeout):
    """Wait until the Lab session of `path` (the page opened it) has a kernel that is idle.
    It waits with page.wait_for_timeout, not time.sleep, which would hold up page.route and
    with it the page's own request that starts the kernel."""
    deadline, states = time.monotonic() + timeout, []
    while time.monotonic() < deadline:
        _, sessions = lab.request("GET", "/api/sessions")
        states = [(s["path"], (s.get("kernel") or {}).get("execution_state"))
                  for s in sessions or []]
        if any(p.endswith(path) and state == "idle" for p, state in states):
            return
        page.wait_for_timeout(500)
    pytest.fail(f"no idle kernel for {path} within {timeout} s; sessions: {states}")


def _diagnosis(err, page, cell, lab):
    """What the page showed when a step timed out: the cell, any dialog, the kernels, the
    server log's tail; a screenshot beside SCREENSHOT."""
    shot = SCREENSHOT.with_name("failure.png")
    shot.parent.mkdir(parents=True, exist_ok=True)
    lines = [str(err).splitlines()[0]]
    try:
        page.screenshot(path=str(shot))
        lines.append(f"screenshot: {shot}")
        lines.append("cell: " + cell.inner_text(timeout=2_000)[:800])
        dialogs = page.locator(".jp-Dialog")
        if dialogs.count():
            lines.append("dialog: " + dialogs.first.inner_text(timeout=2_000)[:500])
        lines.append("focused: " + page.evaluate(
            "() => document.activeElement && document.activeElement.outerHTML.slice(0, 200)"))
    except Exception as extra:   # the diagnosis must not hide the original failure
        lines.append(f"(diagnosis incomplete: {extra})")
    lines.append(f"sessions: {lab.request('GET', '/api/sessions')[1]}")
    log = lab.log_tail()
    lines.append("server log (tail):\n" + log)
    return "\n".join(lines)


def test_every_chapter_opens_as_a_notebook(lab):
    chapters = sorted(p.name for p in lab.book.glob("*.md")
                      if p.read_text().startswith("---\njupytext:"))
    assert CHAPTER in chapters and "family.md" in chapters, chapters
    for name in chapters:
        status, model = lab.request("GET", f"/api/contents/{name}?content=1")
        assert status == 200 and model["type"] == "notebook", (name, status)
        _parameters_cell(model["content"])   # exactly one cell tagged parameters


def test_chapter_opens_runs_and_saves_without_outputs(lab, monkeypatch):
    import jupytext
    import nbclient
    import nbformat

    assert lab.request("GET", f"/api/contents/{CHAPTER}", token=False)[0] == 403

    status, model = lab.request("GET", f"/api/contents/{CHAPTER}?content=1")
    assert status == 200
    assert model["type"] == "notebook", model["type"]   # jupytext's contents manager
    nb = nbformat.from_dict(model["content"])
    param = _parameters_cell(nb)
    assert ALPHA_LINE.search(param["source"]), param["source"]
    param["source"] = ALPHA_LINE.sub(f"alpha = {NEW_ALPHA}", param["source"], count=1)

    # execute the whole chapter with the changed parameter in the python3 kernel
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p))
    monkeypatch.setenv("OMP_NUM_THREADS", os.environ.get("OMP_NUM_THREADS", "1"))
    nbclient.NotebookClient(nb, kernel_name="python3", timeout=300,
                            resources={"metadata": {"path": str(lab.book)}}).execute()
    printed = "".join(o.get("text", "") for c in nb["cells"] if c["cell_type"] == "code"
                      for o in c.get("outputs", []) if o["output_type"] == "stream")
    line = re.search(r"^alpha = (\[.*?\])\s+Softmax\(alpha\) = (\[.*?\])$", printed, re.M)
    assert line, printed[:2000]
    assert ast.literal_eval(line[1]) == NEW_ALPHA
    z = [math.exp(a) for a in NEW_ALPHA]
    assert ast.literal_eval(line[2]) == pytest.approx([v / sum(z) for v in z], abs=1e-4)

    # save the executed notebook (outputs and all) back through the contents API
    original = (lab.book / CHAPTER).read_text()
    before = _files(lab.book)
    status, _ = lab.request("PUT", f"/api/contents/{CHAPTER}",
                            {"type": "notebook", "format": "json", "content": nb})
    assert status == 200
    saved = (lab.book / CHAPTER).read_text()
    assert _files(lab.book) == before, "saving wrote another file (a paired .ipynb?)"
    # the .md is the original with the one parameter line changed: no outputs, no new metadata
    old_line = ALPHA_LINE.search(original)[0]
    assert saved == original.replace(old_line, f"alpha = {NEW_ALPHA}", 1)
    assert line[0] not in saved
    # and the book's reader (jupytext, as Jupyter Book reads MyST notebooks) sees the change
    reread = jupytext.read(lab.book / CHAPTER)
    assert f"alpha = {NEW_ALPHA}" in _parameters_cell(reread)["source"]


def test_lab_page_shows_the_chapter_as_a_notebook(lab):
    """In Chromium: the chapter opens as a notebook with MyST rendered; a line typed into
    its parameters cell runs in the kernel; Ctrl+S writes exactly that line into the .md."""
    pytest.importorskip("playwright")
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no Chromium at {CHROMIUM}")
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    from playwright.sync_api import sync_playwright

    _, model = lab.request("GET", f"/api/contents/{CHAPTER}?content=1")
    param_source = _parameters_cell(model["content"])["source"]
    alpha_line = ALPHA_LINE.search(param_source)
    added = "print('sum of alpha:', sum(alpha))"
    printed = f"sum of alpha: {sum(ast.literal_eval(alpha_line[1]))}"
    before = (lab.book / CHAPTER).read_text()
    assert param_source in before
    files = _files(lab.book)
    external, errors = [], []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})

            def route(r):
                if urllib.parse.urlsplit(r.request.url).hostname in ("127.0.0.1", "localhost"):
                    r.continue_()
                else:
                    external.append(r.request.url)
                    r.abort()

            page.route("**/*", route)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(f"{lab.url}/lab/tree/{CHAPTER}?token={lab.token}")
            # a notebook panel (not the text editor) whose parameters cell shows alpha
            cell = page.locator(".jp-NotebookPanel .jp-CodeCell", has_text=alpha_line[0]).first
            cell.wait_for(timeout=90_000)
            # the Markdown cells are rendered as MyST (jupyterlab-myst): the title is a
            # heading and no role such as {cite:p} is left as raw text
            title = page.locator(".jp-NotebookPanel .jp-MarkdownCell h1").first
            title.wait_for(timeout=30_000)
            assert "Gumbel-Softmax" in title.inner_text()
            rendered = page.evaluate("""() => Array.from(document.querySelectorAll(
                '.jp-NotebookPanel .jp-MarkdownCell .jp-RenderedMarkdown'))
                .map(e => e.innerText).join('\\n')""")
            assert "{cite:p}" not in rendered and "$$" not in rendered, rendered[:1500]

            # tweak the parameters cell, run it (Shift+Enter), see its output. Each step
            # waits for the state the next one needs (kernel idle, editor focused, line
            # typed), so a slow machine waits instead of typing into the wrong place, and a
            # failure says which step did not happen (with a screenshot and the server log)
            try:
                _wait_for_kernel_idle(page, lab, CHAPTER, timeout=120)
                editor = cell.locator(".jp-InputArea-editor .cm-editor")
                for _ in range(3):
                    editor.click()
                    try:
                        cell.locator(".cm-editor.cm-focused").wait_for(timeout=5_000)
                        break
                    except PlaywrightTimeout:
                        continue
                cell.locator(".cm-editor.cm-focused").wait_for(timeout=5_000)
                page.keyboard.press("Control+End")
                page.keyboard.type("\n" + added)
                cell.locator(".cm-content", has_text=added).wait_for(timeout=10_000)
                page.keyboard.press("Shift+Enter")
                cell.locator(".jp-OutputArea-output", has_text=printed).wait_for(timeout=90_000)
            except PlaywrightTimeout as err:
                pytest.fail(_diagnosis(err, page, cell, lab))
            SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(SCREENSHOT))

            # save: the .md gains the typed line and nothing else (no output, no metadata)
            page.keyboard.press("Control+s")
            deadline = time.monotonic() + 30
            while (lab.book / CHAPTER).read_text() == before:
                assert time.monotonic() < deadline, "Ctrl+S did not save the chapter"
                page.wait_for_timeout(200)   # (not time.sleep: it would hold up page.route)
            page.wait_for_function(
                "() => !document.querySelector('.lm-TabBar-tab.jp-mod-dirty')", timeout=30_000)
        finally:
            browser.close()
    saved = (lab.book / CHAPTER).read_text()
    # Lab rewrites the kernelspec in the header with its kernel's own (display name
    # "Python 3 (ipykernel)"); everything else is the chapter as it was, plus the line
    header, body = _split_header(saved)
    old_header, old_body = _split_header(before)
    assert body == old_body.replace(param_source, param_source + "\n" + added, 1)
    assert header["jupytext"] == old_header["jupytext"]
    assert header["kernelspec"]["name"] == old_header["kernelspec"]["name"] == "python3"
    assert printed not in saved
    assert _files(lab.book) == files, "saving wrote another file (a paired .ipynb?)"
    assert external == [], f"Lab requested outside localhost: {external}"
    assert errors == [], errors
