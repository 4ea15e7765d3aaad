"""The ATM figures: frames, cues, displacement fields, similarity patches and residuals, as plain
:class:`matplotlib.figure.Figure` objects drawn from captures and frames (no configuration)."""
from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from torch import nn

from ..ops import OPS
from .capture import BlockCapture, run_capture
from .maps import (
    cue_norms,
    denormalize,
    displacement_colours,
    displacement_field,
    motion_gain,
    moving_points,
    residual_norms,
    similarity_patch,
)

HEAT_CMAP = "inferno"


def op_title(op: str) -> str:
    """What an op computes, for figure titles (the one place figures look an op's words up)."""
    return OPS[op].title


def op_heat(op: str) -> str:
    """What the heat of an element-wise op's cue map means."""
    return OPS[op].heat


def figure_to_rgb(fig: Figure) -> np.ndarray:
    """Rasterise a figure to an ``(H, W, 3)`` uint8 array (its pixel size at its dpi)."""
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def save_figure(fig: Figure, path: str | Path, dpi: int = 110) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=dpi)
    return path


def _cell_inches(map_size: int) -> float:
    """Panel size for a feature map of ``map_size`` cells a side: 1.25 in up to the tiny model's 8x8,
    growing with the grid so that a ViT-B/16's 14x14 cells stay as distinct."""
    return min(2.4, 1.25 * max(1.0, math.sqrt(map_size / 8)))


def _grid(rows: int, cols: int, cell: float = 1.25, extra_width: float = 1.2) -> tuple[Figure, np.ndarray]:
    fig = Figure(figsize=(cols * cell + extra_width, rows * cell + 0.9), layout="constrained")
    axes = np.asarray(fig.subplots(rows, cols, squeeze=False))
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    return fig, axes


def _label_grid(axes: np.ndarray, row_labels: Sequence[str], col_labels: Sequence[str]) -> None:
    for ax, label in zip(axes[0], col_labels):
        ax.set_title(label, fontsize=9)
    for ax, label in zip(axes[:, 0], row_labels):
        ax.set_ylabel(label, fontsize=9)


def _overlay(ax, frame: np.ndarray, layer: np.ndarray, **imshow) -> object:
    """``frame`` (H, W, 3) with ``layer`` (h, w) or (h, w, 3) stretched over it."""
    height, width = frame.shape[:2]
    ax.imshow(frame, extent=(0, width, height, 0))
    return ax.imshow(layer, extent=(0, width, height, 0), interpolation="nearest", **imshow)


def _mark_outside(ax, t: int, offset: int, num_frames: int) -> bool:
    """Label a panel whose neighbour frame lies outside the clip (the block sees zeros)."""
    outside = not 0 <= t + offset < num_frames
    if outside:
        ax.text(0.5, 0.08, "no neighbour", transform=ax.transAxes, ha="center", zorder=5,
                fontsize=7, color="white", bbox={"facecolor": "black", "alpha": 0.6, "pad": 1})
    return outside


def shown_offsets(capture: BlockCapture) -> list[tuple[int, int]]:
    """``(k, o)`` for every offset ``o != 0`` of the block's context: offset 0 pairs a frame with
    itself (sub and div give 0, add twice the frame, mul a peak at no motion), nothing temporal."""
    shown = [(k, o) for k, o in enumerate(capture.offsets) if o != 0]
    if not shown:
        raise ValueError(f"{capture.title}: context {capture.context} has no neighbour offset to show")
    return shown


def _offset_labels(offsets: Sequence[int]) -> list[str]:
    return [f"offset {o:+d}" for o in offsets]


OFFSET_ZERO_NOTE = "offset 0 (a frame with itself) is left out"


def plot_frames(frames: np.ndarray, title: str = "") -> Figure:
    """The frames of a clip in a row."""
    fig = Figure(figsize=(1.4 * len(frames), 1.9), layout="constrained")
    for t, ax in enumerate(np.atleast_1d(fig.subplots(1, len(frames)))):
        ax.imshow(frames[t])
        ax.set_title(f"frame {t}", fontsize=9)
        ax.set_axis_off()
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def plot_cue(frames: np.ndarray, capture: BlockCapture, clip_index: int = 0) -> Figure:
    """Heat maps of an element-wise cue (``add`` / ``sub`` / ``div``): offsets x frames."""
    if capture.op == "mul":
        raise ValueError("the mul cue is a similarity volume: use plot_displacement")
    norms = cue_norms(capture.cue, clip_index)
    num_frames, shown = norms.shape[0], shown_offsets(capture)
    fig, axes = _grid(len(shown), num_frames, _cell_inches(max(norms.shape[-2:])))
    inside = [norms[t, k] for k, o in shown for t in range(num_frames) if 0 <= t + o < num_frames]
    vmax = max(max(float(n.max()) for n in inside), 1e-12)  # zero neighbours would swamp the scale
    image = None
    for row, (k, offset) in enumerate(shown):
        for t in range(num_frames):
            ax = axes[row, t]
            outside = _mark_outside(ax, t, offset, num_frames)
            layer = _overlay(ax, frames[t], norms[t, k], cmap=HEAT_CMAP, vmin=0, vmax=vmax,
                             alpha=0.25 if outside else 0.6)
            image = image if outside else layer
    _label_grid(axes, _offset_labels([o for _, o in shown]), [f"frame {t}" for t in range(num_frames)])
    fig.colorbar(image, ax=axes, shrink=0.8, label="cue norm over channels")
    fig.suptitle(f"{capture.title} - {op_title(capture.op)}\n{op_heat(capture.op)}\n{OFFSET_ZERO_NOTE}", fontsize=10)
    return fig


def _colour_wheel(ax, radius: int) -> None:
    """Legend: the colour of every displacement inside the window, at full brightness."""
    span = np.arange(-radius, radius + 1)
    dy, dx = np.meshgrid(span, span, indexing="ij")
    ax.imshow(displacement_colours(dy, dx, np.ones_like(dy, dtype=float), radius),
              extent=(-radius - 0.5, radius + 0.5, radius + 0.5, -radius - 0.5))
    ax.set_xticks([-radius, 0, radius])
    ax.set_yticks([-radius, 0, radius])
    ax.set_title("colour = displacement\n(dx right, dy down)", fontsize=8)
    ax.set_xlabel("dx (cells)", fontsize=8)
    ax.set_ylabel("dy (cells)", fontsize=8)
    ax.tick_params(labelsize=7)


def plot_displacement(frames: np.ndarray, capture: BlockCapture, clip_index: int = 0,
                      arrows: int = 4, min_gain: float = 0.05) -> Figure:
    """The ``mul`` similarity volume as a displacement field over the frames: offsets x frames.
    Arrows mark the ``arrows`` positions per panel whose best displaced match beats no motion
    by the widest margin (at least ``min_gain``)."""
    if capture.op != "mul":
        raise ValueError(f"plot_displacement needs a mul block, got op={capture.op!r}")
    dy, dx, peak = displacement_field(capture.cue, clip_index)
    gain = motion_gain(capture.cue, clip_index)
    radius = capture.window // 2
    rgb = displacement_colours(dy, dx, peak, radius)
    num_frames, shown = dy.shape[0], shown_offsets(capture)
    height, width = frames.shape[1:3]
    h, w = dy.shape[2:]
    cy, cx = (np.arange(h) + 0.5) * height / h, (np.arange(w) + 0.5) * width / w
    fig, axes = _grid(len(shown), num_frames, _cell_inches(max(h, w)), extra_width=2.2)
    for row, (k, offset) in enumerate(shown):
        for t in range(num_frames):
            ax = axes[row, t]
            _overlay(ax, frames[t], rgb[t, k], alpha=0.55)
            best = np.argsort(-gain[t, k], axis=None, kind="stable")[:arrows]
            ys, xs = np.unravel_index(best[gain[t, k].flat[best] >= min_gain], (h, w))
            if len(ys):
                ax.quiver(cx[xs], cy[ys], dx[t, k, ys, xs] * width / w, dy[t, k, ys, xs] * height / h,
                          angles="xy", scale_units="xy", scale=1, color="white", width=0.015)
            _mark_outside(ax, t, offset, num_frames)
    _label_grid(axes, _offset_labels([o for _, o in shown]), [f"frame {t}" for t in range(num_frames)])
    legend = fig.add_axes((0.0, 0.0, 0.1, 0.1))
    legend.set_in_layout(False)
    _colour_wheel(legend, radius)
    legend.set_position((0.905, 0.4, 0.085, 0.2))
    fig.get_layout_engine().set(rect=(0, 0, 0.88, 1))
    fig.suptitle(f"{capture.title} - {op_title('mul')}\n"
                 "colour (and arrow where clear): where each position's content is found in frame "
                 f"t+o; brightness: peak similarity\n{OFFSET_ZERO_NOTE}", fontsize=10)
    return fig


def plot_similarity_patches(frames: np.ndarray, capture: BlockCapture, frame: int | None = None,
                            offset: int = 1, points: Sequence[tuple[int, int]] | None = None,
                            clip_index: int = 0) -> Figure:
    """The raw ``W x W`` similarity patch of a ``mul`` block at a few feature positions (by default
    :func:`moving_points`); window cells outside the map are drawn hatched grey (no data)."""
    if capture.op != "mul":
        raise ValueError(f"plot_similarity_patches needs a mul block, got op={capture.op!r}")
    if offset not in capture.offsets:
        raise ValueError(f"offset {offset} is outside the block's context {capture.offsets}")
    num_frames = capture.num_frames
    if frame is None:
        frame = (num_frames - 1) // 2
    if not 0 <= frame < num_frames:
        raise ValueError(f"frame {frame} is outside the clip's {num_frames} frames")
    if points is None:
        points = moving_points(capture, frame, offset, clip_index=clip_index)
    elif not 0 <= frame + offset < num_frames:
        raise ValueError(f"frame {frame} + offset {offset:+d} is outside the clip's {num_frames} "
                         "frames: the block compares with zeros there")
    patches = [similarity_patch(capture, frame, offset, y, x, clip_index) for y, x in points]
    radius = capture.window // 2
    h, w = capture.cue.shape[-2:]
    height, width = frames.shape[1:3]
    cmap = colormaps["viridis"].with_extremes(bad="none")
    fig = Figure(figsize=(2.6 * (len(points) + 1) + 0.8, 3.3), layout="constrained")
    axes = fig.subplots(1, len(points) + 1, squeeze=False)[0]
    axes[0].imshow(frames[frame])
    for n, (y, x) in enumerate(points, start=1):
        py, px = (y + 0.5) * height / h, (x + 0.5) * width / w
        axes[0].plot(px, py, "o", ms=9, mfc="none", mec="cyan", mew=2)
        axes[0].text(px + 2, py - 2, str(n), color="cyan", fontsize=10, weight="bold")
    axes[0].set_title(f"frame {frame}: chosen points", fontsize=9)
    axes[0].set_xticks([])
    axes[0].set_yticks([])
    image = None
    for n, ((y, x), patch, ax) in enumerate(zip(points, patches, axes[1:]), start=1):
        extent = (-radius - 0.5, radius + 0.5, radius + 0.5, -radius - 0.5)
        ax.add_patch(Rectangle((extent[0], extent[3]), 2 * radius + 1, 2 * radius + 1, facecolor="0.85",
                               edgecolor="0.55", hatch="///", lw=0, zorder=0))
        image = ax.imshow(patch, cmap=cmap, vmin=-1, vmax=1, extent=extent, zorder=1)
        ax.plot(0, 0, "+", color="white", ms=10, mew=1.5, zorder=2)
        i, j = np.unravel_index(int(np.nanargmax(patch)), patch.shape)
        ax.plot(j - radius, i - radius, "s", ms=8, mfc="none", mec="red", mew=1.5, zorder=2)
        ax.set_title(f"point {n} (cell {y},{x})", fontsize=9)
        ax.set_xlabel("dx (cells)", fontsize=8)
        ax.set_ylabel("dy (cells)", fontsize=8)
        ax.tick_params(labelsize=7)
    fig.colorbar(image, ax=list(axes[1:]), shrink=0.85, label="cosine similarity")
    fig.suptitle(f"{capture.title} - {capture.window}x{capture.window} similarity of frame {frame} to "
                 f"frame {frame + offset} (offset {offset:+d}) at points on the moving content\n"
                 "+ = no motion, red square = best match, hatched = outside the feature map (no data)",
                 fontsize=10)
    return fig


def plot_residuals(frames: np.ndarray, captures: Sequence[BlockCapture], clip_index: int = 0) -> Figure:
    """What every ATM block adds back to its input: branch norm over channels, blocks x frames.
    Each row has its own colour scale and bar: branches of different blocks differ in size by
    orders of magnitude, and a shared scale would show the smaller one as empty."""
    if not captures:
        raise ValueError("no ATM block captures to plot")
    norms = [residual_norms(c.branch, c.num_frames, clip_index) for c in captures]
    inputs = [residual_norms(c.input, c.num_frames, clip_index) for c in captures]
    num_frames = norms[0].shape[0]
    fig, axes = _grid(len(captures), num_frames, _cell_inches(max(norms[0].shape[-2:])), extra_width=1.6)
    for row, norm in enumerate(norms):
        vmax = max(float(norm.max()), 1e-12)
        for t in range(num_frames):
            image = _overlay(axes[row, t], frames[t], norm[t], cmap=HEAT_CMAP, vmin=0, vmax=vmax, alpha=0.6)
        fig.colorbar(image, ax=axes[row], shrink=0.9, label="|branch|")
    ratios = [float(n.mean() / max(i.mean(), 1e-12)) for n, i in zip(norms, inputs)]
    zero = ["\n(zero: output projection\nat its initial zeros)" if not n.any() else "" for n in norms]
    _label_grid(axes, [f"block {c.index + 1} ({c.op})\n|branch|/|x| = {r:.2f}{z}"
                       for c, r, z in zip(captures, ratios, zero)],
                [f"frame {t}" for t in range(num_frames)])
    fig.suptitle("residual each ATM block adds back to the features (block order top to bottom)\n"
                 "branch norm over channels; one colour scale per row", fontsize=10)
    return fig


def plot_block(frames: np.ndarray, capture: BlockCapture, clip_index: int = 0) -> Figure:
    """The cue figure of one block: heat maps for add/sub/div, the displacement field for mul."""
    if capture.op == "mul":
        return plot_displacement(frames, capture, clip_index)
    return plot_cue(frames, capture, clip_index)


def feature_map_figures(model: nn.Module, clip: torch.Tensor, mean: Sequence[float],
                        std: Sequence[float], heading: str = "") -> dict[str, Figure]:
    """Every figure for one model and one normalised clip ``(T, 3, H, W)``: ``<op>_cue`` per block,
    ``<op>_patches`` for a mul block, and ``residuals``. ``heading`` (say: the model, the track,
    the clip's true class and the model's prediction) opens every figure's title."""
    captures = run_capture(model, clip)
    frames = denormalize(clip, mean, std)
    figures: dict[str, Figure] = {}
    for index, capture in enumerate(captures):
        key = capture.op if sum(c.op == capture.op for c in captures) == 1 else f"{capture.op}{index}"
        figures[f"{key}_cue"] = plot_block(frames, capture)
        if capture.op == "mul":
            figures[f"{key}_patches"] = plot_similarity_patches(frames, capture)
    figures["residuals"] = plot_residuals(frames, captures)
    if heading:
        for fig in figures.values():
            fig.suptitle(f"{heading}\n{fig.get_suptitle()}", fontsize=10)
    return figures


def save_figures(figures: dict[str, Figure], out_dir: str | Path, prefix: str = "") -> list[Path]:
    """Save ``name -> figure`` as ``<out_dir>/<prefix><name>.png``."""
    return [save_figure(fig, Path(out_dir) / f"{prefix}{name}.png") for name, fig in figures.items()]
