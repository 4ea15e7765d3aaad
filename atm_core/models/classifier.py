"""The video classifier every backbone shares: per-frame features -> mean over T -> dropout -> linear.

Subclasses turn ``(B*T, 3, H, W)`` frames into ``(B*T, D)`` frame embeddings
(``forward_frames``); this class checks the clip layout and owns the head.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from ..ops import check_frames


HEAD_INITS = ("pytorch", "trunc_normal")


class VideoClassifier(nn.Module):
    """Base of the video models: ``(B, T, 3, H, W)`` clips -> ``(B, num_classes)`` logits.

    A flat ``(B*T, 3, H, W)`` batch with the frames of each clip contiguous is accepted too.
    ``head_init``: ``"pytorch"`` keeps ``nn.Linear``'s default initialisation (the reference's
    classifier); ``"trunc_normal"`` draws the weight from a truncated normal (std 0.02) with a zero bias.
    """

    def __init__(self, num_frames: int, num_classes: int, num_features: int, dropout: float = 0.0,
                 head_init: str = "pytorch"):
        super().__init__()
        if num_frames < 1:
            raise ValueError(f"num_frames must be positive, got {num_frames}")
        if head_init not in HEAD_INITS:
            raise ValueError(f"unknown head_init {head_init!r}; choose from {', '.join(HEAD_INITS)}")
        self.head_init = head_init
        self.num_frames = num_frames
        self.num_classes = num_classes
        self.num_features = num_features
        self.grad_checkpointing = False
        self.head_drop = nn.Dropout(dropout)
        self.head = self._make_head(num_classes)

    def _make_head(self, num_classes: int) -> nn.Module:
        if num_classes <= 0:
            return nn.Identity()
        head = nn.Linear(self.num_features, num_classes)
        if self.head_init == "trunc_normal":
            nn.init.trunc_normal_(head.weight, std=0.02)
            nn.init.zeros_(head.bias)
        return head

    def frames(self, x: torch.Tensor) -> torch.Tensor:
        """Clips ``(B, T, 3, H, W)`` (or flat frames ``(B*T, 3, H, W)``) -> ``(B*T, 3, H, W)``."""
        if x.dim() == 5:
            if x.shape[1] != self.num_frames:
                raise ValueError(
                    f"expected clips of num_frames={self.num_frames} frames, got input of shape "
                    f"{tuple(x.shape)} (B, T, 3, H, W)")
            return x.flatten(0, 1)
        if x.dim() == 4:
            check_frames(x.shape[0], self.num_frames)
            return x
        raise ValueError(f"expected (B, T, 3, H, W) clips or (B*T, 3, H, W) frames, got shape {tuple(x.shape)}")

    def forward_frames(self, frames: torch.Tensor) -> torch.Tensor:
        """``(B*T, 3, H, W)`` -> per-frame embeddings ``(B*T, num_features)``."""
        raise NotImplementedError

    def forward_head(self, features: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Per-frame embeddings ``(B*T, D)`` -> mean over the clip -> dropout -> logits."""
        clip = features.reshape(-1, self.num_frames, features.shape[-1]).mean(1)
        clip = self.head_drop(clip)
        return clip if pre_logits else self.head(clip)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_frames(self.frames(x)))

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.head = self._make_head(num_classes)
