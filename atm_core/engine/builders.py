"""Config -> datasets and model, with every check that can fail done before training starts."""
from __future__ import annotations

import difflib
import os
from pathlib import Path

import timm
import torch.nn as nn

from ..data import build_dataset
from ..data.dataset import VideoDataset
from ..data.errors import DataError
from ..data.presets import HOOKS, preset_classes, resolve_preset
from ..atm import ATMOptions
from ..models import resolved_atm
from ..models.weights import load_video_weights
from .config import Config, ConfigError


def prepare_dataset(cfg: Config, replace: bool = False) -> None:
    """Let the dataset preset write its data to ``data.root`` when ``data.generate`` asks for it
    (the built-in benchmark; main process only), errors phrased in config keys."""
    try:
        HOOKS[cfg.data.dataset].prepare(cfg.data.root, cfg.data.generate, create=cfg.data.create_root or replace,
                                        replace=replace, workers=os.cpu_count() or 1)
    except FileNotFoundError as e:
        raise ConfigError(f"key 'data.root': {e} (set data.create_root=true to write it to "
                          f"{cfg.data.root})") from e
    except ValueError as e:
        raise ConfigError(f"key 'data.generate': {e} (data.generate: null)") from e


def dataset_options(cfg: Config, split: str) -> dict:
    """The preset fields ``cfg`` sets for ``split``: the data's own defaults, ``data.options``, then
    the config keys that stand for preset fields."""
    options = {**HOOKS[cfg.data.dataset].defaults(cfg.data.root, cfg.data.generate), **cfg.data.options}
    if cfg.data.num_sample is not None:
        options["num_sample"] = cfg.data.num_sample
    if split == "test":
        if cfg.eval.num_clips is not None:
            options["test_num_segment"] = cfg.eval.num_clips
        if cfg.eval.num_crops is not None:
            options["test_num_crop"] = cfg.eval.num_crops
    return options


def dataset(cfg: Config, split: str) -> VideoDataset:
    """The dataset of one split (train / val / test), errors phrased in config keys."""
    root = Path(cfg.data.root)
    if not root.is_dir():
        hint = (" (or set data.generate: {} and data.create_root: true to write the built-in "
                "benchmark there)" if HOOKS[cfg.data.dataset].generates else "")
        raise ConfigError(f"key 'data.root': directory {root} does not exist{hint}")
    list_file = {"train": cfg.data.train_list, "val": cfg.data.val_list,
                 "test": cfg.data.test_list or cfg.data.val_list}[split]
    try:
        return build_dataset(cfg.data.dataset, split, root, list_file, num_frames=cfg.data.num_frames,
                             on_error=cfg.data.on_error, short_clips=cfg.data.short_clips,
                             **dataset_options(cfg, split))
    except TypeError as e:  # an unknown preset field
        raise ConfigError(f"key 'data.options': {e}") from e
    except (DataError, FileNotFoundError, ValueError) as e:
        raise ConfigError(f"data ({cfg.data.dataset}, split {split!r}, root {root}): {e}") from e


def input_size(cfg: Config) -> int:
    """The side of the square frames the model of ``cfg`` takes: ``model.img_size``, else the
    dataset preset's ``input_size`` (with ``data.options``)."""
    return cfg.model.img_size or resolve_preset(cfg.data.dataset, dataset_options(cfg, "val")).input_size


def class_names(cfg: Config) -> list[str]:
    """The class names of ``cfg``'s data, as its datasets name them (the label file under
    ``data.root``, else the preset's own names, else the class ids)."""
    try:
        return preset_classes(cfg.data.dataset, cfg.data.root, dataset_options(cfg, "val"), cfg.data.generate)
    except (DataError, ValueError) as e:
        raise ConfigError(f"data ({cfg.data.dataset}, root {cfg.data.root}): {e}") from e


def load_model(cfg: Config, checkpoint: str | Path | None = None) -> nn.Module:
    """The model ``cfg`` describes, sized for its data, with the weights of ``checkpoint`` (a
    checkpoint directory or weights file; ``eval.use_ema`` picks the EMA weights; None: as built),
    in eval mode."""
    classes = len(class_names(cfg))
    model = build_model(cfg, classes, input_size(cfg))
    if checkpoint is not None:
        try:
            load_video_weights(model, checkpoint, use_ema=cfg.eval.use_ema, strict=True)
        except ValueError as e:
            raise ConfigError(f"checkpoint {checkpoint} does not fit the model of this configuration "
                              f"({cfg.model.name}, {classes} classes): {e}") from e
    return model.eval()


def check_sample(cfg: Config, dataset, split: str) -> None:
    """Load one item and check it has the clip length and size the model expects."""
    clip = dataset[0][0]
    frames, size = clip.shape[-4], clip.shape[-1]
    if frames != cfg.data.num_frames:
        raise ConfigError(f"{split} clips have {frames} frames but data.num_frames={cfg.data.num_frames}")
    if cfg.model.img_size is not None and size != cfg.model.img_size:
        raise ConfigError(f"{split} clips are {size} px but model.img_size={cfg.model.img_size}; "
                          "set data.options.input_size or model.img_size so that they agree")


def check_model_name(name: str) -> None:
    if not timm.is_model(name):
        known = timm.list_models()
        close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise ConfigError(f"key 'model.name': no timm model named '{name}'{hint}")


def atm_options(cfg: Config) -> ATMOptions:
    """ATM's settings in the model ``cfg`` builds: ``model.atm`` over the model's defaults."""
    check_model_name(cfg.model.name)
    return resolved_atm(cfg.model.name, cfg.model.atm)


def build_model(cfg: Config, num_classes: int, img_size: int) -> nn.Module:
    """The timm-registered video model the config names, sized for the data."""
    m = cfg.model
    check_model_name(m.name)
    kwargs = dict(num_classes=num_classes, num_frames=cfg.data.num_frames, temporal=m.temporal, atm=m.atm,
                  dropout=m.dropout, drop_path_rate=m.drop_path_rate, img_size=m.img_size or img_size,
                  pretrained=m.pretrained, **m.kwargs)
    if m.conv_stem is not None:
        kwargs["conv_stem"] = m.conv_stem
    if m.pretrained_file is not None:
        kwargs["pretrained_file"] = m.pretrained_file
    try:
        model = timm.create_model(m.name, **kwargs)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"model '{m.name}' rejected its configuration: {e}") from e
    if m.grad_checkpointing:
        model.set_grad_checkpointing(True)
    return model
