"""One recipe's model and one of its clips, loaded for the figures: the small loaders the
feature-map notebook calls (each a thin call of the engine's builders, so that they can follow them)."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from matplotlib.figure import Figure
from torch import nn

from ..engine import Config

VideoSource = str | Path | tuple[str | Path, int]


def _eval_preset(cfg: Config):
    from ..data.presets import resolve_preset
    from ..engine.builders import dataset_options

    return resolve_preset(cfg.data.dataset, dataset_options(cfg, "val"))


def load_clip(cfg: Config, *, video: VideoSource) -> tuple[torch.Tensor, int | None]:
    """One clip of ``video`` as the recipe ``cfg`` evaluates it: ``(T, 3, S, S)`` normalised, and
    its label (``None`` for a bare path).

    ``video`` is a video file or frame folder, or a list-file entry ``(list_file, line)`` (line
    1-based; a relative list file is under ``data.root``, as are the paths inside it). Frames are
    read by the data layer's readers, sampled as validation clips (centre of each segment) and
    transformed by the recipe's evaluation transform -- the view the model was validated on.
    """
    from ..data.dataset import ValClips
    from ..data.lists import ClipRecord, read_list
    from ..data.transforms import ViewTransform

    root = Path(cfg.data.root)
    if isinstance(video, (str, Path)):
        record = ClipRecord(str(Path(video).resolve()), None, 0, str(video))
    else:
        list_file, line = video
        list_path = root / list_file
        records, _ = read_list(list_path)
        matches = [r for r in records if r.source == f"{list_path}:{line}"]
        if not matches:
            raise ValueError(f"{list_path}:{line}: no clip on that line (blank, a comment or past the end)")
        record = matches[0]
    preset = _eval_preset(cfg)
    transform = ViewTransform(preset.input_size, preset.scale, 1, preset.mean, preset.std)
    dataset = ValClips([record], root, num_frames=cfg.data.num_frames, transform=transform,
                       sampling=preset.sampling, dense_stride=preset.dense_stride, reader=preset.reader,
                       frame_template=preset.frame_template, frame_start=preset.frame_start)
    clip, label = dataset[0]
    return clip, (None if isinstance(video, (str, Path)) else label)


def clip_stats(cfg: Config) -> tuple[Sequence[float], Sequence[float]]:
    """The ``(mean, std)`` the recipe normalises frames with (to draw its clips)."""
    preset = _eval_preset(cfg)
    return preset.mean, preset.std


def clip_classes(cfg: Config, *, run_dir: str | Path | None = None,
                 checkpoint: str | Path | None = None) -> list[str]:
    """Class names of the recipe's data: its label file under ``data.root`` when present, else the
    ``labels.csv`` an exported run ``run_dir`` carries, else those of ``checkpoint``'s card, else
    the dataset's own names (:func:`atm_core.engine.builders.class_names`)."""
    from ..data import read_labels
    from ..engine import builders
    from ..engine.described import read_card
    from .runs import LABELS, label_file

    if label_file(cfg).is_file():
        return read_labels(label_file(cfg))
    if run_dir is not None and (Path(run_dir) / LABELS).is_file():
        return read_labels(Path(run_dir) / LABELS)
    card = read_card(checkpoint) if checkpoint is not None else None
    return list(card["classes"]) if card is not None else builders.class_names(cfg)


def load_model(cfg: Config, *, checkpoint: str | Path | None) -> nn.Module:
    """The model ``cfg`` describes with the weights of ``checkpoint`` (``None``: as built), in eval mode."""
    from ..engine import builders

    return builders.load_model(cfg, checkpoint)


def benchmark_clip(cfg: Config, *, clip_class: Mapping[str, str], seed: int, folder: str | Path) -> tuple[Path, str]:
    """A clip of the benchmark track ``cfg`` trains on, of class ``clip_class[track]``, drawn with
    ``seed`` and written under ``folder``; returns its path and that class (the clip's true class)."""
    from ..data.synthetic import write_class_video
    from .variants import config_track

    track = config_track(cfg)
    if track not in clip_class:
        raise ValueError(f"clip_class names no class for the {track} track: {dict(clip_class)}")
    path = Path(folder) / f"{track}_{clip_class[track]}_{seed}.mp4"
    return write_class_video(track, clip_class[track], path, seed), clip_class[track]


def feature_map_report(cfg: Config, *, name: str, checkpoint: str | Path | None, video: VideoSource,
                       truth: str | None = None, run_dir: str | Path | None = None) -> tuple[str, Figure, dict[str, Figure]]:
    """The feature-map figures of run ``name`` (its model ``cfg`` with ``checkpoint``) on ``video``:
    the heading that titles them (model, run, track, the clip's true class -- from its list entry,
    else ``truth`` -- and the model's prediction), the clip's frames and :func:`viz.feature_map_figures`."""
    from .. import viz
    from .analysis import predict_clip
    from .variants import TRACK_TITLES, config_label, config_track

    clip, label = load_clip(cfg, video=video)
    classes = clip_classes(cfg, run_dir=run_dir, checkpoint=checkpoint)
    model = load_model(cfg, checkpoint=checkpoint)
    truth = classes[label] if label is not None else truth
    heading = (f"{config_label(cfg)} [{name}], {TRACK_TITLES[config_track(cfg)]}: clip of "
               f"{truth or 'an unknown class'}, predicted {predict_clip(model, clip, classes)}")
    mean, std = clip_stats(cfg)
    frames = viz.plot_frames(viz.denormalize(clip, mean, std), f"{heading}\n{video}")
    return heading, frames, viz.feature_map_figures(model, clip, mean, std, heading=heading)
