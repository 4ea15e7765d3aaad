"""Run-summary figures: training curves, confusion matrices and the ablation bars, drawn from what
the runs wrote (plain matplotlib Figures; save them with ``viz.save_figure``)."""
from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure

CONFUSION_TICK_SIZE = 9  # points, at the saved figures' dpi


def distinct_colours(count: int) -> list:
    """``count`` colours no two alike: the qualitative tab10 / tab20 maps, a sampled hue circle beyond."""
    if count <= 10:
        return [colormaps["tab10"](i) for i in range(count)]
    if count <= 20:
        return [colormaps["tab20"](i) for i in range(count)]
    return [colormaps["hsv"](i / count) for i in range(count)]


def plot_training_curves(histories: Mapping[str, Sequence[dict]], title: str = "") -> Figure:
    """Training loss and validation top-1 per epoch (``metrics.jsonl`` records) of several runs of
    one track: each run its own colour, the legend outside the axes."""
    if not histories:
        raise ValueError("no runs to plot")
    fig = Figure(figsize=(12, 4), layout="constrained")
    loss_ax, acc_ax = fig.subplots(1, 2)
    for (label, records), colour in zip(histories.items(), distinct_colours(len(histories))):
        epochs = [r["epoch"] + 1 for r in records]
        loss_ax.plot(epochs, [r["train_loss"] for r in records], marker=".", color=colour, label=label)
        scored = [r for r in records if "val_top1" in r]
        acc_ax.plot([r["epoch"] + 1 for r in scored], [r["val_top1"] for r in scored], marker=".", color=colour)
    loss_ax.set(xlabel="epoch", ylabel="training loss", title="training loss")
    acc_ax.set(xlabel="epoch", ylabel="validation top-1 (%)", title="validation top-1 (single view)",
               ylim=(0, 100))
    for ax in (loss_ax, acc_ax):
        ax.grid(alpha=0.3)
    fig.legend(fontsize=8, loc="outside right upper", frameon=False)
    if title:
        fig.suptitle(title)
    return fig


def plot_confusions(confusions: Mapping[str, np.ndarray], class_names: Sequence[str], cols: int = 3) -> Figure:
    """Row-normalised confusion matrices of several runs side by side (``cm[true, predicted]``)."""
    if not confusions:
        raise ValueError("no confusion matrices to plot")
    n = len(class_names)
    names = [str(name).replace("_", " ") for name in class_names]
    cols = min(cols, len(confusions))
    side = max(4.2, 0.32 * n + 2.2)  # room for tick labels of readable size
    rows = math.ceil(len(confusions) / cols)
    fig = Figure(figsize=(cols * side + 0.8, rows * (side + 0.4)), layout="constrained")
    axes = np.asarray(fig.subplots(rows, cols, squeeze=False))
    image = None
    for ax, (label, cm) in zip(axes.flat, confusions.items()):
        if cm.shape != (n, n):
            raise ValueError(f"{label}: confusion matrix {cm.shape} does not match {n} class names")
        normed = cm / np.maximum(cm.sum(1, keepdims=True), 1)
        image = ax.imshow(normed, cmap="Blues", vmin=0, vmax=1)
        accuracy = 100.0 * np.trace(cm) / max(cm.sum(), 1)
        ax.set_title(f"{label}: top-1 {accuracy:.1f}%", fontsize=12)
        ax.set_xticks(range(n), names, rotation=45, ha="right", rotation_mode="anchor", fontsize=CONFUSION_TICK_SIZE)
        ax.set_yticks(range(n), names, fontsize=CONFUSION_TICK_SIZE)
    for ax in list(axes.flat)[len(confusions):]:
        ax.set_axis_off()
    fig.colorbar(image, ax=axes, shrink=0.6, label="fraction of the true class (rows sum to 1)")
    fig.suptitle("confusion matrices (rows: true class, columns: predicted)")
    return fig


def plot_ablation(labels: Sequence[str], top1: Sequence[float], chance: float | None = None,
                  order_blind: float | None = None,
                  title: str = "temporal module / ATM ops on the built-in benchmark") -> Figure:
    """Horizontal bars of top-1 per run, with the chance level and the best an order-blind model
    can do (50 % on the built-in benchmark: it cannot tell a clip from its reversal)."""
    fig = Figure(figsize=(7, 0.45 * len(labels) + 1.5), layout="constrained")
    ax = fig.subplots()
    ax.barh(range(len(labels)), top1, color="tab:blue")
    ax.set_yticks(range(len(labels)), labels)
    ax.invert_yaxis()
    for y, value in enumerate(top1):
        ax.text(value + 1, y, f"{value:.1f}", va="center", fontsize=8)
    if chance is not None:
        ax.axvline(chance, color="grey", ls=":", label=f"chance ({chance:.1f}%)")
    if order_blind is not None:
        ax.axvline(order_blind, color="tab:red", ls="--", label=f"order-blind ceiling ({order_blind:.0f}%)")
    if chance is not None or order_blind is not None:  # below the axes: inside, it hides bars and values
        fig.legend(fontsize=8, loc="outside lower center", ncols=2, frameon=False)
    ax.set(xlim=(0, 105), xlabel="top-1 (%)", title=title)
    return fig


FIGURE_WORDS = {
    "cue": "the cue of its {op} block per offset and frame",
    "patches": "raw similarity patches of its {op} block at points on the moving content",
    "residuals": "what each ATM block adds back to the features",
}
_FIGURE_NAME = re.compile(r"^(?:(?P<op>[a-z]+)\d*_(?P<kind>cue|patches)|(?P<residuals>residuals))$")


def feature_map_captions(figure_dir: str | Path, labels: Mapping[str, str]) -> list[tuple[Path, str]]:
    """The feature-map figures ``<variant>_<figure>.png`` under ``figure_dir`` of the variants
    ``labels`` (``variant -> run label``) with a caption each, in the order of ``labels``."""
    captions = []
    for key, label in labels.items():
        for path in sorted(Path(figure_dir).glob(f"{key}_*.png")):
            match = _FIGURE_NAME.match(path.stem[len(key) + 1:])
            if match:
                words = FIGURE_WORDS["residuals" if match["residuals"] else match["kind"]]
                captions.append((path, f"{label}: {words.format(op=match['op'])}"))
    return captions
