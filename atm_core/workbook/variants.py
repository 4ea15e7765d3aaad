"""The benchmark's variants: one CPU recipe ``params/synthetic_<key>.yaml`` each, inheriting its
track's base recipe (:attr:`Variant.bases` names them). A
variant's model, temporal module, ATM ops and benchmark track are read from its recipe; its
display label follows from them."""
from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..engine import Config, load_config
from ..engine.builders import atm_options
from .project import WORK_DIR, project_root

VARIANT_KEYS = ("tsn", "tsm", "tokenshift", "tokent1d", "atm_add", "atm_sub", "atm_mul", "atm_div",
                "atm_mul_sub", "resnet_tsn", "resnet_atm_mul_sub",
                "textures_tsn", "textures_tokent1d", "textures_atm_sub", "textures_atm_mul_sub")
TRACK_NAMES = {"shapes": "shapes", "textures": "real textures"}
TRACK_TITLES = {"shapes": "shapes track", "textures": "real-texture track"}
TEMPORAL_LABELS = {"tsn": "TSN", "tsm": "TSM", "tokenshift": "TokenShift", "tokent1d": "TokenT1D"}

# --quick: a handful of tiny clips and one short epoch; everything else as in the full job.
QUICK_DATA = {"train_per_class": 1, "val_per_class": 1, "test_per_class": 1, "size": 64, "num_frames": 24}
QUICK_OVERRIDES = (
    "optim.epochs=1", "optim.warmup_epochs=0", "train.batch_size=6", "eval.batch_size=12",
    "data.num_workers=0", "eval.num_clips=1", "eval.num_crops=1", "train.log_with=[]",
)


def model_label(temporal: str, ops: Sequence[str], model_name: str = "") -> str:
    """How tables and figures name a model: ``ATM(mul, sub)`` when it has ATM ops, else its
    temporal module (``TokenT1D``); ``-ResNet`` appended for a ResNet backbone."""
    label = f"ATM({', '.join(ops)})" if ops else TEMPORAL_LABELS[temporal]
    return f"{label}-ResNet" if "resnet" in model_name else label


def config_label(cfg: Config) -> str:
    """:func:`model_label` of the model a run configuration describes."""
    return model_label(cfg.model.temporal, atm_options(cfg).ops, cfg.model.name)


def run_label(cfg: Config) -> str:
    """:func:`config_label`, with the track named when it is not the shapes track: a label that
    tells every run of the main job apart (``TSN``, ``TSN-ResNet``, ``TSN (real textures)``)."""
    track = config_track(cfg)
    return config_label(cfg) if track == "shapes" else f"{config_label(cfg)} ({TRACK_NAMES[track]})"


def config_track(cfg: Config) -> str:
    """The benchmark track a variant's recipe generates (``shapes`` unless it says otherwise)."""
    return (cfg.data.generate or {}).get("track", "shapes")


@dataclass(frozen=True)
class Variant:
    key: str

    @property
    def recipe(self) -> str:
        """The recipe, relative to the project folder."""
        return f"params/synthetic_{self.key}.yaml"

    def recipe_config(self) -> Config:
        return load_config(project_root() / self.recipe)

    @property
    def temporal(self) -> str:
        return self.recipe_config().model.temporal

    @property
    def ops(self) -> tuple[str, ...]:
        return tuple(atm_options(self.recipe_config()).ops)

    @property
    def label(self) -> str:
        return config_label(self.recipe_config())

    @property
    def track(self) -> str:
        return config_track(self.recipe_config())

    @property
    def bases(self) -> list[str]:
        """The recipes this variant's recipe inherits from, nearest first (file names)."""
        return [path.name for path in recipe_chain(project_root() / self.recipe)[1:]]


def recipe_chain(path: str | Path) -> list[Path]:
    """``path`` and the recipes its ``base:`` keys name, one after the other (each relative to
    the file that names it)."""
    import yaml

    chain = [Path(path)]
    while (base := (yaml.safe_load(chain[-1].read_text()) or {}).get("base")) is not None:
        chain.append(chain[-1].parent / base)
        if chain[-1] in chain[:-1]:
            raise ValueError(f"{chain[0]}: circular 'base' chain: {' -> '.join(map(str, chain))}")
    return chain


VARIANTS: tuple[Variant, ...] = tuple(Variant(key) for key in VARIANT_KEYS)


def by_track(keys: Iterable[str]) -> dict[str, list[str]]:
    """The variants ``keys`` grouped by benchmark track, in order of first appearance."""
    groups: dict[str, list[str]] = {}
    for key in keys:
        groups.setdefault(variant(key).track, []).append(key)
    return groups


def variant(key: str) -> Variant:
    if key not in VARIANT_KEYS:
        raise KeyError(f"unknown variant {key!r}; choose from {list(VARIANT_KEYS)}")
    return Variant(key)


def quick_data_root(root: str | Path) -> str:
    return f"{Path(root)}_quick"


def track_data_root(root: str | Path, track: str) -> str:
    """Where a track's benchmark goes when the user names one folder for the benchmark: that
    folder for the shapes track, ``<root>_<track>`` beside it for the others."""
    return str(root) if track == "shapes" else f"{Path(root)}_{track}"


def variant_config(key: str, *, work_dir: str | Path = WORK_DIR, quick: bool = False,
                   data_root: str | Path | None = None, overrides: Iterable[str] = (),
                   progress: bool = True) -> Config:
    """The configuration of one variant: its CPU recipe with the output in ``work_dir/<key>``.
    ``quick`` adds the tiny-data overrides (data in ``<data.root>_quick`` unless ``data_root``;
    see :func:`track_data_root` for the texture track's folder)."""
    chosen = variant(key)
    recipe = project_root() / chosen.recipe
    # runs under work_dir are the workbook's own: training one again starts it over
    extra = [f"train.output_dir={Path(work_dir) / key}", f"train.progress={str(progress).lower()}",
             "train.overwrite=true"]
    if quick:
        base = load_config(recipe)
        extra += [*QUICK_OVERRIDES, f"data.root={quick_data_root(base.data.root)}",
                  f"data.generate={json.dumps({**(base.data.generate or {}), **QUICK_DATA})}"]
    if data_root is not None:
        extra.append(f"data.root={track_data_root(data_root, chosen.track)}")
    return load_config(recipe, [*extra, *overrides])
