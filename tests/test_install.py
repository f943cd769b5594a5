"""hypernas installed outside the repository (#18): the experiment notebook ships inside
the package, and runs, results, figures and executed notebooks go where the user says or
under the current folder -- never into the folder hypernas is installed in."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _tree(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


@pytest.mark.slow
def test_installed_package_reproduces_and_derives_from_an_empty_folder(tmp_path):
    # build a wheel of this tree's sources and install it alone into `site` (torch and the
    # other dependencies are this environment's; no download)
    src = tmp_path / "src"
    shutil.copytree(ROOT / "hypernas", src / "hypernas", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    site = tmp_path / "site"
    r = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                        "--target", str(site), str(src)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    assert (site / "hypernas" / "experiment.md").is_file()           # package data
    assert not (site / "book").exists() and not (site / "pyproject.toml").exists()

    work = tmp_path / "work"
    work.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site), "PYTHONDONTWRITEBYTECODE": "1", "OMP_NUM_THREADS": "1",
           "HYPERNAS_KERNELS": "0"}     # the compiled kernels are not the subject here
    env.pop("HYPERNAS_DATA", None)
    installed = _tree(site)
    r = subprocess.run([sys.executable, "-m", "hypernas.cli", "reproduce", "--profile", "smoke",
                        "--experiments", "exp1", "--device", "cpu", "--output", str(tmp_path / "notebooks")],
                       cwd=work, env=env, capture_output=True, text=True, timeout=1200)
    assert r.returncode == 0, r.stderr[-3000:]
    assert (tmp_path / "notebooks" / "exp1.ipynb").is_file()
    results = work / "results" / "smoke"
    res = json.loads((results / "exp1-authors_code-seed0.json").read_text())
    assert res["provenance"]["commit"] == "unknown"          # not the commit of a folder above
    assert (results / "exp1-authors_code-seed0.ipynb").is_file()
    assert (results / "exp1-authors_code-seed0" / "model.pt").is_file()
    assert list((work / "figures" / "smoke").glob("fig2-exp1-authors_code-seed0.*"))
    assert sorted(p.name for p in work.iterdir()) == ["figures", "results"]

    # the console script of the installed package, on the model it trained
    r = subprocess.run([str(site / "bin" / "hypernas"), "derive",
                        "results/smoke/exp1-authors_code-seed0/model.pt", "--s", "0.7", "0.15", "0.15"],
                       cwd=work, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["normal"] == res["architectures"]["C"]["genotype"]["normal"]
    assert out["reduce"] == res["architectures"]["C"]["genotype"]["reduce"]
    assert _tree(site) == installed                         # nothing written where it is installed
