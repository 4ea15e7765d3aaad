"""Temporal baselines: TSM, TokenShift and TokenT1D.

All three exchange information between neighbouring frames of a clip. On ViT tokens
``(B*T, 1+N, C)`` TSM shifts patch-token channels, TokenShift and TokenT1D act on the
class token only. The shift pattern is shared: for ``fold = C // fold_div``, channels
``[0, fold)`` of frame ``t`` read frame ``t+1``, channels ``[fold, 2*fold)`` read frame
``t-1`` (zeros past the clip ends), the rest stay.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from .ops import check_frames

TEMPORAL_MODULES = ("tsn", "tsm", "tokenshift", "tokent1d")


def shift_frames(x: torch.Tensor, num_frames: int, fold_div: int, channel_dim: int = 1) -> torch.Tensor:
    """Shift ``C // fold_div`` channels one frame forward and as many one frame back.

    ``x`` is ``(B*T, ...)`` with frames of a clip contiguous; ``channel_dim`` indexes
    the channels in ``x`` (1 for CNN maps ``(B*T, C, H, W)``, -1 for tokens).
    """
    batch = check_frames(x.shape[0], num_frames)
    clips = x.reshape(batch, num_frames, *x.shape[1:]).movedim(channel_dim % x.dim() + 1, 2)
    fold = clips.shape[2] // fold_div
    out = torch.zeros_like(clips)
    out[:, :-1, :fold] = clips[:, 1:, :fold]
    out[:, 1:, fold : 2 * fold] = clips[:, :-1, fold : 2 * fold]
    out[:, :, 2 * fold :] = clips[:, :, 2 * fold :]
    return out.movedim(2, channel_dim % x.dim() + 1).reshape(x.shape)


class TSM(nn.Module):
    """Temporal Shift Module on the patch tokens (1/``fold_div`` of channels each way)."""

    def __init__(self, num_frames: int, fold_div: int = 8):
        super().__init__()
        self.num_frames, self.fold_div = num_frames, fold_div

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        patches = shift_frames(tokens[:, 1:], self.num_frames, self.fold_div, channel_dim=-1)
        return torch.cat([tokens[:, :1], patches], dim=1)


class TokenShift(nn.Module):
    """Shift of the class-token channels across frames (Zhang et al., 2021)."""

    def __init__(self, num_frames: int, fold_div: int = 4):
        super().__init__()
        self.num_frames, self.fold_div = num_frames, fold_div

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        cls = shift_frames(tokens[:, :1], self.num_frames, self.fold_div, channel_dim=-1)
        return torch.cat([cls, tokens[:, 1:]], dim=1)


class TokenT1D(nn.Module):
    """Depthwise temporal Conv1d (kernel 3) on the class token, initialised as TokenShift.

    Kernel taps ``(t-1, t, t+1)``: the first quarter of channels starts on tap ``t+1``,
    the second quarter on ``t-1``, the rest on ``t``; then the taps are trained.
    """

    def __init__(self, channels: int, num_frames: int, fold_div: int = 4):
        super().__init__()
        self.num_frames = num_frames
        self.conv = nn.Conv1d(channels, channels, 3, padding=1, groups=channels, bias=False)
        fold = channels // fold_div
        with torch.no_grad():
            self.conv.weight.zero_()
            self.conv.weight[:fold, 0, 2] = 1.0
            self.conv.weight[fold : 2 * fold, 0, 0] = 1.0
            self.conv.weight[2 * fold :, 0, 1] = 1.0

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        batch = check_frames(tokens.shape[0], self.num_frames)
        cls = tokens[:, 0].reshape(batch, self.num_frames, -1).transpose(1, 2)
        cls = self.conv(cls).transpose(1, 2).reshape(tokens.shape[0], 1, -1)
        return torch.cat([cls, tokens[:, 1:]], dim=1)
