"""The CPU malloc tuning: a command line re-executes itself once with the variable set."""
import os
import subprocess
import sys

import pytest
import torch

from atm_core.engine import runtime
from atm_core.engine.config import load_config
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


@pytest.mark.parametrize("native, expected", [(True, "bf16"), (False, "no")])
def test_auto_precision_is_decided_by_the_hardware_and_written_into_the_config(monkeypatch, native, expected):
    monkeypatch.setattr(runtime, "native_bf16", lambda: native)
    cfg = load_config(None, ["train.mixed_precision=auto"])
    assert runtime.resolve_precision(cfg) is cfg and cfg.train.mixed_precision == expected
    for chosen in ("no", "bf16"):  # a precision the user names is kept whatever the hardware
        assert runtime.resolve_precision(load_config(None, [f"train.mixed_precision={chosen}"])).train.mixed_precision == chosen


def test_native_bf16_follows_the_cpu_flags(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    assert not runtime.native_bf16()
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True)
    assert runtime.native_bf16()


def test_auto_precision_reaches_the_accelerator_and_is_printed(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(runtime, "native_bf16", lambda: True)
    cfg = load_config(None, ["train.mixed_precision=auto", f"train.output_dir={tmp_path}"])
    accelerator = runtime.make_accelerator(cfg)
    try:
        assert accelerator.mixed_precision == "bf16" and cfg.train.mixed_precision == "bf16"
        with accelerator.autocast():
            assert torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16
    finally:
        runtime.release_accelerator()
    assert "train.mixed_precision=auto: bf16 on this CPU (native bf16)" in capsys.readouterr().out


@pytest.mark.parametrize("precision, enabled", [("bf16", True), ("no", False)])
def test_inference_runs_in_the_precision_the_run_recorded(precision, enabled):
    model = torch.nn.Linear(4, 3)
    cfg = load_config(None, [f"train.mixed_precision={precision}"])
    with runtime.inference_autocast(cfg, "cpu"):
        out = model(torch.randn(2, 4))
    assert out.dtype == (torch.bfloat16 if enabled else torch.float32)
