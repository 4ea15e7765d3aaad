"""What the ATM blocks compute, as figures: cues, similarity volumes and residuals over the frames.

    clip, _ = load_clip("my_video.mp4", cfg)  # the recipe's reader, sampling and eval transform
    model = builders.load_model(cfg, checkpoint)  # atm_core.engine.builders
    with capture_atm(model) as captures:      # hooks record every ATMBlock's cue and branch
        model(clip[None])
    fig = plot_block(frames, captures[0])     # a matplotlib Figure
    image = figure_to_rgb(fig)                # (H, W, 3) uint8

Per operation:
  * ``add`` / ``sub`` / ``div``: the cue between frame ``t`` and its neighbour ``t + o`` is a
    ``D``-channel map; its L2 norm over channels is drawn as a heat map on frame ``t``, one row
    per offset ``o``.
  * ``mul``: the cue is a similarity volume, one ``W x W`` patch of cosine similarities per
    position. Its arg-max is the displacement at which the neighbour frame looks most like the
    anchor (where the content went), drawn as colour (hue = direction, saturation = length)
    with the peak similarity as brightness, plus arrows; :func:`plot_similarity_patches` shows
    the raw patch at a few points on the moving content (:func:`moving_points`), window cells
    outside the map as no data.
  * every block: the residual branch it adds back to the features (:func:`plot_residuals`, one
    colour scale per block).
Offset 0 (a frame paired with itself) carries nothing temporal and is left out of the cue figures.

Figures are plain :class:`matplotlib.figure.Figure` objects (no pyplot state), so they render
in notebooks, save with :func:`save_figure` and rasterise with :func:`figure_to_rgb`.
"""
from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib import colormaps
from matplotlib import colors as mcolors
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from torch import nn

from .atm import ATMBlock
from .ops import OPS
from .engine.config import Config

OP_TITLES = {name: op.title for name, op in OPS.items()}
OP_HEAT = {name: op.heat for name, op in OPS.items() if op.heat is not None}
HEAT_CMAP = "inferno"
CONFUSION_TICK_SIZE = 9  # points, at the saved figures' dpi


@dataclass
class BlockCapture:
    """What one :class:`ATMBlock` saw and produced in the last forward pass."""

    name: str  # module path inside the model
    index: int  # position among the model's ATM blocks, 0-based
    op: str
    num_frames: int
    context: int
    window: int
    input: torch.Tensor  # (B*T, C, H, W)
    cue: torch.Tensor  # (B, T, K, D', h, w); D' = W*W for mul
    branch: torch.Tensor  # (B*T, C, H, W), what the block adds to its input

    @property
    def title(self) -> str:
        return f"ATM block {self.index + 1} ({self.op}, {self.name})"

    @property
    def offsets(self) -> list[int]:
        radius = self.context // 2
        return list(range(-radius, radius + 1))


def atm_blocks(model: nn.Module) -> list[tuple[str, ATMBlock]]:
    """All ATM blocks of ``model`` in forward order, with their module paths."""
    return [(name, m) for name, m in model.named_modules() if isinstance(m, ATMBlock)]


def plain_cue(block: ATMBlock, x: torch.Tensor) -> torch.Tensor:
    """``block``'s cue of its input ``x`` on the plain path, leaving its running statistics alone
    (in train mode the reduce layer normalises with batch statistics, as the block did)."""
    conv, norm = block.reduce[0], block.reduce[1]
    stats = (None, None) if norm.training else (norm.running_mean, norm.running_var)
    reduced = F.relu(F.batch_norm(conv(x), *stats, norm.weight, norm.bias, norm.training, 0.0, norm.eps))
    return block.cue(reduced)


@contextmanager
def capture_atm(model: nn.Module) -> Iterator[list[BlockCapture]]:
    """Record every ATM block's input, cue and branch by forward hooks during forward passes inside.

    Yields a list filled by the forward passes (one entry per block, the last pass wins). Hooks sit
    on the block (its input), on ``block.cue`` (the cue: for ``mul`` the similarity volume) and on
    ``block.proj`` (the branch); they are removed on exit. The ``cpu_fast`` kernels never
    materialise the cue (the element-wise ops are combined after the transfer's first conv, the
    correlation runs inside the kernels), so ``block.cue`` does not run there: the capture then
    computes the cue from the hooked input with the plain op (:func:`plain_cue`), which equals what
    the kernels compute to float rounding.
    """
    blocks = atm_blocks(model)
    if not blocks:
        raise ValueError(f"{type(model).__name__} has no ATM block (model.atm is None?): "
                         "nothing to visualise; use a model built with ATM ops (model.atm.ops)")
    captured: list[BlockCapture] = []
    order = {name: i for i, (name, _) in enumerate(blocks)}

    def hooks_for(name: str, block: ATMBlock) -> list:
        seen: dict[str, torch.Tensor] = {}

        def on_input(_block: nn.Module, args: tuple) -> None:
            seen.clear()
            seen["input"] = args[0].detach()

        def on_cue(_module: nn.Module, _args: tuple, cue: torch.Tensor) -> None:
            seen["cue"] = cue.detach()

        def on_branch(_module: nn.Module, _args: tuple, branch: torch.Tensor) -> None:
            seen["branch"] = branch.detach()

        def on_output(_block: nn.Module, _args: tuple, _output: torch.Tensor) -> None:
            if "cue" not in seen:
                with torch.no_grad():
                    seen["cue"] = plain_cue(block, seen["input"])
            record = BlockCapture(name, order[name], block.op, block.num_frames, block.context,
                                  block.window, seen["input"], seen["cue"], seen["branch"])
            captured[:] = sorted([c for c in captured if c.name != name] + [record],
                                 key=lambda c: order[c.name])

        return [block.register_forward_pre_hook(on_input), block.cue.register_forward_hook(on_cue),
                block.proj.register_forward_hook(on_branch), block.register_forward_hook(on_output)]

    handles = []
    try:
        for name, block in blocks:
            handles += hooks_for(name, block)
        yield captured
    finally:
        for handle in handles:
            handle.remove()


@torch.no_grad()
def run_capture(model: nn.Module, clip: torch.Tensor) -> list[BlockCapture]:
    """Run ``model`` in eval mode on one clip ``(T, 3, H, W)`` and return every block's capture."""
    if clip.dim() != 4:
        raise ValueError(f"expected one clip (T, 3, H, W), got shape {tuple(clip.shape)}")
    was_training = model.training
    model.eval()
    try:
        with capture_atm(model) as captures:
            model(clip[None])
    finally:
        model.train(was_training)
    return list(captures)


# ---------------------------------------------------------------- a user's model and video

VideoSource = str | Path | tuple[str | Path, int]


def load_clip(video: VideoSource, cfg: Config) -> tuple[torch.Tensor, int | None]:
    """One clip of ``video`` as the recipe ``cfg`` evaluates it: ``(T, 3, S, S)`` normalised, and
    its label (``None`` for a bare path).

    ``video`` is a video file or frame folder, or a list-file entry ``(list_file, line)`` (line
    1-based; a relative list file is under ``data.root``, as are the paths inside it). Frames are
    read by the data layer's readers, sampled as validation clips (centre of each segment) and
    transformed by the recipe's evaluation transform (scale, centre crop, mean/std) -- the view the
    model was validated on.
    """
    from .data.dataset import ValClips
    from .data.lists import ClipRecord, read_list
    from .data.presets import resolve_recipe
    from .data.transforms import ViewTransform
    from .engine.builders import dataset_options

    root = Path(cfg.data.root)
    if isinstance(video, (str, Path)):
        path = Path(video).resolve()
        record = ClipRecord(str(path), None, 0, str(video))
    else:
        list_file, line = video
        list_path = root / list_file
        records, _ = read_list(list_path)
        matches = [r for r in records if r.source == f"{list_path}:{line}"]
        if not matches:
            raise ValueError(f"{list_path}:{line}: no clip on that line (blank, a comment or past the end)")
        record = matches[0]
    recipe = resolve_recipe(cfg.data.dataset, dataset_options(cfg, "val"))
    transform = ViewTransform(recipe.input_size, recipe.scale, 1, recipe.mean, recipe.std)
    dataset = ValClips([record], root, num_frames=cfg.data.num_frames, transform=transform,
                           sampling=recipe.sampling, dense_stride=recipe.dense_stride, reader=recipe.reader,
                           frame_template=recipe.frame_template, frame_start=recipe.frame_start)
    clip, label = dataset[0]
    return clip, (None if isinstance(video, (str, Path)) else label)


def benchmark_video(class_name: str, path: str | Path, seed: int = 0) -> Path:
    """Write one clip of the built-in benchmark's ``class_name`` (the generator's default size and
    difficulty, drawn with ``seed``) to the ``.mp4`` file ``path``: a video to look at without the
    benchmark on disk."""
    from .data.synthetic import CLASSES, MOTIONS, render_clip, write_mp4

    if class_name not in CLASSES:
        raise ValueError(f"unknown benchmark class {class_name!r}; classes: {list(CLASSES)}")
    label = CLASSES.index(class_name)
    frames = render_clip(MOTIONS[label // 2], np.random.default_rng(seed))
    # the second class of a pair is the first played backwards
    write_mp4(path, np.ascontiguousarray(frames[::-1]) if label % 2 else frames)
    return Path(path)


def clip_stats(cfg: Config) -> tuple[Sequence[float], Sequence[float]]:
    """The ``(mean, std)`` the recipe normalises frames with (to draw its clips)."""
    from .data.presets import resolve_recipe
    from .engine.builders import dataset_options

    recipe = resolve_recipe(cfg.data.dataset, dataset_options(cfg, "val"))
    return recipe.mean, recipe.std


# ---------------------------------------------------------------- maps (numpy)

def denormalize(clip: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """Normalised ``(T, 3, H, W)`` -> displayable ``(T, H, W, 3)`` floats in [0, 1]."""
    m = torch.tensor(mean, dtype=clip.dtype).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=clip.dtype).view(1, 3, 1, 1)
    return (clip.detach().cpu() * s + m).clamp(0, 1).permute(0, 2, 3, 1).numpy()


def cue_norms(cue: torch.Tensor, clip_index: int = 0) -> np.ndarray:
    """Channel L2 norm of an element-wise cue ``(B, T, K, D, h, w)`` -> ``(T, K, h, w)``."""
    return cue[clip_index].float().norm(dim=2).cpu().numpy()


def displacement_field(volume: torch.Tensor, clip_index: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Arg-max displacement of a similarity volume ``(B, T, K, W*W, h, w)``.

    Returns ``(dy, dx, peak)``, each ``(T, K, h, w)``: the displacement (in feature cells) of
    the most similar neighbour position, and that similarity. Index ``i*W + j`` is the
    displacement ``(i - r, j - r)``. A position whose peak is no higher than its similarity
    at zero displacement (a flat patch, or a zero neighbour outside the clip) reads as no motion.
    """
    window = math.isqrt(volume.shape[3])
    if window * window != volume.shape[3]:
        raise ValueError(f"similarity volume has {volume.shape[3]} entries per position, not W*W")
    patches = volume[clip_index].float()
    peak, index = patches.max(dim=2)
    radius = window // 2
    still = peak <= patches[:, :, radius * window + radius]
    dy = torch.where(still, 0, index // window - radius)
    dx = torch.where(still, 0, index % window - radius)
    return dy.cpu().numpy(), dx.cpu().numpy(), peak.cpu().numpy()


def motion_gain(volume: torch.Tensor, clip_index: int = 0) -> np.ndarray:
    """How much better the best displaced match is than no motion: ``peak - S(0, 0)``, ``(T, K, h, w)``."""
    window = math.isqrt(volume.shape[3])
    patches = volume[clip_index].float()
    centre = patches[:, :, (window // 2) * (window + 1)]
    return (patches.max(dim=2).values - centre).cpu().numpy()


def displacement_colours(dy: np.ndarray, dx: np.ndarray, peak: np.ndarray, radius: int) -> np.ndarray:
    """HSV colouring of a displacement field -> RGB in [0, 1], shape ``(..., 3)``.

    Hue is the direction (0 = right, counter-clockwise on screen), saturation the length
    relative to the window's corner, brightness the peak similarity clipped to [0, 1].
    """
    hue = (np.arctan2(-dy, dx) / (2 * np.pi)) % 1.0  # screen y points down
    saturation = np.clip(np.hypot(dy, dx) / (radius * math.sqrt(2)), 0, 1)
    value = np.clip(peak, 0, 1)
    return mcolors.hsv_to_rgb(np.stack([hue, saturation, value], axis=-1))


def residual_norms(branch: torch.Tensor, num_frames: int, clip_index: int = 0) -> np.ndarray:
    """Channel L2 norm of a block's branch ``(B*T, C, H, W)`` for one clip -> ``(T, H, W)``."""
    clip = branch.reshape(-1, num_frames, *branch.shape[1:])[clip_index]
    return clip.float().norm(dim=1).cpu().numpy()


def _change_energy(capture: BlockCapture, frame: int, offset: int, clip_index: int = 0) -> np.ndarray:
    """Channel norm of ``input[t + o] - input[t]`` pooled onto the cue's ``(h, w)`` grid."""
    x = capture.input.reshape(-1, capture.num_frames, *capture.input.shape[1:])[clip_index].float()
    change = (x[frame + offset] - x[frame]).norm(dim=0)[None, None]
    return F.adaptive_avg_pool2d(change, capture.cue.shape[-2:])[0, 0].cpu().numpy()


def moving_points(capture: BlockCapture, frame: int, offset: int, count: int = 3, margin: int = 1,
                  clip_index: int = 0) -> list[tuple[int, int]]:
    """``count`` feature positions ``(y, x)`` of ``frame`` on the content that moves towards
    ``frame + offset``, at least ``margin`` cells from the map's border and not adjacent to each other.

    A position's score is how much its best displaced match beats no motion (:func:`motion_gain`)
    plus how much the block's input changes there between the two frames (scaled to [0, 1]):
    static background scores zero on both, so the points land on what moves. Positions scoring at
    least a quarter of the best are taken first spaced apart, then adjacent ones; the rest of the
    map only when too little moves.
    """
    if not 0 <= frame + offset < capture.num_frames:
        raise ValueError(f"frame {frame} + offset {offset:+d} is outside the clip's {capture.num_frames} "
                         "frames: the block compares with zeros there")
    k = capture.offsets.index(offset)
    gain = np.clip(motion_gain(capture.cue, clip_index)[frame, k], 0, None)
    change = _change_energy(capture, frame, offset, clip_index)
    score = gain + change / max(float(change.max()), 1e-12)
    h, w = score.shape
    margin = min(margin, (min(h, w) - 1) // 2)
    allowed = np.zeros_like(score, dtype=bool)
    allowed[margin:h - margin, margin:w - margin] = True
    ranked = [divmod(int(i), w) for i in np.argsort(-score, axis=None, kind="stable")]
    ranked = [(y, x) for y, x in ranked if allowed[y, x]]
    moving = [p for p in ranked if score[p] >= 0.25 * score[ranked[0]] > 0]
    points: list[tuple[int, int]] = []
    for candidates, spaced in ((moving, True), (moving, False), (ranked, False)):
        for y, x in candidates:
            if len(points) == count:
                return points
            if (y, x) not in points and not (spaced and any(max(abs(y - py), abs(x - px)) <= 1
                                                            for py, px in points)):
                points.append((y, x))
    return points[:count]


def similarity_patch(capture: BlockCapture, frame: int, offset: int, y: int, x: int,
                     clip_index: int = 0) -> np.ndarray:
    """The ``W x W`` similarity patch of a ``mul`` block at feature position ``(y, x)``: entry
    ``(i, j)`` compares the anchor with the neighbour at ``(y + i - r, x + j - r)``; entries
    whose neighbour position falls outside the map are NaN (no data, not a similarity of 0)."""
    window, radius = capture.window, capture.window // 2
    volume = capture.cue[clip_index, frame, capture.offsets.index(offset)].float().cpu().numpy()
    h, w = volume.shape[1:]
    if not (0 <= y < h and 0 <= x < w):
        raise ValueError(f"point {(y, x)} is outside the {h}x{w} feature map")
    patch = volume[:, y, x].reshape(window, window).copy()
    rows = y + np.arange(window) - radius
    cols = x + np.arange(window) - radius
    outside = ~((rows >= 0) & (rows < h))[:, None] | ~((cols >= 0) & (cols < w))[None, :]
    patch[outside] = np.nan
    return patch


# ---------------------------------------------------------------- figures

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
    fig.suptitle(f"{capture.title} - {OP_TITLES[capture.op]}\n{OP_HEAT[capture.op]}\n{OFFSET_ZERO_NOTE}", fontsize=10)
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
    fig.suptitle(f"{capture.title} - {OP_TITLES['mul']}\n"
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
                        std: Sequence[float], out_dir: str | Path | None = None,
                        prefix: str = "") -> dict[str, Figure]:
    """Every figure for one model and one normalised clip ``(T, 3, H, W)``:
    ``<op>_cue`` per block, ``mul_patches`` for a mul block, and ``residuals``.
    With ``out_dir`` they are also saved there as ``<prefix><name>.png``."""
    captures = run_capture(model, clip)
    frames = denormalize(clip, mean, std)
    figures: dict[str, Figure] = {}
    for index, capture in enumerate(captures):
        key = capture.op if sum(c.op == capture.op for c in captures) == 1 else f"{capture.op}{index}"
        figures[f"{key}_cue"] = plot_block(frames, capture)
        if capture.op == "mul":
            figures[f"{key}_patches"] = plot_similarity_patches(frames, capture)
    figures["residuals"] = plot_residuals(frames, captures)
    if out_dir is not None:
        for name, fig in figures.items():
            save_figure(fig, Path(out_dir) / f"{prefix}{name}.png")
    return figures


# ---------------------------------------------------------------- run summaries

def plot_training_curves(histories: Mapping[str, Sequence[dict]]) -> Figure:
    """Training loss and validation top-1 per epoch for several runs (``metrics.jsonl`` records)."""
    if not histories:
        raise ValueError("no runs to plot")
    fig = Figure(figsize=(11, 4), layout="constrained")
    loss_ax, acc_ax = fig.subplots(1, 2)
    for label, records in histories.items():
        epochs = [r["epoch"] + 1 for r in records]
        loss_ax.plot(epochs, [r["train_loss"] for r in records], marker=".", label=label)
        scored = [r for r in records if "val_top1" in r]
        acc_ax.plot([r["epoch"] + 1 for r in scored], [r["val_top1"] for r in scored], marker=".", label=label)
    loss_ax.set(xlabel="epoch", ylabel="training loss", title="training loss")
    acc_ax.set(xlabel="epoch", ylabel="validation top-1 (%)", title="validation top-1 (single view)",
               ylim=(0, 100))
    acc_ax.legend(fontsize=8, loc="lower right", ncols=2)
    for ax in (loss_ax, acc_ax):
        ax.grid(alpha=0.3)
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
