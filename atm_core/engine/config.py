"""Typed run configuration: YAML recipes in ``params/`` plus ``section.key=value`` overrides.

A recipe is a nested mapping with the sections below. ``base: other.yaml`` (a path
relative to the recipe) inherits another recipe and overrides it key by key. The dataclasses
here are OmegaConf structured configs: OmegaConf types, merges and parses the overrides (its
dotlist); this module adds the ``base:`` chain and errors in the config's words (an unknown key
with its file, line and the closest valid key, a value of the wrong type naming the key).
"""
from __future__ import annotations

import dataclasses
import difflib
import functools
import re
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional, Union

import yaml
from accelerate.utils import LoggerType
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException

from ..atm import ATMOptionError, ATMOptions
from ..data.presets import PRESETS
from ..temporal import TEMPORAL_MODULES
from .yaml_files import ConfigError, read_chain

TRACKERS = tuple(t.value for t in LoggerType if t is not LoggerType.ALL)

@dataclass
class ModelConfig:
    name: str = "atm_vit_tiny_patch8_64"  # a timm-registered video model
    img_size: Optional[int] = None  # null = the dataset's input size
    temporal: Literal[TEMPORAL_MODULES] = "tokent1d"
    # ATM's settings (atm_core.atm.ATMOptions: ops, after_blocks, hidden, width, context, window,
    # residual, downsample, impl), handed whole to the model; null = the model's default
    atm: ATMOptions = field(default_factory=ATMOptions)
    conv_stem: Optional[tuple[int, ...]] = None  # ViT conv stem widths; null = default, [] = none
    dropout: float = 0.0  # before the classifier
    drop_path_rate: float = 0.0
    pretrained: bool = False
    pretrained_file: Optional[str] = None
    grad_checkpointing: bool = False
    kwargs: dict = field(default_factory=dict)  # extra keyword arguments for timm.create_model


@dataclass
class DataConfig:
    dataset: Literal[tuple(PRESETS)] = "synthetic"
    root: str = "data/synthetic"
    train_list: Optional[str] = None  # default: the preset's list file under root
    val_list: Optional[str] = None
    test_list: Optional[str] = None  # the final (multi-view) evaluation's list; null = val_list
    num_frames: int = 8  # clip length: frames the sampler draws per clip and the model is built for
    num_sample: Optional[int] = None  # repeated augmentation (clips per video per step); null = preset
    num_workers: int = 2
    on_error: Literal["raise", "skip"] = "raise"
    # a video with fewer frames than num_frames: "error" (a bad video, see on_error) or "pad"
    # (frames repeat; every padded clip is counted per split)
    short_clips: Literal["error", "pad"] = "error"
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
    # auto: bf16 where the hardware computes it natively (engine.runtime.native_bf16), else no;
    # decided when the run starts and written into its config.yaml as what ran
    mixed_precision: Literal["auto", "no", "bf16", "fp16"] = "no"
    ema: bool = False
    ema_decay: float = 0.9998
    eval_every: int = 1  # epochs
    save_every_steps: int = 0  # extra mid-epoch checkpoints, 0 = only at epoch ends
    save_every_minutes: float = 5.0  # also a checkpoint once this much time passed since the last; 0 = off
    keep_last: int = 2  # epoch checkpoints kept besides best/
    resume: Optional[str] = None  # "auto", a checkpoint directory, or null
    overwrite: bool = False  # a new run in an output_dir holding another run removes that run first
    threads: int = 0  # torch intra-op threads, 0 = leave torch's default
    log_every: int = 10  # steps between reads of the training loss (tqdm postfix)
    # experiment trackers (Accelerate's) that get the config and each epoch's record besides
    # metrics.jsonl: tensorboard, mlflow, wandb, ...; [] = metrics.jsonl only
    log_with: tuple[Literal[TRACKERS], ...] = ("tensorboard",)
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
        return OmegaConf.to_container(OmegaConf.structured(self))

    def to_yaml(self, path: str | Path | None = None) -> str:
        text = yaml.safe_dump(self.to_dict(), sort_keys=False)
        if path is not None:
            Path(path).write_text(text)
        return text


SECTIONS: dict[str, type] = {f.name: f.default_factory for f in dataclasses.fields(Config)}


def valid_keys() -> list[str]:
    keys = []
    for section, cls in SECTIONS.items():
        for f in dataclasses.fields(cls):
            tp = typing.get_type_hints(cls)[f.name]
            nested = dataclasses.fields(tp) if dataclasses.is_dataclass(tp) else ()
            keys += [f"{section}.{f.name}.{n.name}" for n in nested] or [f"{section}.{f.name}"]
    return keys


# keys that were renamed, with what the new key means
RENAMED = {
    "model.atm_layer": ("model.atm.after_blocks", "the number of blocks before ATM, "
                                                  "the old 1-based atm_layer minus 1"),
    **{f"model.atm_{name}": (f"model.atm.{name}", "ATM's settings are one section, model.atm")
       for name in (f.name for f in dataclasses.fields(ATMOptions))},
    "train.tensorboard": ("train.log_with", "the experiment trackers by name, [] for none"),
}


def _suggest(key: str) -> str:
    if key in RENAMED:
        new, meaning = RENAMED[key]
        return f"; it is now '{new}' ({meaning})"
    keys = valid_keys()
    leaf_to_key = {k.rsplit(".", 1)[1]: k for k in keys}
    close = difflib.get_close_matches(key, keys, n=1, cutoff=0.5)
    if not close:
        leaf = difflib.get_close_matches(key.rsplit(".", 1)[-1], list(leaf_to_key), n=1, cutoff=0.6)
        close = [leaf_to_key[leaf[0]]] if leaf else []
    return f"; did you mean '{close[0]}'?" if close else f"; valid sections: {', '.join(SECTIONS)}"


# ---------------------------------------------------------------- errors in the config's words

def _annotation(key: str) -> Any:
    """The type a dotted key (``model.atm.ops``, ``train.log_with[1]``) is declared with, or None."""
    tp: Any = Config
    for part in re.sub(r"\[\d+\]", "", key).split("."):
        tp = _optional_inner(tp)
        if not dataclasses.is_dataclass(tp) or part not in typing.get_type_hints(tp):
            return None
        tp = typing.get_type_hints(tp)[part]
    if key.endswith("]"):
        tp = typing.get_args(_optional_inner(tp))[0]
    return tp


def _optional_inner(tp: Any) -> Any:
    if typing.get_origin(tp) in (Union, types.UnionType):
        inner = [a for a in typing.get_args(tp) if a is not type(None)]
        return inner[0] if len(inner) == 1 else tp
    return tp


def _takes_text(tp: Any) -> bool:
    tp = _optional_inner(tp)
    if typing.get_origin(tp) is Literal:
        return all(isinstance(a, str) for a in typing.get_args(tp))
    return tp is str


def _expects(tp: Any, value: Any) -> str:
    """What a key of type ``tp`` takes, phrased for the error of ``value``."""
    tp = _optional_inner(tp)
    if typing.get_origin(tp) is Literal:
        hint = (" (YAML reads unquoted no/yes/on/off as booleans: quote the value, e.g. 'no')"
                if isinstance(value, bool) else "")
        return f"must be one of {list(typing.get_args(tp))}, got {value!r}{hint}"
    kinds = {bool: "true/false", int: "an integer", float: "a number", str: "a string", dict: "a mapping",
             tuple: "a list"}
    kind = kinds.get(typing.get_origin(tp) or tp)
    if dataclasses.is_dataclass(tp):
        kind = f"a mapping of {', '.join(typing.get_type_hints(tp))}"
    return f"expects {kind}, got {value!r}" if kind else f"got {value!r}"


def _dotted_keys(data: Any, prefix: str = "") -> list[str]:
    """The dotted keys of the leaves of a nested mapping."""
    if not isinstance(data, dict) or not data:
        return [prefix[:-1]] if prefix else []
    return [key for name, value in data.items() for key in _dotted_keys(value, f"{prefix}{name}.")]


def _config_error(error: Exception, data: dict, where: Callable[[str], str], section_words: bool) -> ConfigError:
    """An OmegaConf or ATM option error of merging ``data``, as one line naming the key."""
    if isinstance(error, ATMOptionError):
        key = f"model.atm.{error.field}"
        return ConfigError(f"{where(key)}key '{key}': {error.detail}")
    tried = _dotted_keys(data)
    key = getattr(error, "full_key", None) or (tried[0] if tried else "")
    if isinstance(error, ConfigKeyError):
        if section_words and "." not in key:
            return ConfigError(f"{where(key)}unknown section '{key}'{_suggest(key)}")
        key = next((k for k in tried if k.startswith(f"{key}.")), key)  # the whole key, not its first part
        return ConfigError(f"{where(key)}unknown key '{key}'{_suggest(key)}")
    tp = _annotation(key)
    if tp is None:
        return ConfigError(f"{where(key)}{str(error).splitlines()[0]}")
    value = OmegaConf.select(OmegaConf.create(data), key)
    value = OmegaConf.to_container(value) if OmegaConf.is_config(value) else value
    return ConfigError(f"{where(key)}key '{key}' {_expects(tp, value)}")


def _merged(cfg: DictConfig, data: dict, where: Callable[[str], str] = lambda key: "",
            section_words: bool = False) -> DictConfig:
    """``data`` (a nested mapping) merged into ``cfg``: typed, mappings merged key by key."""
    for section, values in data.items():
        if section in SECTIONS and not isinstance(values, dict):
            raise ConfigError(f"{where(section)}section '{section}' must be a mapping, got {values!r}")
    try:
        merged = OmegaConf.merge(cfg, data)
        OmegaConf.to_object(merged)  # builds the nested options objects, which check themselves
    except (OmegaConfBaseException, ATMOptionError) as e:
        raise _config_error(e, data, where, section_words) from None
    return merged


# ---------------------------------------------------------------- loading: recipe chain, data, overrides

def _dotlist(text: str) -> dict:
    """``"section.key=value"`` as a nested mapping, the value read as YAML (OmegaConf's dotlist)."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"override '{text}' must look like section.key=value")
    if _takes_text(_annotation(key)) and raw.strip().lower() not in ("null", "none", "~"):
        # a string key keeps the override's text: YAML would read no as false and 007 as 7
        return functools.reduce(lambda inner, part: {part: inner}, reversed(key.split(".")), raw)
    try:
        return OmegaConf.to_container(OmegaConf.from_dotlist([text]))
    except OmegaConfBaseException as e:
        raise ConfigError(f"override '{text}': {str(e).splitlines()[0]}") from None


def _with_overrides(cfg: DictConfig, overrides: typing.Iterable[str]) -> DictConfig:
    for text in overrides:
        cfg = _merged(cfg, _dotlist(text), lambda key, text=text: f"override '{text}': ")
    return cfg


def _build(cfg: DictConfig) -> Config:
    built = OmegaConf.to_object(cfg)
    check_values(built)
    return built


def apply_overrides(cfg: Config, overrides: typing.Iterable[str]) -> Config:
    """A copy of ``cfg`` with ``section.key=value`` overrides applied."""
    return _build(_with_overrides(_structured(cfg), overrides))


def load_config(path: str | Path | None = None, overrides: typing.Iterable[str] = (),
                data: dict | None = None) -> Config:
    """Defaults <- recipe chain of ``path`` <- ``data`` (a nested dict) <- ``overrides``."""
    cfg = OmegaConf.structured(Config)
    if path is not None:
        for mapping, source, lines in read_chain(Path(path)):
            cfg = _merged(cfg, mapping, _located(source, lines), section_words=True)
    if data is not None:
        cfg = _merged(cfg, data, section_words=True)
    return _build(_with_overrides(cfg, overrides))


def load_run_config(path: str | Path) -> Config:
    """The ``config.yaml`` a training run wrote, also one written before ATM's settings became the
    ``model.atm`` section and the trackers ``train.log_with``: a record of what ran, read as the
    same settings under their new keys (a recipe with the old keys is refused instead)."""
    data = yaml.safe_load(Path(path).read_text()) or {}
    model, train = data.get("model") or {}, data.get("train") or {}
    old = {k.removeprefix("atm_"): model.pop(k) for k in list(model)
           if k.startswith("atm_") and k.removeprefix("atm_") in ATMOptions.__dataclass_fields__}
    if old:
        model["atm"] = {**old, **(model.get("atm") or {})}
    if "tensorboard" in train:
        train["log_with"] = ["tensorboard"] if train.pop("tensorboard") else []
    return load_config(data=data)


def _located(source: Path, lines: dict[str, int]) -> Callable[[str], str]:
    """``key -> "file:line: "``, the line of the key or of the nearest enclosing one."""
    def where(key: str) -> str:
        parts = re.sub(r"\[\d+\]", "", key).split(".")
        found = next((lines[".".join(parts[:n])] for n in range(len(parts), 0, -1)
                      if ".".join(parts[:n]) in lines), "?")
        return f"{source}:{found}: "
    return where


def _structured(cfg: Config) -> DictConfig:
    """A Config built or edited in Python, type-checked as a recipe would be."""
    try:
        return OmegaConf.structured(cfg)
    except OmegaConfBaseException as e:
        raise _config_error(e, cfg.to_dict(), lambda key: "", False) from None


def as_config(cfg: Config | str | Path | dict) -> Config:
    if isinstance(cfg, Config):
        return _build(_structured(cfg))
    if isinstance(cfg, dict):
        return load_config(data=cfg)
    return load_config(cfg)


def check_values(cfg: Config) -> None:
    """Value checks that need no files: ranges and keys that depend on each other."""
    def positive(key: str, value: float, allow_zero: bool = False) -> None:
        if value < 0 or (value == 0 and not allow_zero):
            raise ConfigError(f"key '{key}' must be {'>= 0' if allow_zero else '> 0'}, got {value}")

    for key in ("model.img_size", "data.num_frames",
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
                "model.dropout", "model.drop_path_rate"):
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
    if cfg.train.save_every_steps % cfg.train.grad_accum:
        raise ConfigError(f"key 'train.save_every_steps' ({cfg.train.save_every_steps}) must be a "
                          f"multiple of 'train.grad_accum' ({cfg.train.grad_accum}): a checkpoint "
                          "cannot hold half-accumulated gradients")
    if cfg.train.resume not in (None, "auto") and not Path(cfg.train.resume).exists():
        raise ConfigError(f"key 'train.resume': checkpoint {cfg.train.resume} does not exist "
                          "(use 'auto' to resume from the latest checkpoint of train.output_dir)")
