"""Checkpoints on disk: atomic ``save_state`` directories, ``best/`` weights, pruning, lookup.

Layout under ``<output_dir>/checkpoints/``:
    step_00000120/   ``accelerator.save_state`` (model, optimizer, scheduler, scaler, RNG
                     states, registered objects) + meta.json; the number counts training
                     batches consumed since the start of the run
    best/            model.safetensors (+ ema.safetensors) + meta.json of the best val top-1
A directory is written under a ``.tmp-`` name and renamed when complete, so a run
killed while saving never leaves a half-written checkpoint behind a valid name.
"""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import torch.nn as nn
from safetensors.torch import save_file

from ..models.weights import load_video_weights

STEP_DIR = re.compile(r"^step_(\d+)$")
TMP_PREFIX = ".tmp-"


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
