"""Training from a notebook on several devices: the same :func:`~atm_core.engine.train` run in
``num_processes`` processes through Accelerate's notebook launcher (one per GPU; on a machine
without GPUs, CPU processes joined in a gloo group). Scripts and multi-node runs use
``accelerate launch -m atm_core.train`` instead."""
from __future__ import annotations

import copy
import json
import os
import socket
from pathlib import Path

import torch

from .config import Config, ConfigError, apply_overrides, as_config
from .runtime import resolve_precision
from .tracking import read_metrics


def _free_port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return str(s.getsockname()[1])


def _train_in_process(cfg_dict: dict) -> None:
    from accelerate import PartialState

    from .trainer import train

    # a forked worker inherits the parent's single-process state from any earlier run in the
    # notebook; it must join the launched group instead
    PartialState._reset_state()
    train(cfg_dict)


def read_result(cfg: Config) -> dict:
    """The result dict of :func:`~atm_core.engine.train`, read back from the finished run folder
    of ``cfg`` (the launched processes cannot return it)."""
    out = Path(cfg.train.output_dir)
    records = read_metrics(out)
    if not records:
        raise RuntimeError(f"{out / 'metrics.jsonl'}: the launched training wrote no epoch record")
    key = "val_ema_top1" if cfg.train.ema and cfg.eval.use_ema else "val_top1"
    scored = [r for r in records if key in r]
    best = max(scored, key=lambda r: r[key], default=None)  # the first of equals, as the trainer keeps
    summary = out / "eval" / "summary.json"
    last = records[-1]
    counts = {kind: {split: last[f"{split}_{kind}"] for split in ("train", "val") if f"{split}_{kind}" in last}
              for kind in ("skipped", "padded")}
    return {"output_dir": str(out), "best_top1": best[key] if best else -1.0,
            "best_epoch": best["epoch"] if best else -1, "last": last, **counts,
            "eval": json.loads(summary.read_text()) if summary.is_file() else None}


def launch_training(cfg: Config | str | Path | dict, num_processes: int = 1,
                    mixed_precision: str | None = None) -> dict:
    """Train ``cfg`` on ``num_processes`` devices and return the engine's result dict.

    ``train.batch_size`` is per process, as with ``accelerate launch``: the global batch is
    ``num_processes`` times it. ``mixed_precision``
    (``auto``, ``no``, ``bf16``, ``fp16``) overrides ``train.mixed_precision``. One process trains in this
    process; more fork workers, so CUDA must not be initialised here before the call."""
    from .trainer import train

    cfg = as_config(cfg)
    if mixed_precision is not None:
        cfg = apply_overrides(copy.deepcopy(cfg), [f"train.mixed_precision={mixed_precision}"])
    resolve_precision(cfg)  # the launched processes all run what this machine chose
    if num_processes < 1:
        raise ConfigError(f"num_processes={num_processes}: need at least one process")
    if num_processes == 1:
        return train(cfg)
    gpus = torch.cuda.device_count()
    if gpus and num_processes > gpus:
        raise ConfigError(f"num_processes={num_processes} but this machine has {gpus} GPU(s)")
    from accelerate import notebook_launcher

    previous = os.environ.get("CUDA_VISIBLE_DEVICES")
    if not gpus:
        # Accelerate joins CPU processes into a gloo group only when it sees no GPU at all
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
    try:
        notebook_launcher(_train_in_process, args=(cfg.to_dict(),), num_processes=num_processes,
                          mixed_precision=cfg.train.mixed_precision, use_port=_free_port())
    finally:
        if previous is None:
            os.environ.pop("CUDA_VISIBLE_DEVICES", None)
        else:
            os.environ["CUDA_VISIBLE_DEVICES"] = previous
    return read_result(cfg)
