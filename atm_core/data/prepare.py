"""Official annotation files -> this project's list files, every video checked once.

    python -m atm_core.data.prepare ssv2 --annotations ANN --videos VIDEOS --out ROOT
    python -m atm_core.data.prepare ssv1 --annotations ANN --videos FRAMES --out ROOT
    python -m atm_core.data.prepare k400 --annotations ANN --videos VIDEOS --out ROOT \\
        [--name-pattern '{label}/{youtube_id}_{time_start:06d}_{time_end:06d}.mp4']
    python -m atm_core.data.prepare ssv2 --reference-lists train_rgb.txt val_rgb.txt \\
        --labels sth_labels.csv --videos FRAMES --out ROOT

Writes ``ROOT/train.txt``, ``ROOT/val.txt`` (``path num_frames label``, paths relative to
ROOT) and ``ROOT/labels.csv`` (``id,name``): train with ``data.root=ROOT``. Every video or frame
folder the annotations name is opened, its first and last frame decoded and its frames counted
(:mod:`atm_core.data.probe`), in parallel, with a progress bar; ``ROOT/.prepare-cache.jsonl``
makes a rerun redo only what is not done. ``--extract-frames DIR`` also writes every frame as
JPEG (the preset's names: SS-V2 ``000001.jpg``, Kinetics ``img_00001.jpg``) and lists the
folders.

Every problem (annotations: file and entry or line; media: the file) goes to
``ROOT/prepare_report.txt`` and a summary line. With any problem the lists are not written and
the exit status is 1; ``--skip-bad`` writes them without the bad entries (counted in the
summary) and exits 0, unless a split is left without any entry (its annotation file unreadable, or
every entry bad): then nothing is written and the exit status is 1.
"""
from __future__ import annotations

import argparse
import csv
import os
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from .annotations import ANNOTATION_FILES, NAME_PATTERNS, READERS, read_reference_lists
from .presets import PRESETS
from .probe import Extraction, ProbeSettings, Problem, default_workers, probe_all, write_report

REPORT = "prepare_report.txt"
CACHE = ".prepare-cache.jsonl"


@dataclass
class Outcome:
    """What ``prepare`` wrote and found."""

    lists: dict[str, Path]  # split -> list file (empty when nothing was written)
    counts: dict[str, tuple[int, int]]  # split -> (entries listed, entries annotated)
    problems: list[Problem]
    report: Path
    summary: str


def _problem_kind(message: str) -> str:
    if "not found" in message:
        return "missing"
    if "empty video file" in message or "no frames" in message:
        return "empty"
    if "gap in the frames" in message:
        return "gap"
    return "unreadable"


def prepare(dataset: str, out: str | Path, videos: str | Path, *,
            annotations: str | Path | None = None, reference_lists: tuple[str, str] | None = None,
            label_file: str | Path | None = None, name_pattern: str | None = None,
            extract_frames: str | Path | None = None, short_side: int | None = None,
            quality: int = 90, workers: int | None = None, reader: str = "auto",
            skip_bad: bool = False, progress: bool = True) -> Outcome:
    """Python API of ``python -m atm_core.data.prepare`` (see the module docstring)."""
    out, videos = Path(out), Path(videos)
    recipe = PRESETS[dataset]
    if reference_lists is not None:
        if label_file is None:
            raise ValueError("--reference-lists needs --labels (the reference's labels CSV)")
        ann = read_reference_lists(Path(reference_lists[0]), Path(reference_lists[1]),
                                   Path(label_file))
    else:
        if annotations is None:
            raise ValueError("give --annotations DIR (or --reference-lists with --labels)")
        kwargs = {"pattern": name_pattern or NAME_PATTERNS[dataset]}
        if dataset == "k400" and label_file is not None:
            kwargs["label_file"] = Path(label_file)
        ann = READERS[dataset](Path(annotations), **kwargs)
    if extract_frames is not None and dataset == "ssv1":
        raise ValueError("ssv1 is distributed as frame folders: there is nothing to extract")
    extraction = None
    if extract_frames is not None:
        extraction = Extraction(str(Path(extract_frames).resolve()), recipe.frame_template,
                                recipe.frame_start, short_side, quality)
    settings = ProbeSettings(str(videos.resolve()), reader, recipe.frame_template,
                             recipe.frame_start, extraction)
    entries = [e for split in ann.splits.values() for e in split]
    probes = probe_all([e.video for e in entries], settings, workers=workers,
                       cache_file=out / CACHE, progress=progress, desc=f"prepare {dataset}")

    problems = list(ann.problems)
    lines: dict[str, list[str]] = {}
    counts: dict[str, tuple[int, int]] = {}
    kinds = Counter("annotation" for _ in ann.problems)
    for split in ("train", "val"):
        split_entries = ann.splits.get(split, [])
        lines[split] = []
        for entry in split_entries:
            probe = probes[entry.video]
            if probe.error is not None:
                problems.append(Problem(entry.where, probe.error))
                kinds[_problem_kind(probe.error)] += 1
                continue
            media = extraction.folder(entry.video) if extraction else videos / entry.video
            path = Path(os.path.relpath(media.resolve(), out.resolve())).as_posix()
            lines[split].append(f"{path} {probe.frames} {entry.label}")
        counts[split] = (len(lines[split]), len(split_entries))

    listed = ", ".join(f"{s} {n} of {total}" for s, (n, total) in counts.items())
    found = ", ".join(f"{n} {k}" for k, n in sorted(kinds.items())) or "none"
    emptied = [split for split, (listed_here, _) in counts.items() if listed_here == 0]
    written = bool(ann.classes) and (not problems or skip_bad) and not emptied
    if written:
        action = "lists written" + (" without the bad entries" if problems else "")
    elif emptied and ann.classes and (skip_bad or not problems):
        action = f"lists NOT written: no usable entry left in split(s) {', '.join(emptied)}"
    else:
        action = "lists NOT written (fix them, or rerun with --skip-bad to leave them out)"
    summary = (f"prepare {dataset}: {len(ann.classes)} classes; listed {listed}; "
               f"problems: {found}; {action}; report: {out / REPORT}")
    report = write_report(problems, out / REPORT, summary)
    files: dict[str, Path] = {}
    if written:
        for split, split_lines in lines.items():
            files[split] = out / f"{split}.txt"
            files[split].write_text("".join(f"{line}\n" for line in split_lines))
        with (out / "labels.csv").open("w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(["id", "name"])
            writer.writerows(enumerate(ann.classes))
    return Outcome(files, counts, problems, report, summary)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m atm_core.data.prepare",
        description="Official annotation files -> train.txt, val.txt, labels.csv, every video "
                    "checked once.")
    parser.add_argument("dataset", choices=sorted(ANNOTATION_FILES))
    parser.add_argument("--annotations", type=Path,
                        help="folder with the official annotation files: "
                             + "; ".join(f"{d}: {', '.join(f.values())}"
                                         for d, f in ANNOTATION_FILES.items()))
    parser.add_argument("--reference-lists", nargs=2, metavar=("TRAIN", "VAL"),
                        help="the reference's own lists (<path> <num_frames> <label>) instead")
    parser.add_argument("--labels", type=Path,
                        help="labels CSV id,name (with --reference-lists; optional for k400)")
    parser.add_argument("--videos", type=Path, required=True,
                        help="folder holding the videos (or SS-V1 frame folders)")
    parser.add_argument("--out", type=Path, required=True,
                        help="where the lists go: the data.root to train with")
    parser.add_argument("--name-pattern",
                        help="file name of an entry under --videos; defaults: "
                             + "; ".join(f"{d}: {p}" for d, p in NAME_PATTERNS.items()))
    parser.add_argument("--extract-frames", type=Path, metavar="DIR",
                        help="also write every frame as JPEG under DIR and list the folders")
    parser.add_argument("--short-side", type=int, help="resize extracted frames to this short side")
    parser.add_argument("--quality", type=int, default=90, help="JPEG quality of extracted frames")
    parser.add_argument("--workers", type=int, default=default_workers(),
                        help="processes (default: one per available core)")
    parser.add_argument("--reader", choices=("auto", "decord", "torchcodec", "pyav"),
                        default="auto")
    parser.add_argument("--skip-bad", action="store_true",
                        help="write the lists without the bad entries (exit 0)")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    try:
        outcome = prepare(args.dataset, args.out, args.videos, annotations=args.annotations,
                          reference_lists=args.reference_lists, label_file=args.labels,
                          name_pattern=args.name_pattern, extract_frames=args.extract_frames,
                          short_side=args.short_side, quality=args.quality, workers=args.workers,
                          reader=args.reader, skip_bad=args.skip_bad,
                          progress=not args.no_progress)
    except ValueError as e:
        parser.error(str(e))
    for problem in outcome.problems[:20]:
        print(problem, file=sys.stderr)
    if len(outcome.problems) > 20:
        print(f"... and {len(outcome.problems) - 20} more in {outcome.report}", file=sys.stderr)
    print(outcome.summary)
    return 0 if outcome.lists else 1


if __name__ == "__main__":
    sys.exit(main())
