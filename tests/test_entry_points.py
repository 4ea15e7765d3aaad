"""Every ``python -m atm_core...`` command answers --help and refuses, in one line with exit code 2,
a call it cannot run."""
from __future__ import annotations

import importlib
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = ["atm_core.train", "atm_core.evaluate", "atm_core.reproduce", "atm_core.card",
            "atm_core.data.prepare", "atm_core.data.synthetic", "atm_core.data.preflight", "atm_core.predict"]


def test_every_command_of_the_docs_is_tested_here():
    documented = set()
    for doc in [ROOT / "README.md", *ROOT.glob("atm_core/**/*.py"), *ROOT.glob("atm_core/**/*.md")]:
        documented |= set(re.findall(r"python -m (atm_core(?:\.[a-z_]+)*)", doc.read_text()))
    assert documented <= set(COMMANDS), documented - set(COMMANDS)


@pytest.mark.parametrize("module", COMMANDS)
def test_help(module, capsys):
    with pytest.raises(SystemExit) as stopped:
        importlib.import_module(module).main(["--help"])
    assert stopped.value.code == 0 and "usage:" in capsys.readouterr().out


@pytest.mark.parametrize(("module", "args", "says"), [
    ("atm_core.train", ["--config", "{tmp}"], "configuration error: config file not found: {tmp}"),
    ("atm_core.evaluate", ["--config", "{tmp}"], "configuration error: config file not found: {tmp}"),
    ("atm_core.data.preflight", [], "error: the following arguments are required: --dataset, --root"),
    ("atm_core.data.preflight", ["--dataset", "custom", "--root", "{tmp}", "--lists", "."],
     "error: {tmp}: a folder, not a list file"),
    ("atm_core.data.synthetic", ["--out", "{tmp}/file"], "error: --out {tmp}/file is a file, not a folder"),
    ("atm_core.data.prepare", ["ssv2", "--videos", "{tmp}", "--out", "{tmp}"],
     "error: give --annotations DIR (or --reference-lists with --labels)"),
    ("atm_core.predict", ["{tmp}/file"], "error: the following arguments are required: --checkpoint"),
])
def test_a_call_that_cannot_run_is_refused_in_one_line(module, args, says, tmp_path, capsys):
    (tmp_path / "file").write_text("")
    args = [a.format(tmp=tmp_path) for a in args]
    with pytest.raises(SystemExit) as stopped:
        code = importlib.import_module(module).main(args)
        raise SystemExit(code)
    assert stopped.value.code == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert err[-1].endswith(says.format(tmp=tmp_path)) and "Traceback" not in "\n".join(err)


def test_the_preflight_runs_as_a_module():
    done = subprocess.run([sys.executable, "-m", "atm_core.data.preflight"], cwd=ROOT, capture_output=True, check=False,
                          text=True, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert done.returncode == 2 and "required: --dataset, --root" in done.stderr
