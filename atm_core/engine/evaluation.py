"""Evaluation of a checkpoint: multi-view testing, metrics and the ``eval/`` artefacts."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn as nn
from accelerate import Accelerator
from torch.utils.data import DataLoader, Dataset

from ..data.dataset import VideoDataset
from ..data.errors import DataError
from . import builders
from .builders import check_sample
from .checkpoint import resolve_checkpoint
from .config import Config, ConfigError, as_config
from .inference import IndexedDataset, predict
from .metrics import classification_metrics, write_eval
from .rundir import built_for
from .runtime import make_accelerator, release_accelerator


def evaluate_model(accelerator: Accelerator, model: nn.Module, dataset: Dataset, out_dir: str | Path,
                   batch_size: int, num_workers: int = 0, class_names: Sequence[str] = (),
                   paths: Sequence[str] | None = None, extra: dict | None = None,
                   progress: bool = True) -> dict:
    """Evaluate ``model`` on ``dataset`` (items ``(clip or views, label, ...)``) over all
    processes; the main process writes ``out_dir``. Returns the summary on every process.

    ``batch_size`` is per process; the loader's global batch is split across processes and
    ``gather_for_metrics`` drops the padding of the last batch, so each video counts once.
    The summary's ``eval_time`` is the seconds the predictions took; ``num_videos`` the videos
    scored of ``num_listed`` (the list's lines), ``skipped`` the ``list:line path`` of those
    left out as unreadable (``data.on_error=skip``), ``num_padded`` the videos shorter than a clip
    sampled with repeated frames (``data.short_clips=pad``).
    """
    started = time.perf_counter()
    model = model.to(accelerator.device)
    loader = DataLoader(IndexedDataset(dataset), batch_size=batch_size * accelerator.num_processes,
                        shuffle=False, num_workers=num_workers)
    loader = accelerator.prepare_data_loader(loader)
    probs, labels, indices = predict(accelerator, model, loader, progress=progress)
    probs, labels, indices = probs.numpy(), labels.numpy(), indices.numpy()
    extra = {**(extra or {}), **left_out(dataset, indices), "eval_time": round(time.perf_counter() - started, 2)}
    if hasattr(dataset, "padded"):
        extra["num_padded"] = count_marked(accelerator, dataset.padded())
    if accelerator.is_main_process:
        summary = write_eval(Path(out_dir), probs, labels, indices, class_names, paths, extra)
    else:
        summary = {k: v for k, v in classification_metrics(probs, labels).items() if k != "confusion"}
        summary.update(extra)
    accelerator.wait_for_everyone()
    return summary


def count_marked(accelerator: Accelerator, marks: np.ndarray) -> int:
    """Videos marked (one bool per video) by any process, each counted once."""
    marked = torch.from_numpy(marks).to(accelerator.device, torch.uint8)
    if accelerator.num_processes > 1:
        marked = accelerator.gather(marked[None]).amax(0)
    return int(marked.sum())


def left_out(dataset: Dataset, scored: Sequence[int]) -> dict:
    """How many listed videos were not scored, and which (``num_listed``, ``num_skipped``,
    ``skipped``); an error if none was."""
    dropped_lines = getattr(dataset, "skipped_lines", 0)
    missing = sorted(set(range(len(dataset))) - {int(i) for i in scored})
    records = getattr(dataset, "records", None)
    if len(missing) == len(dataset):
        raise DataError(f"none of the {len(dataset)} videos could be read")
    return {"num_listed": len(dataset) + dropped_lines, "num_skipped": len(missing) + dropped_lines,
            "skipped": [f"{records[i].source} {records[i].path}" if records else str(i) for i in missing]}


def run_evaluation(accelerator: Accelerator, cfg: Config, checkpoint: str | Path | None = None) -> dict:
    """Build the test split and the model of ``cfg``, load ``checkpoint`` (default
    ``eval.checkpoint``: best / last / a path) and evaluate it."""
    spec = str(checkpoint) if checkpoint is not None else cfg.eval.checkpoint
    path = resolve_checkpoint(spec, cfg.train.output_dir)
    check_built_for(path, cfg)
    dataset = builders.dataset(cfg, "test")
    check_sample(cfg, dataset, "test")
    model = builders.load_model(cfg, path)
    out_dir = Path(cfg.eval.out_dir) if cfg.eval.out_dir else Path(cfg.train.output_dir) / "eval"
    extra = {"checkpoint": str(path), "ema": cfg.eval.use_ema, "num_frames": cfg.data.num_frames,
             "views": dataset.num_views, "num_clips": dataset.test_num_segment,
             "num_crops": dataset.num_views // dataset.test_num_segment}
    summary = evaluate_model(accelerator, model, dataset, out_dir, cfg.eval.batch_size,
                             cfg.data.num_workers, dataset.classes, [r.path for r in dataset.records],
                             extra, progress=cfg.train.progress)
    accelerator.print(f"eval {path}: top1 {summary['top1']:.2f}  top5 {summary['top5']:.2f}  "
                      f"mean class acc {summary['mean_class_acc']:.2f}  ({summary['num_videos']} of "
                      f"{summary['num_listed']} videos scored x {dataset.num_views} views) -> {out_dir}")
    for line in summary["skipped"]:
        accelerator.print(f"  left out (unreadable): {line}")
    if summary["num_padded"]:
        accelerator.print(f"  {summary['num_padded']} video(s) shorter than {cfg.data.num_frames} frames "
                          "sampled with repeated frames (data.short_clips=pad)")
    return summary


def check_built_for(checkpoint: Path, cfg: Config) -> None:
    """Refuse a clip length other than the one the checkpoint's run trained with, when its run
    directory says which."""
    identity = built_for(checkpoint)
    if identity is None:
        return
    trained = identity.get("data.num_frames")
    if trained is not None and trained != cfg.data.num_frames:
        raise ConfigError(f"checkpoint {checkpoint} was trained on {trained}-frame clips, not "
                          f"data.num_frames={cfg.data.num_frames}: evaluate it with "
                          f"data.num_frames={trained}")


def evaluate(cfg: Config | str | Path | dict, checkpoint: str | Path | None = None) -> dict:
    """Python API of ``python -m atm_core.evaluate``: the summary dict (top1, top5,
    mean_class_acc in percent, num_videos, ...), also written to ``<out>/summary.json``."""
    cfg = as_config(cfg)
    accelerator = make_accelerator(cfg)
    try:
        return run_evaluation(accelerator, cfg, checkpoint)
    finally:
        release_accelerator()


def validate(accelerator: Accelerator, model, loader, dataset: VideoDataset, progress: bool) -> dict:
    """Single-view metrics over the videos of ``dataset`` that could be read (``num_videos``)."""
    probs, labels, indices = predict(accelerator, model, loader, desc="val", progress=progress)
    left_out(dataset, indices)  # an error if no video could be read
    metrics = classification_metrics(probs.numpy(), labels.numpy())
    nll = -probs[torch.arange(len(labels)), labels].clamp_min(1e-12).log().mean()
    return {"top1": metrics["top1"], "top5": metrics["top5"],
            "mean_class_acc": metrics["mean_class_acc"], "loss": float(nll),
            "num_videos": metrics["num_videos"]}


def count_skipped(accelerator: Accelerator, dataset: VideoDataset) -> int:
    """Videos of ``dataset`` found unreadable so far by any process (each counted once), plus
    the list lines dropped while loading it."""
    return count_marked(accelerator, dataset.unreadable()) + dataset.skipped_lines
