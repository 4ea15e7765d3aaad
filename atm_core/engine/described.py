"""Self-describing checkpoints: the recipe, the class names and a short model card beside the weights.

Every weights-only checkpoint the project writes (a run's ``checkpoints/best/``, the main job's
``results/checkpoints/<recipe>/``) holds, beside ``model.safetensors`` and ``meta.json``:

    recipe.yaml   the resolved configuration the weights were trained with (``load_config`` reads it)
    card.json     the model card: model, temporal module, ATM ops, frames, input size, class names,
                  the data it was trained on and the top-1 measured on it (validation at the epoch
                  the checkpoint was written; test views once the run's evaluation is added)

so that :func:`load_model`, ``python -m atm_core.evaluate``, ``python -m atm_core.predict`` and the
notebooks need only the checkpoint path. A checkpoint without them (the official ATM weights,
checkpoints written before) loads with an explicit recipe; without one the error says so.

    loaded = load_model("results/checkpoints/synthetic_atm_mul_sub")
    loaded.model, loaded.cfg, loaded.classes, loaded.card
"""
from __future__ import annotations

import copy
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from . import builders
from .config import Config, ConfigError, apply_overrides, load_config

RECIPE_FILE = "recipe.yaml"
CARD_FILE = "card.json"
CARD_FORMAT = 1
# a checkpoint's weights are all loaded from it: build the model without fetching any others
NO_PRETRAINED = ("model.pretrained=false", "model.pretrained_file=null")


def checkpoint_dir(checkpoint: str | Path) -> Path:
    """The folder of a checkpoint given as its folder or as a weights file inside it."""
    path = Path(checkpoint)
    return path if path.is_dir() else path.parent


def model_card(cfg: Config, classes: Sequence[str], input_size: int, measured: dict | None = None) -> dict:
    """The card of a model trained with ``cfg`` on data with ``classes`` at ``input_size`` px."""
    atm = builders.atm_options(cfg)
    return {
        "format": CARD_FORMAT,
        "model": cfg.model.name,
        "temporal": cfg.model.temporal,
        "atm_ops": list(atm.ops),
        "atm_residual": atm.residual,
        "num_frames": cfg.data.num_frames,
        "input_size": input_size,
        "num_classes": len(classes),
        "classes": list(classes),
        "data": {"dataset": cfg.data.dataset, "root": str(cfg.data.root), "train_list": cfg.data.train_list,
                 "generate": cfg.data.generate},
        "training": {"epochs": cfg.optim.epochs, "seed": cfg.train.seed},
        "measured": dict(measured or {}),
    }


def describe(directory: str | Path, cfg: Config, classes: Sequence[str], input_size: int,
             measured: dict | None = None) -> None:
    """Write ``recipe.yaml`` and ``card.json`` into the checkpoint folder ``directory``."""
    directory = Path(directory)
    cfg.to_yaml(directory / RECIPE_FILE)
    card = model_card(cfg, classes, input_size, measured)
    (directory / CARD_FILE).write_text(json.dumps(card, indent=1))


def describe_best(directory: str | Path, cfg: Config, dataset, epoch: int, record: dict) -> None:
    """:func:`describe` for a run's ``best/``: the classes and input size of its training data,
    and the validation top-1 of the epoch that wrote it."""
    measured = {"epoch": epoch}
    if "val_top1" in record:
        measured.update(val_top1=record["val_top1"], val_videos=record.get("val_num_videos"))
    describe(directory, cfg, dataset.classes, dataset.transform.input_size, measured)


def read_card(checkpoint: str | Path) -> dict | None:
    """The card of a checkpoint (folder or weights file), ``None`` when it has none."""
    path = checkpoint_dir(checkpoint) / CARD_FILE
    if not path.is_file():
        return None
    try:
        card = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path}: not valid JSON ({e})") from None
    missing = [key for key in ("classes", "input_size", "model") if key not in card]
    if missing:
        raise ConfigError(f"{path}: the model card has no {', '.join(missing)}")
    return card


def add_measurement(checkpoint: str | Path, **measured) -> None:
    """Record figures measured on a described checkpoint (e.g. the test top-1) in its card."""
    card = read_card(checkpoint)
    if card is None:
        raise ConfigError(f"{checkpoint} has no {CARD_FILE} to record {sorted(measured)} in")
    card["measured"].update(measured)
    (checkpoint_dir(checkpoint) / CARD_FILE).write_text(json.dumps(card, indent=1))


def checkpoint_recipe(checkpoint: str | Path, recipe: Config | str | Path | None = None,
                      overrides: Iterable[str] = ()) -> Config:
    """The configuration to rebuild a checkpoint's model: ``recipe`` (a recipe file or a
    configuration) when given, else the checkpoint's own ``recipe.yaml``; then ``overrides``. A
    checkpoint that carries no recipe and none given is an error saying what to pass."""
    if isinstance(recipe, Config):
        return apply_overrides(copy.deepcopy(recipe), overrides)
    if recipe is not None:
        return load_config(recipe, overrides)
    if not Path(checkpoint).exists():
        raise FileNotFoundError(f"checkpoint {checkpoint} does not exist")
    own = checkpoint_dir(checkpoint) / RECIPE_FILE
    if not own.is_file():
        raise ConfigError(f"checkpoint {checkpoint} carries no recipe ({RECIPE_FILE}): it was written "
                          "before checkpoints described themselves or comes from elsewhere (the "
                          "official weights); give the recipe it was trained with (--config RECIPE)")
    return load_config(own, overrides)


def checkpoint_classes(checkpoint: str | Path, cfg: Config) -> list[str]:
    """The class names of a checkpoint: its card's, else those of ``cfg``'s data."""
    card = read_card(checkpoint)
    if card is not None:
        return list(card["classes"])
    return builders.class_names(cfg)


@dataclass
class LoadedModel:
    """A checkpoint's model in eval mode with what describes it."""

    model: nn.Module
    cfg: Config
    classes: list[str]
    checkpoint: Path
    card: dict | None  # None for a checkpoint without one


def load_model(checkpoint: str | Path, recipe: Config | str | Path | None = None, overrides: Iterable[str] = (),
               use_ema: bool | None = None) -> LoadedModel:
    """The model of ``checkpoint`` (a folder or weights file) with all its weights, in eval mode:
    the recipe and class names from the checkpoint, or from ``recipe`` and its data for a
    checkpoint without them. ``use_ema`` (default: the recipe's ``eval.use_ema``) loads the EMA
    weights."""
    from .checkpoint import load_weights

    path = Path(checkpoint)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    cfg = checkpoint_recipe(path, recipe, overrides)
    card = read_card(path)
    classes = checkpoint_classes(path, cfg)
    size = card["input_size"] if card is not None else builders.input_size(cfg)
    model = builders.build_model(apply_overrides(copy.deepcopy(cfg), NO_PRETRAINED), len(classes), size)
    load_weights(model, path, use_ema=cfg.eval.use_ema if use_ema is None else use_ema)
    return LoadedModel(model.eval(), cfg, classes, path, card)
