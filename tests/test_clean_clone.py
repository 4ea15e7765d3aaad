"""Every notebook run with its defaults in a fresh clone leaves the clone as git checked it out:
reports read results/, a training notebook writes to a scratch folder that git ignores."""
import subprocess
from pathlib import Path

import pytest

from atm_core import jobs

ROOT = Path(__file__).resolve().parents[1]
# train.ipynb trains its default variant with the full recipe (into a scratch folder): minutes, not seconds
NOTEBOOKS = [pytest.param(p.stem, marks=pytest.mark.timeout(3600)) if p.stem == "train" else p.stem
             for p in sorted((ROOT / "notebooks").glob("*.ipynb"))]


def git(*args: str, cwd: Path) -> str:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True).stdout


@pytest.mark.slow
@pytest.mark.parametrize("notebook", NOTEBOOKS)
def test_notebook_with_its_defaults_leaves_git_status_clean(notebook, tmp_path, monkeypatch):
    clone = tmp_path / "clone"
    git("clone", "--quiet", str(ROOT), str(clone), cwd=tmp_path)
    assert git("status", "--porcelain", "--untracked-files=all", cwd=clone) == ""
    monkeypatch.setenv("PYTHONPATH", str(clone))  # the kernel imports the clone's atm_core
    out = tmp_path / "executed" / f"{notebook}.ipynb"  # outside the clone
    failure = jobs.execute(clone / "notebooks" / f"{notebook}.ipynb", out, {}, cwd=clone, log_output=False)
    assert failure is None, str(failure)
    changed = git("status", "--porcelain", "--untracked-files=all", cwd=clone)
    assert changed == "", f"{notebook}.ipynb with its defaults changed the clone:\n{changed}"
