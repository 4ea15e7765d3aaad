"""The preflight: before training, every listed video opens and has the frames its list says.

Runs the probing engine (:mod:`atm_core.data.probe`) over the datasets' records. Under
``torch.distributed`` each process probes its share and the problems are gathered, so every
process ends with the same verdict. Problems are listed with the list file and line; then it
stops (``on_error="raise"``) or marks those records unreadable (``on_error="skip"``), so that
they are counted and listed like any video found unreadable while loading.

Training runs it (``data.preflight``); on its own, over a dataset's list files:

    python -m atm_core.data.preflight --dataset ssv2 --root ROOT [--lists train.txt val.txt]
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import torch.distributed as dist

from .dataset import VideoDataset
from .errors import DataError
from .presets import PRESETS, build_dataset
from .probe import ProbeSettings, Problem, default_workers, probe_all, write_report

log = logging.getLogger(__name__)
SHOWN = 20  # problems quoted in the error message; the report file has all of them


def _settings(dataset: VideoDataset) -> ProbeSettings:
    return ProbeSettings(str(dataset.root.resolve()), dataset.reader, dataset.frame_template,
                         dataset.frame_start)


def _check(dataset: VideoDataset, indices: Sequence[int], workers: int, cache_file: Path | None,
           progress: bool) -> list[tuple[int, Problem]]:
    records = [dataset.records[i] for i in indices]
    probes = probe_all([r.path for r in records], _settings(dataset), workers=workers,
                       cache_file=cache_file, progress=progress, desc=f"preflight {dataset.split}")
    bad = []
    for index, record in zip(indices, records):
        probe = probes[record.path]
        if probe.error is not None:
            bad.append((index, Problem(record.source, probe.error)))
        elif record.num_frames is not None and probe.frames < record.num_frames:
            bad.append((index, Problem(record.source, f"{dataset.root / record.path}: the list "
                                                      f"says {record.num_frames} frames, found "
                                                      f"{probe.frames}")))
        elif probe.frames < dataset.num_frames and dataset.short_clips == "error":
            bad.append((index, Problem(record.source, f"{dataset.root / record.path}: {probe.frames} "
                                                      f"frame(s), fewer than the {dataset.num_frames} "
                                                      "of a clip (data.short_clips=pad repeats frames)")))
    return bad


def preflight(datasets: Sequence[VideoDataset], on_error: str = "raise",
              workdir: str | Path | None = None, progress: bool = True,
              workers: int | None = None) -> int:
    """Probe every record of ``datasets``; returns the number of records left out.

    ``workdir`` keeps the cache (``preflight*.jsonl``: a rerun probes only new or changed
    files) and ``preflight_report.txt``. ``workers`` defaults to the available cores divided
    among the processes of this machine.
    """
    rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
    if workers is None:
        workers = max(1, default_workers() // int(os.environ.get("LOCAL_WORLD_SIZE", world)))
    workdir = Path(workdir) if workdir is not None else None
    started = time.perf_counter()
    found: list[list[tuple[int, Problem]]] = []
    total = 0
    for dataset in datasets:
        share = range(rank, len(dataset), world)
        cache = workdir / f"preflight_{dataset.split}.{rank}.jsonl" if workdir else None
        bad = _check(dataset, share, workers, cache, progress and rank == 0)
        if world > 1:
            gathered: list = [None] * world
            dist.all_gather_object(gathered, bad)
            bad = sorted(p for part in gathered for p in part)
        found.append(bad)
        total += len(dataset)
    problems = [p for bad in found for _, p in bad]
    seconds = time.perf_counter() - started
    summary = (f"preflight: {total} videos checked in {seconds:.1f} s ({total / seconds:.0f}/s), "
               f"{len(problems)} problem(s)")
    report = None
    if workdir is not None and rank == 0:
        report = write_report(problems, workdir / "preflight_report.txt", summary)
    if problems and on_error != "skip":
        shown = "\n".join(f"  {p}" for p in problems[:SHOWN])
        more = f"\n  ... and {len(problems) - SHOWN} more" if len(problems) > SHOWN else ""
        where = f" (all in {report})" if report else ""
        raise DataError(f"{summary}{where}:\n{shown}{more}\nfix them, set data.on_error=skip to "
                        "leave them out, or data.preflight=false to train without this check")
    for dataset, bad in zip(datasets, found):
        for index, problem in bad:
            dataset.leave_out(index)
            log.warning("preflight: leaving out %s", problem)
    if rank == 0:
        log.log(logging.WARNING if problems else logging.INFO, summary)
    return len(problems)


def main(argv: list[str] | None = None) -> int:
    """Probe every video of a dataset's lists; 0 when all are fine, 1 with problems, 2 when the
    lists cannot be read."""
    parser = argparse.ArgumentParser(prog="python -m atm_core.data.preflight",
                                     description="Open every video a dataset's list files name once and "
                                                 "check its frames (report: <root>/preflight_report.txt).")
    parser.add_argument("--dataset", required=True, choices=sorted(PRESETS), help="the dataset preset")
    parser.add_argument("--root", required=True, type=Path, help="the dataset folder (data.root)")
    parser.add_argument("--lists", nargs="+", help="list files under --root (default: the preset's "
                        "train and val lists)")
    parser.add_argument("--num-frames", type=int, default=8, help="the clip length (data.num_frames)")
    parser.add_argument("--workers", type=int, help="processes (default: one per available core)")
    args = parser.parse_args(argv)
    try:
        if not args.root.is_dir():
            raise DataError(f"{args.root}: dataset folder not found")
        lists = args.lists or [PRESETS[args.dataset].train_list, PRESETS[args.dataset].val_list]
        for name in lists:
            if (args.root / name).is_dir():
                raise DataError(f"{args.root / name}: a folder, not a list file")
        datasets = [build_dataset(args.dataset, "val", args.root, name, num_frames=args.num_frames)
                    for name in lists]
    except (DataError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        preflight(datasets, "raise", args.root, progress=True, workers=args.workers)
    except DataError as e:
        print(e, file=sys.stderr)
        return 1
    print(f"preflight: all {sum(len(d) for d in datasets)} videos of {', '.join(lists)} are fine")
    return 0


if __name__ == "__main__":
    sys.exit(main())
