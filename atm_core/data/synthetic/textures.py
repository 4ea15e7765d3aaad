"""The real-texture track of the built-in benchmark: camera and object motion over photographs.

Every clip is cut from public-domain / CC0 photographs and textures that ship inside
scikit-image's wheel (:data:`PHOTOS`, licences beside each name), moved the way a camera and
objects move: pans in four directions, zoom, camera roll, a photo cut-out travelling over another
photo, and a photo sliding in to cover the view. The frames carry motion blur (each frame
averages sub-frames along the motion), a little hand-held shake, sensor-like noise (read noise
plus signal-dependent shot noise, per-frame gain flicker), and H.264 compression at a realistic
quantiser (:class:`TextureDifficulty`, ``qp``).

The 12 classes form 6 time-reversal pairs exactly as in the shapes track: clip ``k`` of class
``2p + 1`` is clip ``k`` of class ``2p`` played backwards, so an order-blind model stays at 50 %
within a pair. Nothing here separates object from background by brightness or flatness: every
surface is photographic texture, and the moving and the static parts are drawn from the same
pool of photographs.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F

CLASSES = (
    "panning_left", "panning_right",
    "panning_up", "panning_down",
    "zooming_in", "zooming_out",
    "rolling_clockwise", "rolling_anticlockwise",
    "object_moving_left", "object_moving_right",
    "covering", "uncovering",
)
MOTIONS = ("pan_left", "pan_up", "zoom_in", "roll_clockwise", "object_left", "cover")
# Labels a horizontal mirror image changes: left/right pans and objects, the sense of the roll.
FLIP_LABELS = {0: 1, 1: 0, 6: 7, 7: 6, 8: 9, 9: 8}
# skimage.data loaders and their licences, as scikit-image documents them.
PHOTOS = {
    "astronaut": "NASA, public domain",
    "coffee": "Rachel Michetti, CC0",
    "chelsea": "Stefan van der Walt, CC0",
    "rocket": "SpaceX, public domain",
    "hubble_deep_field": "NASA, public domain",
    "immunohistochemistry": "no known copyright restrictions",
    "camera": "Lav Varshney, CC0",
    "brick": "CC0Textures, CC0",
    "grass": "CC0Textures, CC0",
    "gravel": "CC0Textures, CC0",
}
PHOTO_SIDE = 256  # photographs are resized to this short side once


@dataclass(frozen=True)
class TextureDifficulty:
    """Ranges are (low, high), drawn uniformly per clip; lengths are fractions of the view."""

    view: tuple[float, float] = (0.35, 0.5)  # view width as a fraction of the photo's short side
    pan: tuple[float, float] = (0.8, 1.1)  # camera travel, in view widths
    zoom: tuple[float, float] = (2.5, 3.5)  # ratio of the first to the last view width
    roll_deg: tuple[float, float] = (100.0, 150.0)
    object_radius: tuple[float, float] = (0.18, 0.26)
    object_travel: tuple[float, float] = (0.6, 0.8)
    cover: tuple[float, float] = (0.75, 1.0)  # share of the view the sliding photo ends up covering
    shake: float = 0.6  # hand-held jitter, pixels of the output frame (standard deviation)
    read_noise: tuple[float, float] = (1.0, 3.0)  # grey levels
    shot_noise: tuple[float, float] = (0.1, 0.3)  # sigma = shot * sqrt(intensity)
    flicker: float = 0.015  # per-frame gain, standard deviation
    blur_samples: int = 3  # sub-frames averaged per frame (motion blur)
    qp: int = 28  # H.264 quantiser
    photos: tuple[str, ...] = tuple(PHOTOS)  # the photographs clips are cut from


@lru_cache(maxsize=None)
def photo(name: str) -> torch.Tensor:
    """A photograph of :data:`PHOTOS` as float (3, H, W) in 0-255, short side :data:`PHOTO_SIDE`."""
    from skimage import data

    if name not in PHOTOS:
        raise ValueError(f"unknown photograph {name!r}; choose from {sorted(PHOTOS)}")
    image = np.asarray(getattr(data, name)(), dtype=np.float32)
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    tensor = torch.from_numpy(image[..., :3]).permute(2, 0, 1)[None]
    scale = PHOTO_SIDE / min(tensor.shape[-2:])
    size = [round(s * scale) for s in tensor.shape[-2:]]
    return F.interpolate(tensor, size=size, mode="bilinear", antialias=True, align_corners=False)[0]


@dataclass
class _View:
    """Camera views over one photograph, per sub-frame: centre (pixels), half-width, roll angle."""

    cx: np.ndarray
    cy: np.ndarray
    half: np.ndarray
    angle: np.ndarray


def _sample(image: torch.Tensor, view: _View, size: int) -> torch.Tensor:
    """The views of ``image`` rendered at ``size``: (N, 3, size, size)."""
    height, width = image.shape[-2:]
    n = len(view.cx)
    cos, sin = np.cos(view.angle), np.sin(view.angle)
    theta = np.zeros((n, 2, 3), np.float32)
    # output coordinates in [-1, 1] -> photo pixels -> the photo's normalised coordinates
    theta[:, 0, 0], theta[:, 0, 1] = view.half * cos / (width / 2), -view.half * sin / (width / 2)
    theta[:, 1, 0], theta[:, 1, 1] = view.half * sin / (height / 2), view.half * cos / (height / 2)
    theta[:, 0, 2], theta[:, 1, 2] = view.cx / (width / 2) - 1, view.cy / (height / 2) - 1
    grid = F.affine_grid(torch.from_numpy(theta), [n, 3, size, size], align_corners=False)
    return F.grid_sample(image.expand(n, -1, -1, -1), grid, mode="bilinear", padding_mode="reflection",
                         align_corners=False)


def _camera(motion: str, rng: np.random.Generator, t: np.ndarray, image: torch.Tensor,
            d: TextureDifficulty) -> _View:
    height, width = image.shape[-2:]
    half = rng.uniform(*d.view) * min(height, width) / 2
    const = np.full(len(t), 1.0)
    angle = const * rng.uniform(-0.1, 0.1)
    if motion in ("pan_left", "pan_up"):
        along_extent, across_extent = (width, height) if motion == "pan_left" else (height, width)
        # the view stays inside the photo: a mirrored border would move the other way
        travel = min(rng.uniform(*d.pan) * 2 * half, along_extent - 2 * half - 1)
        start = rng.uniform(half + travel, along_extent - half)
        along = start - travel * t  # the view moves left / up
        across = const * rng.uniform(half, across_extent - half)
        cx, cy = (along, across) if motion == "pan_left" else (across, along)
        return _View(cx, cy, const * half, angle)
    reach = half * (1.15 if motion == "roll_clockwise" else 1.0)  # a turned view reaches further out
    centre = [rng.uniform(reach, width - reach), rng.uniform(reach, height - reach)]
    if motion == "zoom_in":
        ratio = rng.uniform(*d.zoom)
        return _View(const * centre[0], const * centre[1], half * ratio ** -t, angle)
    if motion == "roll_clockwise":  # the camera turns anticlockwise, the scene clockwise on screen
        turn = np.deg2rad(rng.uniform(*d.roll_deg))
        return _View(const * centre[0], const * centre[1], const * half * 0.8, angle - turn * t)
    return _View(const * centre[0], const * centre[1], const * half, angle)  # a still camera


def _soft_mask(size: int, cx: np.ndarray, cy: np.ndarray, radius: float, aspect: float,
               rounded: bool) -> torch.Tensor:
    """(N, 1, size, size) anti-aliased ellipse or rounded rectangle around per-frame centres."""
    grid = torch.arange(size, dtype=torch.float32) + 0.5
    dx = (grid[None, None, :] - torch.from_numpy(cx).float()[:, None, None]) / radius
    dy = (grid[None, :, None] - torch.from_numpy(cy).float()[:, None, None]) / (radius * aspect)
    if rounded:
        distance = (dx.abs() ** 4 + dy.abs() ** 4) ** 0.25
    else:
        distance = torch.hypot(dx, dy)
    return ((1 - distance) * radius + 0.5).clamp(0, 1)[:, None]


def render_texture_clip(motion: str, rng: np.random.Generator, size: int = 96, num_frames: int = 24,
                        difficulty: TextureDifficulty = TextureDifficulty()) -> np.ndarray:
    """One forward clip of ``motion`` (an entry of :data:`MOTIONS`) as (num_frames, size, size, 3)
    uint8; the reversed class of the pair is ``render_texture_clip(...)[::-1]``."""
    if motion not in MOTIONS:
        raise ValueError(f"motion must be one of {MOTIONS}, got {motion!r}")
    d = difficulty
    names = list(d.photos)
    scene, other = (photo(names[i]) for i in rng.choice(len(names), 2, replace=False))
    k = d.blur_samples
    # sub-frame times: frame i averages k samples spread over its exposure, within [0, 1]
    t = np.clip((np.arange(num_frames)[:, None] + (np.arange(k) - (k - 1) / 2) / k)
                / max(num_frames - 1, 1), 0, 1).ravel()
    if motion in ("object_left", "cover"):
        frames = _sample(scene, _camera("still", rng, np.zeros(len(t)), scene, d), size)
        wide = _camera("still", rng, np.zeros(1), other, d)  # twice the view, at the scene's scale: room to travel
        wide.half = np.minimum(2 * wide.half, min(other.shape[-2:]) / 2)
        layer = _sample(other, wide, 2 * size)
        if motion == "object_left":
            radius = rng.uniform(*d.object_radius) * size
            aspect = rng.uniform(0.7, 1.3)
            travel = rng.uniform(*d.object_travel) * size
            start = rng.uniform(radius + travel, max(radius + travel, size - radius))
            cx = start - travel * t
            cy = np.full(len(t), rng.uniform(radius * aspect, size - radius * aspect))
            mask = _soft_mask(size, cx, cy, radius, aspect, rounded=bool(rng.integers(2)))
            offsets = np.stack([cx - size / 2, cy - size / 2], 1)  # the cut-out's texture moves with it
        else:
            side = int(rng.integers(4))  # the covering photo enters from the left, right, top or bottom
            reach = rng.uniform(*d.cover) * size
            edge = reach * t  # how far the covering photo reaches into the view
            coordinate = torch.arange(size, dtype=torch.float32) + 0.5
            inside = (torch.from_numpy(edge).float()[:, None] - coordinate[None] + 0.5).clamp(0, 1)
            if side in (1, 3):
                inside = inside.flip(1)
            mask = inside[:, None, None, :] if side < 2 else inside[:, None, :, None]
            mask = mask.expand(-1, 1, size, size)
            sign = 1 if side in (0, 2) else -1
            shift = sign * (edge - size)
            offsets = np.stack([shift, np.zeros_like(shift)] if side < 2 else [np.zeros_like(shift), shift], 1)
        cut = torch.stack([_shifted(layer[0], offset, size) for offset in offsets])
        frames = frames * (1 - mask) + cut * mask
    else:
        frames = _sample(scene, _camera(motion, rng, t, scene, d), size)
    frames = frames.view(num_frames, k, 3, size, size).mean(1)  # motion blur
    return _sensor(frames, rng, d)


def _shifted(layer: torch.Tensor, offset: np.ndarray, size: int) -> torch.Tensor:
    """The ``size`` window of the (3, 2*size, 2*size) ``layer`` whose centre sits ``offset`` pixels
    from the view's centre (sub-pixel, bilinear)."""
    theta = torch.tensor([[[0.5, 0.0, -offset[0] / size], [0.0, 0.5, -offset[1] / size]]], dtype=torch.float32)
    grid = F.affine_grid(theta, [1, 3, size, size], align_corners=False)
    return F.grid_sample(layer[None], grid, mode="bilinear", padding_mode="reflection", align_corners=False)[0]


def _sensor(frames: torch.Tensor, rng: np.random.Generator, d: TextureDifficulty) -> np.ndarray:
    """Hand-held shake, gain flicker, shot and read noise; (N, 3, H, W) float -> (N, H, W, 3) uint8."""
    n, _, size, _ = frames.shape
    shake = rng.normal(0, d.shake, (n, 2)) / (size / 2)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = theta[:, 1, 1] = 1
    theta[:, :, 2] = torch.from_numpy(shake).float()
    grid = F.affine_grid(theta, list(frames.shape), align_corners=False)
    frames = F.grid_sample(frames, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    frames = frames.permute(0, 2, 3, 1).numpy()
    frames = frames * (1 + rng.normal(0, d.flicker, (n, 1, 1, 1)))
    shot = rng.uniform(*d.shot_noise) * np.sqrt(np.clip(frames, 0, None))
    frames = frames + rng.normal(0, 1, frames.shape) * shot + rng.normal(0, rng.uniform(*d.read_noise), frames.shape)
    return np.clip(np.rint(frames), 0, 255).astype(np.uint8)
