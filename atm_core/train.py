"""Train a video model from a recipe:

    python -m atm_core.train --config params/synthetic_atm_mul_sub.yaml [key=value ...]
    accelerate launch --num_processes 8 -m atm_core.train --config params/ssv1_vit_b16_f8.yaml

Overrides are ``section.key=value`` (e.g. ``optim.lr=1e-3 train.output_dir=runs/x``).
"""
from __future__ import annotations

import argparse

from .engine import load_config, train
from .engine.cli import run_reporting_errors
from .engine.runtime import relaunch_with_tuned_malloc


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m atm_core.train", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", help="YAML recipe (params/*.yaml); defaults only when omitted")
    parser.add_argument("--resume", help="'auto' (the latest checkpoint of train.output_dir), a step "
                        "checkpoint (checkpoints/step_<n>) or a run directory (its latest checkpoint); "
                        "best/ holds weights only: evaluate it or load it with model.pretrained_file")
    parser.add_argument("--debug", action="store_true", help="show the traceback of configuration, "
                        "data and disk errors")
    parser.add_argument("overrides", nargs="*", metavar="section.key=value")
    args = parser.parse_args(argv)
    overrides = list(args.overrides) + ([f"train.resume={args.resume}"] if args.resume else [])
    return run_reporting_errors(lambda: train(load_config(args.config, overrides)), args.debug)


if __name__ == "__main__":
    relaunch_with_tuned_malloc()
    main()
