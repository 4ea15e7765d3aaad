"""Data-loading throughput: decord, torchcodec and PyAV on 240p VP9 .webm and H.264 .mp4.

    python benchmarks/data_loader.py [--videos 48] [--clips 96] [--workers 0 2] [--repeats 2]

Writes ``--videos`` clips of 32 frames at 240 x 320 (SS-V2's height) in both formats, then for
each reader and format: a decode-only row (open + read T = 8 TSN training frames, one process)
and DataLoader rows at 0 and 2 workers with the Something-Something training transforms (scale
to 256x320, random-resized crop 224, flip with label swap, RandAugment rand-m7-n4-mstd0.5-inc1,
CLIP normalisation). Runs are interleaved and repeated; the best repeat is reported, since a
shared machine only ever slows a run down. The first batch (worker start-up) is not timed.
Writes results/bench/data_loader.json and regenerates results/benchmarks.md.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import av
import common
import numpy as np
from torch.utils.data import DataLoader, Subset

from atm_core.data import build_dataset, read_list, readers, render_clip, sample_indices
from atm_core.data.readers import open_source, read_clip

FORMATS = {"webm": "libvpx-vp9", "mp4": "libx264"}
MOTIONS = ("left", "up", "approach", "clockwise", "appear", "converge")


def write_videos(root: Path, count: int, frames: int) -> None:
    """``count`` clips per format at 240 x 320 and a list file per format."""
    for suffix, codec in FORMATS.items():
        lines = []
        for k in range(count):
            clip = render_clip(MOTIONS[k % 6], np.random.default_rng(k), size=240, num_frames=frames)
            clip = np.ascontiguousarray(np.pad(clip, ((0, 0), (0, 0), (40, 40), (0, 0)), mode="edge"))
            path = root / suffix / f"{k:05d}.{suffix}"
            path.parent.mkdir(parents=True, exist_ok=True)
            with av.open(str(path), "w") as container:
                stream = container.add_stream(codec, rate=12)
                stream.height, stream.width, stream.pix_fmt = 240, 320, "yuv420p"
                for frame in clip:
                    for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                        container.mux(packet)
                for packet in stream.encode():
                    container.mux(packet)
            lines.append(f"{suffix}/{path.name} {frames} {k % 6}\n")
        (root / f"{suffix}.txt").write_text("".join(lines))


def decoded_per_second(root: Path, suffix: str, reader: str, clips: int, num_frames: int) -> float:
    records, _ = read_list(root / f"{suffix}.txt")
    rng = np.random.default_rng(0)
    start = time.perf_counter()
    for k in range(clips):
        video = open_source(root / records[k % len(records)].path, reader=reader)
        read_clip(video, sample_indices(len(video), num_frames, "train", rng), reader)
    return clips / (time.perf_counter() - start)


def clips_per_second(root: Path, suffix: str, reader: str, workers: int, clips: int,
                     batch_size: int, num_frames: int) -> float:
    ds = build_dataset("ssv2", "train", root, f"{suffix}.txt", num_frames=num_frames,
                       num_classes=6, num_sample=1, reader=reader)
    ds.records = (ds.records * (-(-(clips + batch_size) // len(ds.records))))
    loader = DataLoader(Subset(ds, range(clips + batch_size)), batch_size=batch_size,
                        num_workers=workers, collate_fn=ds.collate_fn)
    batches = iter(loader)
    next(batches)  # start-up
    count, start = 0, time.perf_counter()
    for x, _ in batches:
        count += len(x)
    return count / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--videos", type=int, default=48, help="clips written per format")
    parser.add_argument("--clips", type=int, default=96, help="timed clips per run")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    parser.add_argument("--num-frames", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--name", default="data_loader", help="record name under results/bench/")
    args = parser.parse_args()

    applied = common.setup(threads=1, malloc="default")
    load_start = common.load_average()
    names = [n for n in ("decord", "torchcodec", "pyav")
             if not (n == "decord" and readers.decord is None)
             and not (n == "torchcodec" and readers.load_torchcodec()[0] is None)]
    settings = ["decode only", *args.workers]
    runs = [(suffix, workers, reader) for suffix in FORMATS for workers in settings
            for reader in names]
    best = dict.fromkeys(runs, 0.0)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_videos(root, args.videos, 32)
        for r in range(args.repeats):
            for suffix, workers, reader in runs if r % 2 == 0 else runs[::-1]:
                if workers == "decode only":
                    rate = decoded_per_second(root, suffix, reader, args.clips, args.num_frames)
                else:
                    rate = clips_per_second(root, suffix, reader, workers, args.clips,
                                            args.batch_size, args.num_frames)
                best[suffix, workers, reader] = max(best[suffix, workers, reader], rate)
    rows = [[f"{suffix} ({FORMATS[suffix]})", str(workers),
             *[best[suffix, workers, reader] for reader in names]]
            for suffix in FORMATS for workers in settings]
    for row in rows:
        print("  ".join(f"{v:>10.1f}" if isinstance(v, float) else f"{v:>18}" for v in row))
    ratios = {f"{reader}/pyav {suffix} {workers}": best[suffix, workers, reader]
              / best[suffix, workers, "pyav"]
              for reader in names if reader != "pyav" for suffix in FORMATS for workers in settings}
    last = " ".join(f"{k.replace(' ', '_')}={v:.2f}" for k, v in ratios.items())
    missing = sorted({"decord", "torchcodec"} - set(names))
    record = {
        "title": "Data loading: decord, torchcodec and PyAV on 240p VP9 webm and H.264 mp4",
        "machine": common.machine(applied),
        "load": [load_start, common.load_average()],
        "tables": [{
            "title": f"clips/s, {args.num_frames} frames per clip from 32-frame 240x320 videos "
                     f"(best of {args.repeats} interleaved repeats)",
            "columns": ["format", "workers", *names],
            "rows": rows,
        }],
        "notes": ["decode only: open the file and read the 8 sampled frames, one process, no "
                  "transforms; the worker rows add the SS training transforms at 224 px and a "
                  f"DataLoader with batches of {args.batch_size}.",
                  "The machine is shared with other jobs (see the load average): the rows are "
                  "comparable with each other, not with other hosts.",
                  *([f"not measured (not installed): {', '.join(missing)}"] if missing else [])],
        "summary": last,
    }
    common.save(args.name, record)
    print(last)


if __name__ == "__main__":
    main()
