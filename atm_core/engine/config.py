"""Typed run configuration: YAML recipes in ``params/`` plus ``section.key=value`` overrides.

A recipe is a nested mapping with the sections below. ``base: other.yaml`` (a path
relative to the recipe) inherits another recipe and overrides it key by key. Every
key is checked against the dataclasses here: an unknown key fails with its file,
line and the closest valid key; a value of the wrong type fails naming the key.
"""
from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional, Union

import yaml

from ..ops import check_op_names
from ..temporal import TEMPORAL_MODULES

class ConfigError(ValueError):
    """A configuration problem, reported before any training starts."""


@dataclass
class ModelConfig:
    name: str = "atm_vit_tiny_patch8_64"  # a timm-registered video model
    img_size: Optional[int] = None  # null = the dataset's input size
    temporal: Literal["tsn", "tsm", "tokenshift", "tokent1d"] = "tokent1d"
    atm_ops: tuple[str, ...] = ("mul", "sub")  # () = no ATM
    # blocks (ViT) / stages (ResNet) that run before ATM, 0 = before the first; null = model default
    atm_after_blocks: Optional[int] = None
    atm_residual: Literal["relu", "identity"] = "relu"
    atm_hidden: Optional[int] = None  # ATM's reduced width; null = model default (64 published)
    atm_width: Optional[int] = None  # ATM's encoder / transfer width; null = model default (64)
    atm_context: int = 5  # ATM's temporal context K (odd): each frame with its K-1 nearest (5 published)
    atm_downsample: Optional[bool] = None  # stride-2 ATM reduction; null = model default
    atm_impl: Literal["auto", "plain", "cpu_fast"] = "auto"  # how ATM is computed (atm_core.atm): auto = cpu_fast on CPU
    conv_stem: Optional[tuple[int, ...]] = None  # ViT conv stem widths; null = default, [] = none
    dropout: float = 0.0  # before the classifier
    drop_path_rate: float = 0.0
    pretrained: bool = False
    pretrained_file: Optional[str] = None
    grad_checkpointing: bool = False
    kwargs: dict = field(default_factory=dict)  # extra keyword arguments for timm.create_model


@dataclass
class DataConfig:
    dataset: Literal["ssv1", "ssv2", "k400", "synthetic", "custom"] = "synthetic"
    root: str = "data/synthetic"
    train_list: Optional[str] = None  # default: the preset's list file under root
    val_list: Optional[str] = None
    test_list: Optional[str] = None  # the final (multi-view) evaluation's list; null = val_list
    num_frames: int = 8  # clip length: frames the sampler draws per clip and the model is built for
    num_sample: Optional[int] = None  # repeated augmentation (clips per video per step); null = preset
    num_workers: int = 2
    on_error: Literal["raise", "skip"] = "raise"
    preflight: bool = True  # before training, open every listed video once (atm_core.data.preflight)
    options: dict = field(default_factory=dict)  # dataset preset overrides (atm_core.data DatasetPreset fields)
    generate: Optional[dict] = None  # synthetic only: generator kwargs, used to create root if absent
    create_root: bool = False  # let data.generate write to a data.root other than data/synthetic


@dataclass
class OptimConfig:
    lr: float = 1e-3  # for a total batch of 256, scaled linearly
    warmup_lr: float = 1e-6  # scaled like lr
    min_lr: float = 1e-6  # scaled like lr
    weight_decay: float = 0.05
    layer_decay: float = 1.0  # 1.0 = no layer-wise decay
    atm_lr_scale: float = 1.0  # lr multiplier for ATM's parameters (trained from scratch)
    betas: tuple[float, ...] = (0.9, 0.999)
    eps: float = 1e-8
    clip_grad: Optional[float] = None  # max gradient norm
    sched: Literal["cosine", "constant"] = "cosine"
    epochs: int = 20
    warmup_epochs: float = 5.0
    scale_lr: bool = True  # multiply lr, warmup_lr, min_lr by total_batch / 256


@dataclass
class LossConfig:
    label_smoothing: float = 0.1
    mixup: float = 0.0  # mixup alpha, 0 = off
    cutmix: float = 0.0  # cutmix alpha, 0 = off
    mixup_prob: float = 1.0
    mixup_switch_prob: float = 0.5


@dataclass
class TrainConfig:
    output_dir: str = "runs/default"
    seed: int = 0
    batch_size: int = 16  # videos per device per step
    grad_accum: int = 1
    mixed_precision: Literal["no", "bf16", "fp16"] = "no"
    ema: bool = False
    ema_decay: float = 0.9998
    eval_every: int = 1  # epochs
    save_every_steps: int = 0  # extra mid-epoch checkpoints, 0 = only at epoch ends
    save_every_minutes: float = 5.0  # also a checkpoint once this much time passed since the last; 0 = off
    keep_last: int = 2  # epoch checkpoints kept besides best/
    resume: Optional[str] = None  # "auto", a checkpoint directory, or null
    threads: int = 0  # torch intra-op threads, 0 = leave torch's default
    log_every: int = 10  # steps between tqdm postfix updates
    tensorboard: bool = True  # used when tensorboard is installed
    progress: bool = True  # tqdm bars on the main process


@dataclass
class EvalConfig:
    num_clips: Optional[int] = None  # temporal clips per video at test time; null = preset
    num_crops: Optional[int] = None  # spatial crops per clip at test time; null = preset
    batch_size: int = 8  # videos per device
    use_ema: bool = False
    checkpoint: str = "best"  # "best", "last" or a path, for python -m atm_core.evaluate
    out_dir: Optional[str] = None  # default: <train.output_dir>/eval
    after_train: bool = True  # evaluate best/ when training ends


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def to_dict(self) -> dict:
        return _plain(dataclasses.asdict(self))

    def to_yaml(self, path: str | Path | None = None) -> str:
        text = yaml.safe_dump(self.to_dict(), sort_keys=False)
        if path is not None:
            Path(path).write_text(text)
        return text


SECTIONS: dict[str, type] = {f.name: f.default_factory for f in dataclasses.fields(Config)}


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def valid_keys() -> list[str]:
    return [f"{s}.{f.name}" for s, cls in SECTIONS.items() for f in dataclasses.fields(cls)]


# keys that were renamed, with what the new key means
RENAMED = {"model.atm_layer": ("model.atm_after_blocks", "the number of blocks before ATM, "
                                                        "the old 1-based atm_layer minus 1")}


def _suggest(key: str) -> str:
    if key in RENAMED:
        new, meaning = RENAMED[key]
        return f"; it is now '{new}' ({meaning})"
    keys = valid_keys()
    leaf_to_key = {k.split(".", 1)[1]: k for k in keys}
    close = difflib.get_close_matches(key, keys, n=1, cutoff=0.5)
    if not close:
        leaf = difflib.get_close_matches(key.rsplit(".", 1)[-1], list(leaf_to_key), n=1, cutoff=0.6)
        close = [leaf_to_key[leaf[0]]] if leaf else []
    return f"; did you mean '{close[0]}'?" if close else f"; valid sections: {', '.join(SECTIONS)}"


# ---------------------------------------------------------------- type checking

def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(key: str, value: Any, tp: Any, where: str) -> Any:
    """``value`` checked (and losslessly converted) against the annotation ``tp``."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        errors = []
        for a in inner:
            try:
                return _coerce(key, value, a, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if len(errors) == 1 else
                          f"{where}key '{key}' expects {_type_name(tp)}, got {value!r}")
    if origin is Literal:
        if isinstance(value, bool) or value not in args:
            hint = (" (YAML reads unquoted no/yes/on/off as booleans: quote the value, e.g. 'no')"
                    if isinstance(value, bool) else "")
            raise ConfigError(f"{where}key '{key}' must be one of {list(args)}, got {value!r}{hint}")
        return value
    if origin is tuple:
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}key '{key}' expects a list, got {value!r}")
        return tuple(_coerce(f"{key}[{i}]", v, args[0], where) for i, v in enumerate(value))
    if tp is dict or origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}key '{key}' expects a mapping, got {value!r}")
        return dict(value)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}key '{key}' expects true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}key '{key}' expects an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):  # PyYAML reads 1e-3 (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}key '{key}' expects a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}key '{key}' expects a string, got {value!r}")
        return value
    raise TypeError(f"unsupported annotation {tp!r} for '{key}'")


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


# ---------------------------------------------------------------- YAML loading

def _line_index(text: str) -> dict[str, int]:
    """Dotted key -> 1-based line number in a YAML text, for error messages."""
    lines: dict[str, int] = {}

    def walk(node: yaml.Node, prefix: str) -> None:
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                name = f"{prefix}{k.value}"
                lines[name] = k.start_mark.line + 1
                walk(v, name + ".")

    root = yaml.compose(text)
    if root is not None:
        walk(root, "")
    return lines


def _read_recipe(path: Path, seen: tuple[Path, ...] = ()) -> list[tuple[dict, Path, dict[str, int]]]:
    """The chain of recipes ``path`` inherits from, base first."""
    path = path.resolve()
    if path in seen:
        raise ConfigError(f"{path}: circular 'base' chain: {' -> '.join(map(str, seen + (path,)))}")
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    text = path.read_text()
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: invalid YAML: {e}") from e
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a recipe must be a mapping of sections, got {type(data).__name__}")
    chain = []
    base = data.pop("base", None)
    if base is not None:
        if not isinstance(base, str):
            raise ConfigError(f"{path}: 'base' must be a file name, got {base!r}")
        chain = _read_recipe(path.parent / base, seen + (path,))
    return chain + [(data, path, _line_index(text))]


def _apply_mapping(cfg: Config, data: dict, source: str, lines: dict[str, int]) -> None:
    for section, values in data.items():
        where = f"{source}:{lines.get(section, '?')}: " if source else ""
        if section not in SECTIONS:
            raise ConfigError(f"{where}unknown section '{section}'{_suggest(section)}")
        if not isinstance(values, dict):
            raise ConfigError(f"{where}section '{section}' must be a mapping, got {values!r}")
        for key, value in values.items():
            dotted = f"{section}.{key}"
            kwhere = f"{source}:{lines.get(dotted, '?')}: " if source else ""
            _set(cfg, dotted, value, kwhere)


def _set(cfg: Config, dotted: str, value: Any, where: str = "", raw: str | None = None) -> None:
    """Set ``section.key`` (or ``section.key.sub...`` inside a mapping-valued key). Mappings
    merge into the current mapping key by key, so a recipe refines its base's options."""
    section, _, rest = dotted.partition(".")
    key, _, sub = rest.partition(".")
    if section not in SECTIONS or not key:
        raise ConfigError(f"{where}unknown key '{dotted}'{_suggest(dotted)}")
    obj = getattr(cfg, section)
    hints = _hints(type(obj))
    if key not in hints:
        raise ConfigError(f"{where}unknown key '{dotted}'{_suggest(dotted)}")
    tp = hints[key]
    if sub:
        if not _accepts_dict(tp):
            raise ConfigError(f"{where}key '{section}.{key}' is not a mapping; cannot set '{dotted}'")
        value = _nested({}, sub.split("."), value)
    elif raw is not None and _accepts_str(tp):  # overrides of string keys keep their text verbatim
        value = None if raw.lower() in ("null", "none", "~") and _accepts_none(tp) else raw
    current = getattr(obj, key)
    if isinstance(value, dict) and isinstance(current, dict):
        value = _merge(current, value)
    setattr(obj, key, _coerce(f"{section}.{key}", value, tp, where))


def _nested(target: dict, keys: list[str], value: Any) -> dict:
    node = target
    for k in keys[:-1]:
        node = node.setdefault(k, {})
    node[keys[-1]] = value
    return target


def _merge(base: dict, update: dict) -> dict:
    merged = dict(base)
    for k, v in update.items():
        merged[k] = _merge(merged[k], v) if isinstance(v, dict) and isinstance(merged.get(k), dict) else v
    return merged


def _accepts_dict(tp: Any) -> bool:
    return tp is dict or typing.get_origin(tp) is dict or dict in typing.get_args(tp)


def _accepts_str(tp: Any) -> bool:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Literal:
        return all(isinstance(a, str) for a in args)
    return tp is str or (origin in (Union, types.UnionType) and any(_accepts_str(a) for a in args))


def _accepts_none(tp: Any) -> bool:
    return type(None) in typing.get_args(tp)


def parse_override(text: str) -> tuple[str, Any, str]:
    """``"section.key=value"`` -> (key, YAML-parsed value, raw value)."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"override '{text}' must look like section.key=value")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key, value, raw


def apply_overrides(cfg: Config, overrides: typing.Iterable[str]) -> Config:
    for text in overrides:
        key, value, raw = parse_override(text)
        _set(cfg, key, value, where=f"override '{text}': ", raw=raw)
    return cfg


def load_config(path: str | Path | None = None, overrides: typing.Iterable[str] = (),
                data: dict | None = None) -> Config:
    """Defaults <- recipe chain of ``path`` <- ``data`` (a nested dict) <- ``overrides``."""
    cfg = Config()
    if path is not None:
        for mapping, source, lines in _read_recipe(Path(path)):
            _apply_mapping(cfg, mapping, str(source), lines)
    if data is not None:
        _apply_mapping(cfg, data, "", {})
    apply_overrides(cfg, overrides)
    check_values(cfg)
    return cfg


def as_config(cfg: Config | str | Path | dict) -> Config:
    if isinstance(cfg, Config):
        check_values(cfg)
        return cfg
    if isinstance(cfg, dict):
        return load_config(data=cfg)
    return load_config(cfg)


def check_values(cfg: Config) -> None:
    """Value checks that need no files: ranges and keys that depend on each other."""
    for section, cls in SECTIONS.items():  # re-check types (a Config may have been edited in Python)
        obj = getattr(cfg, section)
        for key, tp in _hints(cls).items():
            setattr(obj, key, _coerce(f"{section}.{key}", getattr(obj, key), tp, ""))

    def positive(key: str, value: float, allow_zero: bool = False) -> None:
        if value < 0 or (value == 0 and not allow_zero):
            raise ConfigError(f"key '{key}' must be {'>= 0' if allow_zero else '> 0'}, got {value}")

    for key in ("model.img_size", "model.atm_hidden",
                "model.atm_width", "model.atm_context", "data.num_frames",
                "data.num_sample", "train.batch_size", "train.grad_accum", "optim.epochs", "optim.atm_lr_scale",
                "eval.num_clips", "eval.num_crops", "eval.batch_size", "train.eval_every",
                "train.keep_last", "train.log_every"):
        section, name = key.split(".")
        value = getattr(getattr(cfg, section), name)
        if value is not None:
            positive(key, value)
    for key in ("optim.lr", "optim.warmup_lr", "optim.min_lr", "optim.weight_decay",
                "optim.warmup_epochs", "loss.label_smoothing", "loss.mixup", "loss.cutmix",
                "data.num_workers", "train.save_every_steps", "train.save_every_minutes", "train.threads",
                "model.dropout", "model.drop_path_rate", "model.atm_after_blocks"):
        section, name = key.split(".")
        value = getattr(getattr(cfg, section), name)
        if value is not None:
            positive(key, value, allow_zero=True)
    if not 0 < cfg.optim.layer_decay <= 1:
        raise ConfigError(f"key 'optim.layer_decay' must be in (0, 1], got {cfg.optim.layer_decay}")
    if cfg.optim.warmup_epochs >= cfg.optim.epochs and cfg.optim.warmup_epochs > 0:
        raise ConfigError(f"key 'optim.warmup_epochs' ({cfg.optim.warmup_epochs}) must be smaller "
                          f"than 'optim.epochs' ({cfg.optim.epochs})")
    if len(cfg.optim.betas) != 2:
        raise ConfigError(f"key 'optim.betas' needs two values, got {list(cfg.optim.betas)}")
    try:
        check_op_names(cfg.model.atm_ops)
    except ValueError as e:
        raise ConfigError(f"key 'model.atm_ops': {e}") from None
    if cfg.model.atm_context % 2 == 0:
        raise ConfigError(f"key 'model.atm_context' must be odd (the frame and as many neighbours "
                          f"before as after it), got {cfg.model.atm_context}")
    if cfg.model.temporal not in TEMPORAL_MODULES:
        raise ConfigError(f"key 'model.temporal' must be one of {list(TEMPORAL_MODULES)}")
    if cfg.train.save_every_steps % cfg.train.grad_accum:
        raise ConfigError(f"key 'train.save_every_steps' ({cfg.train.save_every_steps}) must be a "
                          f"multiple of 'train.grad_accum' ({cfg.train.grad_accum}): a checkpoint "
                          "cannot hold half-accumulated gradients")
    if cfg.train.resume not in (None, "auto") and not Path(cfg.train.resume).exists():
        raise ConfigError(f"key 'train.resume': checkpoint {cfg.train.resume} does not exist "
                          "(use 'auto' to resume from the latest checkpoint of train.output_dir)")
