"""Config -> datasets and model, with every check that can fail done before training starts."""
from __future__ import annotations

import dataclasses
import difflib
import shutil
from pathlib import Path

import timm
import torch.nn as nn

from .config import Config, ConfigError


def ensure_synthetic_data(cfg: Config, replace: bool = False) -> None:
    """Write the built-in benchmark to ``data.root`` when it is absent and ``data.generate``
    asks for it (call on the main process only). A benchmark already there must have been
    generated with the same settings, else it is an error or, with ``replace``, deleted and
    written again; ``data.generate: null`` uses whatever is there."""
    root = Path(cfg.data.root)
    if cfg.data.dataset != "synthetic" or cfg.data.generate is None:
        return
    from ..data.synthetic import SPEC_FILE, Difficulty, benchmark_spec, generate_benchmark, spec_differences

    kwargs = dict(cfg.data.generate)
    if "difficulty" in kwargs:
        fields = {f.name for f in dataclasses.fields(Difficulty)}
        unknown = set(kwargs["difficulty"]) - fields
        if unknown:
            raise ConfigError(f"key 'data.generate.difficulty' has unknown field(s) {sorted(unknown)}; "
                              f"valid: {sorted(fields)}")
        kwargs["difficulty"] = Difficulty(**{k: tuple(v) if isinstance(v, list) else v
                                             for k, v in kwargs["difficulty"].items()})
    try:
        spec = benchmark_spec(**kwargs)
    except TypeError as e:
        raise ConfigError(f"key 'data.generate': {e}") from e
    differences = spec_differences(root, spec) if (root / "train.txt").is_file() else None
    if differences == []:
        return
    if differences and not replace:
        what = (f"has no {SPEC_FILE} (written by an older version?)" if differences == [SPEC_FILE]
                else f"was generated with other settings: {', '.join(differences)}")
        raise ConfigError(f"key 'data.generate': the benchmark in {root} {what}; delete the folder to "
                          "regenerate it, or set data.generate: null to use it as it is")
    if differences:
        shutil.rmtree(root)
    generate_benchmark(root, **kwargs)


def dataset_options(cfg: Config, split: str) -> dict:
    options = dict(cfg.data.options)
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
        hint = (" (or set data.generate: {} to write the built-in benchmark there)"
                if cfg.data.dataset == "synthetic" else "")
        raise ConfigError(f"key 'data.root': directory {root} does not exist{hint}")
    list_file = {"train": cfg.data.train_list, "val": cfg.data.val_list,
                 "test": cfg.data.test_list or cfg.data.val_list}[split]
    try:
        return build_dataset(cfg.data.dataset, split, root, list_file, num_frames=cfg.data.num_frames,
                             on_error=cfg.data.on_error, **dataset_options(cfg, split))
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
                  dropout=m.dropout, drop_path_rate=m.drop_path_rate, img_size=m.img_size or img_size,
                  pretrained=m.pretrained, **m.kwargs)
    for key in ("atm_layer", "atm_hidden", "atm_width", "atm_downsample", "conv_stem"):
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
