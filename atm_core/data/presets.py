"""Dataset presets: the published preset of each dataset, overridable field by field."""

from __future__ import annotations

import dataclasses
import difflib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

from .dataset import SPLITS, VideoDataset
from .errors import DataError
from .lists import read_labels, read_list
from .synthetic import FLIP_LABELS as SYNTHETIC_FLIP_LABELS
from .transforms import CLIP_MEAN, CLIP_STD, SS_FLIP_LABELS, TrainTransform, ViewTransform

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DatasetPreset:
    """Everything about a dataset except where it lives. Paths are relative to the root."""

    num_classes: int | None = None
    label_file: str | None = "labels.csv"
    train_list: str = "train.txt"
    val_list: str = "val.txt"  # also used by the "test" split
    list_fields: int = 3  # fields per list line: 3 = "path num_frames label", 2 = "path label"
    frame_template: str = "{:05d}.jpg"
    frame_start: int = 1
    reader: str = "auto"
    sampling: str = "segment"  # or "dense"
    dense_stride: int = 8
    input_size: int = 224
    scale: int | tuple[int, int] = 256  # int: short side; (h, w): exact size
    crop: str = "rrc"  # rrc | multiscale | random | center
    crop_area: tuple[float, float] = (0.08, 1.0)
    flip: bool = False
    flip_labels: dict[int, int] | None = None
    randaugment: str | None = None
    grayscale_p: float = 0.0
    mean: tuple[float, float, float] = CLIP_MEAN
    std: tuple[float, float, float] = CLIP_STD
    num_sample: int = 1
    test_num_segment: int = 1
    test_num_crop: int = 1
    test_scale: int | tuple[int, int] | None = None  # None: same as scale
    cache_frames: bool = False  # keep decoded videos in memory (see VideoDataset)


_SS = DatasetPreset(num_classes=174, scale=(256, 320), flip=True, flip_labels=SS_FLIP_LABELS,
             randaugment="rand-m7-n4-mstd0.5-inc1", num_sample=2, test_num_segment=2,
             test_num_crop=3)

# Every preset reads lists of 3 fields, "path num_frames label" (the reference format); a list of
# video files without frame counts, "path label", needs list_fields=2.
PRESETS: dict[str, DatasetPreset] = {
    # SS-V1: JPEG frame folders 00001.jpg, ...
    "ssv1": _SS,
    # SS-V2: .webm videos (or frame folders 000001.jpg, ... as extracted by the reference)
    "ssv2": dataclasses.replace(_SS, frame_template="{:06d}.jpg"),
    # Kinetics-400: .mp4 videos or frame folders img_00001.jpg, ...; 4 clips x 3 crops at test
    "k400": DatasetPreset(num_classes=400, frame_template="img_{:05d}.jpg", scale=256, flip=True,
                   grayscale_p=0.2, num_sample=2, test_num_segment=4, test_num_crop=3),
    # The built-in benchmark (atm_core.data.synthetic): 96 px frames scaled to 72, cropped to 64.
    # Horizontal flip swaps moving left/right and clockwise/anticlockwise -- the only classes
    # whose meaning a mirror image changes -- exactly like the SS label swap.
    "synthetic": DatasetPreset(num_classes=12, input_size=64, scale=72, crop="random", flip=True,
                        flip_labels=SYNTHETIC_FLIP_LABELS),
    # Your own data in the same list formats. Flip is off: whether a mirror changes a class is
    # yours to say (flip=True, flip_labels={...}).
    "custom": DatasetPreset(),
}


class PresetHooks:
    """What a dataset preset does beyond its fields, for datasets that need it: the default hooks
    do nothing, so a dataset on disk is read as its fields say."""

    generates = False  # whether prepare() can write the dataset (the config's data.generate)
    reversal_pairs = False  # whether classes 2p and 2p+1 are each other's clips played backwards

    def prepare(self, root: str | Path, generate: dict | None, *, create: bool = False,
                replace: bool = False, workers: int = 1) -> None:
        """Make ``root`` hold the data ``generate`` describes (a no-op when there is nothing to do)."""
        if generate is not None:
            raise ValueError("this dataset cannot be generated; only the built-in benchmark can")

    def defaults(self, root: str | Path, generate: dict | None) -> dict:
        """Preset fields that depend on the data itself, under the user's own overrides."""
        return {}

    def class_names(self, root: str | Path, generate: dict | None) -> list[str] | None:
        """The class names when the data has no label file (None: number them)."""
        return None


class BenchmarkHooks(PresetHooks):
    """The built-in benchmark (atm_core.data.synthetic): written on demand, its track (recorded in
    ``benchmark.json``, else ``generate['track']``, else shapes) choosing the flip swaps and names."""

    generates = True
    reversal_pairs = True

    @staticmethod
    def track(root: str | Path, generate: dict | None):
        from .synthetic import SPEC_FILE, benchmark_track

        if generate is not None and "track" in generate:
            return benchmark_track(generate["track"])
        spec = Path(root) / SPEC_FILE
        recorded = json.loads(spec.read_text()).get("track", "shapes") if spec.is_file() else "shapes"
        return benchmark_track(recorded)

    def prepare(self, root, generate, *, create=False, replace=False, workers=1) -> None:
        from .synthetic import ensure_benchmark

        if generate is not None:
            ensure_benchmark(root, generate, create=create, replace=replace, workers=workers)

    def defaults(self, root, generate) -> dict:
        return {"flip_labels": self.track(root, generate).flip_labels}

    def class_names(self, root, generate) -> list[str]:
        return list(self.track(root, generate).classes)


HOOKS: dict[str, PresetHooks] = {name: PresetHooks() for name in PRESETS} | {"synthetic": BenchmarkHooks()}


def preset_classes(name: str, root: str | Path, overrides: dict, generate: dict | None = None) -> list[str]:
    """The class names of dataset ``name`` under ``root``: its label file, else the preset's own
    names, else the class ids; as the datasets of :func:`build_dataset` name them."""
    preset = resolve_preset(name, overrides)
    names = _classes(preset, Path(root), "label_file" in overrides, quiet=True)
    return names if names is not None else HOOKS[name].class_names(root, generate) or _numbered(preset)


def resolve_preset(name: str, overrides: dict) -> DatasetPreset:
    """The preset ``name`` with ``overrides`` (DatasetPreset fields) applied; unknown names and fields fail."""
    if name not in PRESETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {sorted(PRESETS)}")
    fields = {f.name for f in dataclasses.fields(DatasetPreset)}
    for key in overrides:
        if key not in fields:
            close = difflib.get_close_matches(key, fields, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise TypeError(f"unknown dataset option {key!r}{hint}")
    return dataclasses.replace(PRESETS[name], **overrides)


def _classes(preset: DatasetPreset, root: Path, explicit_label_file: bool, quiet: bool = False) -> list[str] | None:
    """The names of the label file; with ``quiet``, None where there is none, else the class ids."""
    label_path = root / preset.label_file if preset.label_file else None
    if label_path is not None and (label_path.is_file() or explicit_label_file):
        names = read_labels(label_path)
        if preset.num_classes is not None and preset.num_classes != len(names):
            raise DataError(f"{label_path}: {len(names)} labels but num_classes is "
                            f"{preset.num_classes}")
        return names
    if quiet:
        return None
    log.info("no label file at %s; classes are named by their ids", label_path)
    return _numbered(preset)


def _numbered(preset: DatasetPreset) -> list[str]:
    if preset.num_classes is None:
        raise ValueError("the number of classes is unknown: give num_classes=... or a label_file")
    return [str(i) for i in range(preset.num_classes)]


def build_dataset(name: str, split: str, root: str | Path, list_file: str | Path | None = None, *,
                  num_frames: int = 8, on_error: str = "raise", short_clips: str = "error",
                  **overrides) -> VideoDataset:
    """A dataset for ``name`` in {ssv1, ssv2, k400, synthetic, custom} and ``split`` in
    {train, val, test}, with the published preset unless ``overrides`` (fields of
    :class:`DatasetPreset`, e.g. ``input_size=160, test_num_crop=1``) say otherwise.

    ``list_file`` defaults to the preset's train/val list under ``root``; a relative path is
    taken relative to ``root``. Clip paths inside the list are relative to ``root``.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {tuple(SPLITS)}, got {split!r}")
    preset = resolve_preset(name, overrides)
    root = Path(root)
    classes = _classes(preset, root, "label_file" in overrides)
    if list_file is None:
        list_file = preset.train_list if split == "train" else preset.val_list
    records, skipped = read_list(root / list_file, len(classes), on_error, preset.list_fields)
    if split == "train":
        transform = TrainTransform(preset.input_size, preset.scale, preset.crop, preset.crop_area,
                                   preset.flip, preset.flip_labels, preset.randaugment,
                                   preset.grayscale_p, preset.mean, preset.std)
    else:
        if split == "test" and preset.test_num_crop == 10 and preset.flip_labels:
            raise ValueError(f"{name}: 10-crop test views include mirror images, which change the "
                             "meaning of flip-swapped classes; use 1, 3 or 5 crops")
        crops = preset.test_num_crop if split == "test" else 1
        scale = preset.scale
        if split == "test" and preset.test_scale is not None:
            scale = preset.test_scale
        transform = ViewTransform(preset.input_size, scale, crops, preset.mean, preset.std)
    common = dict(num_frames=num_frames, transform=transform, sampling=preset.sampling,
                  dense_stride=preset.dense_stride, reader=preset.reader,
                  frame_template=preset.frame_template, frame_start=preset.frame_start,
                  on_error=on_error, classes=classes, skipped_lines=skipped,
                  cache_frames=preset.cache_frames, short_clips=short_clips)
    if split == "train":
        common["num_sample"] = preset.num_sample
    elif split == "test":
        common["test_num_segment"] = preset.test_num_segment
    return SPLITS[split](records, root, **common)
