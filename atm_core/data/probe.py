"""The probing engine: open every video file or frame folder once, check it, count its frames.

Serves ``python -m atm_core.data.prepare`` (which may also extract the frames to JPEG folders)
and the training preflight (:mod:`atm_core.data.preflight`). A probe opens the source with the
same readers the dataset uses and decodes its first and last frame, so that a file that exists
but is empty, truncated or not a video, or a frame folder with a gap, is found before training.

Parallel over processes, with a progress bar, and resumable: each finished probe is appended to a cache
file at once, and a rerun reuses every entry whose source has the same size and modification
time, so an interrupted run redoes only what was not done.
"""
from __future__ import annotations

import dataclasses
import json
import multiprocessing
import os
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import av
from PIL import Image
from tqdm.auto import tqdm

from .errors import DataError
from .readers import FrameFolder, open_video, read_clip, rgb24_converter

SERIAL_BELOW = 64  # fewer sources than this are probed in-process: a pool costs more to start


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the input: ``where`` names the file and line or entry."""

    where: str
    message: str

    def __str__(self) -> str:
        return f"{self.where}: {self.message}"


@dataclass(frozen=True)
class Extraction:
    """Write every frame of a video as ``out_dir/<video path without suffix>/<template>``."""

    out_dir: str
    template: str = "{:05d}.jpg"
    start: int = 1
    short_side: int | None = None  # resize so that the shorter side is this many pixels
    quality: int = 90  # JPEG quality

    def folder(self, path: str) -> Path:
        return Path(self.out_dir) / Path(path).with_suffix("")


@dataclass(frozen=True)
class ProbeSettings:
    """How sources are opened: videos with ``reader``, folders as ``frame_template`` from
    ``frame_start``. Paths are relative to ``root``."""

    root: str
    reader: str = "auto"
    frame_template: str = "{:05d}.jpg"
    frame_start: int = 1
    extraction: Extraction | None = None


@dataclass(frozen=True)
class Probe:
    """The outcome for one source: its frame count (of the extracted folder, when extracting),
    or what is wrong with it."""

    path: str
    frames: int | None
    error: str | None = None


def _count_frame_folder(folder: Path, template: str, start: int) -> int:
    """Frames of a folder named ``template.format(start + i)``; a gap in the numbering is an
    error naming the first missing file."""
    if not folder.is_dir():
        raise DataError(f"{folder}: frame folder not found")
    suffix = Path(template.format(start)).suffix
    names = {p.name for p in folder.iterdir() if p.suffix == suffix}
    count = len(names)
    if count == 0:
        raise DataError(f"{folder}: frame folder has no {suffix} frames")
    missing = [i for i in range(count) if template.format(start + i) not in names]
    if missing:
        raise DataError(f"{folder}: gap in the frames, {template.format(start + missing[0])} is "
                        f"missing ({count} {suffix} files, {len(missing)} of the first {count} "
                        f"names absent)")
    return count


def _extract(video: Path, target: Path, spec: Extraction) -> int:
    """Decode every frame in order and write it as JPEG into ``target`` (via a temporary folder
    renamed at the end, so a folder that exists is complete)."""
    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    count = 0
    to_rgb = rgb24_converter()
    try:
        with av.open(str(video)) as container:
            if not container.streams.video:
                raise DataError(f"{video}: no video stream")
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            for frame in container.decode(stream):
                image = Image.fromarray(to_rgb(frame).to_ndarray())
                if spec.short_side is not None:
                    w, h = image.size
                    scale = spec.short_side / min(w, h)
                    image = image.resize((max(1, round(w * scale)), max(1, round(h * scale))),
                                         Image.BILINEAR)
                image.save(tmp / spec.template.format(spec.start + count), quality=spec.quality)
                count += 1
    except av.FFmpegError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise DataError(f"{video}: corrupt or truncated video, decoding failed after {count} "
                        f"frames ({e})") from e
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if count == 0:
        shutil.rmtree(tmp, ignore_errors=True)
        raise DataError(f"{video}: video has no frames")
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)
    return count


def probe_source(path: str, settings: ProbeSettings) -> Probe:
    """Open one video or frame folder (``path`` relative to ``settings.root``), decode its first
    and last frame and count its frames; with ``settings.extraction``, write its frames."""
    full = Path(settings.root) / path
    try:
        if full.is_dir():
            count = _count_frame_folder(full, settings.frame_template, settings.frame_start)
            FrameFolder(full, settings.frame_template, settings.frame_start, count).read(
                [0, count - 1])
        else:
            video = open_video(full, settings.reader)
            count = len(video)
            read_clip(video, [0, count - 1], settings.reader)
            if settings.extraction is not None:
                count = _extract(full, settings.extraction.folder(path), settings.extraction)
    except DataError as e:
        return Probe(path, None, str(e))
    return Probe(path, count)


def _stamp(path: Path) -> list[int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return [st.st_size, st.st_mtime_ns]


class ProbeCache:
    """An append-only JSON-lines file of finished probes. The first line holds the settings;
    a file written with other settings is started afresh."""

    def __init__(self, file: str | Path, settings: ProbeSettings):
        self.file, self.settings = Path(file), settings
        header = {"settings": dataclasses.asdict(settings)}
        self.entries: dict[str, dict] = {}
        lines = self.file.read_text().splitlines() if self.file.is_file() else []
        if lines and _loads(lines[0]) == header:
            for line in lines[1:]:
                entry = _loads(line)  # a line cut short by an interruption is None
                if entry is not None and "path" in entry:
                    self.entries[entry["path"]] = entry
        else:
            self.file.parent.mkdir(parents=True, exist_ok=True)
            self.file.write_text(json.dumps(header) + "\n")
        self._out = self.file.open("a")

    def lookup(self, path: str) -> Probe | None:
        entry = self.entries.get(path)
        if entry is None or entry["stamp"] != _stamp(Path(self.settings.root) / path):
            return None
        extraction = self.settings.extraction
        if extraction is not None and entry["error"] is None and not extraction.folder(path).is_dir():
            return None
        return Probe(path, entry["frames"], entry["error"])

    def add(self, probe: Probe) -> None:
        stamp = _stamp(Path(self.settings.root) / probe.path)
        if stamp is None:  # a missing file is cheap to look for again
            return
        entry = {"path": probe.path, "stamp": stamp, "frames": probe.frames, "error": probe.error}
        self._out.write(json.dumps(entry) + "\n")
        self._out.flush()

    def close(self) -> None:
        self._out.close()


def _loads(line: str) -> dict | None:
    try:
        return json.loads(line)
    except json.JSONDecodeError:
        return None


def default_workers() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _pool(workers: int):
    # Forked where the platform allows: a spawned worker imports torch and timm again (seconds
    # per worker). The workers only decode (decord, PyAV, PIL) and use no OpenMP or thread pool
    # of the parent, whose locks a forked child could find held.
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("fork" if "fork" in methods else "spawn").Pool(workers)


def _probe_star(args: tuple[str, ProbeSettings]) -> Probe:
    return probe_source(*args)


def probe_all(paths: Iterable[str], settings: ProbeSettings, *, workers: int | None = None,
              cache_file: str | Path | None = None, progress: bool = True,
              desc: str = "probing") -> dict[str, Probe]:
    """Probe every distinct path (``workers`` processes, default: one per available core),
    reusing and extending ``cache_file``. Returns ``{path: Probe}``."""
    paths = list(dict.fromkeys(paths))
    cache = ProbeCache(cache_file, settings) if cache_file is not None else None
    results: dict[str, Probe] = {}
    if cache is not None:
        for path in paths:
            hit = cache.lookup(path)
            if hit is not None:
                results[path] = hit
    todo = [p for p in paths if p not in results]
    workers = default_workers() if workers is None else workers
    bar = tqdm(total=len(paths), initial=len(results), desc=desc, unit="video",
               disable=not progress, dynamic_ncols=True)
    try:
        if workers <= 1 or len(todo) < SERIAL_BELOW:
            done = (probe_source(p, settings) for p in todo)
            _collect(done, results, cache, bar)
        else:
            chunk = max(1, min(32, len(todo) // (workers * 16)))
            pool = _pool(workers)
            try:
                done = pool.imap_unordered(_probe_star, ((p, settings) for p in todo), chunk)
                _collect(done, results, cache, bar)
            except BaseException:
                pool.terminate()
                raise
            # close + join, not the context manager's terminate: while terminate stops the
            # workers, the pool's handler thread may fork a replacement that inherits a held
            # lock and never exits, and terminate then waits for it forever
            pool.close()
            pool.join()
    finally:
        bar.close()
        if cache is not None:
            cache.close()
    return {p: results[p] for p in paths}


def _collect(done: Iterable[Probe], results: dict[str, Probe], cache: ProbeCache | None,
             bar) -> None:
    for probe in done:
        results[probe.path] = probe
        if cache is not None:
            cache.add(probe)
        bar.update()


def write_report(problems: Sequence[Problem], file: str | Path, header: str) -> Path:
    """One problem per line after a header line (the summary)."""
    file = Path(file)
    file.parent.mkdir(parents=True, exist_ok=True)
    file.write_text("\n".join([header, *map(str, problems)]) + "\n")
    return file
