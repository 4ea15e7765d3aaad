"""Deterministic data order and per-sample randomness, so that a resumed run replays exactly.

The training sampler yields ``(index, seed)`` pairs: the epoch's order is a permutation
seeded by ``(seed, epoch)``, and every sample's augmentation randomness is seeded by
``(seed, epoch, position)`` (the dataset draws it from the global generators). Nothing depends on how many batches a worker produced
before, so skipping the first batches of an epoch on resume, or splitting each batch
over several processes, gives every sample the same augmentation as an uninterrupted
single-process run.
"""
from __future__ import annotations

from typing import Iterator

import numpy as np
import torch
from accelerate.utils import set_seed
from torch.utils.data import Dataset, Sampler


def derive_seed(*parts: int) -> int:
    """A well-mixed 32-bit seed from integer parts (NumPy's SeedSequence hashing)."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1)[0])


class EpochSampler(Sampler):
    """Yields ``(index, sample_seed)`` for one epoch; set ``epoch`` before iterating.

    Deliberately has no ``set_epoch``: Accelerate's data loader calls that with its own
    iteration counter, which a resumed run would restart from zero.
    """

    def __init__(self, num_items: int, seed: int, shuffle: bool = True):
        self.num_items = num_items
        self.seed = seed
        self.shuffle = shuffle
        self.epoch = 0

    def __len__(self) -> int:
        return self.num_items

    def __iter__(self) -> Iterator[tuple[int, int]]:
        if self.shuffle:
            gen = torch.Generator().manual_seed(derive_seed(self.seed, self.epoch))
            order = torch.randperm(self.num_items, generator=gen).tolist()
        else:
            order = list(range(self.num_items))
        for pos, index in enumerate(order):
            yield index, derive_seed(self.seed, self.epoch, pos)


class SeededDataset(Dataset):
    """Wraps a dataset so that ``ds[(index, seed)]`` seeds the global generators first."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]):
        index, seed = key
        set_seed(seed)  # Python's, NumPy's and torch's global generators: what augmentations draw from
        return self.dataset[index]
