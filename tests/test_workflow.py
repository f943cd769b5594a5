"""The GitHub Actions workflow that builds and publishes the book."""
from pathlib import Path

import pytest

yaml = pytest.importorskip("yaml")

WORKFLOW = Path(__file__).resolve().parents[1] / ".github" / "workflows" / "book.yml"


def _load():
    wf = yaml.safe_load(WORKFLOW.read_text())
    assert isinstance(wf, dict) and "jobs" in wf
    return wf


def _steps(wf):
    for name, job in wf["jobs"].items():
        for step in job.get("steps", []):
            yield name, step


def test_triggered_on_push_to_main():
    wf = _load()
    on = wf.get("on", wf.get(True))  # YAML 1.1 reads a bare `on` key as True
    assert "main" in on["push"]["branches"]


def test_builds_with_make_book_on_python_311_and_node_20():
    wf = _load()
    build_jobs = [n for n, s in _steps(wf) if "make book" in str(s.get("run", ""))]
    assert build_jobs, "no step runs `make book`"
    job = wf["jobs"][build_jobs[0]]
    assert job["runs-on"] == "ubuntu-latest"
    uses = {s.get("uses", "").split("@")[0]: s for s in job["steps"] if "uses" in s}
    assert str(uses["actions/setup-python"]["with"]["python-version"]) == "3.11"
    assert str(uses["actions/setup-node"]["with"]["node-version"]) == "20"


def test_uploads_and_deploys_the_site():
    wf = _load()
    uploads = [s for _, s in _steps(wf)
               if s.get("uses", "").startswith("actions/upload-pages-artifact@")]
    assert uploads and uploads[0]["with"]["path"] == "_build/html"
    deploys = [(n, s) for n, s in _steps(wf) if s.get("uses", "").startswith("actions/deploy-pages@")]
    assert deploys, "no actions/deploy-pages step"
    perms = wf.get("permissions") or wf["jobs"][deploys[0][0]].get("permissions", {})
    assert perms.get("pages") == "write" and perms.get("id-token") == "write"
