"""Classify videos with a checkpoint: the top-k class names and probabilities per video.

    python -m atm_core.predict clip.mp4 more/ list.txt --checkpoint results/checkpoints/synthetic_atm_mul_sub
        [--topk 5] [--views 2x3] [--json] [--figure DIR] [--device cpu|cuda] [--config RECIPE]

A video is a file, a folder (its video files, sorted; a folder of frames is one video) or a list
file (``.txt`` / ``.csv`` / ``.lst``: one path per line, first field, relative to the list's
folder; ``#`` comments). Each is read as the checkpoint's recipe tests videos (its reader, sampling and test transform), the
softmax averaged over the views. The checkpoint carries its recipe and class names (see
:mod:`atm_core.engine.described`); for one that does not, ``--config`` names the recipe.
Unreadable videos are named and counted, never replaced; the exit status is then 1.
``--figure DIR`` writes the ATM feature-map figures of each video's first view to ``DIR``.
"""
from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .engine.config import Config, ConfigError
from .engine.runtime import inference_autocast

VIDEO_SUFFIXES = (".mp4", ".avi", ".webm", ".mkv", ".mov", ".m4v", ".mpg", ".mpeg", ".gif")
FRAME_SUFFIXES = (".jpg", ".jpeg", ".png")  # a folder of these is one video (a frame folder)
LIST_SUFFIXES = (".txt", ".csv", ".lst")


class UsageError(ValueError):
    """A mistake in what the user asked for (reported in one line, exit status 2)."""


def expand_inputs(inputs: Iterable[str | Path]) -> list[Path]:
    """The videos ``inputs`` name: files as given, a folder's video files (sorted) or the folder
    itself when it holds frames (read with the recipe's frame template), a list file's lines. A
    name that does not exist is kept, so that it is reported as unreadable."""
    videos: list[Path] = []
    for item in map(Path, inputs):
        if item.is_dir():
            found = sorted(p for p in item.iterdir() if p.suffix.lower() in VIDEO_SUFFIXES)
            if not found and not any(p.suffix.lower() in FRAME_SUFFIXES for p in item.iterdir()):
                raise UsageError(f"{item}: a folder without video files ({', '.join(VIDEO_SUFFIXES)}) "
                                 f"or frames ({', '.join(FRAME_SUFFIXES)})")
            videos += found or [item]
        elif item.suffix.lower() in LIST_SUFFIXES and item.is_file():
            videos += read_video_list(item)
        else:
            videos.append(item)
    if not videos:
        raise UsageError("no videos given")
    return videos


def read_video_list(path: Path) -> list[Path]:
    """The videos of a list file: the first field of each line (space or comma separated)."""
    videos = []
    for line in path.read_text().splitlines():
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        first = Path(text.replace(",", " ").split()[0])
        videos.append(first if first.is_absolute() else path.parent / first)
    if not videos:
        raise UsageError(f"{path}: a list file without videos")
    return videos


def parse_views(text: str) -> tuple[int, int]:
    """``"2x3"`` -> (2 clips, 3 crops)."""
    try:
        clips, crops = (int(n) for n in text.lower().split("x"))
    except ValueError:
        raise UsageError(f"--views {text!r}: expected CLIPSxCROPS, such as 1x1 or 2x3") from None
    if clips < 1 or crops not in (1, 3, 5):
        raise UsageError(f"--views {text!r}: clips must be >= 1 and crops 1, 3 or 5")
    return clips, crops


@dataclass
class Prediction:
    video: str
    top: list[tuple[str, float]]  # (class name, probability), most probable first


@dataclass
class Predictions:
    checkpoint: str
    card: dict | None
    views: tuple[int, int]
    predictions: list[Prediction] = field(default_factory=list)
    unreadable: list[tuple[str, str]] = field(default_factory=list)  # (video, why)
    figures: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        model = {k: v for k, v in self.card.items() if k != "classes"} if self.card else None
        return {"checkpoint": self.checkpoint, "model": model,
                "views": {"clips": self.views[0], "crops": self.views[1]},
                "predictions": [{"video": p.video, "top": [{"class": c, "probability": round(q, 6)}
                                                           for c, q in p.top]} for p in self.predictions],
                "unreadable": [{"video": v, "error": e} for v, e in self.unreadable],
                "figures": self.figures}

    def to_text(self) -> str:
        lines = [f"{p.video}: " + " | ".join(f"{c} {q:.3f}" for c, q in p.top) for p in self.predictions]
        if self.unreadable:
            lines.append(f"{len(self.unreadable)} of {len(self.unreadable) + len(self.predictions)} "
                         "video(s) unreadable:")
            lines += [f"  {video}: {error}" for video, error in self.unreadable]
        return "\n".join(lines)


def views_dataset(cfg, videos: Sequence[Path], views: tuple[int, int] | None):
    """The videos as the recipe's test split reads them (``views``: clips x crops, default the
    recipe's), every bad video raising its :class:`~atm_core.data.DataError`."""
    from .data.dataset import TestViews
    from .data.lists import ClipRecord
    from .data.presets import resolve_preset
    from .data.transforms import ViewTransform
    from .engine.builders import dataset_options

    recipe = resolve_preset(cfg.data.dataset, dataset_options(cfg, "test"))
    clips, crops = views or (recipe.test_num_segment, recipe.test_num_crop)
    scale = recipe.test_scale if recipe.test_scale is not None else recipe.scale
    transform = ViewTransform(recipe.input_size, scale, crops, recipe.mean, recipe.std)
    records = [ClipRecord(str(Path(v).resolve()), None, 0, str(v)) for v in videos]
    dataset = TestViews(records, "/", num_frames=cfg.data.num_frames, transform=transform,
                        sampling=recipe.sampling, dense_stride=recipe.dense_stride, reader=recipe.reader,
                        frame_template=recipe.frame_template, frame_start=recipe.frame_start,
                        test_num_segment=clips)
    return dataset, (clips, crops), (recipe.mean, recipe.std)


def split_videos(cfg, split: str = "test", count: int = 3) -> list[Path]:
    """The first ``count`` videos listed in ``cfg``'s ``split`` (to try :func:`predict_videos` on)."""
    from .engine import builders

    dataset = builders.dataset(cfg, split)
    return [dataset.root / record.path for record in dataset.records[:count]]


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@torch.no_grad()
def predict_videos(inputs: Iterable[str | Path], checkpoint: str | Path, topk: int = 5,
                   views: tuple[int, int] | None = None, figure_dir: str | Path | None = None,
                   recipe: Config | str | Path | None = None, device: str | torch.device | None = None) -> Predictions:
    """Top-``topk`` classes of every video ``inputs`` name (see :func:`expand_inputs`), with the
    model of ``checkpoint`` (built from ``recipe``, a file or a configuration, for a checkpoint
    that carries none), in the precision it trained in; figures of the ATM feature maps to
    ``figure_dir`` when given."""
    from .data.errors import DataError
    from .engine.described import load_model

    videos = expand_inputs(inputs)
    loaded = load_model(checkpoint, recipe)
    device = torch.device(device) if device is not None else default_device()
    model = loaded.model.to(device)
    if figure_dir is not None:
        check_drawable(model)
    dataset, views, (mean, std) = views_dataset(loaded.cfg, videos, views)
    autocast = inference_autocast(loaded.cfg, device)  # the precision the run trained in
    k = min(topk, len(loaded.classes))
    result = Predictions(str(checkpoint), loaded.card, views)
    for index, video in enumerate(videos):
        try:
            clips = dataset[index][0]
        except DataError as e:
            result.unreadable.append((str(video), str(e).removeprefix(f"{video}: ")))
            continue
        with autocast:
            probs = model(clips.to(device)).float().softmax(-1).mean(0).cpu()
        values, labels = probs.topk(k)
        result.predictions.append(Prediction(str(video), [(loaded.classes[int(i)], float(p))
                                                          for p, i in zip(values, labels)]))
        if figure_dir is not None:
            result.figures += feature_figures(model, clips[0].to(device), mean, std, figure_dir, video)
    return result


def check_drawable(model: torch.nn.Module) -> None:
    from .knockout import atm_block_list

    if not atm_block_list(model):
        raise UsageError("--figure: the model has no ATM blocks, so no feature maps to draw")


def feature_figures(model: torch.nn.Module, clip: torch.Tensor, mean, std, out_dir: str | Path,
                    video: Path) -> list[str]:
    """The ATM feature-map figures of one clip, saved as ``<out_dir>/<video stem>_<figure>.png``."""
    from . import viz

    figures = viz.feature_map_figures(model, clip, mean, std, heading=video.name)
    return [str(path) for path in viz.save_figures(figures, out_dir, prefix=f"{video.stem}_")]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m atm_core.predict", description=__doc__.split("\n\n")[0])
    parser.add_argument("videos", nargs="+", metavar="VIDEO", help="video files, folders or list files")
    parser.add_argument("--checkpoint", required=True, help="a checkpoint folder or weights file")
    parser.add_argument("--config", help="the recipe, for a checkpoint that does not carry one")
    parser.add_argument("--topk", type=int, default=5, help="classes shown per video (default 5)")
    parser.add_argument("--views", help="CLIPSxCROPS per video, e.g. 1x1 (default: the recipe's test views)")
    parser.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda when there is one)")
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    parser.add_argument("--figure", metavar="DIR", help="write the ATM feature-map figures here")
    args = parser.parse_args(argv)
    try:
        if args.topk < 1:
            raise UsageError(f"--topk {args.topk}: must be at least 1")
        if not Path(args.checkpoint).exists():
            raise UsageError(f"--checkpoint {args.checkpoint}: no such file or folder")
        views = parse_views(args.views) if args.views else None
        result = predict_videos(args.videos, args.checkpoint, args.topk, views, args.figure,
                                args.config, args.device)
    except (UsageError, ConfigError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(result.to_dict(), indent=1) if args.json else result.to_text())
    return 1 if result.unreadable else 0


if __name__ == "__main__":
    raise SystemExit(main())
