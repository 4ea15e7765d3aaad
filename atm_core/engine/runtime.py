"""The Accelerator a run uses, created from and released for a config."""
from __future__ import annotations

import torch
from accelerate import Accelerator, DataLoaderConfiguration
from accelerate.state import AcceleratorState, GradientState

from .config import Config, ConfigError


def make_accelerator(cfg: Config) -> Accelerator:
    """Mixed precision and gradient accumulation from the config. Batches are split across
    processes (``split_batches``): the loaders hold the global batch, so a run on N processes
    sees exactly the batches of a single-process run at N times the per-device batch.

    Without a GPU the Accelerator is told so (``cpu=True``): only then does Accelerate join the
    processes started by ``accelerate launch`` into a gloo (multi-CPU) group."""
    if cfg.train.mixed_precision == "fp16" and not torch.cuda.is_available():
        raise ConfigError("train.mixed_precision=fp16 needs a GPU; use bf16 or no on the CPU")
    if cfg.train.threads > 0:
        torch.set_num_threads(cfg.train.threads)
    return Accelerator(cpu=not torch.cuda.is_available(), mixed_precision=cfg.train.mixed_precision,
                       gradient_accumulation_steps=cfg.train.grad_accum,
                       dataloader_config=DataLoaderConfiguration(split_batches=True))


def release_accelerator() -> None:
    """Forget the Accelerator's process-wide settings (not the process group), so that the
    next run in this Python process may use another precision or accumulation."""
    AcceleratorState._reset_state()
    GradientState._reset_state()
