"""Multi-view prediction over a (possibly distributed) data loader."""
from __future__ import annotations

import torch
import torch.nn as nn
from accelerate import Accelerator
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from ..data.dataset import LEFT_OUT


class IndexedDataset(Dataset):
    """``ds[i]`` -> ``(clip or views, label, i)`` whatever extra fields the dataset returns."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        item = self.dataset[index]
        return item[0], item[1], index


@torch.no_grad()
def predict(accelerator: Accelerator, model: nn.Module, loader, desc: str = "eval",
            progress: bool = True) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Softmax averaged over the views of each video, gathered from every process.

    Batches are ``(x, label, index)`` with ``x`` a clip ``(B, T, 3, H, W)`` or views
    ``(B, V, T, 3, H, W)``. Returns ``(probs (N, C) float32, labels (N,), indices (N,))``
    on every process, each video exactly once: ``gather_for_metrics`` drops the samples
    the distributed sampler repeated to even out the last batch. Videos the dataset left out
    (label ``LEFT_OUT``: unreadable, ``data.on_error=skip``) are dropped too: the indices
    missing from the result are the videos that were not scored.
    """
    model.eval()
    probs, labels, indices = [], [], []
    bar = tqdm(loader, desc=desc, leave=False,
               disable=not (progress and accelerator.is_local_main_process))
    for x, label, index in bar:
        views = x if x.ndim == 6 else x.unsqueeze(1)
        b, v = views.shape[:2]
        with accelerator.autocast():
            logits = model(views.flatten(0, 1))
        p = logits.float().softmax(-1).view(b, v, -1).mean(1)
        p, label, index = accelerator.gather_for_metrics((p, label, index))
        scored = (label != LEFT_OUT).cpu()
        probs.append(p.cpu()[scored])
        labels.append(label.cpu()[scored])
        indices.append(index.cpu()[scored])
    return torch.cat(probs), torch.cat(labels), torch.cat(indices)
