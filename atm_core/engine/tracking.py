"""Per-epoch records: ``metrics.jsonl`` always, TensorBoard when it is installed."""
from __future__ import annotations

import json
from pathlib import Path


class MetricsLog:
    """Appends one JSON line per epoch. On resume, records of epochs the checkpoint has
    not completed are dropped first so that a replayed epoch is not logged twice."""

    def __init__(self, output_dir: Path, tensorboard: bool = True):
        self.path = output_dir / "metrics.jsonl"
        self.writer = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # tensorboard is optional
                SummaryWriter = None
            if SummaryWriter is not None:
                self.writer = SummaryWriter(log_dir=str(output_dir / "tensorboard"))

    def truncate(self, completed_epochs: int) -> None:
        if not self.path.is_file():
            return
        kept = [line for line in self.path.read_text().splitlines()
                if line.strip() and json.loads(line)["epoch"] < completed_epochs]
        self.path.write_text("".join(line + "\n" for line in kept))

    def write(self, record: dict) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        if self.writer is not None:
            for key, value in record.items():
                if isinstance(value, (int, float)) and key != "epoch":
                    self.writer.add_scalar(key, value, record["epoch"])
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def read_metrics(output_dir: str | Path) -> list[dict]:
    path = Path(output_dir) / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
