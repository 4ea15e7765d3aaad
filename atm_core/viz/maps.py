"""Captured tensors -> numpy maps: cue norms, displacement fields, similarity patches, residuals."""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib import colors as mcolors

from .capture import BlockCapture


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
