"""The one writer of the benchmark: clips as H.264 videos (and JPEG frame folders), SS-format lists,
``labels.csv`` and the generator settings, rendered pair by pair in worker processes."""
from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
import torch
from PIL import Image

from .tracks import TRACK_ROOTS, benchmark_track, class_clip, pair_clips

log = logging.getLogger(__name__)

SPEC_FILE = "benchmark.json"  # the generator settings, written beside the lists


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
    video_lines, frame_lines = [], []
    for k in range(job.per_class):
        # the split's index seeds its clips: every split has clips of its own
        rng = np.random.default_rng([job.seed, job.split_id, job.pair, k])
        for label, ordered in pair_clips(job.track, job.pair, rng, job.size, job.num_frames, job.settings):
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


def write_class_video(track: str, class_name: str, path: str | Path, seed: int = 0) -> Path:
    """:func:`class_clip` written to the ``.mp4`` file ``path``: a benchmark video to look at (or
    feed a model) without the benchmark on disk."""
    write_mp4(path, class_clip(track, class_name, seed))
    return Path(path)
