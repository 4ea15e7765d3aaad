"""Real-format rehearsals: a tiny dataset in each official layout goes through ``prepare``, one
short epoch of the paper's ViT-B/16 recipe under two processes, the recipe's multi-view test
and the visualisation code.

What runs at the recipe's values: the model (ViT-B/16 with T1D and ATM(mul, sub), 12 blocks),
the preset (list format, reader, frame names, flip with label swap, RandAugment, Kinetics
grayscale), repeated augmentation, Mixup/CutMix, label smoothing, AdamW with layer decay, the
cosine schedule and the test views (SS: 2 clips x 3 crops, Kinetics: 4 x 3). What does not is
``CPU_SIZED`` below, printed by every rehearsal.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from official_layouts import make_k400, make_ssv1, make_ssv2
from test_engine_eval import accelerate_launch

from atm_core import viz
from atm_core.data import build_dataset
from atm_core.data.prepare import main as prepare_main
from atm_core.engine.builders import build_model
from atm_core.engine.checkpoint import load_weights
from atm_core.engine.config import load_config

PARAMS = Path(__file__).resolve().parents[1] / "params"
# The recipe's settings a CPU cannot run in a test, and what replaces them.
CPU_SIZED = {
    "model.pretrained": "false",  # CLIP weights: no download in tests
    "data.num_frames": "2",
    "model.img_size": "32",  # recipe: 224 (2 x 2 patches of 16 px)
    "data.options.input_size": "32",
    "data.num_workers": "0",  # recipe: 8
    "train.batch_size": "2",  # recipe: 16 per GPU; 2 x 2 repeated clips x 2 processes
    "train.mixed_precision": "no",  # recipe: fp16 (GPU)
    "train.threads": "1",
    "optim.epochs": "1",  # recipe: 20 (3 steps of one epoch here)
    "optim.warmup_epochs": "0.5",  # recipe: 5
    "eval.batch_size": "2",
    "train.progress": "false",
}
SCALES = {"ssv2": "[36,44]", "ssv1": "[36,44]", "k400": "36"}  # recipes: (256, 320) and 256


def overrides(dataset: str, root: Path, out: Path) -> list[str]:
    values = {**CPU_SIZED, "data.options.scale": SCALES[dataset],
              "data.options.num_classes": "4", "data.root": str(root),
              "train.output_dir": str(out)}
    print(f"rehearsal {dataset}: overridden from the recipe: "
          + " ".join(f"{k}={v}" for k, v in values.items()))
    return [f"{k}={v}" for k, v in values.items()]


def visualise(run_dir: Path, dataset) -> list:
    """Open best/ the way the visualisation notebook does and capture the ATM blocks."""
    cfg = load_config(run_dir / "config.yaml")
    model = build_model(cfg, len(dataset.classes), dataset.transform.input_size)
    load_weights(model, run_dir / "checkpoints" / "best")
    return viz.run_capture(model, dataset[0][0][0])


def rehearse(dataset: str, recipe: str, src: Path, media: str, tmp_path: Path,
             views: int) -> None:
    root = tmp_path / "root"
    assert prepare_main([dataset, "--annotations", str(src / "annotations"), "--videos",
                         str(src / media), "--out", str(root), "--no-progress"]) == 0
    out = tmp_path / "run"
    accelerate_launch(["-m", "atm_core.train", "--config", str(PARAMS / recipe),
                       *overrides(dataset, root, out)], timeout=240)
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["global_step"] for m in metrics] == [3]
    assert torch.isfinite(torch.tensor(metrics[0]["train_loss"]))
    summary = json.loads((out / "eval" / "summary.json").read_text())
    assert summary["num_videos"] == 4 and summary["views"] == views
    assert (out / "preflight_report.txt").read_text().startswith("preflight: 16 videos checked")
    test_set = build_dataset(dataset, "test", root, num_frames=2, num_classes=4, input_size=32,
                             scale=json.loads(SCALES[dataset]))
    captures = visualise(out, test_set)
    assert [c.op for c in captures] == ["mul", "sub"]
    # one clip of 2 frames, 5 offsets, a 9 x 9 similarity window on the 2 x 2 token grid
    assert captures[0].cue.shape == (1, 2, 5, 81, 2, 2)
    assert captures[1].input.shape == (2, 768, 2, 2)


@pytest.mark.slow
def test_ssv2_webm_240p_rehearsal(tmp_path):
    src = make_ssv2(tmp_path / "src", {"train": 12, "val": 4}, size=(240, 320), num_frames=8)
    rehearse("ssv2", "ssv2_vit_b16_f8.yaml", src, "videos", tmp_path, views=6)


@pytest.mark.slow
def test_ssv1_frame_folder_rehearsal(tmp_path):
    src = make_ssv1(tmp_path / "src", {"train": 12, "val": 4}, size=(100, 132), num_frames=8)
    rehearse("ssv1", "ssv1_vit_b16_f8.yaml", src, "frames", tmp_path, views=6)


@pytest.mark.slow
def test_k400_mp4_rehearsal(tmp_path):
    src = make_k400(tmp_path / "src", {"train": 12, "val": 4}, size=(96, 128), num_frames=8)
    rehearse("k400", "k400_vit_b16_f8.yaml", src, "videos", tmp_path, views=12)
