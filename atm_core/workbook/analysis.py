"""What a trained model gets right and wrong: predictions per class and per time-reversal pair."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import torch

from ..engine import Config


def read_predictions(eval_dir: str | Path) -> pd.DataFrame:
    """``predictions.csv`` of an evaluation folder (a run's ``eval/``)."""
    return pd.read_csv(Path(eval_dir) / "predictions.csv")


def find_clip(dataset, class_name: str, number: int = 0) -> int:
    """Index of the ``number``-th validation video of ``class_name``."""
    if class_name not in dataset.classes:
        raise ValueError(f"unknown class {class_name!r}; classes: {dataset.classes}")
    label = dataset.classes.index(class_name)
    matches = [i for i, r in enumerate(dataset.records) if r.label == label]
    if number >= len(matches):
        raise ValueError(f"class {class_name!r} has {len(matches)} validation videos, asked for number {number}")
    return matches[number]


@torch.no_grad()
def predict_clip(model: torch.nn.Module, clip: torch.Tensor, classes: list[str]) -> str:
    """The class ``model`` predicts for one normalised clip ``(T, 3, H, W)``."""
    return classes[int(model.eval()(clip[None]).argmax())]


def per_class_accuracy(predictions: pd.DataFrame, classes: list[str]) -> pd.DataFrame:
    """Accuracy and the most frequent wrong answer per true class."""
    rows = []
    for label, name in enumerate(classes):
        mine = predictions[predictions.label == label]
        wrong = mine[mine.pred != label]
        top_wrong = wrong.pred.value_counts()
        rows.append({"class": name, "videos": len(mine),
                     "accuracy": 100.0 * float(mine.correct.mean()) if len(mine) else float("nan"),
                     "most_confused_with": classes[int(top_wrong.index[0])] if len(top_wrong) else "-"})
    return pd.DataFrame(rows)


def pair_report(predictions: pd.DataFrame, classes: list[str]) -> pd.DataFrame:
    """Per time-reversal pair ``(2p, 2p+1)``: accuracy, and how often a video is taken for its
    reversed twin -- the error an order-blind model cannot avoid."""
    rows = []
    for first in range(0, len(classes) - 1, 2):
        mine = predictions[predictions.label.isin([first, first + 1])]
        twin = mine.label.to_numpy() ^ 1
        rows.append({"pair": f"{classes[first]} / {classes[first + 1]}", "videos": len(mine),
                     "accuracy": 100.0 * float(mine.correct.mean()),
                     "taken_for_reversed_twin": 100.0 * float((mine.pred.to_numpy() == twin).mean()),
                     "in_pair": 100.0 * float(mine.pred.isin([first, first + 1]).mean())})
    return pd.DataFrame(rows)


def flip_labels(cfg: Config) -> dict[int, int]:
    """The left/right class pairs of a run's data: the classes its horizontal flip swaps
    (Something-Something: 86<->87, 93<->94, 166<->167); empty when the flip keeps labels."""
    from ..data.presets import PRESETS

    pairs = cfg.data.options.get("flip_labels", PRESETS[cfg.data.dataset].flip_labels)
    return {int(a): int(b) for a, b in (pairs or {}).items()}


def direction_report(predictions: pd.DataFrame, classes: list[str], mirrors: dict[int, int]) -> pd.DataFrame:
    """Per mirrored pair ``(a, b)`` (e.g. pushing left / right): accuracy, and how often a
    video is taken for its mirror -- the error of a model that sees the motion but not its
    direction."""
    outside = sorted(c for c in mirrors if not 0 <= c < len(classes))
    if outside:
        raise ValueError(f"mirrored classes {outside} are not among the {len(classes)} classes of the label file")
    rows = []
    for first, second in sorted((a, b) for a, b in mirrors.items() if a < b):
        mine = predictions[predictions.label.isin([first, second])]
        mirror = mine.label.map({first: second, second: first})
        rows.append({"pair": f"{classes[first]} / {classes[second]}", "videos": len(mine),
                     "accuracy": 100.0 * float(mine.correct.mean()) if len(mine) else float("nan"),
                     "taken_for_mirror": 100.0 * float((mine.pred == mirror).mean()) if len(mine) else float("nan"),
                     "in_pair": 100.0 * float(mine.pred.isin([first, second]).mean()) if len(mine) else float("nan")})
    return pd.DataFrame(rows)
