"""What a user sees when things go wrong: unreadable videos (counted, never substituted, saved
before the run ends), a mistyped data root, resuming from the wrong folder, a full disk."""
from __future__ import annotations

import csv
import errno
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from test_engine_train import PARAMS, final_weights, strip_timing, tiny_overrides

from atm_core import evaluate as evaluate_cli
from atm_core import train as train_cli
from atm_core.data import generate_benchmark
from atm_core.data.errors import DataError
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
            *tiny_overrides(broken_bench, out, "train.save_every_minutes=0", "optim.epochs=1",
                            "data.preflight=false")]  # the loader meets it mid-epoch
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


def evaluate_weights_of(num_classes: int, root: Path, tmp_path: Path, *extra: str) -> int:
    """``python -m atm_core.evaluate`` of fresh weights for ``num_classes`` classes: its exit code."""
    overrides = [*tiny_overrides(root, tmp_path / "o"), *extra]
    cfg = load_config(PARAMS / "synthetic_base.yaml", overrides)
    save_weights(tmp_path / "weights", build_model(cfg, num_classes, 64), None, {})
    with pytest.raises(SystemExit) as stopped:
        evaluate_cli.main(["--config", str(PARAMS / "synthetic_base.yaml"), "--checkpoint",
                           str(tmp_path / "weights"), *overrides])
    return stopped.value.code


def test_evaluate_cli_reports_a_data_error_of_a_worker_in_one_line(broken_bench, tmp_path, capsys):
    bad = corrupt(broken_bench, "val.txt", 6)
    assert evaluate_weights_of(12, broken_bench, tmp_path, "data.num_workers=1") == 2
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


# ---------------------------------------------------------------- a full disk at every file of a checkpoint

def _full_disk_error(writer: str) -> BaseException:
    """What each writer of a checkpoint raises when the disk fills up while it writes."""
    if writer == "safetensors":
        from safetensors import SafetensorError

        return SafetensorError('Error while serializing: IoError(Os { code: 28, kind: StorageFull, '
                               'message: "No space left on device" })')
    if writer == "torch":
        return RuntimeError("[enforce fail at inline_container.cc:603] . unexpected pos 64 vs 0")
    return OSError(errno.ENOSPC, "No space left on device")


@pytest.fixture
def saver(tmp_path):
    """``save()`` writes a real step checkpoint (model, optimizer, RNG states, train state, EMA,
    meta) through the trainer's own function."""
    from accelerate import Accelerator
    from timm.utils import ModelEmaV3

    from atm_core.engine.runtime import release_accelerator
    from atm_core.engine.checkpoint import TrainState, save_checkpoint

    accelerator = Accelerator(cpu=True)
    model = torch.nn.Linear(4, 3)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model, optimizer = accelerator.prepare(model, optimizer)
    model(torch.randn(2, 4)).sum().backward()
    optimizer.step()
    state = TrainState()
    accelerator.register_for_checkpointing(state)
    ema = ModelEmaV3(model)

    def save(batches: int) -> Path:
        state.batches_total = batches
        return save_checkpoint(accelerator, tmp_path / "checkpoints", state, ema, keep_last=2)

    yield save
    release_accelerator()


def _fail_at(monkeypatch, name: str, writer_of: dict[str, str]) -> None:
    """Make the writer of file ``name`` fail as on a full disk, after writing part of it."""
    from accelerate.utils import other as accelerate_other

    def failing(original, writer: str, path_of):
        def write(*args, **kwargs):
            path = Path(path_of(*args, **kwargs))
            if path.name != name:
                return original(*args, **kwargs)
            path.write_bytes(b"partial")
            if writer == "torch":  # torch's message does not say why: the free space does
                monkeypatch.setattr(checkpoint.shutil, "disk_usage",
                                    lambda _: shutil._ntuple_diskusage(10, 10, 0))
            raise _full_disk_error(writer)
        return write

    monkeypatch.setattr(torch, "save", failing(torch.save, "torch", lambda obj, f, *a, **k: f))
    monkeypatch.setattr(accelerate_other, "safe_save_file",
                        failing(accelerate_other.safe_save_file, "safetensors", lambda t, f, *a, **k: f))
    monkeypatch.setattr(checkpoint, "save_file",
                        failing(checkpoint.save_file, "safetensors", lambda t, f, *a, **k: f))
    original_meta = checkpoint.write_meta

    def write_meta(directory: Path, meta: dict) -> None:
        if name == "meta.json":
            (directory / name).write_bytes(b"{")
            raise _full_disk_error("python")
        original_meta(directory, meta)

    monkeypatch.setattr(checkpoint, "write_meta", write_meta)
    assert name in writer_of


def test_a_full_disk_at_any_file_of_a_step_checkpoint_is_one_error_and_leaves_no_partial_checkpoint(
        saver, monkeypatch, tmp_path):
    first = saver(1)
    written = sorted(p.name for p in first.iterdir())
    writer_of = {"model.safetensors": "safetensors", "ema.safetensors": "safetensors", "meta.json": "python",
                 "optimizer.bin": "torch", "random_states_0.pkl": "torch", "custom_checkpoint_0.pkl": "torch"}
    assert written == sorted(writer_of)  # every file a checkpoint writes is tried below
    reference = {name: (first / name).read_bytes() for name in written}
    for name in written:
        with monkeypatch.context() as patch:
            _fail_at(patch, name, writer_of)
            second = tmp_path / "checkpoints" / "step_00000002"
            with pytest.raises(DiskFullError) as failed:
                saver(2)
        assert str(failed.value) == (f"cannot write checkpoint {second}: the disk is full (removed the "
                                     "partial .tmp-step_00000002; the checkpoints written before are kept)"), name
        assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step_00000001"], name
        assert {n: (first / n).read_bytes() for n in written} == reference
    assert saver(2).name == "step_00000002"  # space again: saving works


@pytest.mark.slow
def test_a_full_disk_while_safetensors_writes_ends_training_in_one_line(bench, tmp_path, monkeypatch, capsys):
    from accelerate.utils import other as accelerate_other

    original = accelerate_other.safe_save_file

    def full(tensors, filename, *args, **kwargs):
        if "step_00000002" in str(filename):
            raise _full_disk_error("safetensors")
        return original(tensors, filename, *args, **kwargs)

    monkeypatch.setattr(accelerate_other, "safe_save_file", full)
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as stopped:
        train_cli.main(["--config", str(PARAMS / "synthetic_base.yaml"),
                        *tiny_overrides(bench, out, "train.save_every_steps=1", "optim.epochs=1")])
    assert stopped.value.code == 2
    assert capsys.readouterr().err.strip() == (
        f"error: cannot write checkpoint {out / 'checkpoints' / 'step_00000002'}: the disk is full (removed "
        "the partial .tmp-step_00000002; the checkpoints written before are kept)")
    assert [p.name for p in (out / "checkpoints").iterdir()] == ["step_00000001"]


# ---------------------------------------------------------------- Ctrl-C and SIGTERM

@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_during_a_save_stops_after_it_naming_the_checkpoint_and_the_resume_is_exact(
        bench, tmp_path, monkeypatch, capsys, signum):
    extra = ["train.save_every_steps=1", "train.ema=true", "train.ema_decay=0.9"]
    reference = train(load_config(PARAMS / "synthetic_base.yaml", tiny_overrides(bench, tmp_path / "a", *extra)))
    out = tmp_path / "b"
    args = ["--config", str(PARAMS / "synthetic_base.yaml"), *tiny_overrides(bench, out, *extra)]
    original = checkpoint.write_meta
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}  # ignored under nohup

    def signalled_meta(directory: Path, meta: dict) -> None:
        if meta.get("batches_total") == 4:  # the step save after the first batch of epoch 2 (best/ has none)
            os.kill(os.getpid(), signum)  # the handler notes it; the save goes on
        original(directory, meta)

    monkeypatch.setattr(checkpoint, "write_meta", signalled_meta)
    with pytest.raises(SystemExit) as stopped:
        train_cli.main(args)
    assert stopped.value.code == 128 + signum
    step = out / "checkpoints" / "step_00000004"
    assert capsys.readouterr().err.strip() == (
        f"stopped by {signal.Signals(signum).name} at epoch 2, batch 1: the training so far is saved in "
        f"{step}; continue with --resume auto")
    assert not list((out / "checkpoints").glob(".tmp-*")) and step_dirs(out / "checkpoints")[-1] == step
    assert {s: signal.getsignal(s) for s in handlers} == handlers  # the handlers are given back
    monkeypatch.undo()
    resumed = train_cli.main([*args, "--resume", "auto"])
    assert strip_timing(read_metrics(out)) == strip_timing(read_metrics(tmp_path / "a"))
    assert resumed["best_top1"] == reference["best_top1"]
    assert all(torch.equal(v, final_weights(tmp_path / "a")[k]) for k, v in final_weights(out).items())


# ---------------------------------------------------------------- list files, short clips, checkpoints

def test_a_list_that_is_not_utf8_is_named_with_file_line_and_byte(bench, tmp_path, capsys):
    root = Path(shutil.copytree(bench, tmp_path / "bench"))
    lines = (root / "train.txt").read_bytes().splitlines(keepends=True)
    lines[2] = lines[2].replace(b" ", b"\xe9 ", 1)
    (root / "train.txt").write_bytes(b"".join(lines))
    column = lines[2].index(b"\xe9") + 1
    with pytest.raises(DataError, match=rf"^{root / 'train.txt'}:3: not UTF-8 text \(byte 0xe9 at column "
                                        rf"{column}\); save the file as UTF-8$"):
        read_list(root / "train.txt")
    with pytest.raises(SystemExit) as stopped:
        train_cli.main(["--config", str(PARAMS / "synthetic_base.yaml"), *tiny_overrides(root, tmp_path / "o")])
    err = capsys.readouterr().err.strip()
    assert stopped.value.code == 2 and len(err.splitlines()) == 1
    assert err.endswith(f"{root / 'train.txt'}:3: not UTF-8 text (byte 0xe9 at column {column}); save the file "
                        "as UTF-8")


@pytest.fixture(scope="module")
def short_bench(bench, tmp_path_factory) -> tuple[Path, str, str]:
    """The tiny benchmark with one training and one validation video of 4 frames (of 8), listed
    with their true frame counts."""
    root = Path(shutil.copytree(bench, tmp_path_factory.mktemp("short") / "bench"))
    four = tmp_path_factory.mktemp("four")
    generate_benchmark(four, seed=0, train_per_class=2, val_per_class=1, size=72, num_frames=4)
    train_short = read_list(root / "train.txt")[0][5].path
    val_short = read_list(root / "val.txt")[0][2].path
    for path, list_name in ((train_short, "train.txt"), (val_short, "val.txt")):
        shutil.copy(four / path, root / path)
        text = (root / list_name).read_text()
        (root / list_name).write_text(text.replace(f"{path} 8 ", f"{path} 4 "))  # the list is right
    return root, train_short, val_short


@pytest.mark.slow
def test_a_short_clip_is_padded_only_when_the_recipe_says_and_every_padded_clip_is_counted(
        short_bench, tmp_path, capsys):
    root, train_short, val_short = short_bench
    args = ["--config", str(PARAMS / "synthetic_base.yaml")]
    with pytest.raises(SystemExit) as stopped:  # the preflight finds both before any step
        train_cli.main([*args, *tiny_overrides(root, tmp_path / "a")])
    err = capsys.readouterr().err
    assert stopped.value.code == 2
    assert f"{root / 'train.txt'}:6: {root / train_short}: 4 frame(s), fewer than the 8 of a clip" in err
    assert f"{root / 'val.txt'}:3: {root / val_short}: 4 frame(s), fewer than the 8 of a clip" in err
    with pytest.raises(SystemExit) as stopped:  # without the preflight, the loader refuses it
        train_cli.main([*args, *tiny_overrides(root, tmp_path / "b", "data.preflight=false")])
    assert capsys.readouterr().err.strip().splitlines()[0] == (
        f"data error: {root / 'train.txt'}:6: {root / train_short}: 4 frame(s), fewer than the 8 of a clip "
        "(data.short_clips=pad repeats frames)")

    out = tmp_path / "c"
    result = train_cli.main([*args, *tiny_overrides(root, out, "data.short_clips=pad", "eval.after_train=true")])
    shown = capsys.readouterr().out
    assert result["padded"] == {"train": 1, "val": 1}
    assert [(r["train_padded"], r["val_padded"]) for r in read_metrics(out)] == [(1, 1), (1, 1)]
    assert "padded train 1 val 1" in shown.splitlines()[-4]  # the last epoch line
    assert "short videos padded with repeated frames: train 1 of 24, val 1 of 12" in shown
    summary = json.loads((out / "eval" / "summary.json").read_text())
    assert (summary["num_padded"], summary["num_videos"]) == (1, 12)


def test_a_checkpoint_of_another_class_count_is_one_line(bench, tmp_path, capsys):
    assert evaluate_weights_of(5, bench, tmp_path) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith(
        f"configuration error: checkpoint {tmp_path / 'weights'} does not fit the model of this configuration "
        f"(atm_vit_tiny_patch8_64, 12 classes): {tmp_path / 'weights' / 'model.safetensors'}: 2 tensor(s) do "
        "not fit the model: ")


# ---------------------------------------------------------------- the preflight on its own

def test_the_preflight_module_answers_help_and_refuses_what_it_cannot_check(bench, tmp_path, capsys):
    from atm_core.data.preflight import main as preflight_main

    with pytest.raises(SystemExit) as stopped:
        preflight_main(["--help"])
    assert stopped.value.code == 0 and "--dataset" in capsys.readouterr().out
    with pytest.raises(SystemExit) as stopped:
        preflight_main([])
    assert stopped.value.code == 2 and "the following arguments are required: --dataset, --root" in capsys.readouterr().err
    assert preflight_main(["--dataset", "synthetic", "--root", str(bench), "--lists", "."]) == 2
    assert capsys.readouterr().err.strip() == f"error: {bench}: a folder, not a list file"
    assert preflight_main(["--dataset", "synthetic", "--root", str(tmp_path / "none")]) == 2
    assert capsys.readouterr().err.strip() == f"error: {tmp_path / 'none'}: dataset folder not found"
    root = Path(shutil.copytree(bench, tmp_path / "bench"))
    assert preflight_main(["--dataset", "synthetic", "--root", str(root), "--workers", "1"]) == 0
    assert capsys.readouterr().out.strip().endswith("preflight: all 36 videos of train.txt, val.txt are fine")
    bad = corrupt(root, "val.txt", 4)
    assert preflight_main(["--dataset", "synthetic", "--root", str(root), "--workers", "1"]) == 1
    assert f"{root / 'val.txt'}:5: {root / bad}: " in capsys.readouterr().err


@pytest.mark.slow
def test_the_decoders_print_nothing_of_their_own_before_the_data_error(broken_bench, tmp_path):
    bad = corrupt(broken_bench, "val.txt", 2)
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run(
        [sys.executable, "-m", "atm_core.train", "--config", str(PARAMS / "synthetic_base.yaml"),
         *tiny_overrides(broken_bench, tmp_path / "o", "data.preflight=false", "optim.epochs=1")],
        cwd=root, env={**os.environ, "PYTHONPATH": str(root)}, capture_output=True, text=True, check=False)
    assert done.returncode == 2
    assert done.stderr.strip() == (f"data error: {broken_bench / 'val.txt'}:3: {broken_bench / bad}: corrupt or "
                                   f"unsupported video, cannot open it ([Errno 1094995529] Invalid data found "
                                   f"when processing input: '{broken_bench / bad}')")
