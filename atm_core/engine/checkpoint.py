"""Checkpoints on disk: atomic ``save_state`` directories, ``best/`` weights, pruning, lookup.

Layout under ``<output_dir>/checkpoints/``:
    step_00000120/   ``accelerator.save_state`` (model, optimizer, scheduler, scaler, RNG
                     states, registered objects) + meta.json; the number counts training
                     batches consumed since the start of the run
    best/            model.safetensors (+ ema.safetensors) + meta.json of the best val top-1:
                     weights only, for evaluation or as ``model.pretrained_file``; a run
                     resumes from a step checkpoint, never from best/
A directory is written under a ``.tmp-`` name and renamed when complete, so a run
killed while saving never leaves a half-written checkpoint behind a valid name; a save that
fails (a full disk) removes its temporary directory and leaves the previous checkpoint as it is.
"""
from __future__ import annotations

import dataclasses
import errno
import json
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

import torch.nn as nn
from accelerate import Accelerator
from safetensors.torch import save_file

from ..models.weights import load_video_weights

STEP_DIR = re.compile(r"^step_(\d+)$")
TMP_PREFIX = ".tmp-"
NEARLY_FULL = 1 << 20  # bytes left when a failed write counts as a full disk


class DiskFullError(OSError):
    """A checkpoint could not be written because its filesystem is full."""


def is_step_checkpoint(path: Path) -> bool:
    return path.is_dir() and STEP_DIR.match(path.name) is not None and (path / "meta.json").is_file()


def step_dirs(ckpt_root: Path) -> list[Path]:
    """Complete step checkpoints, oldest first."""
    if not ckpt_root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in ckpt_root.iterdir()
             if p.is_dir() and (m := STEP_DIR.match(p.name))]
    return [p for _, p in sorted(found)]


def latest_checkpoint(ckpt_root: Path) -> Path | None:
    dirs = step_dirs(ckpt_root)
    return dirs[-1] if dirs else None


def tmp_path(final: Path) -> Path:
    return final.with_name(TMP_PREFIX + final.name)


def clear(path: Path) -> None:
    if path.exists():
        shutil.rmtree(path)


def publish(tmp: Path, final: Path) -> None:
    """Replace ``final`` by the finished ``tmp`` directory (both renames are atomic)."""
    old = final.with_name(TMP_PREFIX + "old-" + final.name)
    clear(old)
    if final.exists():
        final.rename(old)
    tmp.rename(final)
    clear(old)


def _disk_is_full(error: BaseException, directory: Path) -> bool:
    while error is not None:  # torch.save reports ENOSPC as "basic_ios::clear: iostream error"
        if isinstance(error, OSError) and error.errno == errno.ENOSPC:
            return True
        if "No space left on device" in str(error):  # safetensors' SafetensorError (os error 28)
            return True
        error = error.__cause__ or error.__context__
    return shutil.disk_usage(directory).free < NEARLY_FULL


def abandon(tmp: Path, final: Path, error: BaseException) -> NoReturn:
    """Remove the partial ``tmp`` of a failed (or interrupted) write of ``final`` and raise:
    :class:`DiskFullError` naming ``final`` when the filesystem is full, else ``error``."""
    full = isinstance(error, Exception) and _disk_is_full(error, tmp.parent)
    clear(tmp)
    if not full:
        raise error
    kept = f"{final} is kept as it was" if final.exists() else "the checkpoints written before are kept"
    raise DiskFullError(f"cannot write checkpoint {final}: the disk is full (removed the partial "
                        f"{tmp.name}; {kept})") from error


def write_atomically(final: Path, write: Callable[[Path], None]) -> None:
    """``write(tmp)`` into a fresh temporary directory, then :func:`publish` it as ``final``; a
    failed write leaves ``final`` as it was (see :func:`abandon`)."""
    tmp = tmp_path(final)
    clear(tmp)
    tmp.mkdir(parents=True)
    try:
        write(tmp)
    except BaseException as e:  # noqa: BLE001 -- whatever failed (safetensors has its own error type), no tmp stays
        abandon(tmp, final, e)
    publish(tmp, final)


def prune(ckpt_root: Path, keep_last: int) -> None:
    for path in step_dirs(ckpt_root)[:-keep_last]:
        shutil.rmtree(path)
    for path in ckpt_root.glob(TMP_PREFIX + "*"):  # leftovers of a run killed while saving
        shutil.rmtree(path)


def write_meta(directory: Path, meta: dict) -> None:
    (directory / "meta.json").write_text(json.dumps(meta, indent=1))


def read_meta(directory: Path) -> dict:
    path = directory / "meta.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def save_module(module: nn.Module, path: Path) -> None:
    save_file({k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}, str(path))


def save_weights(directory: Path, model: nn.Module, ema: nn.Module | None, meta: dict) -> None:
    """Model (and EMA) weights only, as safetensors, for evaluation and fine-tuning."""
    directory.mkdir(parents=True, exist_ok=True)
    save_module(model, directory / "model.safetensors")
    if ema is not None:
        save_module(ema, directory / "ema.safetensors")
    write_meta(directory, meta)


def resolve_resume(spec: str, output_dir: str | Path) -> Path | None:
    """The step checkpoint to resume from: ``"auto"`` (the latest one of ``output_dir``, None if
    there is none), a step checkpoint, or a run directory (its latest step checkpoint). Anything
    else is refused saying what was expected."""
    if spec == "auto":
        return latest_checkpoint(Path(output_dir) / "checkpoints")
    path = Path(spec)
    if is_step_checkpoint(path):
        return path
    if (path / "model.safetensors").is_file() and not (path / "optimizer.bin").exists():
        raise ValueError(f"{path} holds model weights only (as best/ does), no optimizer or "
                         "schedule state to resume from: evaluate it (python -m atm_core.evaluate "
                         f"--checkpoint {path}) or start a new run from it with "
                         f"model.pretrained_file={path / 'model.safetensors'}")
    latest = latest_checkpoint(path / "checkpoints") if path.is_dir() else None
    if latest is not None:
        return latest
    raise ValueError(f"{path} is neither a step checkpoint (checkpoints/step_<n>/ with meta.json) "
                     "nor a run directory with one (<train.output_dir> holding checkpoints/step_<n>/)")


def resolve_checkpoint(spec: str, output_dir: str | Path) -> Path:
    """``"best"``, ``"last"`` (latest step checkpoint) or a path -> an existing path."""
    root = Path(output_dir) / "checkpoints"
    if spec == "best":
        path = root / "best"
    elif spec == "last":
        path = latest_checkpoint(root)
        if path is None:
            raise FileNotFoundError(f"no step_* checkpoint in {root}")
    else:
        path = Path(spec)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    return path


def load_weights(model: nn.Module, checkpoint: str | Path, use_ema: bool = False) -> None:
    """Load every tensor of ``model`` from a checkpoint directory or file (see
    :func:`atm_core.models.weights.load_video_weights`, which this calls strictly)."""
    load_video_weights(model, checkpoint, use_ema=use_ema, strict=True)


@dataclasses.dataclass
class TrainState:
    """Progress saved with every checkpoint (registered with the Accelerator)."""

    epoch: int = 0  # the epoch in progress, or the next one to start
    batch: int = 0  # batches of that epoch already trained
    global_step: int = 0  # optimizer updates
    batches_total: int = 0  # batches trained since the start; names the checkpoints
    best_top1: float = -1.0
    best_epoch: int = -1
    loss_sum: float = 0.0  # over the batches of the epoch in progress
    loss_count: int = 0
    train_time: float = 0.0  # seconds spent training in the epoch in progress

    def state_dict(self) -> dict:
        return dataclasses.asdict(self)

    def load_state_dict(self, state: dict) -> None:
        for key, value in state.items():
            setattr(self, key, value)


def save_checkpoint(accelerator: Accelerator, ckpt_root: Path, state: TrainState, ema, keep_last: int) -> Path:
    """``save_state`` into a temporary directory, then rename it into place; a failed save
    removes the temporary directory and keeps the previous checkpoints."""
    final = ckpt_root / f"step_{state.batches_total:08d}"
    tmp = tmp_path(final)
    if accelerator.is_main_process:
        clear(tmp)
    accelerator.wait_for_everyone()
    try:
        accelerator.save_state(str(tmp))
        accelerator.wait_for_everyone()  # every process has written its RNG state into tmp
        if accelerator.is_main_process:
            if ema is not None:
                save_module(ema.module, tmp / "ema.safetensors")
            write_meta(tmp, state.state_dict())
    except BaseException as e:  # noqa: BLE001 -- whatever failed (safetensors has its own error type), no tmp stays
        abandon(tmp, final, e)
    if accelerator.is_main_process:
        publish(tmp, final)
        prune(ckpt_root, keep_last)
    accelerator.wait_for_everyone()
    return final
