"""A checkpoint tested on a run's test split twice: with the recipe's test views (2 clips x 3
crops for Something-Something, 4 x 3 for Kinetics-400) and with a single view, side by side."""
from __future__ import annotations

import copy
from pathlib import Path

import pandas as pd

from ..engine import Config
from ..engine.config import apply_overrides
from ..engine.evaluation import evaluate

VIEW_SETTINGS = {"test_views": [], "single_view": ["eval.num_clips=1", "eval.num_crops=1"]}


def recipe_test_views(cfg: Config) -> tuple[int, int]:
    """``(clips, crops)`` per video of ``cfg``'s test split: its ``eval`` settings, else its dataset preset's."""
    from ..data.presets import resolve_preset
    from ..engine.builders import dataset_options

    preset = resolve_preset(cfg.data.dataset, dataset_options(cfg, "test"))
    return preset.test_num_segment, preset.test_num_crop


def evaluate_views(cfg: Config, checkpoint: str | Path, out_dir: str | Path) -> pd.DataFrame:
    """Evaluate ``checkpoint`` with ``cfg``'s test views and with one view; each evaluation's
    artefacts go to ``<out_dir>/test_views`` and ``<out_dir>/single_view``. One row each:
    clips x crops, top-1 / top-5 / mean class accuracy (%), videos and seconds. When the test
    views are a single view (1 clip x 1 crop) the clips are scored once: one row, ``test_views``."""
    rows = []
    settings = VIEW_SETTINGS if recipe_test_views(cfg) != (1, 1) else {"test_views": []}
    for name, overrides in settings.items():
        run = apply_overrides(copy.deepcopy(cfg), [*overrides, f"eval.out_dir={Path(out_dir) / name}"])
        summary = evaluate(run, checkpoint)
        rows.append({"evaluation": name, "clips": summary["num_clips"], "crops": summary["num_crops"],
                     "top1": summary["top1"], "top5": summary["top5"],
                     "mean_class_acc": summary["mean_class_acc"], "videos": summary["num_videos"],
                     "seconds": summary["eval_time"]})
    return pd.DataFrame(rows).set_index("evaluation")
