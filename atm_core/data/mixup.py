"""Mixup / CutMix on video batches through timm's ``Mixup``.

timm mixes image batches (B, C, H, W). A clip batch (B, T, C, H, W) is viewed as
(B, T*C, H, W): mixup weights whole clips, and CutMix pastes the same box into every frame,
so the pasted region moves consistently through time.
"""

from __future__ import annotations

import torch
from timm.data import Mixup


class VideoMixup(Mixup):
    """timm ``Mixup`` accepting (B, T, C, H, W) clips; returns the mixed clips (same shape, mixed
    in place) and soft targets (B, num_classes). Batch size must be even."""

    def __call__(self, x: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if x.ndim != 5:
            raise ValueError(f"expected clips (B, T, C, H, W), got shape {tuple(x.shape)}")
        if len(x) % 2:
            raise ValueError(f"mixup needs an even batch size, got {len(x)} (use drop_last=True)")
        b, t, c, h, w = x.shape
        flat, target = super().__call__(x.reshape(b, t * c, h, w), target)
        return flat.view(b, t, c, h, w), target


def build_mixup(num_classes: int, mixup_alpha: float = 0.8, cutmix_alpha: float = 1.0,
                prob: float = 1.0, switch_prob: float = 0.5, label_smoothing: float = 0.1,
                mode: str = "batch") -> VideoMixup | None:
    """The published setting by default; ``None`` when both alphas are 0 (no mixing)."""
    if mixup_alpha <= 0 and cutmix_alpha <= 0:
        return None
    return VideoMixup(mixup_alpha=mixup_alpha, cutmix_alpha=cutmix_alpha, prob=prob,
                      switch_prob=switch_prob, mode=mode, label_smoothing=label_smoothing,
                      num_classes=num_classes)
