"""The benchmark's tracks and the rule they share: the second class of every pair is the first
played backwards."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from . import shapes, textures

DEFAULT_ROOT = "data/synthetic"  # where the recipes keep the benchmark (relative to the working dir)
TRACK_ROOTS = {"shapes": DEFAULT_ROOT, "textures": "data/synthetic_textures"}


@dataclass(frozen=True)
class Track:
    """One family of clips of the benchmark: its classes (forward, reversed per pair), the forward
    motion of each pair, the generator settings and the renderer ``render(motion, rng, size,
    num_frames, settings)``."""

    classes: tuple[str, ...]
    motions: tuple[str, ...]
    flip_labels: dict[int, int]
    settings: type
    render: Callable[..., np.ndarray]


TRACKS = {
    "shapes": Track(shapes.CLASSES, shapes.MOTIONS, shapes.FLIP_LABELS, shapes.Difficulty,
                    shapes.render_clip),
    "textures": Track(textures.CLASSES, textures.MOTIONS, textures.FLIP_LABELS,
                      textures.TextureDifficulty, textures.render_texture_clip),
}


def benchmark_track(name: str) -> Track:
    if name not in TRACKS:
        raise ValueError(f"unknown benchmark track {name!r}; choose from {sorted(TRACKS)}")
    return TRACKS[name]


def pair_clips(track: str, pair: int, rng: np.random.Generator, size: int = 96, num_frames: int = 24,
               settings=None) -> list[tuple[int, np.ndarray]]:
    """The two classes of reversal pair ``pair`` of ``track`` drawn with ``rng``: ``[(2p, clip),
    (2p + 1, the same clip played backwards)]`` -- the rule that makes the pair's frames identical
    and only their order tell the classes apart. ``settings``: the track's defaults when None."""
    kind = benchmark_track(track)
    if not 0 <= pair < len(kind.motions):
        raise ValueError(f"track {track!r} has pairs 0..{len(kind.motions) - 1}, got {pair}")
    settings = kind.settings() if settings is None else settings
    clip = kind.render(kind.motions[pair], rng, size, num_frames, settings)
    return [(2 * pair, clip), (2 * pair + 1, np.ascontiguousarray(clip[::-1]))]


def class_clip(track: str, class_name: str, seed: int = 0, size: int = 96, num_frames: int = 24) -> np.ndarray:
    """One clip of ``class_name`` of ``track`` (default settings, drawn with ``seed``) as
    ``(num_frames, size, size, 3)`` uint8."""
    kind = benchmark_track(track)
    if class_name not in kind.classes:
        raise ValueError(f"unknown class {class_name!r} of the {track} track; classes: {list(kind.classes)}")
    label = kind.classes.index(class_name)
    return pair_clips(track, label // 2, np.random.default_rng(seed), size, num_frames)[label % 2][1]
