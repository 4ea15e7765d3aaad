"""The four arithmetic operations of ATM and the temporal pairing they act on.

Every function here is a plain tensor function: no parameters, no device or dtype assumptions.
Anchors and neighbours are broadcastable views, so pairing a clip's frames with their K temporal
neighbours never copies the feature map K times before an operation needs it.

Shapes: ``x`` is ``(B*T, D, h, w)`` with the frames of a clip contiguous; ``pair_frames``
returns ``anchor`` ``(B, T, 1, D, h, w)`` and ``neighbour`` ``(B, T, K, D, h, w)``; an operation
returns its cue ``(B, T, K, D', h, w)``, pairs ordered ``(b, t, o)`` with the offset fastest.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F

NORM_EPS = 1e-6


def check_op_names(names: Sequence[str]) -> tuple[str, ...]:
    """``names`` as a tuple of ATM op names, or a ValueError naming the bad one and the valid ones.

    An empty sequence is valid (no ATM); a bare string is not a sequence of names.
    """
    if isinstance(names, str):
        raise ValueError(f"expected a sequence of ATM op names, got the string {names!r}; "
                         f"write ({names!r},)")
    names = tuple(names)
    for name in names:
        if name not in OPS:
            raise ValueError(f"unknown ATM op {name!r}; valid: {', '.join(OPS)}")
    return names


def check_frames(num_items: int, num_frames: int) -> int:
    """Number of clips in a batch of ``num_items`` frames, or a clear error."""
    if num_frames < 1 or num_items % num_frames:
        raise ValueError(
            f"a batch of {num_items} frames is not divisible by num_frames={num_frames}; "
            "inputs must be (B*T, ...) with the T frames of each clip contiguous"
        )
    return num_items // num_frames


def check_context(context: int) -> int:
    """``context`` (K, the frames each frame is paired with, itself included), or a clear error."""
    if context < 1 or context % 2 == 0:
        raise ValueError(f"context must be a positive odd number of frames, got {context}")
    return context


def check_window(window: int) -> int:
    """``window`` (W, the side of the correlation window), or a clear error."""
    if window < 1 or window % 2 == 0:
        raise ValueError(f"window must be a positive odd size, got {window}")
    return window


def channels_last(x: torch.Tensor) -> bool:
    """True when a 4-d map is stored channels-last (and not also plainly contiguous)."""
    return x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()


def pair_frames(x: torch.Tensor, num_frames: int, context: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Pair every frame ``t`` with its neighbours ``t + o``, ``o`` in ``[-(K//2), K//2]``.

    Returns ``(anchor, neighbour)``: ``anchor`` is ``x`` viewed as ``(B, T, 1, D, h, w)``,
    ``neighbour`` a strided view ``(B, T, K, D, h, w)`` over ``x`` zero-padded in time,
    so neighbours outside the clip are zeros. Only the time padding is copied, and it keeps
    the memory layout of ``x`` (channels-last stays channels-last), so the ops' outputs do too.
    """
    check_context(context)
    batch = check_frames(x.shape[0], num_frames)
    radius = context // 2
    # pad in x's physical order: (B*T, h, w, D) for channels-last maps, (B*T, D, h, w) otherwise
    order = (0, 2, 3, 1) if channels_last(x) else (0, 1, 2, 3)
    restore = [order.index(i) + 1 for i in range(1, 4)]  # where D, h, w sit in (B, T, ...)
    physical = x.permute(order)
    clips = physical.reshape(batch, num_frames, *physical.shape[1:])
    padded = F.pad(clips, (0, 0, 0, 0, 0, 0, radius, radius))
    neighbour = padded.unfold(1, context, 1).permute(0, 1, 5, *restore)
    return clips.permute(0, 1, *restore).unsqueeze(2), neighbour


def add(anchor: torch.Tensor, neighbour: torch.Tensor) -> torch.Tensor:
    return neighbour + anchor


def sub(anchor: torch.Tensor, neighbour: torch.Tensor) -> torch.Tensor:
    return neighbour - anchor


def log_magnitude(x: torch.Tensor) -> torch.Tensor:
    return torch.log1p(x.abs())


def div(anchor: torch.Tensor, neighbour: torch.Tensor) -> torch.Tensor:
    """Division in log space, ``log1p|b| - log1p|a|``: a plain ``b / a`` does not train."""
    return sub(log_magnitude(anchor), log_magnitude(neighbour))


def l2_normalize(x: torch.Tensor, dim: int = -3) -> torch.Tensor:
    """``v / sqrt(sum(v^2) + 1e-6)`` over ``dim``, in at least float32 (fp16 squares overflow)."""
    wide = x.to(torch.promote_types(x.dtype, torch.float32))
    norm = torch.sqrt(wide.square().sum(dim, keepdim=True) + NORM_EPS)
    return (wide / norm).to(x.dtype)


def local_correlation(anchor: torch.Tensor, neighbour: torch.Tensor, window: int) -> torch.Tensor:
    """Dot products between ``anchor`` and ``neighbour`` displaced inside a ``window``².

    ``S[..., i*W + j, y, x] = <anchor[..., :, y, x], neighbour[..., :, y + i - r, x + j - r]>``
    with ``r = W // 2``, zero where the displaced position leaves the map. Inputs are
    ``(..., D, h, w)`` and broadcast against each other; the output is ``(..., W*W, h, w)``.
    Memory is O(h*w*W²): one displacement at a time, never an ``(hw) x (hw)`` matrix. Each
    displacement is one ``einsum``, so FLOP counters see the ``D*W²`` multiply-adds per position.
    """
    radius = check_window(window) // 2
    height, width = neighbour.shape[-2:]
    padded = F.pad(neighbour, (radius, radius, radius, radius))
    slices = [
        torch.einsum("...dhw,...dhw->...hw", anchor, padded[..., i : i + height, j : j + width])
        for i in range(window)
        for j in range(window)
    ]
    return torch.stack(slices, dim=-3)


def mul(anchor: torch.Tensor, neighbour: torch.Tensor, window: int = 9) -> torch.Tensor:
    """Multiplication as local cosine correlation: a ``W x W`` similarity volume per position."""
    return local_correlation(l2_normalize(anchor), l2_normalize(neighbour), window)


# ---------------------------------------------------------------- one record per op

Tensors = Callable[..., torch.Tensor]


@dataclass(frozen=True)
class Separable:
    """An element-wise op written ``combine(frame_map(a), frame_map(b))`` with ``combine`` linear and
    ``frame_map`` zero at zero (None: the identity). The CPU kernels then run the first linear layer
    after the cue on the T frames instead of the T*K pairs (:mod:`atm_core.kernels.block`)."""

    combine: Tensors
    frame_map: Optional[Callable[[torch.Tensor], torch.Tensor]] = None


@dataclass(frozen=True)
class OfficialLayer:
    """Where the official ATM code (modules/ATM.py) keeps an op's weights: its layer and domain
    transfer names, the prefix of its reduction, and its place in that code's fixed run order."""

    layer: str
    transfer: str
    position: int
    reduce: str = "downsample."


@dataclass(frozen=True)
class Op:
    """Everything the package knows about one ATM operation.

    ``cue(anchor, neighbour)`` is the op on paired frames; with ``volume`` it is
    ``cue(anchor, neighbour, window)`` and returns a ``W*W`` similarity volume that the block encodes
    with its similarity encoder. ``title`` and ``heat`` caption the figures (``heat`` says what a
    heat map of the cue shows; None: the op's figure is not a heat map).
    """

    name: str
    cue: Tensors
    title: str
    heat: Optional[str] = None
    volume: bool = False
    separable: Optional[Separable] = None
    official: Optional[OfficialLayer] = None

    def __call__(self, anchor: torch.Tensor, neighbour: torch.Tensor, window: int = 9) -> torch.Tensor:
        return self.cue(anchor, neighbour, window) if self.volume else self.cue(anchor, neighbour)


OPS: dict[str, Op] = {}


def register_op(op: Op) -> Op:
    """Make ``op`` an ATM op by name (``ATMOptions(ops=(op.name,))``); a taken name is an error."""
    if op.name in OPS:
        raise ValueError(f"an ATM op named {op.name!r} is already registered")
    OPS[op.name] = op
    return op


register_op(Op("add", add, "addition: x[t+o] + x[t]",
               heat="heat = size of the sum of frame t and frame t+o at each position",
               separable=Separable(add), official=OfficialLayer("intelayer", "inte2vis", 2)))
register_op(Op("sub", sub, "subtraction: x[t+o] - x[t]",
               heat="heat = size of the change from frame t to frame t+o at each position",
               separable=Separable(sub), official=OfficialLayer("difflayer", "diff2vis", 1)))
register_op(Op("mul", mul, "multiplication: local cosine similarity of x[t] and x[t+o]", volume=True,
               official=OfficialLayer("corrlayer", "sim2vis", 0, reduce="sim.downsample.")))
register_op(Op("div", div, "division: log1p|x[t+o]| - log1p|x[t]|",
               heat="heat = size of the log-ratio of frame t+o to frame t at each position",
               separable=Separable(sub, log_magnitude), official=OfficialLayer("divlayer", "div2vis", 3)))
OP_NAMES = tuple(OPS)  # the built-in ops
