"""What a user sees when things go wrong: unreadable videos (counted, never substituted, saved
before the run ends), a mistyped data root, resuming from the wrong folder, a full disk."""
from __future__ import annotations

import csv
import json
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
from test_engine_train import PARAMS, tiny_overrides

from atm_core import evaluate as evaluate_cli
from atm_core import train as train_cli
from atm_core.data import generate_benchmark
from atm_core.data.lists import read_list
from atm_core.data.synthetic import DEFAULT_ROOT, ensure_benchmark
from atm_core.engine import ConfigError, checkpoint, load_config, read_metrics, train
from atm_core.engine.builders import build_model
from atm_core.engine.checkpoint import (
    DiskFullError,
    resolve_resume,
    save_weights,
    step_dirs,
    write_atomically,
)
from atm_core.engine.sampling import EpochSampler

TINY_BENCH = {"train_per_class": 1, "val_per_class": 1, "size": 32, "num_frames": 8}


@pytest.fixture(scope="module")
def bench(tmp_path_factory) -> Path:
    """The tiny benchmark of test_engine_train: 24 train / 12 val videos."""
    root = tmp_path_factory.mktemp("bench")
    generate_benchmark(root, seed=0, train_per_class=2, val_per_class=1, size=72, num_frames=8)
    return root


@pytest.fixture
def broken_bench(bench, tmp_path) -> Path:
    """A copy of the tiny benchmark to break."""
    return Path(shutil.copytree(bench, tmp_path / "bench"))


def corrupt(root: Path, list_name: str, position: int) -> str:
    """Overwrite the video of line ``position`` (0-based) of a list with garbage; its path."""
    records, _ = read_list(root / list_name)
    (root / records[position].path).write_bytes(b"\x00not a video" * 300)
    return records[position].path


def training_position(num_videos: int, seed: int, epoch: int, position: int) -> int:
    """The video the training sampler serves at ``position`` of ``epoch``."""
    sampler = EpochSampler(num_videos, seed)
    sampler.epoch = epoch
    return list(sampler)[position][0]


@pytest.mark.slow
def test_skipped_videos_are_counted_per_split_and_evaluation_never_substitutes(broken_bench, tmp_path):
    train_bad = corrupt(broken_bench, "train.txt", training_position(24, 0, 0, 20))
    val_bad = corrupt(broken_bench, "val.txt", 6)
    out = tmp_path / "run"
    result = train(load_config(PARAMS / "synthetic_base.yaml", tiny_overrides(
        broken_bench, out, "data.on_error=skip", "eval.after_train=true", "optim.epochs=1",
        "train.save_every_minutes=1e-9", "train.keep_last=10")))
    assert result["skipped"] == {"train": 1, "val": 1}
    record = read_metrics(out)[-1]
    assert (record["train_skipped"], record["val_skipped"], record["val_num_videos"]) == (1, 1, 11)
    summary = json.loads((out / "eval" / "summary.json").read_text())
    assert (summary["num_videos"], summary["num_listed"], summary["num_skipped"]) == (11, 12, 1)
    assert summary["skipped"] == [f"{broken_bench / 'val.txt'}:7 {val_bad}"]
    with (out / "eval" / "predictions.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert sorted(int(r["index"]) for r in rows) == [i for i in range(12) if i != 6]  # each once
    assert val_bad not in {r["path"] for r in rows} and train_bad
    # the time-based checkpoints: one after each of the 3 batches (the last is the epoch end's)
    assert [p.name for p in step_dirs(out / "checkpoints")] == [f"step_{i:08d}" for i in (1, 2, 3)]


@pytest.mark.slow
def test_a_bad_training_video_mid_epoch_ends_the_run_with_one_line_and_a_checkpoint(
        bench, broken_bench, tmp_path, capsys):
    # batch 3 of 3: the loader reads one batch ahead, so the error comes after batch 1 trained
    bad = corrupt(broken_bench, "train.txt", training_position(24, 0, 0, 16))
    out = tmp_path / "run"
    args = ["--config", str(PARAMS / "synthetic_base.yaml"),
            *tiny_overrides(broken_bench, out, "train.save_every_minutes=0", "optim.epochs=1")]
    with pytest.raises(SystemExit) as stopped:
        train_cli.main(args)
    assert stopped.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "Traceback" not in "\n".join(err)
    assert err[-2].startswith("data error: ") and bad in err[-2] and "train.txt:" in err[-2]
    assert err[-1] == (f"the training so far (epoch 1, batch 1) is saved in "
                       f"{out / 'checkpoints' / 'step_00000001'}: fix or remove that video (or set "
                       "data.on_error=skip) and continue with --resume auto")
    shutil.copy(bench / bad, broken_bench / bad)  # the video fixed
    result = train_cli.main([*args, "--resume", "auto"])
    assert f"resumed from {out / 'checkpoints' / 'step_00000001'}: epoch 1, batch 1" in capsys.readouterr().out
    assert result["last"]["epoch"] == 0 and (out / "checkpoints" / "step_00000003").is_dir()


def test_a_mistyped_root_is_a_config_error_and_generates_nothing(tmp_path, monkeypatch):
    typo = tmp_path / "data" / "synthetc"
    cfg = load_config(PARAMS / "synthetic_base.yaml", [f"data.root={typo}", f"train.output_dir={tmp_path / 'o'}",
                                                       f"data.generate={json.dumps(TINY_BENCH)}"])
    with pytest.raises(ConfigError, match=r"key 'data.root': directory .*synthetc does not exist; the "
                                          r"built-in benchmark's shapes track is generated on demand only at its "
                                          r"default root data/synthetic \(set data.create_root=true"):
        train(cfg)
    assert not typo.exists() and not (tmp_path / "o").exists()
    assert ensure_benchmark(typo, TINY_BENCH, create=True)  # asked for explicitly
    assert (typo / "train.txt").is_file() and not ensure_benchmark(typo, TINY_BENCH)
    monkeypatch.chdir(tmp_path)
    assert ensure_benchmark(DEFAULT_ROOT, TINY_BENCH)  # its default root
    with pytest.raises(ValueError, match="was generated with other settings: seed"):
        ensure_benchmark(DEFAULT_ROOT, {**TINY_BENCH, "seed": 1})


def _fake_run(root: Path) -> dict[str, Path]:
    ckpt = root / "checkpoints"
    paths = {"step1": ckpt / "step_00000003", "step2": ckpt / "step_00000006", "best": ckpt / "best"}
    for name in ("step1", "step2"):
        paths[name].mkdir(parents=True)
        (paths[name] / "meta.json").write_text("{}")
        (paths[name] / "optimizer.bin").write_bytes(b"")
    paths["best"].mkdir()
    (paths["best"] / "model.safetensors").write_bytes(b"")
    (root / "elsewhere").mkdir()
    return paths


def test_resume_takes_a_step_checkpoint_or_a_run_dir_and_explains_anything_else(tmp_path):
    paths = _fake_run(tmp_path)
    assert resolve_resume(str(paths["step1"]), "unused") == paths["step1"]
    assert resolve_resume(str(tmp_path), "unused") == paths["step2"]
    assert resolve_resume("auto", tmp_path) == paths["step2"]
    assert resolve_resume("auto", tmp_path / "elsewhere") is None
    with pytest.raises(ValueError, match=r"best holds model weights only \(as best/ does\), no optimizer "
                                         r"or schedule state to resume from: evaluate it .*--checkpoint "
                                         r".*best\) or start a new run from it with "
                                         r"model.pretrained_file=.*best/model.safetensors"):
        resolve_resume(str(paths["best"]), "unused")
    with pytest.raises(ValueError, match=r"elsewhere is neither a step checkpoint \(checkpoints/step_<n>/ "
                                         r"with meta.json\) nor a run directory with one"):
        resolve_resume(str(tmp_path / "elsewhere"), "unused")


def test_cli_refuses_to_resume_from_best(bench, tmp_path, capsys):
    paths = _fake_run(tmp_path)
    with pytest.raises(SystemExit) as stopped:
        train_cli.main(["--config", str(PARAMS / "synthetic_base.yaml"),
                        *tiny_overrides(bench, tmp_path / "o"), "--resume", str(paths["best"])])
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("configuration error: key 'train.resume': ") and "weights only" in err
    assert "Traceback" not in err and not (tmp_path / "o" / "checkpoints").exists()


def test_evaluate_cli_reports_a_data_error_of_a_worker_in_one_line(broken_bench, tmp_path, capsys):
    bad = corrupt(broken_bench, "val.txt", 6)
    overrides = [*tiny_overrides(broken_bench, tmp_path / "o"), "data.num_workers=1"]
    cfg = load_config(PARAMS / "synthetic_base.yaml", overrides)
    save_weights(tmp_path / "weights", build_model(cfg, 12, 64), None, {})
    with pytest.raises(SystemExit) as stopped:
        evaluate_cli.main(["--config", str(PARAMS / "synthetic_base.yaml"), "--checkpoint",
                           str(tmp_path / "weights"), *overrides])
    assert stopped.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and "DataLoader worker" not in err
    assert err.splitlines()[-1].startswith(f"data error: {broken_bench / 'val.txt'}:7: {broken_bench / bad}: "
                                           "corrupt or unsupported video, cannot open it (")


def _write_then_fail(tmp: Path) -> None:
    (tmp / "optimizer.bin").write_bytes(b"x" * 1000)
    raise RuntimeError("[enforce fail at inline_container.cc:603] . unexpected pos 64 vs 0; "
                       "basic_ios::clear: iostream error")


def test_a_full_disk_is_named_and_the_previous_checkpoint_stays(tmp_path, monkeypatch):
    final = tmp_path / "checkpoints" / "best"
    write_atomically(final, lambda tmp: (tmp / "model.safetensors").write_text("previous"))
    monkeypatch.setattr(checkpoint.shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10, 10, 0))
    with pytest.raises(DiskFullError, match=rf"cannot write checkpoint {final}: the disk is full "
                                            rf"\(removed the partial .tmp-best; {final} is kept as it was\)"):
        write_atomically(final, _write_then_fail)
    assert sorted(p.name for p in final.parent.iterdir()) == ["best"]
    assert (final / "model.safetensors").read_text() == "previous"
    monkeypatch.undo()
    with pytest.raises(RuntimeError, match="unexpected pos"):  # not full: the error as it was
        write_atomically(final, _write_then_fail)


@pytest.fixture
def small_disk(tmp_path):
    mount = tmp_path / "disk"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)],
                      capture_output=True, check=False).returncode:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    yield mount
    subprocess.run(["umount", str(mount)], check=True)


def test_a_full_tmpfs(small_disk):
    final = small_disk / "checkpoints" / "step_00000001"
    write_atomically(final, lambda tmp: torch.save(torch.zeros(256, 1024), tmp / "optimizer.bin"))
    second = final.with_name("step_00000002")
    with pytest.raises(DiskFullError, match=rf"cannot write checkpoint {second}: the disk is full \(removed "
                                            r"the partial .tmp-step_00000002; the checkpoints written "
                                            r"before are kept\)"):
        write_atomically(second, lambda tmp: torch.save(torch.zeros(1024, 1024), tmp / "optimizer.bin"))
    assert sorted(p.name for p in final.parent.iterdir()) == ["step_00000001"]
    assert torch.load(final / "optimizer.bin").shape == (256, 1024)
    assert shutil.disk_usage(small_disk).free > 2 << 20  # the partial file is gone
