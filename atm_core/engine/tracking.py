"""Per-epoch records: ``metrics.jsonl`` (what the tables read) and the same scalars to the
experiment trackers Accelerate runs (``train.log_with``: TensorBoard, MLflow, W&B, ...)."""
from __future__ import annotations

import json
from pathlib import Path

from accelerate import Accelerator


def flat_params(config: dict, prefix: str = "") -> dict:
    """A nested config as ``{"section.key": value}`` with every value a bool, number or string,
    as trackers take hyperparameters (lists and nulls written as their YAML text)."""
    flat = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flat_params(value, f"{name}."))
        elif isinstance(value, (bool, int, float, str)):
            flat[name] = value
        else:
            flat[name] = json.dumps(value)
    return flat


class MetricsLog:
    """Appends one JSON line per epoch and logs its numbers to the Accelerator's trackers (main
    process only). On resume, records of epochs the checkpoint has not completed are dropped
    first so that a replayed epoch is not logged twice."""

    def __init__(self, output_dir: Path, accelerator: Accelerator, config: dict):
        self.path = output_dir / "metrics.jsonl"
        self.accelerator = accelerator
        accelerator.init_trackers(output_dir.resolve().name, config=flat_params(config))

    def truncate(self, completed_epochs: int) -> None:
        if not self.path.is_file():
            return
        kept = [line for line in self.path.read_text().splitlines()
                if line.strip() and json.loads(line)["epoch"] < completed_epochs]
        self.path.write_text("".join(line + "\n" for line in kept))

    def write(self, record: dict) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        scalars = {k: v for k, v in record.items()
                   if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "epoch"}
        self.accelerator.log(scalars, step=record["epoch"])

    def close(self) -> None:
        # each tracker's own end (Accelerator.end_training would also tear down the process group,
        # which the evaluation after training still uses)
        for tracker in self.accelerator.trackers:
            tracker.finish()


def read_metrics(output_dir: str | Path) -> list[dict]:
    path = Path(output_dir) / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
