"""The process a run uses: the allocator setting of CPU runs, and the Accelerator, created from and
released for a config."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import torch
from accelerate import Accelerator, DataLoaderConfiguration
from accelerate.utils import ProjectConfiguration
from accelerate.state import AcceleratorState, GradientState

from .config import Config, ConfigError


# glibc gives every block above its mmap threshold (at most 32 MB unless set) back to the OS when
# it is freed, and trims free memory above 128 KB off the top of the heap once the threshold is
# fixed, so a CPU training step page-faults its large activations in afresh: a large share of an
# ATM(mul) step on the tiny model. Higher thresholds keep them in the heap for reuse (the step
# times with and without: docs/log-2026-12-07.md).
TUNED_MALLOC = {"MALLOC_MMAP_THRESHOLD_": str(4 << 30), "MALLOC_TRIM_THRESHOLD_": str(4 << 30)}


def tuned_malloc_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """``env`` (default ``os.environ``) with :data:`TUNED_MALLOC` added where it is not set."""
    return {**TUNED_MALLOC, **(os.environ if env is None else env)}


def relaunch_with_tuned_malloc(cpu_only: bool = True) -> None:
    """Re-execute this command line with :data:`TUNED_MALLOC` in its environment, once, on Linux
    (glibc reads it at start-up only), on machines without a GPU unless ``cpu_only=False``. A
    no-op where it is set or irrelevant."""
    if (sys.platform != "linux" or (cpu_only and torch.cuda.is_available())
            or all(key in os.environ for key in TUNED_MALLOC)):
        return
    os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], tuned_malloc_env())


def native_bf16() -> bool:
    """Whether this machine's training device computes bf16 products in hardware: a CUDA GPU
    with bf16 support, or a CPU with AVX512-BF16 or AMX tiles (elsewhere PyTorch emulates bf16 on
    the CPU, slower than fp32)."""
    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    return any(getattr(torch.cpu, probe, lambda: False)()
               for probe in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"))


def resolve_precision(cfg: Config) -> Config:
    """``cfg`` with ``train.mixed_precision=auto`` replaced by what this machine runs: ``bf16``
    where :func:`native_bf16`, else ``no``. Written into ``cfg`` itself, so that the run's
    ``config.yaml`` records the precision it trained in."""
    if cfg.train.mixed_precision == "auto":
        cfg.train.mixed_precision = "bf16" if native_bf16() else "no"
    return cfg


def inference_autocast(cfg: Config, device: torch.device | str) -> torch.autocast:
    """Autocast for a forward outside the Accelerator (knockouts, predictions) in ``cfg``'s
    ``train.mixed_precision`` as :func:`make_accelerator` would run it: the precision a run
    recorded, so that such forwards score as its evaluation did."""
    precision = resolve_precision(cfg).train.mixed_precision
    dtype = torch.float16 if precision == "fp16" else torch.bfloat16
    return torch.autocast(torch.device(device).type, dtype, enabled=precision != "no")


def make_accelerator(cfg: Config, trackers: bool = False) -> Accelerator:
    """Mixed precision and gradient accumulation from the config. Batches are split across
    processes (``split_batches``): the loaders hold the global batch, so a run on N processes
    sees exactly the batches of a single-process run at N times the per-device batch.

    Without a GPU the Accelerator is told so (``cpu=True``): only then does Accelerate join the
    processes started by ``accelerate launch`` into a gloo (multi-CPU) group. With ``trackers``, it
    runs the experiment trackers ``train.log_with`` names, TensorBoard's under
    ``<train.output_dir>/tensorboard``. ``train.mixed_precision=auto`` is decided here
    (:func:`resolve_precision`) and the choice printed."""
    asked = cfg.train.mixed_precision
    resolve_precision(cfg)
    if cfg.train.mixed_precision == "fp16" and not torch.cuda.is_available():
        raise ConfigError("train.mixed_precision=fp16 needs a GPU; use bf16 or no on the CPU")
    if cfg.train.threads > 0:
        torch.set_num_threads(cfg.train.threads)
    out = Path(cfg.train.output_dir)
    accelerator = Accelerator(cpu=not torch.cuda.is_available(), mixed_precision=cfg.train.mixed_precision,
                              gradient_accumulation_steps=cfg.train.grad_accum,
                              dataloader_config=DataLoaderConfiguration(split_batches=True),
                              log_with=list(cfg.train.log_with) if trackers and cfg.train.log_with else None,
                              project_config=ProjectConfiguration(project_dir=str(out),
                                                                  logging_dir=str(out / "tensorboard")))
    if asked == "auto":
        device = "GPU" if torch.cuda.is_available() else "CPU"
        native = "native" if cfg.train.mixed_precision == "bf16" else "no native"
        accelerator.print(f"train.mixed_precision=auto: {cfg.train.mixed_precision} on this {device} "
                          f"({native} bf16)")
    return accelerator


def release_accelerator() -> None:
    """Forget the Accelerator's process-wide settings (not the process group), so that the
    next run in this Python process may use another precision or accumulation."""
    AcceleratorState._reset_state()
    GradientState._reset_state()
