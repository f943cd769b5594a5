"""hypernas.provenance: the commit a result names, on a throwaway git repository."""
import subprocess

from hypernas import provenance


def _git(repo, *args):
    return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=repo,
                          check=True, capture_output=True, text=True).stdout.strip()


def test_commit_is_dirty_for_code_changes_only(tmp_path, monkeypatch):
    """A paper run writes its checkpoint into results/ while it trains: that is data, and
    the results it writes must still name the clean commit; a changed source file is not."""
    monkeypatch.delenv("HYPERNAS_COMMIT", raising=False)
    monkeypatch.setattr(provenance, "ROOT", tmp_path)
    (tmp_path / "results" / "paper").mkdir(parents=True)
    (tmp_path / "figures").mkdir()
    for f in ("code.py", "results/paper/log.jsonl", "figures/fig.svg"):
        (tmp_path / f).write_text("1\n")
    _git(tmp_path, "init", "-q")
    _git(tmp_path, "add", ".")
    _git(tmp_path, "commit", "-qm", "start")
    head = _git(tmp_path, "rev-parse", "--short", "HEAD")
    assert provenance.git_commit() == head
    (tmp_path / "results" / "paper" / "log.jsonl").write_text("2\n")
    (tmp_path / "figures" / "fig.svg").write_text("2\n")
    (tmp_path / "notes.txt").write_text("untracked\n")
    assert provenance.git_commit() == head
    (tmp_path / "code.py").write_text("2\n")
    assert provenance.git_commit() == head + "+dirty"
    monkeypatch.setenv("HYPERNAS_COMMIT", "abc1234")
    assert provenance.git_commit() == "abc1234"
