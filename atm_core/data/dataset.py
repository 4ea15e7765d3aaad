"""The video dataset: list records -> sampled frames -> transformed clips.

Items by split:
  * ``"train"``: ``(clip, label)`` with clip (T, 3, S, S) float32 and label an int; with
    repeated augmentation (``num_sample = R > 1``) ``(clips (R, T, 3, S, S), labels (R,))``,
    which ``dataset.collate_fn`` flattens into a batch of B*R clips.
  * ``"val"``: ``(clip, label)``, one deterministic view (centre frames of each segment, centre
    crop) -- the quick validation used during training.
  * ``"test"``: ``(views, label, index)``, views (V, T, 3, S, S) with
    V = test_num_segment * test_num_crop ordered clip-major, crop-minor.
Always use ``DataLoader(dataset, collate_fn=dataset.collate_fn)``.

Bad input raises :class:`DataError`; with ``on_error="skip"`` the sample is logged, counted and
replaced by another (real) sample. The count is shared with DataLoader worker processes:
read it with ``dataset.num_skipped``.

``cache_frames=True`` keeps every video's decoded frames (uint8) in memory after its first read,
so later epochs sample and augment without decoding: for datasets that fit in RAM (the built-in
benchmark: ~0.8 GB of training frames), where decoding would otherwise compete with the model
for a few CPU cores. The cache lives in the process that reads: each DataLoader worker holds its
own (keep workers persistent across epochs, or it is rebuilt every epoch).
"""

from __future__ import annotations

import logging
import multiprocessing
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, default_collate

from .errors import DataError
from .lists import ClipRecord
from .readers import READERS, open_source, read_clip
from .sampling import sample_indices
from .transforms import TrainTransform, ViewTransform

log = logging.getLogger(__name__)
SPLITS = ("train", "val", "test")
ON_ERROR = ("raise", "skip")
Pair = tuple[torch.Tensor, torch.Tensor]


def collate_repeated(batch: Sequence[Pair]) -> Pair:
    """Collate repeated-augmentation items: B items of R clips -> (B*R, T, 3, S, S), (B*R,)."""
    clips, labels = zip(*batch)
    return torch.cat(clips), torch.cat(labels)


class VideoDataset(Dataset):
    def __init__(self, records: Sequence[ClipRecord], root: str | Path, *, split: str,
                 num_frames: int, transform: TrainTransform | ViewTransform,
                 sampling: str = "segment", dense_stride: int = 8, test_num_segment: int = 1,
                 num_sample: int = 1, reader: str = "auto", frame_template: str = "{:05d}.jpg",
                 frame_start: int = 1, on_error: str = "raise", classes: Sequence[str] = (),
                 skipped_lines: int = 0, max_retries: int = 10, cache_frames: bool = False):
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        if on_error not in ON_ERROR:
            raise ValueError(f"on_error must be one of {ON_ERROR}, got {on_error!r}")
        if reader not in READERS:
            raise ValueError(f"reader must be one of {READERS}, got {reader!r}")
        if sampling not in ("segment", "dense"):
            raise ValueError(f"sampling must be 'segment' or 'dense', got {sampling!r}")
        if (split == "train") != isinstance(transform, TrainTransform):
            kind = "TrainTransform" if split == "train" else "ViewTransform"
            raise ValueError(f"split {split!r} needs a {kind}")
        if not records:
            raise ValueError("no records")
        self.records = list(records)
        self.root = Path(root)
        self.split, self.num_frames, self.transform = split, num_frames, transform
        self.sampling, self.dense_stride = sampling, dense_stride
        self.test_num_segment = test_num_segment if split == "test" else 1
        self.num_sample = num_sample if split == "train" else 1
        self.reader, self.frame_template, self.frame_start = reader, frame_template, frame_start
        self.on_error, self.max_retries = on_error, max_retries
        self.classes = list(classes)
        self.skipped_lines = skipped_lines
        # Shared memory so that skips inside DataLoader workers are visible to the main process.
        self._skipped = multiprocessing.Value("q", 0)
        self.collate_fn = collate_repeated if self.num_sample > 1 else default_collate
        self.cache_frames = cache_frames
        self._frames: dict[int, np.ndarray] = {}  # index -> all decoded frames, if cache_frames

    def __len__(self) -> int:
        return len(self.records)

    @property
    def num_skipped(self) -> int:
        """Samples replaced because of bad input since construction (all workers), plus list
        lines dropped while loading the list."""
        return self._skipped.value + self.skipped_lines

    @property
    def num_views(self) -> int:
        """Views per test item (1 for train / val)."""
        return self.test_num_segment * getattr(self.transform, "num_crops", 1)

    def _indices(self, length: int, rng: np.random.Generator | None) -> list[np.ndarray]:
        prefix = "dense_" if self.sampling == "dense" else ""
        if self.split == "train":
            return [sample_indices(length, self.num_frames, prefix + "train", rng,
                                   stride=self.dense_stride)]
        return [sample_indices(length, self.num_frames, prefix + "test", clip=k,
                               num_clips=self.test_num_segment, stride=self.dense_stride)
                for k in range(self.test_num_segment)]

    def _open(self, record: ClipRecord):
        return open_source(self.root / record.path, reader=self.reader,
                           frame_template=self.frame_template, frame_start=self.frame_start,
                           num_frames=record.num_frames)

    def _load(self, index: int, rng: np.random.Generator):
        record = self.records[index]
        try:
            video = self._frames.get(index)
            if video is None:
                source = self._open(record)
                if self.cache_frames:
                    video = self._frames[index] = read_clip(source, range(len(source)), self.reader)
            clips = self._indices(len(source) if video is None else len(video), rng)
            indices = np.concatenate(clips)
            frames = read_clip(source, indices, self.reader) if video is None else video[indices]
        except DataError as e:
            raise DataError(f"{record.source}: {e}") from e
        if self.split == "train":
            pairs = [self.transform(frames, record.label, rng) for _ in range(self.num_sample)]
            if self.num_sample == 1:
                return pairs[0]
            return torch.stack([c for c, _ in pairs]), torch.tensor([lab for _, lab in pairs])
        views = torch.cat([self.transform(f) for f in np.split(frames, len(clips))])
        if self.split == "val":
            return views[0], record.label
        return views, record.label, index

    def __getitem__(self, index: int):
        if self.split == "train":
            # Drawn from torch's generator, which DataLoader seeds per worker and per epoch.
            rng = np.random.default_rng(int(torch.randint(2**62, ())))
        else:
            rng = np.random.default_rng(index)  # only used to pick replacements
        for _ in range(self.max_retries + 1):
            try:
                return self._load(index, rng)
            except DataError as e:
                if self.on_error == "raise":
                    raise
                last_error = e
                with self._skipped.get_lock():
                    self._skipped.value += 1
                replacement = int(rng.integers(len(self)))
                log.warning("skipping bad sample %d (%s); using sample %d instead",
                            index, e, replacement)
                index = replacement
        raise DataError(f"{self.max_retries + 1} bad samples in a row, the data look broken; "
                        f"last: {last_error}")
