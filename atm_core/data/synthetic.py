"""The built-in temporal benchmark: 12 classes in 6 time-reversal pairs.

    python -m atm_core.data.synthetic --out data/synthetic --seed 0 [--frames]

Every clip of the first class of a pair is rendered forward with a random appearance; the
second class of the pair is *the same clip played backwards* (clip ``k`` of class ``2p + 1`` is
clip ``k`` of class ``2p`` reversed, in every split). So the two classes share exactly the same
frames and only their order tells them apart: any order-blind model (TSN: mean of per-frame
scores) gives both members of a reversed pair the same score and cannot exceed 50 % within a
pair, while a temporal model can reach ~100 %.

Difficulty choices (defaults, at 96 px; the ``synthetic`` preset scales to 72 and crops 64):
  * objects: disk, square, triangle, hexagon, ellipse or bar, radius 12-17 % of the frame
    (8-11 px after scaling), colour kept far from the background's mean colour and brighter
    than it (``polarity="bright"``; backgrounds are drawn from the darker 0-160 range). With
    ``polarity="any"`` the sign of a frame difference says nothing about which way an edge
    moved until the model has learnt what is object and what is background: on the tiny ViT
    from scratch, ATM(sub) reached 62 % after 6 epochs with bright objects against 35 % with
    objects of either polarity (clips pre-decoded, same schedule);
  * motion spans a good part of the frame: translations travel 45-70 % of the width,
    approaching objects grow 2-3x, rotations turn 120-200 degrees (bars, triangles, ellipses),
    appearing objects fade in from fully transparent, two converging objects close a gap of
    55-75 % of the frame to a few pixels;
  * backgrounds: flat, gradient or low-frequency texture, plus a fixed fine texture, 0-2 small
    static distractor shapes, and per-frame Gaussian noise (sigma 0-4 grey levels).
The reversal-pair property is not a tunable: it holds for any :class:`Difficulty`.

Storage is exactly like real data: H.264 ``.mp4`` (``videos/``), optionally JPEG frame folders
(``frames/``, ``00001.jpg`` ...), SS-format lists ``train.txt`` / ``val.txt``
(``relative_path num_frames label``; ``train_frames.txt`` / ``val_frames.txt`` for the
folders; ``test.txt`` / ``test_frames.txt`` for the held-out test split when asked for) and ``labels.csv`` (``id,name``). Videos are intra-only with a constant quantiser and
a single-threaded encoder: every frame is coded on its own, so the files are reproducible
byte for byte, and a reversed clip decodes to exactly the reversed frames (the pair property
survives compression). With 24 source frames and T = 8 the TSN segments (3 frames each) are
symmetric under reversal too; keep ``num_frames`` an odd multiple of T for that.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from typing import Callable

import av
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from . import textures

log = logging.getLogger(__name__)

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
SPEC_FILE = "benchmark.json"  # the generator settings, written beside the lists
DEFAULT_ROOT = "data/synthetic"  # where the recipes keep the benchmark (relative to the working dir)
TRACK_ROOTS = {"shapes": DEFAULT_ROOT, "textures": "data/synthetic_textures"}


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
    """One forward clip of ``motion`` (an entry of MOTIONS) as (num_frames, size, size, 3) uint8.
    The reversed class of the pair is ``render_clip(...)[::-1]``."""
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
    "shapes": Track(CLASSES, MOTIONS, FLIP_LABELS, Difficulty, render_clip),
    "textures": Track(textures.CLASSES, textures.MOTIONS, textures.FLIP_LABELS,
                      textures.TextureDifficulty, textures.render_texture_clip),
}


def benchmark_track(name: str) -> Track:
    if name not in TRACKS:
        raise ValueError(f"unknown benchmark track {name!r}; choose from {sorted(TRACKS)}")
    return TRACKS[name]


def write_mp4(path: str | Path, frames: np.ndarray, fps: int = 12, qp: int = 20,
              gop: int = 1) -> None:
    """H.264 (yuv420p) through PyAV, single-threaded so that the bytes are reproducible.
    ``gop = 1`` codes every frame on its own (intra-only)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = "yuv420p"
        stream.thread_count = 1
        stream.options = {"qp": str(qp), "preset": "medium", "threads": "1",
                          "x264-params": f"keyint={gop}:min-keyint={gop}:scenecut=0:bframes=0"}
        container.metadata.clear()
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def write_frames(folder: str | Path, frames: np.ndarray, template: str = "{:05d}.jpg") -> None:
    """A JPEG frame folder, numbered from 1 like SS-V1."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for i, frame in enumerate(frames, start=1):
        Image.fromarray(frame).save(folder / template.format(i), quality=95)


def benchmark_spec(seed: int = 0, *, track: str = "shapes", train_per_class: int = 100,
                   val_per_class: int = 25, test_per_class: int = 0, size: int = 96, num_frames: int = 24,
                   frames: bool = False, difficulty=None) -> dict:
    """The generator settings of :func:`generate_benchmark` as written to ``SPEC_FILE``
    (``difficulty``: the track's settings, its defaults when None)."""
    settings = benchmark_track(track).settings
    difficulty = settings() if difficulty is None else difficulty
    if not isinstance(difficulty, settings):
        raise ValueError(f"track {track!r} takes {settings.__name__} settings, got {type(difficulty).__name__}")
    spec = {"seed": seed, "track": track, "train_per_class": train_per_class, "val_per_class": val_per_class,
            "test_per_class": test_per_class, "size": size, "num_frames": num_frames, "frames": frames,
            "difficulty": dataclasses.asdict(difficulty)}
    return json.loads(json.dumps(spec))  # tuples as lists, as read back from the file


def spec_differences(root: str | Path, spec: dict) -> list[str]:
    """Keys in which the benchmark under ``root`` was generated differently from ``spec``
    (``[SPEC_FILE]`` when the folder does not say how it was generated)."""
    path = Path(root) / SPEC_FILE
    if not path.is_file():
        return [SPEC_FILE]

    def flat(d: dict) -> dict:
        return {**{k: v for k, v in d.items() if k != "difficulty"},
                **{f"difficulty.{k}": v for k, v in d.get("difficulty", {}).items()}}

    ours, theirs = flat(spec), flat(json.loads(path.read_text()))
    return sorted(k for k in ours.keys() | theirs.keys() if ours.get(k) != theirs.get(k))


def track_settings(track: str, values: dict):
    """The settings dataclass of ``track`` from a dict of its fields (lists as tuples, as JSON
    and YAML give them); unknown fields are a ``ValueError`` naming them."""
    kind = benchmark_track(track).settings
    fields = {f.name for f in dataclasses.fields(kind)}
    unknown = set(values) - fields
    if unknown:
        raise ValueError(f"difficulty has unknown field(s) {sorted(unknown)} for track {track!r}; "
                         f"valid: {sorted(fields)}")
    return kind(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})


@dataclass(frozen=True)
class _PairJob:
    """The clips of one reversal pair in one split: what a generator worker writes."""

    out: Path
    track: str
    seed: int
    split_id: int
    split: str
    pair: int
    per_class: int
    size: int
    num_frames: int
    frames: bool
    settings: object


def _write_pair(job: _PairJob) -> tuple[list[str], list[str]]:
    """Render and write the pair's clips, forward and reversed; their video and frame list lines."""
    kind = benchmark_track(job.track)
    motion = kind.motions[job.pair]
    video_lines, frame_lines = [], []
    for k in range(job.per_class):
        # the split's index seeds its clips: every split has clips of its own
        rng = np.random.default_rng([job.seed, job.split_id, job.pair, k])
        clip = kind.render(motion, rng, job.size, job.num_frames, job.settings)
        for label, ordered in ((2 * job.pair, clip), (2 * job.pair + 1, clip[::-1])):
            name = f"{label:02d}_{kind.classes[label]}_{k:04d}"
            write_mp4(job.out / "videos" / job.split / f"{name}.mp4", ordered, qp=job.settings.qp)
            video_lines.append(f"videos/{job.split}/{name}.mp4 {job.num_frames} {label}\n")
            if job.frames:
                write_frames(job.out / "frames" / job.split / name, ordered)
                frame_lines.append(f"frames/{job.split}/{name} {job.num_frames} {label}\n")
    return video_lines, frame_lines


def _single_threaded_worker() -> None:
    torch.set_num_threads(1)


MIN_CLIPS_PER_WORKER = 200  # a worker process takes seconds to start (torch, PyAV): not for a few clips


def _run_pair_jobs(jobs: list[_PairJob], workers: int) -> list[tuple[list[str], list[str]]]:
    workers = min(workers, sum(2 * job.per_class for job in jobs) // MIN_CLIPS_PER_WORKER)
    if workers <= 1:
        return [_write_pair(job) for job in jobs]
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    # spawn, not fork: a forked copy of a process whose OpenMP pool has started can hang
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                             initializer=_single_threaded_worker) as pool:
        return list(pool.map(_write_pair, jobs))


def generate_benchmark(out: str | Path, seed: int = 0, *, track: str = "shapes",
                       train_per_class: int = 100, val_per_class: int = 25, test_per_class: int = 0,
                       size: int = 96, num_frames: int = 24, frames: bool = False, difficulty=None,
                       workers: int = 1) -> dict:
    """Write the benchmark of ``track`` (:data:`TRACKS`) under ``out``, with its settings in
    ``SPEC_FILE``; returns a summary (counts, seconds). ``test_per_class`` > 0 adds a held-out
    test split (``test.txt``) of clips of its own, drawn from the same generator with their own
    seeds. ``difficulty``: the track's settings (its defaults when None). Up to ``workers``
    processes render the pairs side by side (one per :data:`MIN_CLIPS_PER_WORKER` clips at
    most); every clip has its own seed, so the files do not depend on how many."""
    spec = benchmark_spec(seed, track=track, train_per_class=train_per_class, val_per_class=val_per_class,
                          test_per_class=test_per_class, size=size, num_frames=num_frames, frames=frames,
                          difficulty=difficulty)
    kind = benchmark_track(track)
    settings = kind.settings() if difficulty is None else difficulty
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if size % 2:
        raise ValueError(f"size must be even for H.264 yuv420p, got {size}")
    started = time.perf_counter()
    with (out / "labels.csv").open("w") as f:
        f.write("id,name\n" + "".join(f"{i},{name}\n" for i, name in enumerate(kind.classes)))
    splits = [(split_id, split, per_class) for split_id, (split, per_class)
              in enumerate((("train", train_per_class), ("val", val_per_class), ("test", test_per_class)))
              if per_class or split != "test"]
    jobs = [_PairJob(out, track, seed, split_id, split, pair, per_class, size, num_frames, frames, settings)
            for split_id, split, per_class in splits for pair in range(len(kind.motions))]
    written = iter(_run_pair_jobs(jobs, workers))
    for _, split, _ in splits:
        pairs = [next(written) for _ in kind.motions]
        (out / f"{split}.txt").write_text("".join(line for videos, _ in pairs for line in videos))
        if frames:
            (out / f"{split}_frames.txt").write_text("".join(line for _, folders in pairs for line in folders))
    (out / SPEC_FILE).write_text(json.dumps(spec, indent=1) + "\n")
    n = len(kind.classes)
    summary = {"out": str(out), "classes": n, "train": train_per_class * n, "val": val_per_class * n,
               "test": test_per_class * n, **spec, "seconds": round(time.perf_counter() - started, 1)}
    log.info("benchmark written: %s", summary)
    return summary


def ensure_benchmark(root: str | Path, settings: dict, *, create: bool = False,
                     replace: bool = False, workers: int = 1) -> bool:
    """Make ``root`` hold the benchmark :func:`generate_benchmark` writes with ``settings`` (its
    keyword arguments; ``difficulty`` as a dict of the track's settings fields) with ``workers``
    processes; returns whether it wrote it. Call it on one process only.

    An absent ``root`` is written only where the user asked for it: at :data:`DEFAULT_ROOT`, or
    anywhere with ``create`` (else ``FileNotFoundError``, so that a mistyped path never starts a
    generation). A benchmark already there must have been generated with the same settings,
    else it is a ``ValueError`` or, with ``replace``, deleted and written again.
    """
    root = Path(root)
    kwargs = dict(settings)
    name = kwargs.get("track", "shapes")
    if "difficulty" in kwargs:
        kwargs["difficulty"] = track_settings(name, kwargs["difficulty"])
    try:
        spec = benchmark_spec(**kwargs)
    except TypeError as e:
        raise ValueError(str(e)) from e
    default = TRACK_ROOTS[name]
    if not root.exists() and not create and root.resolve() != Path(default).resolve():
        raise FileNotFoundError(f"directory {root} does not exist; the built-in benchmark's {name} track is "
                                f"generated on demand only at its default root {default}")
    differences = spec_differences(root, spec) if (root / "train.txt").is_file() else None
    if differences == []:
        return False
    if differences and not replace:
        what = (f"has no {SPEC_FILE} (written by an older version?)" if differences == [SPEC_FILE]
                else f"was generated with other settings: {', '.join(differences)}")
        raise ValueError(f"the benchmark in {root} {what}; delete the folder to regenerate it, or "
                         "use it as it is by giving no generator settings")
    if differences:
        shutil.rmtree(root)
    generate_benchmark(root, **kwargs, workers=workers)
    return True


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--track", choices=sorted(TRACKS), default="shapes",
                        help="shapes: flat synthetic objects; textures: camera and object motion over photographs")
    parser.add_argument("--train-per-class", type=int, default=100)
    parser.add_argument("--val-per-class", type=int, default=25)
    parser.add_argument("--test-per-class", type=int, default=25, help="held-out test clips (test.txt)")
    parser.add_argument("--size", type=int, default=96, help="frame height and width (even)")
    parser.add_argument("--num-frames", type=int, default=24, help="source frames per clip")
    parser.add_argument("--frames", action="store_true", help="also write JPEG frame folders")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                        help="processes rendering side by side (default: one per CPU core)")
    args = parser.parse_args(argv)
    if Path(args.out).exists() and not Path(args.out).is_dir():
        parser.error(f"--out {args.out} is a file, not a folder")
    for name in ("train_per_class", "val_per_class", "size", "num_frames", "workers"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    summary = generate_benchmark(args.out, args.seed, track=args.track, train_per_class=args.train_per_class,
                                 val_per_class=args.val_per_class,
                                 test_per_class=args.test_per_class, size=args.size,
                                 num_frames=args.num_frames, frames=args.frames, workers=args.workers)
    print(f"wrote {summary['train']} train + {summary['val']} val + {summary['test']} test clips to {summary['out']} "
          f"in {summary['seconds']} s")


if __name__ == "__main__":
    main()
