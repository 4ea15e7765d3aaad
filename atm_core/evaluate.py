"""Evaluate a checkpoint with multi-view testing (clips x crops, softmax averaged per video):

    python -m atm_core.evaluate --config params/synthetic_atm_mul_sub.yaml [--checkpoint best|last|PATH] [key=value ...]
    python -m atm_core.evaluate --checkpoint results/checkpoints/synthetic_atm_mul_sub [key=value ...]

A checkpoint folder that carries its recipe (see :mod:`atm_core.engine.described`) needs no
``--config``; its evaluation then goes to ``runs/eval/<checkpoint folder>`` unless
``eval.out_dir`` says otherwise. Writes summary.json, predictions.csv, confusion.npy and confusion.png to eval.out_dir
(default ``<train.output_dir>/eval``). Runs under ``accelerate launch`` too.
"""
from __future__ import annotations

import argparse
import sys

from .engine import Config, evaluate, load_config
from .engine.cli import run_reporting_errors
from .engine.described import checkpoint_dir, checkpoint_recipe
from .engine.runtime import relaunch_with_tuned_malloc


def eval_config(config: str | None, checkpoint: str | None, overrides: list[str]) -> Config:
    """``--config`` with the overrides; without it, the recipe a checkpoint path carries."""
    if config is not None or checkpoint in (None, "best", "last"):
        return load_config(config, overrides)
    out = f"eval.out_dir=runs/eval/{checkpoint_dir(checkpoint).name}"
    return checkpoint_recipe(checkpoint, None, [out, *overrides])


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m atm_core.evaluate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", help="the YAML recipe the checkpoint was trained with (default: the "
                        "one a checkpoint path carries)")
    parser.add_argument("--checkpoint", help="best (default), last, a checkpoint dir or a weights file")
    parser.add_argument("--debug", action="store_true", help="show the traceback of configuration, "
                        "data and checkpoint errors")
    parser.add_argument("overrides", nargs="*", metavar="section.key=value")
    args = parser.parse_args(argv)
    try:
        return run_reporting_errors(lambda: evaluate(eval_config(args.config, args.checkpoint,
                                                                 args.overrides), args.checkpoint), args.debug)
    except FileNotFoundError as e:  # the checkpoint
        if args.debug:
            raise
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    relaunch_with_tuned_malloc()
    main()
