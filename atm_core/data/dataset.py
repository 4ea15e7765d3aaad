"""The video datasets: list records -> sampled frames -> transformed clips.

One class per item shape, all reading frames the same way (:class:`VideoDataset`):
  * :class:`TrainClips` (split ``"train"``): ``(clip, label)`` with clip (T, 3, S, S) float32 and
    label an int; with repeated augmentation (``num_sample = R > 1``) ``(clips (R, T, 3, S, S),
    labels (R,))``, which ``dataset.collate_fn`` flattens into a batch of B*R clips.
  * :class:`ValClips` (split ``"val"``): ``(clip, label)``, one deterministic view (centre frames
    of each segment, centre crop) -- the quick validation used during training.
  * :class:`TestViews` (split ``"test"``): ``(views, label, index)``, views (V, T, 3, S, S) with
    V = test_num_segment * test_num_crop ordered clip-major, crop-minor.
Always use ``DataLoader(dataset, collate_fn=dataset.collate_fn)``.

A video with fewer frames than a clip takes is handled by ``short_clips``: ``"error"`` makes it
bad input, ``"pad"`` samples it with repeated frames and counts it (``dataset.num_padded``).

Bad input raises :class:`DataError`. With ``on_error="skip"`` the bad video is logged and marked:
a training item is replaced by another (real) video; an evaluation item is never replaced but
left out -- it comes back with label :data:`LEFT_OUT` and zero pixels, which
:func:`atm_core.engine.inference.predict` drops before anything is scored. The marks are one byte
per video in shared memory, written without a lock (a worker only ever sets bytes to 1), so
DataLoader workers report to the main process: ``dataset.num_skipped`` and
``dataset.skipped_paths()``.

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
ON_ERROR = ("raise", "skip")
SHORT_CLIPS = ("error", "pad")
LEFT_OUT = -1  # the label of an evaluation item whose video could not be read (on_error="skip")
Pair = tuple[torch.Tensor, torch.Tensor]


def collate_repeated(batch: Sequence[Pair]) -> Pair:
    """Collate repeated-augmentation items: B items of R clips -> (B*R, T, 3, S, S), (B*R,)."""
    clips, labels = zip(*batch)
    return torch.cat(clips), torch.cat(labels)


class VideoDataset(Dataset):
    """Records, frame reading, sampling and the bad-input policy shared by the three item
    shapes; subclasses say which frames make the item (``_clips``) and what it is (``_item``)."""

    split: str
    transform_type: type = ViewTransform

    def __init__(self, records: Sequence[ClipRecord], root: str | Path, *, num_frames: int,
                 transform: TrainTransform | ViewTransform, sampling: str = "segment",
                 dense_stride: int = 8, reader: str = "auto", frame_template: str = "{:05d}.jpg",
                 frame_start: int = 1, on_error: str = "raise", classes: Sequence[str] = (),
                 skipped_lines: int = 0, cache_frames: bool = False, short_clips: str = "error"):
        if on_error not in ON_ERROR:
            raise ValueError(f"on_error must be one of {ON_ERROR}, got {on_error!r}")
        if short_clips not in SHORT_CLIPS:
            raise ValueError(f"short_clips must be one of {SHORT_CLIPS}, got {short_clips!r}")
        if reader not in READERS:
            raise ValueError(f"reader must be one of {READERS}, got {reader!r}")
        if sampling not in ("segment", "dense"):
            raise ValueError(f"sampling must be 'segment' or 'dense', got {sampling!r}")
        if not isinstance(transform, self.transform_type):
            raise ValueError(f"split {self.split!r} needs a {self.transform_type.__name__}")
        if not records:
            raise ValueError("no records")
        self.records = list(records)
        self.root = Path(root)
        self.num_frames, self.transform = num_frames, transform
        self.sampling, self.dense_stride = sampling, dense_stride
        self.reader, self.frame_template, self.frame_start = reader, frame_template, frame_start
        self.on_error = on_error
        self.classes = list(classes)
        self.skipped_lines = skipped_lines
        self._bad = multiprocessing.RawArray("b", len(self.records))  # 1 = unreadable video
        self.short_clips = short_clips
        self._padded = multiprocessing.RawArray("b", len(self.records))  # 1 = sampled with repeats
        self.collate_fn = default_collate
        self.cache_frames = cache_frames
        self._frames: dict[int, np.ndarray] = {}  # index -> all decoded frames, if cache_frames

    def __len__(self) -> int:
        return len(self.records)

    @property
    def num_views(self) -> int:
        """Views per item (1 for train / val)."""
        return 1

    @property
    def num_skipped(self) -> int:
        """Videos found unreadable so far (all workers), plus list lines dropped while loading
        the list."""
        return int(self.unreadable().sum()) + self.skipped_lines

    def unreadable(self) -> np.ndarray:
        """Per video (bool): found unreadable so far, by this process or its DataLoader workers."""
        return np.frombuffer(self._bad, dtype=np.int8).astype(bool)

    def padded(self) -> np.ndarray:
        """Per video (bool): shorter than a clip and sampled with repeated frames so far."""
        return np.frombuffer(self._padded, dtype=np.int8).astype(bool)

    @property
    def num_padded(self) -> int:
        """Videos sampled with repeated frames so far (``short_clips="pad"``), all workers."""
        return int(self.padded().sum())

    def skipped_paths(self) -> list[str]:
        """``"list_file:line path"`` of every video found unreadable so far (all workers)."""
        return [f"{r.source} {r.path}" for r, bad in zip(self.records, self._bad) if bad]

    def _mode(self, mode: str) -> str:
        return "dense_" + mode if self.sampling == "dense" else mode

    def _clips(self, length: int, rng: np.random.Generator | None) -> list[np.ndarray]:
        raise NotImplementedError

    def _item(self, frames: np.ndarray, num_clips: int, index: int, rng: np.random.Generator):
        raise NotImplementedError

    def _open(self, record: ClipRecord):
        return open_source(self.root / record.path, reader=self.reader,
                           frame_template=self.frame_template, frame_start=self.frame_start,
                           num_frames=record.num_frames)

    def _frames_of(self, index: int, rng: np.random.Generator) -> tuple[np.ndarray, int]:
        """The sampled frames of video ``index`` (all clips, concatenated) and the clip count."""
        record = self.records[index]
        if self._bad[index]:
            raise DataError(f"{record.source}: {self.root / record.path}: left out as unreadable")
        try:
            video = self._frames.get(index)
            if video is None:
                source = self._open(record)
                if self.cache_frames:
                    video = self._frames[index] = read_clip(source, range(len(source)), self.reader)
            length = len(source) if video is None else len(video)
            self._check_length(index, length)
            clips = self._clips(length, rng)
            indices = np.concatenate(clips)
            frames = read_clip(source, indices, self.reader) if video is None else video[indices]
        except DataError as e:
            raise DataError(f"{record.source}: {e}") from e
        return frames, len(clips)

    def _check_length(self, index: int, length: int) -> None:
        if length >= self.num_frames:
            return
        if self.short_clips == "error":
            record = self.records[index]
            listed = (f" (the list says {record.num_frames}: a truncated video?)"
                      if record.num_frames is not None and record.num_frames > length else "")
            raise DataError(f"{self.root / record.path}: {length} frame(s){listed}, fewer than the "
                            f"{self.num_frames} of a clip (data.short_clips=pad repeats frames)")
        self._padded[index] = 1

    def leave_out(self, index: int) -> None:
        """Mark video ``index`` unreadable without opening it (the preflight's ``skip``): training
        replaces it, evaluation leaves it out, and both count and list it like any bad video."""
        self._bad[index] = 1

    def _mark_bad(self, index: int, error: DataError) -> None:
        if self.on_error == "raise":
            raise error
        self._bad[index] = 1
        log.warning("skipping bad sample %d (%s)", index, error)


class TrainClips(VideoDataset):
    """Training items: a random clip per video, ``num_sample`` augmentations of it; a bad video
    (``on_error="skip"``) is replaced by another one, at most ``max_retries`` times in a row."""

    split = "train"
    transform_type = TrainTransform

    def __init__(self, records: Sequence[ClipRecord], root: str | Path, *, num_sample: int = 1,
                 max_retries: int = 10, **kwargs):
        super().__init__(records, root, **kwargs)
        self.num_sample, self.max_retries = num_sample, max_retries
        if num_sample > 1:
            self.collate_fn = collate_repeated

    def _clips(self, length: int, rng: np.random.Generator | None) -> list[np.ndarray]:
        return [sample_indices(length, self.num_frames, self._mode("train"), rng,
                               stride=self.dense_stride)]

    def _item(self, frames: np.ndarray, num_clips: int, index: int, rng: np.random.Generator):
        label = self.records[index].label
        pairs = [self.transform(frames, label, rng) for _ in range(self.num_sample)]
        if self.num_sample == 1:
            return pairs[0]
        return torch.stack([c for c, _ in pairs]), torch.tensor([lab for _, lab in pairs])

    def __getitem__(self, index: int):
        # Drawn from torch's generator, which DataLoader seeds per worker and per epoch.
        rng = np.random.default_rng(int(torch.randint(2**62, ())))
        for _ in range(self.max_retries + 1):
            try:
                return self._item(*self._frames_of(index, rng), index, rng)
            except DataError as e:
                self._mark_bad(index, e)
                last_error = e
                replacement = int(rng.integers(len(self)))
                log.warning("using sample %d instead of %d", replacement, index)
                index = replacement
        raise DataError(f"{self.max_retries + 1} bad samples in a row, the data look broken; "
                        f"last: {last_error}")


class _EvalItems(VideoDataset):
    """Evaluation items are deterministic; a bad video is an error or, with ``skip``, left out
    (never replaced by another one)."""

    def __getitem__(self, index: int):
        try:
            return self._item(*self._frames_of(index, None), index, None)
        except DataError as e:
            self._mark_bad(index, e)
            return self._left_out(index)

    def _left_out(self, index: int):
        raise NotImplementedError


class ValClips(_EvalItems):
    """Validation items: the centre clip of each video, centre crop."""

    split = "val"

    def _clips(self, length: int, rng: np.random.Generator | None) -> list[np.ndarray]:
        return [sample_indices(length, self.num_frames, self._mode("test"),
                               stride=self.dense_stride)]

    def _item(self, frames: np.ndarray, num_clips: int, index: int, rng: None):
        return self.transform(frames)[0], self.records[index].label

    def _left_out(self, index: int):
        size = self.transform.input_size
        return torch.zeros(self.num_frames, 3, size, size), LEFT_OUT


class TestViews(_EvalItems):
    """Test items: ``test_num_segment`` clips x the transform's crops per video."""

    split = "test"

    def __init__(self, records: Sequence[ClipRecord], root: str | Path, *,
                 test_num_segment: int = 1, **kwargs):
        super().__init__(records, root, **kwargs)
        self.test_num_segment = test_num_segment

    @property
    def num_views(self) -> int:
        return self.test_num_segment * self.transform.num_crops

    def _clips(self, length: int, rng: np.random.Generator | None) -> list[np.ndarray]:
        return [sample_indices(length, self.num_frames, self._mode("test"), clip=k,
                               num_clips=self.test_num_segment, stride=self.dense_stride)
                for k in range(self.test_num_segment)]

    def _item(self, frames: np.ndarray, num_clips: int, index: int, rng: None):
        views = torch.cat([self.transform(f) for f in np.split(frames, num_clips)])
        return views, self.records[index].label, index

    def _left_out(self, index: int):
        size = self.transform.input_size
        return torch.zeros(self.num_views, self.num_frames, 3, size, size), LEFT_OUT, index


SPLITS: dict[str, type[VideoDataset]] = {"train": TrainClips, "val": ValClips, "test": TestViews}
