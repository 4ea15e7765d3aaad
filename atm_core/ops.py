"""The four arithmetic operations of ATM and the temporal pairing they act on.

Every function here is a pure tensor function: no parameters, no device or dtype
assumptions. Anchors and neighbours are broadcastable views, so pairing a clip's
frames with their K temporal neighbours never copies the feature map K times
before an operation needs it.

Shapes: ``x`` is ``(B*T, D, h, w)`` with the frames of a clip contiguous;
``pair_frames`` returns ``anchor`` ``(B, T, 1, D, h, w)`` and ``neighbour``
``(B, T, K, D, h, w)``; an operation returns its cue ``(B, T, K, D', h, w)``, pairs
ordered ``(b, t, o)`` with the offset fastest.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

OP_NAMES = ("add", "sub", "mul", "div")
NORM_EPS = 1e-6


def check_frames(num_items: int, num_frames: int) -> int:
    """Number of clips in a batch of ``num_items`` frames, or a clear error."""
    if num_frames < 1 or num_items % num_frames:
        raise ValueError(
            f"a batch of {num_items} frames is not divisible by num_frames={num_frames}; "
            "inputs must be (B*T, ...) with the T frames of each clip contiguous"
        )
    return num_items // num_frames


def pair_frames(x: torch.Tensor, num_frames: int, context: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Pair every frame ``t`` with its neighbours ``t + o``, ``o`` in ``[-(K//2), K//2]``.

    Returns ``(anchor, neighbour)``: ``anchor`` is ``x`` viewed as ``(B, T, 1, D, h, w)``,
    ``neighbour`` a strided view ``(B, T, K, D, h, w)`` over ``x`` zero-padded in time,
    so neighbours outside the clip are zeros. Only the time padding is copied.
    """
    if context < 1 or context % 2 == 0:
        raise ValueError(f"context must be a positive odd number of frames, got {context}")
    batch = check_frames(x.shape[0], num_frames)
    radius = context // 2
    clips = x.reshape(batch, num_frames, *x.shape[1:])
    padded = F.pad(clips, (0, 0, 0, 0, 0, 0, radius, radius))
    neighbour = padded.unfold(1, context, 1).permute(0, 1, 5, 2, 3, 4)
    return clips.unsqueeze(2), neighbour


def add(anchor: torch.Tensor, neighbour: torch.Tensor) -> torch.Tensor:
    return neighbour + anchor


def sub(anchor: torch.Tensor, neighbour: torch.Tensor) -> torch.Tensor:
    return neighbour - anchor


def div(anchor: torch.Tensor, neighbour: torch.Tensor) -> torch.Tensor:
    """Division in log space, ``log1p|b| - log1p|a|``: a plain ``b / a`` does not train."""
    return torch.log1p(neighbour.abs()) - torch.log1p(anchor.abs())


def l2_normalize(x: torch.Tensor, dim: int = -3) -> torch.Tensor:
    """``v / sqrt(sum(v^2) + 1e-6)`` over ``dim``, in at least float32 (fp16 squares overflow)."""
    wide = x.to(torch.promote_types(x.dtype, torch.float32))
    norm = torch.sqrt(wide.square().sum(dim, keepdim=True) + NORM_EPS)
    return (wide / norm).to(x.dtype)


def local_correlation(anchor: torch.Tensor, neighbour: torch.Tensor, window: int) -> torch.Tensor:
    """Dot products between ``anchor`` and ``neighbour`` displaced inside a ``window``².

    ``S[..., i*W + j, y, x] = <anchor[..., :, y, x], neighbour[..., :, y + i - r, x + j - r]>``
    with ``r = W // 2``, zero where the displaced position leaves the map. Inputs are
    ``(..., D, h, w)`` and broadcast against each other; the output is
    ``(..., W*W, h, w)``. Memory is O(h*w*W²): one displacement at a time, never an
    ``(hw) x (hw)`` matrix.
    """
    if window < 1 or window % 2 == 0:
        raise ValueError(f"window must be a positive odd size, got {window}")
    radius = window // 2
    height, width = neighbour.shape[-2:]
    padded = F.pad(neighbour, (radius, radius, radius, radius))
    slices = [
        (anchor * padded[..., i : i + height, j : j + width]).sum(-3)
        for i in range(window)
        for j in range(window)
    ]
    return torch.stack(slices, dim=-3)


def mul(anchor: torch.Tensor, neighbour: torch.Tensor, window: int = 9) -> torch.Tensor:
    """Multiplication as local cosine correlation: a ``W x W`` similarity volume per position."""
    return local_correlation(l2_normalize(anchor), l2_normalize(neighbour), window)


OPS: dict[str, Callable[..., torch.Tensor]] = {"add": add, "sub": sub, "mul": mul, "div": div}


def get_op(name: str) -> Callable[..., torch.Tensor]:
    if name not in OPS:
        raise ValueError(f"unknown ATM op {name!r}; choose from {', '.join(OP_NAMES)}")
    return OPS[name]
