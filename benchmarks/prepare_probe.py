"""Probing rate of ``python -m atm_core.data.prepare`` and the training preflight: videos/s.

    python benchmarks/prepare_probe.py [--videos 96] [--frames 45] [--workers 1 2] [--repeats 2]

Writes ``--videos`` SS-V2-like clips (VP9 .webm, 240 x 320, 45 frames: SS-V2's typical length
at 12 fps) and SS-V1-like JPEG frame folders, then probes all of them (open, decode the first
and last frame, count the frames: atm_core.data.probe) with 1 and 2 worker processes, without a
cache (after one warm-up pass: the files are in the page cache, as they are not on a first
pass over a real dataset on disk). Reports videos/s, videos/s per worker and the time the 193,690 SS-V2 videos (168,913
train + 24,777 validation) would take per core at that rate. Writes
results/bench/prepare_probe.json and regenerates results/benchmarks.md.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import av
import common
import numpy as np
from PIL import Image

from atm_core.data import readers, render_clip
from atm_core.data.probe import ProbeSettings, probe_all

SSV2_VIDEOS = 168_913 + 24_777


def write_media(root: Path, count: int, frames: int) -> None:
    for k in range(count):
        clip = render_clip(("left", "up", "approach")[k % 3], np.random.default_rng(k), size=240,
                           num_frames=frames)
        clip = np.ascontiguousarray(np.pad(clip, ((0, 0), (0, 0), (40, 40), (0, 0)), mode="edge"))
        path = root / "webm" / f"{k}.webm"
        path.parent.mkdir(parents=True, exist_ok=True)
        with av.open(str(path), "w") as container:
            stream = container.add_stream("libvpx-vp9", rate=12)
            stream.height, stream.width, stream.pix_fmt = 240, 320, "yuv420p"
            stream.options = {"deadline": "realtime", "cpu-used": "8"}
            for frame in clip:
                for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
        folder = root / "frames" / str(k)
        folder.mkdir(parents=True)
        for t, frame in enumerate(clip):
            Image.fromarray(frame).save(folder / f"{t + 1:05d}.jpg", quality=90)


def rate(root: Path, kind: str, count: int, workers: int) -> float:
    settings = ProbeSettings(str(root / kind))
    paths = [f"{k}.webm" if kind == "webm" else str(k) for k in range(count)]
    start = time.perf_counter()
    probes = probe_all(paths, settings, workers=workers, progress=False)
    seconds = time.perf_counter() - start
    assert all(p.error is None for p in probes.values()), [p.error for p in probes.values()]
    return count / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--videos", type=int, default=96)
    parser.add_argument("--frames", type=int, default=45)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--name", default="prepare_probe", help="record name under results/bench/")
    args = parser.parse_args()

    applied = common.setup(threads=1, malloc="default")
    load_start = common.load_average()
    best: dict[tuple[str, int], float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_media(root, args.videos, args.frames)
        for kind in ("webm", "frames"):  # warm-up: readers loaded, files in the page cache
            rate(root, kind, args.videos, 1)
        for _ in range(args.repeats):
            for kind in ("webm", "frames"):
                for workers in args.workers:
                    best[kind, workers] = max(best.get((kind, workers), 0.0),
                                              rate(root, kind, args.videos, workers))
    reader = "decord" if readers.decord is not None else "auto"
    rows = []
    for (kind, workers), value in best.items():
        per_core = value / workers
        rows.append([kind, workers, value, per_core, SSV2_VIDEOS / per_core / 3600])
        print(f"{kind:>7} {workers} workers: {value:.1f} videos/s ({per_core:.1f} per worker)")
    webm_one = best["webm", min(args.workers)] / min(args.workers)
    last = (f"webm_videos_per_s_per_core={webm_one:.1f} "
            f"ssv2_core_hours={SSV2_VIDEOS / webm_one / 3600:.2f}")
    record = {
        "title": "prepare / preflight: probing rate (open, decode first and last frame, count)",
        "machine": common.machine(applied),
        "load": [load_start, common.load_average()],
        "tables": [{
            "title": f"{args.videos} sources of {args.frames} frames at 240 x 320, reader "
                     f"{reader} (best of {args.repeats})",
            "columns": ["source", "workers", "videos/s", "videos/s per worker",
                        "SS-V2 (193,690 videos) core-hours"],
            "rows": rows,
        }],
        "notes": ["webm: VP9 like SS-V2; frames: JPEG folders like SS-V1 (the gap check lists "
                  "the folder, the first and last image are decoded).",
                  "Divide the core-hours by the cores used; a rerun with the cache "
                  "(.prepare-cache.jsonl, preflight_*.jsonl) probes only new or changed files.",
                  "The machine is shared with other jobs (see the load average)."],
        "summary": last,
    }
    common.save(args.name, record)
    print(last)


if __name__ == "__main__":
    main()
