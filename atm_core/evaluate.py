"""Evaluate a checkpoint with multi-view testing (clips x crops, softmax averaged per video):

    python -m atm_core.evaluate --config params/synthetic_atm_mul_sub.yaml [--checkpoint best|last|PATH] [key=value ...]

Writes summary.json, predictions.csv, confusion.npy and confusion.png to eval.out_dir
(default ``<train.output_dir>/eval``). Runs under ``accelerate launch`` too.
"""
from __future__ import annotations

import argparse
import sys

from .engine import evaluate, load_config
from .engine.cli import run_reporting_errors
from .engine.runtime import relaunch_with_tuned_malloc


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m atm_core.evaluate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", help="the YAML recipe the checkpoint was trained with")
    parser.add_argument("--checkpoint", help="best (default), last, a checkpoint dir or a weights file")
    parser.add_argument("--debug", action="store_true", help="show the traceback of configuration, "
                        "data and checkpoint errors")
    parser.add_argument("overrides", nargs="*", metavar="section.key=value")
    args = parser.parse_args(argv)
    try:
        return run_reporting_errors(lambda: evaluate(load_config(args.config, args.overrides),
                                                     args.checkpoint), args.debug)
    except FileNotFoundError as e:  # the checkpoint
        if args.debug:
            raise
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    relaunch_with_tuned_malloc()
    main()
