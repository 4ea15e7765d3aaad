"""Video data: readers, list files, sampling, clip transforms, presets and the built-in benchmark.

Entry points: :func:`build_dataset` (presets ssv1 / ssv2 / k400 / synthetic / custom),
:func:`generate_benchmark` (``python -m atm_core.data.synthetic``), :class:`VideoMixup`.
See README.md in this folder.
"""

from .dataset import LEFT_OUT, TestViews, TrainClips, ValClips, VideoDataset, collate_repeated
from .errors import DataError
from .lists import ClipRecord, read_labels, read_list
from .mixup import VideoMixup, build_mixup
from .presets import PRESETS, DatasetPreset, build_dataset
from .readers import open_source, open_video
from .sampling import sample_indices
from .synthetic import CLASSES as SYNTHETIC_CLASSES
from .synthetic import generate_benchmark, render_clip
from .transforms import CLIP_MEAN, CLIP_STD, SS_FLIP_LABELS, TrainTransform, ViewTransform

__all__ = [
    "CLIP_MEAN", "CLIP_STD", "LEFT_OUT", "PRESETS", "SS_FLIP_LABELS", "SYNTHETIC_CLASSES", "ClipRecord",
    "DataError", "DatasetPreset", "TestViews", "TrainClips", "TrainTransform", "ValClips", "VideoDataset", "VideoMixup", "ViewTransform",
    "build_dataset", "build_mixup", "collate_repeated", "generate_benchmark", "open_source",
    "open_video", "read_labels", "read_list", "render_clip", "sample_indices",
]
