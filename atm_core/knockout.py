"""What each part of ATM carries: accuracy with one part knocked out, per class and per time-reversal pair.

A *part* is either a whole ATM block or the channels one temporal offset feeds into a block:

* **block** ``mul``: the block returns its input through its residual rule, as if its branch
  added nothing -- ``ReLU(x)`` with ``residual="relu"`` (the reference's rule), ``x`` with
  ``residual="identity"``. Knocking out every block therefore leaves the backbone with ATM
  replaced by one ReLU on the patch tokens (``relu``; ReLU is idempotent) or without ATM at all
  (``identity``).
* **offset** ``mul t-1``: the ``width`` channels that the pairs of each frame with its neighbour
  ``t - 1`` contribute to the block's fusion layer are zeroed (the fusion conv's input columns of
  that offset), the other offsets and blocks untouched. Offset ``t+0`` pairs a frame with itself.

    found = contributions(model, cfg)    # the test split decoded once, one view per video
    found.drops                          # classes (+ "all") x parts: points of top-1 lost
    found.reversal                       # benchmark: % of each pair taken for its reversed twin
    fig = plot_top1_drops(found.drops)

Both knockouts are exact on the plain and the ``cpu_fast`` paths of the block (the fusion conv's
weights are read at every call on both).
"""
from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, ExitStack, contextmanager, nullcontext
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure
from torch import nn

from .atm import ATMBlock
from .data.presets import HOOKS
from .engine.runtime import inference_autocast

FULL = "full model"


@dataclass(frozen=True)
class Part:
    """A whole ATM block (``offset is None``) or one temporal offset's channels of it."""

    name: str
    block: int  # index among the model's ATM blocks, in forward order
    offset: int | None = None


def atm_block_list(model: nn.Module) -> list[ATMBlock]:
    return [m for m in model.modules() if isinstance(m, ATMBlock)]


def model_parts(model: nn.Module, offsets: bool = True) -> list[Part]:
    """Every block of ``model``'s ATM, each followed by its offsets (with ``offsets``). Blocks are
    named by their op (``mul``), numbered when an op repeats (``sub1``, ``sub2``)."""
    blocks = atm_block_list(model)
    if not blocks:
        raise ValueError(f"{type(model).__name__} has no ATM blocks to knock out")
    ops = [b.op for b in blocks]
    parts = []
    for index, block in enumerate(blocks):
        name = block.op if ops.count(block.op) == 1 else f"{block.op}{ops[:index + 1].count(block.op)}"
        parts.append(Part(name, index))
        if offsets:
            radius = block.context // 2
            parts += [Part(f"{name} t{o:+d}", index, o) for o in range(-radius, radius + 1)]
    return parts


def _residual_only(block: ATMBlock, inputs: tuple, output: torch.Tensor) -> torch.Tensor:
    x = inputs[0]
    return x.relu() if block.residual == "relu" else x


@contextmanager
def _without_offset(block: ATMBlock, offset: int) -> Iterator[None]:
    conv = block.fuse[0]
    width = conv.in_channels // block.context
    k = offset + block.context // 2  # pairs are grouped offset-major: -r .. r
    kept = conv.weight.detach().clone()
    with torch.no_grad():
        conv.weight[:, k * width:(k + 1) * width] = 0
    try:
        yield
    finally:
        with torch.no_grad():
            conv.weight.copy_(kept)


@contextmanager
def knocked_out(model: nn.Module, parts: Part | Sequence[Part]) -> Iterator[nn.Module]:
    """``model`` with ``parts`` knocked out inside the block (weights restored, hooks removed on exit)."""
    parts = [parts] if isinstance(parts, Part) else list(parts)
    blocks = atm_block_list(model)
    with ExitStack() as stack:
        for part in parts:
            block = blocks[part.block]
            if part.offset is None:
                stack.callback(block.register_forward_hook(_residual_only).remove)
            else:
                stack.enter_context(_without_offset(block, part.offset))
        yield model


def eval_clips(cfg, split: str = "test") -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """Every readable video of ``cfg``'s ``split`` as one centre view ``(N, T, 3, S, S)``, its labels
    and the dataset's class names; unreadable videos are left out and reported by the dataset's
    ``data.on_error`` (an error unless it is ``skip``)."""
    import copy

    from .data.dataset import LEFT_OUT
    from .engine import builders
    from .engine.config import apply_overrides

    single = apply_overrides(copy.deepcopy(cfg), ["eval.num_clips=1", "eval.num_crops=1"])
    dataset = builders.dataset(single, split)
    items = [dataset[i] for i in range(len(dataset))]
    kept = [(views[0], label) for views, label, *_ in items if label != LEFT_OUT]
    if not kept:
        raise ValueError(f"none of the {len(dataset)} videos of split {split!r} could be read")
    return torch.stack([c for c, _ in kept]), torch.tensor([label for _, label in kept]), dataset.classes


@torch.no_grad()
def predict_labels(model: nn.Module, clips: torch.Tensor, batch_size: int = 32,
                   autocast: AbstractContextManager | None = None) -> torch.Tensor:
    """The arg-max class of every clip ``(N, T, 3, S, S)``, under ``autocast`` when given."""
    model.eval()
    device = next(model.parameters()).device
    with autocast or nullcontext():
        return torch.cat([model(clips[i:i + batch_size].to(device)).argmax(-1).cpu()
                          for i in range(0, len(clips), batch_size)])


def knockout_predictions(model: nn.Module, clips: torch.Tensor, labels: torch.Tensor,
                         parts: Sequence[Part] | None = None, batch_size: int = 32,
                         autocast: AbstractContextManager | None = None) -> dict[str, pd.DataFrame]:
    """Predictions (``label``, ``pred``, ``correct`` per clip, as in ``predictions.csv``) of the
    full model (key :data:`FULL`) and with each part knocked out (key: the part's name)."""
    def frame(pred: torch.Tensor) -> pd.DataFrame:
        return pd.DataFrame({"label": labels.numpy(), "pred": pred.numpy(), "correct": (pred == labels).numpy()})

    found = {FULL: frame(predict_labels(model, clips, batch_size, autocast))}
    for part in parts if parts is not None else model_parts(model):
        with knocked_out(model, part):
            found[part.name] = frame(predict_labels(model, clips, batch_size, autocast))
    return found


def class_accuracy(predictions: Mapping, classes: Sequence[str]) -> pd.DataFrame:
    """Top-1 (%) per true class (rows, then ``all``) for every entry of ``predictions`` (columns)."""
    columns = {}
    for name, frame in predictions.items():
        per_class = frame.groupby("label").correct.mean().reindex(range(len(classes)))
        columns[name] = [*(100.0 * per_class).tolist(), 100.0 * frame.correct.mean()]
    return pd.DataFrame(columns, index=[*classes, "all"])


def top1_drops(predictions: Mapping, classes: Sequence[str]) -> pd.DataFrame:
    """Points of top-1 lost per class (rows, then ``all``) when each part (columns) is knocked
    out: the full model's accuracy minus the knocked-out model's."""
    accuracy = class_accuracy(predictions, classes)
    return accuracy.drop(columns=FULL).rsub(accuracy[FULL], axis=0)


def reversal_confusions(predictions: Mapping, classes: Sequence[str]) -> pd.DataFrame:
    """Per time-reversal pair ``(2p, 2p+1)`` of the built-in benchmark (rows) and entry of
    ``predictions`` (columns): % of the pair's videos predicted as their reversed twin."""
    names = [f"{classes[p]} / {classes[p + 1]}" for p in range(0, len(classes) - 1, 2)]
    columns = {}
    for name, frame in predictions.items():
        twin = frame.pred.to_numpy() == (frame.label.to_numpy() ^ 1)
        pair = frame.label.to_numpy() // 2
        columns[name] = [100.0 * twin[pair == p].mean() if (pair == p).any() else np.nan
                         for p in range(len(names))]
    return pd.DataFrame(columns, index=names)


@dataclass
class Contributions:
    """What each part of a model's ATM carries on a split: :func:`class_accuracy` of the full model
    and every knockout, :func:`top1_drops`, and on the built-in benchmark
    :func:`reversal_confusions` (else ``None``)."""

    accuracy: pd.DataFrame
    drops: pd.DataFrame
    reversal: pd.DataFrame | None


def contributions(model: nn.Module, cfg, split: str = "test", offsets: bool = True) -> Contributions:
    """Knock out every part of ``model`` (see :func:`model_parts`) on one view of every video of
    ``cfg``'s ``split``, in the precision the run trained in (``train.mixed_precision``)."""
    clips, labels, classes = eval_clips(cfg, split)
    autocast = inference_autocast(cfg, next(model.parameters()).device)
    predictions = knockout_predictions(model, clips, labels, model_parts(model, offsets), cfg.eval.batch_size,
                                       autocast)
    reversal = reversal_confusions(predictions, classes) if HOOKS[cfg.data.dataset].reversal_pairs else None
    return Contributions(class_accuracy(predictions, classes), top1_drops(predictions, classes), reversal)


def summarise_drops(drops: pd.DataFrame) -> str:
    """One sentence on a :func:`top1_drops` table: the part whose removal costs the most top-1
    overall and the class it costs most, and the part that costs the least."""
    overall = drops.loc["all"]
    worst, least = overall.idxmax(), overall.idxmin()
    classes = drops.drop(index="all")[worst]
    return (f"knocking out `{worst}` costs the most, {overall[worst]:.1f} points of top-1 over all "
            f"classes and {classes.max():.1f} on *{classes.idxmax()}*; `{least}` costs the least "
            f"({overall[least]:.1f} points).")


def plot_top1_drops(drops: pd.DataFrame, title: str = "") -> Figure:
    """Heat map of :func:`top1_drops`: classes x knocked-out part, the drop in top-1 (points),
    red where knocking the part out costs accuracy, blue where it helps."""
    values = drops.to_numpy(dtype=float)
    limit = max(1.0, float(np.nanmax(np.abs(values))))
    fig = Figure(figsize=(1.0 + 0.62 * drops.shape[1], 1.2 + 0.36 * drops.shape[0]), layout="constrained")
    ax = fig.subplots()
    image = ax.imshow(values, cmap="RdBu_r", vmin=-limit, vmax=limit, aspect="auto")
    ax.set_xticks(range(drops.shape[1]), drops.columns, rotation=45, ha="right")
    ax.set_yticks(range(drops.shape[0]), drops.index)
    ax.axhline(drops.shape[0] - 1.5, color="black", linewidth=0.8)  # the "all" row apart
    for (row, col), value in np.ndenumerate(values):
        if np.isfinite(value):
            ax.text(col, row, f"{value:.0f}", ha="center", va="center", fontsize=7,
                    color="white" if abs(value) > 0.6 * limit else "black")
    ax.set_xlabel("knocked out")
    fig.colorbar(image, ax=ax, label="drop in top-1 (points)")
    if title:
        ax.set_title(title)
    return fig
