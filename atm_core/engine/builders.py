"""Config -> datasets and model, with every check that can fail done before training starts."""
from __future__ import annotations

import difflib
import json
import os
from pathlib import Path

import timm
import torch.nn as nn

from .config import Config, ConfigError


def write_benchmark_if_asked(cfg: Config) -> None:
    """Write the built-in benchmark to ``data.root`` when ``data.generate`` asks for it (see
    :func:`atm_core.data.synthetic.ensure_benchmark`; main process only), errors phrased in
    config keys."""
    if cfg.data.dataset != "synthetic" or cfg.data.generate is None:
        return
    from ..data.synthetic import TRACK_ROOTS, ensure_benchmark

    try:
        ensure_benchmark(cfg.data.root, cfg.data.generate, create=cfg.data.create_root,
                         workers=os.cpu_count() or 1)
    except FileNotFoundError as e:
        default = TRACK_ROOTS.get(synthetic_track(cfg), TRACK_ROOTS["shapes"])
        raise ConfigError(f"key 'data.root': {e} (set data.create_root=true to write it to "
                          f"{cfg.data.root}, or data.root={default})") from e
    except ValueError as e:
        raise ConfigError(f"key 'data.generate': {e} (data.generate: null)") from e


def synthetic_track(cfg: Config) -> str:
    """The built-in benchmark track ``cfg`` reads: ``data.generate.track``, else the one recorded
    in the benchmark under ``data.root``, else the shapes track."""
    from ..data.synthetic import SPEC_FILE

    if cfg.data.generate is not None and "track" in cfg.data.generate:
        return cfg.data.generate["track"]
    spec = Path(cfg.data.root) / SPEC_FILE
    return json.loads(spec.read_text()).get("track", "shapes") if spec.is_file() else "shapes"


def dataset_options(cfg: Config, split: str) -> dict:
    options = dict(cfg.data.options)
    if cfg.data.dataset == "synthetic" and "flip_labels" not in options:
        from ..data.synthetic import benchmark_track

        options["flip_labels"] = benchmark_track(synthetic_track(cfg)).flip_labels
    if cfg.data.num_sample is not None:
        options["num_sample"] = cfg.data.num_sample
    if split == "test":
        if cfg.eval.num_clips is not None:
            options["test_num_segment"] = cfg.eval.num_clips
        if cfg.eval.num_crops is not None:
            options["test_num_crop"] = cfg.eval.num_crops
    return options


def build_split(cfg: Config, split: str):
    """The dataset of one split (train / val / test), errors phrased in config keys."""
    from ..data import build_dataset
    from ..data.errors import DataError

    root = Path(cfg.data.root)
    if not root.is_dir():
        hint = (" (or set data.generate: {} and data.create_root: true to write the built-in "
                "benchmark there)" if cfg.data.dataset == "synthetic" else "")
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


def build_model(cfg: Config, num_classes: int, img_size: int) -> nn.Module:
    """The timm-registered video model the config names, sized for the data."""
    from .. import models  # noqa: F401  (registers the video models with timm)

    m = cfg.model
    check_model_name(m.name)
    kwargs = dict(num_classes=num_classes, num_frames=cfg.data.num_frames, temporal=m.temporal,
                  atm_ops=tuple(m.atm_ops), atm_residual=m.atm_residual, atm_context=m.atm_context,
                  atm_impl=m.atm_impl,
                  dropout=m.dropout, drop_path_rate=m.drop_path_rate, img_size=m.img_size or img_size,
                  pretrained=m.pretrained, **m.kwargs)
    for key in ("atm_after_blocks", "atm_hidden", "atm_width", "atm_downsample", "conv_stem"):
        if getattr(m, key) is not None:
            kwargs[key] = getattr(m, key)
    if m.pretrained_file is not None:
        kwargs["pretrained_file"] = m.pretrained_file
    try:
        model = timm.create_model(m.name, **kwargs)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"model '{m.name}' rejected its configuration: {e}") from e
    if m.grad_checkpointing:
        model.set_grad_checkpointing(True)
    return model
