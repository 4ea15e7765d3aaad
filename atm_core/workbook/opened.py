"""Which runs a notebook opens: a benchmark variant, a recipe, or a checkpoint alone (the recipe
it carries), each resolved to its configuration and the weights to load."""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

from ..engine import Config, load_config
from ..engine.described import checkpoint_recipe
from .project import RESULTS_DIR, WORK_DIR
from .recipes import run_config, run_name
from .training import ensure_trained, prepare_data
from .variants import variant_config


def _root_override(data_root: str | Path | None) -> list[str]:
    return [f"data.root={data_root}"] if data_root else []


def evaluated_run(*, variant: str | None, recipe: str | Path | None, checkpoint: str | Path | None,
                  overrides: Iterable[str] = (), data_root: str | Path | None = None,
                  work_dir: str | Path = WORK_DIR, quick: bool = False,
                  results_dir: str | Path = RESULTS_DIR, train_if_missing: bool = False) -> tuple[Config, str, Path]:
    """``(config, run name, checkpoint)`` of the run ``evaluate.ipynb`` tests: with neither a
    variant nor a recipe, ``checkpoint`` alone with the recipe it carries; else that run with
    ``checkpoint``, or its ``best/`` or committed weights (:func:`ensure_trained`). The benchmark
    data are written first where the recipe generates them."""
    if variant is None and recipe is None:
        if checkpoint is None:
            raise ValueError("give a variant, a recipe or a checkpoint")
        path = Path(checkpoint)
        cfg = checkpoint_recipe(path, None, [*_root_override(data_root), *overrides])
        name = path.name
    else:
        cfg = run_config(variant=variant, recipe=recipe, overrides=overrides, data_root=data_root,
                         work_dir=work_dir, quick=quick, progress=False)
        name = run_name(variant=variant, recipe=recipe)
    if cfg.data.generate is not None:
        prepare_data(cfg)
    if variant is not None or recipe is not None:
        path = Path(checkpoint) if checkpoint else ensure_trained(cfg, key=name, results_dir=results_dir,
                                                                  train_if_missing=train_if_missing)
    return cfg, name, path


def drawn_runs(*, variants: Sequence[str], recipe: str | Path | None, checkpoint: str | Path | None,
               overrides: Iterable[str] = (), data_root: str | Path | None = None,
               work_dir: str | Path = WORK_DIR, quick: bool = False, results_dir: str | Path = RESULTS_DIR,
               train_if_missing: bool = False) -> tuple[dict[str, Config], dict[str, str | Path | None]]:
    """``({run: config}, {run: checkpoint})`` of what ``visualize_arithmetic.ipynb`` draws: the
    benchmark ``variants`` (keyed by variant: two share a label, ATM(sub) on either track) with
    their trained weights when neither ``recipe`` nor ``checkpoint`` is given; else one run,
    ``recipe`` with ``checkpoint`` (None: untrained), or ``checkpoint`` alone with its recipe."""
    if recipe is None and checkpoint is None:
        configs = {key: variant_config(key, work_dir=work_dir, quick=quick, data_root=data_root,
                                       overrides=overrides, progress=False) for key in variants}
        return configs, {key: ensure_trained(cfg, key=key, results_dir=results_dir, train_if_missing=train_if_missing)
                         for key, cfg in configs.items()}
    extra = [*overrides, *_root_override(data_root)]
    if recipe is None:
        name = Path(checkpoint).name
        return {name: checkpoint_recipe(Path(checkpoint), None, extra)}, {name: checkpoint}
    return {Path(recipe).stem: load_config(recipe, extra)}, {Path(recipe).stem: checkpoint}
