"""Data-loading throughput: decord vs PyAV on the built-in benchmark's H.264 clips.

    python benchmarks/data_loader.py [--root DIR] [--clips 240] [--workers 0 2] [--repeats 3]

Each run decodes T = 8 frames per clip (TSN training sampling) and applies the
Something-Something training transforms (scale to 256x320, random-resized crop 224, flip with
label swap, RandAugment rand-m7-n4-mstd0.5-inc1, CLIP normalisation) through a DataLoader.
A decode-only row (open + read the 8 frames, no transforms, one process) isolates the readers.
Runs are interleaved and repeated; the best of the repeats is reported, since a shared machine
only ever slows a run down. Prints clips/s, then the decord / PyAV ratios last. The first batch
(worker start-up) is not timed.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from torch.utils.data import DataLoader, Subset

from atm_core.data import build_dataset, generate_benchmark, read_list, readers, sample_indices
from atm_core.data.readers import open_source, read_clip


def decoded_per_second(root: Path, reader: str, clips: int, num_frames: int) -> float:
    records, _ = read_list(root / "train.txt")
    rng = np.random.default_rng(0)
    start = time.perf_counter()
    for record in records[:clips]:
        video = open_source(root / record.path, reader=reader)
        read_clip(video, sample_indices(len(video), num_frames, "train", rng), reader)
    return min(clips, len(records)) / (time.perf_counter() - start)


def clips_per_second(root: Path, reader: str, workers: int, clips: int, batch_size: int,
                     input_size: int, num_frames: int) -> float:
    ds = build_dataset("ssv2", "train", root, "train.txt", num_frames=num_frames, num_classes=12,
                       input_size=input_size, num_sample=1, reader=reader)
    subset = Subset(ds, range(min(clips + batch_size, len(ds))))
    loader = DataLoader(subset, batch_size=batch_size, num_workers=workers,
                        collate_fn=ds.collate_fn)
    batches = iter(loader)
    next(batches)  # start-up
    count, start = 0, time.perf_counter()
    for x, _ in batches:
        count += len(x)
    return count / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path,
                        help="a generated benchmark (default: write a small one)")
    parser.add_argument("--clips", type=int, default=240, help="timed clips per run")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    parser.add_argument("--input-size", type=int, default=224)
    parser.add_argument("--num-frames", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        root = args.root
        if root is None:
            root = Path(tmp)
            per_class = -(-(args.clips + args.batch_size) // 12)
            generate_benchmark(root, seed=0, train_per_class=per_class, val_per_class=1)
        names = ["pyav"] + (["decord"] if readers.decord is not None else [])
        runs = [(reader, "decode only") for reader in names]
        runs += [(reader, workers) for workers in args.workers for reader in names]
        results = dict.fromkeys(runs, 0.0)
        for _ in range(args.repeats):
            for reader, workers in runs:
                if workers == "decode only":
                    rate = decoded_per_second(root, reader, args.clips, args.num_frames)
                else:
                    rate = clips_per_second(root, reader, workers, args.clips, args.batch_size,
                                            args.input_size, args.num_frames)
                results[reader, workers] = max(results[reader, workers], rate)
    print(f"{args.num_frames} frames per clip; training transforms at {args.input_size}px; "
          f"best of {args.repeats}")
    print(f"{'reader':>8} {'workers':>12} {'clips/s':>9}")
    for (reader, workers), rate in results.items():
        print(f"{reader:>8} {workers!s:>12} {rate:9.1f}")
    if "decord" not in names:
        print("decord is not installed: no ratio")
        return
    ratios = ", ".join(f"{results['decord', w] / results['pyav', w]:.2f} ({w}"
                       f"{'' if w == 'decode only' else ' workers'})"
                       for w in ["decode only", *args.workers])
    print(f"decord / PyAV throughput ratio: {ratios}")


if __name__ == "__main__":
    main()
