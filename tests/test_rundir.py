"""A run directory belongs to one run: a second training there is refused naming the holder (a
killed holder blocks nothing), a fresh run never mixes with an old one, a resume cannot change the
model or the clip length, changed settings are recorded, and evaluation keeps to the clip length
the checkpoint was trained for."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from test_engine_train import PARAMS, bench, tiny_overrides  # noqa: F401 (bench: the tiny benchmark fixture)

from atm_core import evaluate as evaluate_cli
from atm_core import train as train_cli
from atm_core.engine import read_metrics
from atm_core.engine.checkpoint import step_dirs

ROOT = Path(__file__).resolve().parents[1]


def cli_args(bench: Path, out: Path, *extra: str) -> list[str]:
    return ["--config", str(PARAMS / "synthetic_base.yaml"), *tiny_overrides(bench, out, "optim.epochs=1", *extra)]


def refusal(capsys, *args: str) -> str:
    """The one line a refused call prints (exit status 2)."""
    with pytest.raises(SystemExit) as stopped:
        train_cli.main(list(args))
    assert stopped.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


def digest(out: Path) -> dict[str, str]:
    """Every file of a run directory by its content (the lock's holder record aside)."""
    return {str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(out.rglob("*")) if p.is_file() and not p.name.startswith(".lock")}


@pytest.mark.slow
def test_a_second_training_is_refused_naming_the_holder_and_a_killed_one_blocks_nothing(bench, tmp_path, capsys):
    out = tmp_path / "run"
    first = subprocess.Popen(
        [sys.executable, "-m", "atm_core.train", *cli_args(bench, out, "optim.epochs=40", "train.save_every_steps=1")],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while len(step_dirs(out / "checkpoints")) < 2:  # it trains, and has saved
            assert first.poll() is None, first.stderr.read().decode()
            assert time.monotonic() < deadline
            time.sleep(0.2)
        holder = json.loads((out / ".lock.holder").read_text())
        before = (out / "config.yaml").read_text()
        err = refusal(capsys, *cli_args(bench, out, "train.seed=1", "train.overwrite=true"))
        assert err == (f"error: train.output_dir {out} is in use by another training (pid {first.pid} on "
                       f"{socket.gethostname()}, started {holder['started']}): wait for it to end, or "
                       "choose another train.output_dir")
        assert (holder["pid"], (out / "config.yaml").read_text()) == (first.pid, before)
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    # the dead holder's lock is gone with it: its run resumes, with fewer epochs
    resumed_from = step_dirs(out / "checkpoints")[-1]
    result = train_cli.main([*cli_args(bench, out, "train.save_every_steps=1"), "--resume", "auto"])
    shown = capsys.readouterr().out
    step = int(resumed_from.name.split("_")[1])
    assert f"resumed from {resumed_from}" in shown
    assert (f"settings changed from step {step} on: optim.epochs 40 -> 1 (recorded in {out / 'changes.jsonl'})"
            in shown)
    assert (out / "config.yaml").read_text() == before  # the start's configuration stays
    assert yaml.safe_load(before)["optim"]["epochs"] == 40
    changes = [json.loads(line) for line in (out / "changes.jsonl").read_text().splitlines()]
    assert changes == [{"step": step, "epoch": 0, "changes": {"optim.epochs": [40, 1]}}]
    assert result["last"]["epoch"] == 0 and not (out / ".lock.holder").exists()


@pytest.mark.slow
def test_a_fresh_run_in_an_old_runs_directory_is_refused_unless_told_to_start_over(bench, tmp_path, capsys):
    out = tmp_path / "run"
    train_cli.main(cli_args(bench, out, "optim.epochs=2", "train.keep_last=3"))
    old = digest(out)
    err = refusal(capsys, *cli_args(bench, out, "train.seed=1"))
    assert err == (f"error: train.output_dir {out} holds another run (checkpoints/step_00000003, "
                   "checkpoints/step_00000006, checkpoints/best and 1 more): continue it with --resume auto, "
                   "start over with train.overwrite=true (removes it), or choose another train.output_dir")
    assert digest(out) == old  # nothing of the old run touched
    train_cli.main(cli_args(bench, out, "train.seed=1", "train.overwrite=true"))
    assert [p.name for p in step_dirs(out / "checkpoints")] == ["step_00000003"]
    assert [r["epoch"] for r in read_metrics(out)] == [0]
    assert yaml.safe_load((out / "config.yaml").read_text())["train"]["seed"] == 1


@pytest.mark.slow
def test_a_resume_or_an_evaluation_with_another_clip_length_is_refused(bench, tmp_path, capsys):
    out = tmp_path / "run"
    train_cli.main(cli_args(bench, out))
    capsys.readouterr()
    config, identity = (out / "config.yaml").read_text(), json.loads((out / "identity.json").read_text())
    assert (identity["data.num_frames"], identity["input_size"], len(identity["classes"])) == (8, 64, 12)
    err = refusal(capsys, *cli_args(bench, out, "data.num_frames=4", "model.temporal=tsm"), "--resume", "auto")
    assert err == (f"error: cannot resume the run of {out} with another model or data: data.num_frames 8 -> 4; "
                   f"model.temporal tsn -> tsm (its settings are in {out / 'config.yaml'}; start a new run in "
                   "another train.output_dir to train these)")
    assert (out / "config.yaml").read_text() == config and not (out / "changes.jsonl").exists()

    evaluate = ["--config", str(PARAMS / "synthetic_base.yaml"), *tiny_overrides(bench, out)]
    for frames in (4, 16):
        with pytest.raises(SystemExit) as stopped:
            evaluate_cli.main([*evaluate, f"data.num_frames={frames}"])
        assert stopped.value.code == 2
        assert capsys.readouterr().err.strip() == (
            f"configuration error: checkpoint {out / 'checkpoints' / 'best'} was trained on 8-frame clips, "
            f"not data.num_frames={frames}: evaluate it with data.num_frames=8")
    evaluate_cli.main([*evaluate, "eval.num_clips=2"])
    summary = json.loads((out / "eval" / "summary.json").read_text())
    assert (summary["checkpoint"], summary["num_frames"], summary["views"], summary["num_padded"]) == (
        str(out / "checkpoints" / "best"), 8, 2, 0)

    (out / "identity.json").unlink()  # a run from before identities: the checkpoint itself refuses
    err = refusal(capsys, *cli_args(bench, out, "model.atm.ops=[sub]"), "--resume", "auto")
    assert err.startswith(f"configuration error: cannot resume from {out / 'checkpoints' / 'step_00000003'}: it "
                          "does not fit the model and data of this configuration (Error(s) in loading state_dict")


def test_the_lock_is_the_operating_systems_and_a_refused_start_leaves_no_folder(tmp_path):
    from atm_core.engine.rundir import RunDirError, hold

    out = tmp_path / "new"
    with hold(out), pytest.raises(RunDirError, match=rf"pid {os.getpid()} on {socket.gethostname()}, started "):
        with hold(out):  # a second holder, as another process would be
            pass
    assert not out.exists()  # created for the lock only, removed again
    with hold(out):
        pass  # released: free again


def test_changes_accumulate_against_the_settings_in_force_and_identity_lists_every_difference(tmp_path):
    from atm_core.engine import load_config
    from atm_core.engine.rundir import RunDirError, check_resume, record_changes, run_identity, start

    cfg = load_config(PARAMS / "synthetic_base.yaml", [f"train.output_dir={tmp_path}"])
    identity = run_identity(cfg, ["a", "b"], 64, "dense", 3)
    start(tmp_path, cfg, identity)
    saved = (tmp_path / "config.yaml").read_text()
    assert record_changes(tmp_path, cfg, 10, 1) == {}
    cfg.optim.epochs, cfg.train.resume = 6, "auto"  # resume itself is not a change of the run
    assert record_changes(tmp_path, cfg, 12, 2) == {"optim.epochs": [4, 6]}
    cfg.optim.epochs, cfg.train.keep_last = 8, 3
    assert record_changes(tmp_path, cfg, 30, 5) == {"optim.epochs": [6, 8], "train.keep_last": [1, 3]}
    lines = [json.loads(line) for line in (tmp_path / "changes.jsonl").read_text().splitlines()]
    assert [(r["step"], r["epoch"]) for r in lines] == [(12, 2), (30, 5)]
    assert (tmp_path / "config.yaml").read_text() == saved
    check_resume(tmp_path, identity)  # the same model and data
    cfg.model.atm = dataclasses.replace(cfg.model.atm, ops=("mul",))
    with pytest.raises(RunDirError, match=r'with another model or data: classes \["a", "b"\] -> \["a", "b", "c"\]; '
                                          r'input_size 64 -> 96; model.atm.ops \[\] -> \["mul"\] \(its settings'):
        check_resume(tmp_path, run_identity(cfg, ["a", "b", "c"], 96, "dense", 3))
