"""The CPU malloc tuning: a command line re-executes itself once with the variable set."""
import os
import subprocess
import sys

import pytest
import torch

from atm_core.engine.runtime import TUNED_MALLOC, tuned_malloc_env

PROBE = ("import os; from atm_core.engine.runtime import relaunch_with_tuned_malloc; "
         "relaunch_with_tuned_malloc(); print(os.getpid(), os.environ.get('MALLOC_MMAP_THRESHOLD_'), "
         "os.environ.get('MALLOC_TRIM_THRESHOLD_'))")


def test_users_setting_wins():
    assert tuned_malloc_env({"MALLOC_MMAP_THRESHOLD_": "123"})["MALLOC_MMAP_THRESHOLD_"] == "123"
    assert tuned_malloc_env({"A": "1"}) == {**TUNED_MALLOC, "A": "1"}
    assert set(TUNED_MALLOC) == {"MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_"}


@pytest.mark.skipif(sys.platform != "linux" or torch.cuda.is_available(), reason="Linux CPU-only relaunch")
def test_relaunch_sets_the_variable_once_and_keeps_the_process():
    env = {k: v for k, v in os.environ.items() if k not in TUNED_MALLOC}
    proc = subprocess.Popen([sys.executable, "-c", PROBE], env=env, stdout=subprocess.PIPE, text=True)
    out, _ = proc.communicate(timeout=120)
    pid, mmap, trim = out.split()
    assert (mmap, trim) == (TUNED_MALLOC["MALLOC_MMAP_THRESHOLD_"], TUNED_MALLOC["MALLOC_TRIM_THRESHOLD_"])
    assert int(pid) == proc.pid  # exec, not a child process: signals and exit codes stay the caller's
    kept = subprocess.run([sys.executable, "-c", PROBE], env={**env, "MALLOC_MMAP_THRESHOLD_": "7"},
                          capture_output=True, text=True, check=True)
    assert kept.stdout.split()[1:] == ["7", TUNED_MALLOC["MALLOC_TRIM_THRESHOLD_"]]
