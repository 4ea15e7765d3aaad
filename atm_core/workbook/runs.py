"""A training run's small artefacts: copied out of the run folder (with the class names of its
data, so that reports need no data folder), and read back with every file and value the tables
need checked; and its best weights, for the benchmark's committed checkpoints."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from ..data import read_labels
from ..engine.builders import input_size
from ..engine.described import add_measurement, describe, read_card
from ..engine.config import load_run_config

RUN_FILES = ("config.yaml", "metrics.jsonl", "eval/summary.json", "eval/predictions.csv",
             "eval/confusion.npy", "eval/confusion.png")


LABELS = "labels.csv"  # the class names of the run's data, beside its exported artefacts
CHECKPOINT_FILES = ("model.safetensors", "meta.json")


class MissingMetrics(RuntimeError):
    """A run directory lacks a file or a value the table needs."""


def label_file(cfg) -> Path:
    """The label CSV of a run's data (``data.root`` and the dataset preset's ``label_file``)."""
    from ..data.presets import PRESETS

    name = cfg.data.options.get("label_file", PRESETS[cfg.data.dataset].label_file) or LABELS
    return Path(cfg.data.root) / name


def export_run(run_dir: str | Path, dest: str | Path) -> Path:
    """Copy a training run's small artefacts (no checkpoints) and its data's label file to
    ``dest``."""
    run_dir, dest = Path(run_dir), Path(dest)
    missing = [name for name in RUN_FILES if not (run_dir / name).is_file()]
    if missing:
        raise MissingMetrics(f"run {run_dir} has no {', '.join(missing)}: did training or its "
                             "evaluation (eval.after_train) fail?")
    labels = label_file(load_run_config(run_dir / "config.yaml"))
    if not labels.is_file():
        raise MissingMetrics(f"run {run_dir}: its data's label file {labels} does not exist")
    if dest.exists():
        shutil.rmtree(dest)
    for name in RUN_FILES:
        (dest / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(run_dir / name, dest / name)
    shutil.copy2(labels, dest / LABELS)
    return dest


def export_checkpoint(run_dir: str | Path, dest: str | Path) -> Path:
    """Copy the weights of a run's ``checkpoints/best/`` (no optimizer state) to ``dest`` with
    its recipe and model card (see :mod:`atm_core.engine.described`; written from the run's
    config and labels for a ``best/`` that has none), the card completed with the run's test
    top-1 when it was evaluated."""
    run_dir = Path(run_dir)
    best, dest = run_dir / "checkpoints" / "best", Path(dest)
    missing = [name for name in CHECKPOINT_FILES if not (best / name).is_file()]
    if missing:
        raise MissingMetrics(f"run {run_dir}: checkpoints/best has no {', '.join(missing)}")
    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(best, dest, ignore=shutil.ignore_patterns("ema.safetensors"))
    if read_card(dest) is None:
        cfg = load_run_config(run_dir / "config.yaml")
        describe(dest, cfg, read_labels(label_file(cfg)), input_size(cfg))
    summary = run_dir / "eval" / "summary.json"
    if summary.is_file():
        test = json.loads(summary.read_text())
        add_measurement(dest, test_top1=test["top1"], test_videos=test["num_videos"],
                        test_views=test.get("views"))
    return dest


def run_classes(run_dir: str | Path) -> list[str]:
    """Class names of an exported run, from its ``labels.csv``."""
    return read_labels(Path(run_dir) / LABELS)


def read_run(run_dir: str | Path) -> dict:
    """Metrics of one run directory: ``config`` (Config), ``metrics`` (epoch records),
    ``summary`` (evaluation). Raises :class:`MissingMetrics` naming the file or key."""
    run_dir = Path(run_dir)
    for name in ("config.yaml", "metrics.jsonl", "eval/summary.json"):
        if not (run_dir / name).is_file():
            raise MissingMetrics(f"run {run_dir}: missing {name}")
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()
               if line.strip()]
    if not records:
        raise MissingMetrics(f"run {run_dir}: metrics.jsonl has no epoch records")
    for i, record in enumerate(records, start=1):
        for key in ("train_time", "epoch_time"):
            if key not in record:
                raise MissingMetrics(f"run {run_dir}: metrics.jsonl line {i} has no '{key}'")
    summary = json.loads((run_dir / "eval/summary.json").read_text())
    for key in ("top1", "top5", "num_videos", "eval_time"):
        if not isinstance(summary.get(key), (int, float)):
            raise MissingMetrics(f"run {run_dir}: eval/summary.json has no number '{key}'")
    return {"config": load_run_config(run_dir / "config.yaml"), "metrics": records, "summary": summary}


TIMINGS = "runs/timings.json"  # under the results folder: seconds per step of the main job


def read_timings(results_dir: str | Path) -> dict[str, float]:
    """The seconds per step that the last run of the main job wrote under ``results_dir``."""
    path = Path(results_dir) / TIMINGS
    return json.loads(path.read_text()) if path.is_file() else {}


def report_time(step: str, *, results_dir: str | Path) -> str:
    """One sentence: how long the main job's step ``step`` (a notebook run: ``results``,
    ``train_<variant>``, ...) took, read from its timings under ``results_dir``."""
    path = Path(results_dir) / TIMINGS
    timings = read_timings(results_dir)
    if step not in timings:
        return f"_No timing of `{step}` in `{path}` yet (the main job writes it)._"
    return f"_The main job ran `{step}` in {timings[step]:.0f} s (`{path}`)._"
