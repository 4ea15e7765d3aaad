"""The shapes track: one or two flat objects moving over a static background.

Difficulty choices (defaults, at 96 px; the ``synthetic`` preset scales to 72 and crops 64):
  * objects: disk, square, triangle, hexagon, ellipse or bar, radius 12-17 % of the frame
    (8-11 px after scaling), colour kept far from the background's mean colour and brighter
    than it (``polarity="bright"``; backgrounds are drawn from the darker 0-160 range). With
    ``polarity="any"`` the sign of a frame difference says nothing about which way an edge
    moved until the model has learnt what is object and what is background, which makes the
    task markedly harder for ATM(sub) trained from scratch;
  * motion spans a good part of the frame: translations travel 45-70 % of the width,
    approaching objects grow 2-3x, rotations turn 120-200 degrees (bars, triangles, ellipses),
    appearing objects fade in from fully transparent, two converging objects close a gap of
    55-75 % of the frame to a few pixels;
  * backgrounds: flat, gradient or low-frequency texture, plus a fixed fine texture, 0-2 small
    static distractor shapes, and per-frame Gaussian noise (sigma 0-4 grey levels).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

CLASSES = (
    "moving_left", "moving_right",
    "moving_up", "moving_down",
    "approaching", "receding",
    "rotating_clockwise", "rotating_anticlockwise",
    "appearing", "disappearing",
    "converging", "diverging",
)
# The forward (first) class of each pair.
MOTIONS = ("left", "up", "approach", "clockwise", "appear", "converge")
# Labels a horizontal mirror image changes (the other pairs are mirror-invariant).
FLIP_LABELS = {0: 1, 1: 0, 6: 7, 7: 6}
BACKGROUNDS = ("flat", "gradient", "texture", "stripes")
SHAPES = ("disk", "square", "triangle", "hexagon", "ellipse", "bar")
ROTATING_SHAPES = ("triangle", "ellipse", "bar")
POLARITIES = ("bright", "any")


@dataclass(frozen=True)
class Difficulty:
    """Ranges are (low, high), drawn uniformly per clip; lengths are fractions of the frame."""

    radius: tuple[float, float] = (0.12, 0.17)
    travel: tuple[float, float] = (0.45, 0.70)
    growth: tuple[float, float] = (2.0, 3.0)
    rotation_deg: tuple[float, float] = (120.0, 200.0)
    gap: tuple[float, float] = (0.55, 0.75)
    distractors: tuple[int, int] = (0, 2)
    distractor_radius: tuple[float, float] = (0.04, 0.07)
    noise: tuple[float, float] = (0.0, 4.0)  # per-frame Gaussian noise sigma, grey levels
    texture: tuple[float, float] = (0.0, 4.0)  # sigma of the background's fixed fine texture
    # "stripes" (high-contrast static bars) is available and makes the task markedly harder
    backgrounds: tuple[str, ...] = ("flat", "gradient", "texture")
    min_contrast: float = 140.0  # L1 distance (0-765) between object and background mean colour
    # "bright": moving objects are brighter than the background (whose colours are drawn darker,
    # 0-160 per channel) by min_contrast / 3 grey levels on average; "any": either way round
    polarity: str = "bright"
    qp: int = 20  # H.264 quantiser


def _polygon(n: int, aspect: float = 1.0) -> np.ndarray:
    angles = 2 * np.pi * np.arange(n) / n - np.pi / 2
    return np.stack([np.cos(angles), aspect * np.sin(angles)], 1)


_POLYGONS = {
    "square": np.array([[-0.85, -0.85], [0.85, -0.85], [0.85, 0.85], [-0.85, 0.85]]),
    "triangle": _polygon(3, aspect=1.3),
    "hexagon": _polygon(6),
    "bar": np.array([[-1.0, -0.28], [1.0, -0.28], [1.0, 0.28], [-1.0, 0.28]]),
}


def _coverage(shape: str, cx: np.ndarray, cy: np.ndarray, radius: np.ndarray, angle: np.ndarray,
              size: int) -> np.ndarray:
    """Anti-aliased coverage in [0, 1] of one shape in every frame: (N, size, size).
    Centre, radius and angle are per-frame arrays (N,). Angles grow clockwise on screen."""
    grid = np.arange(size, dtype=np.float32) + 0.5
    dx = grid[None, None, :] - cx[:, None, None]
    dy = grid[None, :, None] - cy[:, None, None]
    r = radius[:, None, None]
    cos, sin = np.cos(angle)[:, None, None], np.sin(angle)[:, None, None]
    u, v = cos * dx + sin * dy, -sin * dx + cos * dy  # shape-local coordinates, in pixels
    if shape == "disk":
        inside = r - np.hypot(u, v)
    elif shape == "ellipse":
        inside = r * 0.45 * (1 - np.hypot(u / r, v / (0.45 * r)))
    else:
        vertices = _POLYGONS[shape]
        inside = np.full(u.shape, np.inf, dtype=np.float32)
        for a, b in zip(vertices, np.roll(vertices, -1, axis=0)):
            edge = b - a
            normal = np.array([edge[1], -edge[0]]) / np.hypot(*edge)
            if normal @ a > 0:  # make it point inwards, whatever the vertex order
                normal = -normal
            inside = np.minimum(inside, u * normal[0] + v * normal[1] - r * (normal @ a))
    return np.clip(inside + 0.5, 0, 1).astype(np.float32)


def _colour_away_from(rng: np.random.Generator, reference: np.ndarray,
                      contrast: float, polarity: str) -> np.ndarray:
    brighter = polarity == "bright"
    for _ in range(100):
        colour = rng.uniform(0, 255, 3)
        if np.abs(colour - reference).sum() >= contrast and (
                not brighter or colour.mean() >= reference.mean() + contrast / 3):
            return colour
    return np.full(3, 255.0) if brighter else 255 - reference  # always far enough


def _background(rng: np.random.Generator, size: int, d: Difficulty) -> np.ndarray:
    """A static (size, size, 3) float background: flat, gradient, texture or stripes."""
    if d.polarity not in POLARITIES:
        raise ValueError(f"polarity must be one of {POLARITIES}, got {d.polarity!r}")
    top = 160.0 if d.polarity == "bright" else 255.0
    base, other = rng.uniform(0, top, 3), rng.uniform(0, top, 3)
    kind = d.backgrounds[rng.integers(len(d.backgrounds))]
    if kind not in BACKGROUNDS:
        raise ValueError(f"background must be one of {BACKGROUNDS}, got {kind!r}")
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    if kind == "flat":
        mix = np.zeros((size, size), np.float32)
    elif kind == "gradient":
        theta = rng.uniform(0, 2 * np.pi)
        mix = (np.cos(theta) * xx + np.sin(theta) * yy)
        mix = (mix - mix.min()) / (mix.max() - mix.min())
    elif kind == "texture":
        cells = int(rng.integers(3, 9))
        coarse = torch.from_numpy(rng.uniform(0, 1, (1, 1, cells, cells)).astype(np.float32))
        mix = F.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=False)
        mix = mix[0, 0].numpy()
        mix = np.clip(mix, 0, 1)
    else:
        theta, period = rng.uniform(0, np.pi), rng.uniform(0.08, 0.25)
        mix = (np.sin(2 * np.pi * (np.cos(theta) * xx + np.sin(theta) * yy) / period) > 0)
        mix = mix.astype(np.float32) * rng.uniform(0.2, 0.6)
    image = base + mix[..., None] * (other - base)
    image += rng.normal(0, rng.uniform(*d.texture), (size, size, 1))  # fixed fine texture
    return image.astype(np.float32)


def _paint(frames: np.ndarray, coverage: np.ndarray, colour: np.ndarray) -> None:
    alpha = coverage[..., None]
    frames *= 1 - alpha
    frames += alpha * colour.astype(np.float32)


@dataclass
class _Object:
    """One moving shape; every geometric field is a per-frame array (N,)."""

    shape: str
    cx: np.ndarray
    cy: np.ndarray
    radius: np.ndarray
    angle: np.ndarray
    alpha: np.ndarray


def _trajectory(motion: str, rng: np.random.Generator, size: int, n: int,
                d: Difficulty) -> list[_Object]:
    """The objects of one forward clip of ``motion``."""
    t = np.linspace(0, 1, n, dtype=np.float32)

    def const(value: float) -> np.ndarray:
        return np.full(n, value, np.float32)

    radius = rng.uniform(*d.radius) * size
    margin = radius + 3
    shape = str(rng.choice(ROTATING_SHAPES if motion == "clockwise" else SHAPES))
    angle = const(rng.uniform(0, 2 * np.pi))
    if motion in ("left", "up"):
        travel = min(rng.uniform(*d.travel) * size, size - 2 * margin)
        start = margin + travel + rng.uniform() * max(0.0, size - 2 * margin - travel)
        along = start - travel * t  # decreasing coordinate: leftwards / upwards
        across = const(rng.uniform(margin, size - margin))
        cx, cy = (along, across) if motion == "left" else (across, along)
        return [_Object(shape=shape, cx=cx, cy=cy, radius=const(radius), angle=angle,
                        alpha=const(1))]
    if motion == "approach":
        r0 = radius * 0.6
        r1 = min(r0 * rng.uniform(*d.growth), 0.3 * size)
        centre = rng.uniform(r1 + 3, size - r1 - 3, 2)
        return [_Object(shape=shape, cx=const(centre[0]), cy=const(centre[1]),
                     radius=r0 + (r1 - r0) * t, angle=angle, alpha=const(1))]
    if motion == "clockwise":
        radius = radius * 1.8  # long bars / triangles make the turn easy to see
        reach = 1.3 * radius + 2  # the triangle's tip sticks out to 1.3 radii
        centre = rng.uniform(reach, size - reach, 2)
        turn = np.deg2rad(rng.uniform(*d.rotation_deg))
        return [_Object(shape=shape, cx=const(centre[0]), cy=const(centre[1]), radius=const(radius),
                     angle=angle + turn * t, alpha=const(1))]
    if motion == "appear":
        centre = rng.uniform(margin, size - margin, 2)
        t0, t1 = rng.uniform(0, 0.3), rng.uniform(0.6, 1.0)
        alpha = np.clip((t - t0) / (t1 - t0), 0, 1)
        return [_Object(shape=shape, cx=const(centre[0]), cy=const(centre[1]), radius=const(radius),
                     angle=angle, alpha=alpha)]
    # converge: two objects on a random axis close the gap between them
    radius = radius * 0.8
    theta = rng.uniform(0, np.pi)
    axis = np.array([np.cos(theta), np.sin(theta)])
    reach = (size - 2 * (radius + 3)) / max(abs(axis[0]), abs(axis[1]))
    gap0 = min(rng.uniform(*d.gap) * size, reach)
    gap1 = 2 * radius + rng.uniform(2, 6)
    gap = gap0 + (gap1 - gap0) * t
    half = gap0 / 2 * np.abs(axis) + radius + 3
    centre = rng.uniform(half, size - half)
    second = str(rng.choice(SHAPES))
    return [_Object(shape=s, cx=centre[0] + sign * gap / 2 * axis[0],
                    cy=centre[1] + sign * gap / 2 * axis[1],
                 radius=const(radius), angle=angle, alpha=const(1))
            for s, sign in ((shape, -1), (second, 1))]


def render_clip(motion: str, rng: np.random.Generator, size: int = 96, num_frames: int = 24,
                difficulty: Difficulty = Difficulty()) -> np.ndarray:
    """One forward clip of ``motion`` (an entry of MOTIONS) as (num_frames, size, size, 3) uint8
    (the reversed class of the pair: :func:`~atm_core.data.synthetic.tracks.pair_clips`)."""
    if motion not in MOTIONS:
        raise ValueError(f"motion must be one of {MOTIONS}, got {motion!r}")
    d = difficulty
    background = _background(rng, size, d)
    for _ in range(int(rng.integers(d.distractors[0], d.distractors[1] + 1))):
        r = rng.uniform(*d.distractor_radius) * size
        cx, cy = rng.uniform(r, size - r, 2)
        cover = _coverage(str(rng.choice(SHAPES)), np.array([cx]), np.array([cy]), np.array([r]),
                          np.array([rng.uniform(0, 2 * np.pi)]), size)
        background = background.copy()
        _paint(background[None], cover, rng.uniform(0, 255, 3))
    frames = np.repeat(background[None], num_frames, axis=0)
    reference = background.reshape(-1, 3).mean(0)
    for obj in _trajectory(motion, rng, size, num_frames, d):
        cover = _coverage(obj.shape, obj.cx, obj.cy, obj.radius, obj.angle, size)
        colour = _colour_away_from(rng, reference, d.min_contrast, d.polarity)
        _paint(frames, cover * obj.alpha[:, None, None], colour)
    frames += rng.normal(0, rng.uniform(*d.noise), frames.shape).astype(np.float32)
    return np.clip(np.rint(frames), 0, 255).astype(np.uint8)
