"""``python -m atm_core.data.synthetic``: write the built-in benchmark; every default is
:func:`~atm_core.data.synthetic.writer.generate_benchmark`'s own."""
from __future__ import annotations

import argparse
import inspect
import logging
import os
from pathlib import Path

from .tracks import TRACKS
from .writer import generate_benchmark


def main(argv: list[str] | None = None) -> None:
    defaults = {name: p.default for name, p in inspect.signature(generate_benchmark).parameters.items()}
    parser = argparse.ArgumentParser(prog="python -m atm_core.data.synthetic",
                                     description="Write the built-in temporal benchmark (12 classes in 6 "
                                                 "time-reversal pairs) of one track.")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--seed", type=int, default=defaults["seed"])
    parser.add_argument("--track", choices=sorted(TRACKS), default=defaults["track"],
                        help="shapes: flat synthetic objects; textures: camera and object motion over photographs")
    parser.add_argument("--train-per-class", type=int, default=defaults["train_per_class"])
    parser.add_argument("--val-per-class", type=int, default=defaults["val_per_class"])
    parser.add_argument("--test-per-class", type=int, default=defaults["test_per_class"],
                        help="held-out test clips (test.txt); the recipes use 25 (default: %(default)s)")
    parser.add_argument("--size", type=int, default=defaults["size"], help="frame height and width (even)")
    parser.add_argument("--num-frames", type=int, default=defaults["num_frames"], help="source frames per clip")
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
                                 val_per_class=args.val_per_class, test_per_class=args.test_per_class,
                                 size=args.size, num_frames=args.num_frames, frames=args.frames,
                                 workers=args.workers)
    print(f"wrote {summary['train']} train + {summary['val']} val + {summary['test']} test clips to "
          f"{summary['out']} in {summary['seconds']} s")
