"""Evaluation on a model whose predictions are known: metrics, artefacts, multi-view
averaging and distributed gathering (7 videos over 2 processes: the last batch is uneven).

Run as a script (``accelerate launch ... tests/test_engine_eval.py OUT``) it is the worker of
the two-process test.
"""
from __future__ import annotations

import csv
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
from torch.utils.data import Dataset

NUM_CLASSES = 8
VIEWS = 3
# Per video: (label, logits of each view). Most videos have three agreeing views; video 5 has
# one confident view for class 0 and two mild ones for class 1: the mean of the softmaxes picks
# 1, while the mean of the logits would pick 0.
BIG = 12.0


def _ranked(order: list[int]) -> list[float]:
    """Logits ranking ``order`` first..last, the rest far below."""
    logits = [-BIG] * NUM_CLASSES
    for rank, cls in enumerate(order):
        logits[cls] = BIG - 2.0 * rank
    return logits


VIDEOS = [
    (0, [_ranked([0, 1, 2, 3, 4])] * VIEWS),            # top-1 hit
    (3, [_ranked([1, 3, 0, 2, 4])] * VIEWS),            # top-5 hit (rank 2)
    (7, [_ranked([2, 0, 1, 3, 4])] * VIEWS),            # miss: 7 is below the top 5
    (2, [_ranked([2, 5, 6, 7, 0])] * VIEWS),            # top-1 hit
    (4, [_ranked([5, 6, 7, 0, 4])] * VIEWS),            # top-5 hit (rank 5)
    (1, [[12.0, 0, 0, 0, 0, 0, 0, 0], [0, 5.0, 0, 0, 0, 0, 0, 0], [0, 5.0, 0, 0, 0, 0, 0, 0]]),
    (6, [_ranked([6, 1, 2, 3, 4])] * VIEWS),            # top-1 hit
]
# predicted class per video, by construction
EXPECTED_PRED = [0, 1, 2, 2, 5, 1, 6]
EXPECTED_TOP1 = 100 * 4 / 7  # videos 0, 3, 5, 6
EXPECTED_TOP5 = 100 * 6 / 7  # all but video 2


class ViewsDataset(Dataset):
    """Test-split items ``(views (V, T, 3, H, W), label, index)``; every pixel of view ``v`` of
    video ``i`` holds the id ``i * V + v`` the stub model looks its logits up by."""

    def __len__(self) -> int:
        return len(VIDEOS)

    def __getitem__(self, index: int):
        views = torch.stack([torch.full((2, 3, 4, 4), float(index * VIEWS + v)) for v in range(VIEWS)])
        return views, VIDEOS[index][0], index


class FixedLogits(nn.Module):
    def __init__(self):
        super().__init__()
        table = torch.tensor([view for _, views in VIDEOS for view in views])
        self.register_buffer("table", table)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.table[x[:, 0, 0, 0, 0].long()]


def run_eval(out_dir: Path) -> dict:
    from accelerate import Accelerator

    from atm_core.engine import evaluate_model
    from atm_core.engine.runtime import release_accelerator

    accelerator = Accelerator(cpu=True)
    try:
        return evaluate_model(accelerator, FixedLogits(), ViewsDataset(), out_dir, batch_size=2,
                              class_names=[f"c{i}" for i in range(NUM_CLASSES)],
                              paths=[f"video_{i}.mp4" for i in range(len(VIDEOS))], progress=False)
    finally:
        release_accelerator()


def expected_confusion() -> np.ndarray:
    cm = np.zeros((NUM_CLASSES, NUM_CLASSES), dtype=np.int64)
    for (label, _), pred in zip(VIDEOS, EXPECTED_PRED):
        cm[label, pred] += 1
    return cm


def check_outputs(out_dir: Path, summary: dict) -> None:
    assert summary["num_videos"] == len(VIDEOS)
    assert summary["top1"] == pytest.approx(EXPECTED_TOP1, abs=1e-9)
    assert summary["top5"] == pytest.approx(EXPECTED_TOP5, abs=1e-9)
    # classes present: 0,1,2,3,4,6,7 -> recalls 1,1,1,0,0,1,0
    assert summary["mean_class_acc"] == pytest.approx(100 * 4 / 7, abs=1e-9)
    assert json.loads((out_dir / "summary.json").read_text())["top1"] == pytest.approx(EXPECTED_TOP1)
    np.testing.assert_array_equal(np.load(out_dir / "confusion.npy"), expected_confusion())
    assert (out_dir / "confusion.png").stat().st_size > 0
    with (out_dir / "predictions.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert sorted(int(r["index"]) for r in rows) == list(range(len(VIDEOS)))  # each video once
    for row in rows:
        i = int(row["index"])
        assert row["path"] == f"video_{i}.mp4"
        assert int(row["pred"]) == EXPECTED_PRED[i]
        assert int(row["label"]) == VIDEOS[i][0]
    # the mixed video: mean of softmaxes, computed independently
    logits = np.array(VIDEOS[5][1])
    probs = (np.exp(logits) / np.exp(logits).sum(1, keepdims=True)).mean(0)
    row5 = next(r for r in rows if r["index"] == "5")
    assert float(row5["prob_pred"]) == pytest.approx(probs[1], abs=1e-6)
    assert probs[1] > probs[0] and logits.mean(0).argmax() == 0


def test_known_predictions_single_process(tmp_path):
    summary = run_eval(tmp_path)
    check_outputs(tmp_path, summary)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def accelerate_launch(args: list[str], num_processes: int = 2, timeout: int = 300) -> subprocess.CompletedProcess:
    """``accelerate launch`` on CPU processes. Accelerate 1.x runs ``--cpu`` through its
    single-process launcher whatever ``--num_processes`` says; ``--multi_gpu`` with no visible
    GPU starts real processes that join a gloo (MULTI_CPU) group."""
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes",
           str(num_processes), "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           "--main_process_port", str(_free_port()), *args]
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def test_known_predictions_two_processes_uneven(tmp_path):
    accelerate_launch([__file__, str(tmp_path)])
    assert not (tmp_path / "rank2.json").exists()
    summaries = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    for summary in summaries:  # every process returns the metrics of all 7 videos
        check_outputs(tmp_path, summary)


if __name__ == "__main__":
    from accelerate import PartialState

    out = Path(sys.argv[1])
    result = run_eval(out)
    (out / f"rank{PartialState().process_index}.json").write_text(json.dumps(result))
