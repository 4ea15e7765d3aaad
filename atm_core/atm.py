"""The Arithmetic Temporal Module: reduce -> pair -> operate -> domain transfer -> residual.

One block class serves the four operations; ``ATM`` applies several blocks in order (the paper's
best setting is ``("mul", "sub")``). See ``docs/technical.md`` for the block step by step.

The reference writes its per-frame convolutions as Conv3d with ``(1, 3, 3)`` kernels over
``(N, C, T, h, w)`` volumes. Such a kernel never mixes frames, so here they are Conv2d over the
frames folded into the batch: the same weights (one fewer singleton dimension), the same
BatchNorm statistics, and parameter counts equal to the reference's.

``impl`` selects how the block is computed, not what: ``"plain"`` runs the modules below as
written, ``"cpu_fused"`` the kernels of :mod:`atm_core.kernels` (same weights, same results to
float rounding), ``"cpu_fast"`` the same kernels with the encoder's BatchNorm unblocked (their
first version, kept for ``benchmarks/train_step_cpu.py``), ``"auto"`` ``cpu_fused`` on CPU
tensors and the plain path elsewhere.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from collections.abc import Callable
from typing import Any, Literal, Optional

import torch
from torch import nn

from .kernels import cpu_fast_branch
from .ops import OPS, check_context, check_frames, check_op_names, check_window, pair_frames

RESIDUAL_MODES = ("relu", "identity")
IMPLS = ("auto", "plain", "cpu_fast", "cpu_fused")


class ATMOptionError(ValueError):
    """A bad value of one ATM option; ``field`` names it."""

    def __init__(self, field: str, detail: str):
        super().__init__(f"ATM option '{field}': {detail}")
        self.field, self.detail = field, detail


def _positive(value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"must be a positive integer, got {value!r}")
    return value


def _count(value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"must be an integer >= 0, got {value!r}")
    return value


def _one_of(choices: tuple[str, ...]):
    def check(value: str) -> str:
        if value not in choices:
            raise ValueError(f"must be one of {list(choices)}, got {value!r}")
        return value
    return check


def _flag(value: bool) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"must be true or false, got {value!r}")
    return value


def _option(check: Callable[[Any], Any], published: Any = None) -> Any:
    """A field of :class:`ATMOptions`: unset (None) by default, ``check`` validating a value that
    is set, ``published`` the paper's value."""
    return dataclasses.field(default=None, metadata={"check": check, "published": published})


@dataclass(frozen=True)
class ATMOptions:
    """Every setting of ATM, declared once; None everywhere means "the model's default".

    ``ops`` run in order (``()``: no ATM); ``after_blocks`` places ATM after that many backbone
    blocks (ViT) or stages (ResNet), 0 = before the first; ``hidden`` is the reduced width D and
    ``width`` the similarity-encoder / domain-transfer width; ``context`` the temporal context K
    (odd: each frame with its K-1 nearest); ``window`` the correlation window of ``mul``;
    ``residual`` ``"relu"`` (reference) or ``"identity"``; ``downsample`` the stride-2 reduction
    (ResNets); ``impl`` how a block is computed (module docstring). A model's defaults fill the
    unset fields (:meth:`over`); :data:`PUBLISHED` holds the paper's. A new option is one field
    here, with its check and published value, and its use in the block.
    """

    ops: Optional[tuple[str, ...]] = _option(check_op_names, published=("mul", "sub"))
    after_blocks: Optional[int] = _option(_count)  # no published default: each model has its own
    hidden: Optional[int] = _option(_positive, published=64)
    width: Optional[int] = _option(_positive, published=64)
    context: Optional[int] = _option(check_context, published=5)
    window: Optional[int] = _option(check_window, published=9)
    residual: Optional[Literal[RESIDUAL_MODES]] = _option(_one_of(RESIDUAL_MODES), published="relu")
    downsample: Optional[bool] = _option(_flag, published=False)
    impl: Optional[Literal[IMPLS]] = _option(_one_of(IMPLS), published="auto")

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if value is not None:
                try:
                    object.__setattr__(self, field.name, field.metadata["check"](value))
                except ValueError as e:
                    raise ATMOptionError(field.name, str(e)) from None

    def over(self, defaults: ATMOptions) -> ATMOptions:
        """These options with their unset fields taken from ``defaults``."""
        return dataclasses.replace(defaults, **self.set_fields())

    def set_fields(self) -> dict:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if getattr(self, f.name) is not None}


# the paper's ATM; where ATM sits in a backbone is each model's own default
PUBLISHED = ATMOptions(**{f.name: f.metadata["published"] for f in dataclasses.fields(ATMOptions)})


class ConvBNReLU(nn.Sequential):
    """``Conv2d`` 3x3 (no bias) -> ``BatchNorm2d`` -> ``ReLU``, the reference's unit."""

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1, padding: int = 1):
        super().__init__(
            nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=padding, bias=False),
            nn.BatchNorm2d(out_ch),
            nn.ReLU(inplace=True),
        )


class SimilarityEncoder(nn.Sequential):
    """Encodes each ``(1, 9, 9)`` similarity patch to ``(out_channels, 1, 1)``: 9 -> 9 -> 5 -> 3 -> 1.

    Stride-2 layers halve the patch and the last 3x3 valid conv collapses it, so the encoder is
    specific to ``window=9``, as in the reference.
    """

    def __init__(self, out_channels: int = 64):
        super().__init__(
            ConvBNReLU(1, 4),
            ConvBNReLU(4, 16, stride=2),
            ConvBNReLU(16, out_channels, stride=2),
            ConvBNReLU(out_channels, out_channels, padding=0),
        )


class ArithmeticCue(nn.Module):
    """The op between every frame and its K temporal neighbours: ``(B*T, D, h, w)`` ->
    ``(B, T, K, D', h, w)``, ``D' = W*W`` (the similarity volume) for ``mul``, else ``D``."""

    def __init__(self, op: str, num_frames: int, context: int, window: int):
        super().__init__()
        self.op, self.num_frames, self.context, self.window = op, num_frames, context, window

    def extra_repr(self) -> str:
        return f"op={self.op}, num_frames={self.num_frames}, context={self.context}, window={self.window}"

    def forward(self, reduced: torch.Tensor) -> torch.Tensor:
        pairs = pair_frames(reduced, self.num_frames, self.context)
        return OPS[self.op](*pairs, self.window)


class ATMBlock(nn.Module):
    """One arithmetic operation between each frame and its ``context`` temporal neighbours.

    Input and output ``(B*T, C, H, W)``. ``residual="relu"`` returns ``ReLU(x + branch)`` as the
    reference does (not the identity at initialisation on signed ViT tokens);
    ``residual="identity"`` returns ``x + branch``, exactly ``x`` at initialisation because the
    output projection starts at zero. ``hidden`` is the reduced width ``D`` and ``width`` that of
    the similarity encoder and the domain transfer (both 64 in the paper).
    """

    def __init__(self, channels: int, num_frames: int, op: str, options: ATMOptions = ATMOptions()):
        super().__init__()
        (op,) = check_op_names((op,))
        options = options.over(PUBLISHED)
        hidden, width, context, window = options.hidden, options.width, options.context, options.window
        volume = OPS[op].volume
        if volume and window != 9:
            raise ValueError(f"the similarity encoder needs window=9, got window={window}")
        self.op, self.num_frames, self.window, self.context = op, num_frames, window, context
        self.downsample, self.residual, self.impl = options.downsample, options.residual, options.impl
        downsample = self.downsample

        self.reduce = ConvBNReLU(channels, hidden, stride=2 if downsample else 1)
        self.cue = ArithmeticCue(op, num_frames, context, window)
        self.encoder = SimilarityEncoder(width) if volume else None
        self.transfer = nn.Sequential(ConvBNReLU(width if volume else hidden, width),
                                      ConvBNReLU(width, width))
        self.fuse = ConvBNReLU(context * width, width)
        if downsample:
            self.proj = nn.ConvTranspose2d(width, channels, 1, stride=2, output_padding=1, bias=False)
        else:
            self.proj = nn.Conv2d(width, channels, 1, bias=False)
        nn.init.zeros_(self.proj.weight)

    def extra_repr(self) -> str:
        return f"residual={self.residual}, impl={self.impl}"

    def encode(self, volume: torch.Tensor) -> torch.Tensor:
        """``(B, T, K, W*W, h, w)`` similarity volume -> ``(B, T, K, width, h, w)``, one patch per
        pair and position."""
        b, t, k, _, h, w = volume.shape
        patches = volume.permute(0, 1, 2, 4, 5, 3).reshape(-1, 1, self.window, self.window)
        return self.encoder(patches).view(b, t, k, h, w, -1).permute(0, 1, 2, 5, 3, 4)

    def branch(self, x: torch.Tensor) -> torch.Tensor:
        """What the block adds to its input, computed by the modules as the paper describes."""
        reduced = self.reduce(x)  # (B*T, D, h, w)
        cue = self.cue(reduced)  # (B, T, K, D', h, w)
        if self.encoder is not None:
            cue = self.encode(cue)
        b, t, k, d, h, w = cue.shape
        transferred = self.transfer(cue.reshape(b * t * k, d, h, w))  # (B*T*K, width, h, w)
        grouped = transferred.reshape(b * t, -1, h, w)  # offsets into channels, offset-major
        return self.proj(self.fuse(grouped))

    def uses_cpu_fast(self, x: torch.Tensor) -> bool:
        return self.impl in ("cpu_fast", "cpu_fused") or (self.impl == "auto" and x.device.type == "cpu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_frames(x.shape[0], self.num_frames)
        if self.downsample and (x.shape[-1] % 2 or x.shape[-2] % 2):
            raise ValueError(f"downsample=True needs an even feature map, got {tuple(x.shape[-2:])}")
        branch = cpu_fast_branch(self, x) if self.uses_cpu_fast(x) else self.branch(x)
        out = x + branch
        return out.relu_() if self.residual == "relu" else out


class ATM(nn.Sequential):
    """ATM blocks applied in order, each one's output feeding the next: one per op of ``options``."""

    def __init__(self, channels: int, num_frames: int, options: ATMOptions = ATMOptions()):
        ops = options.over(PUBLISHED).ops
        if not ops:
            raise ValueError("ops must be a non-empty sequence of ATM op names, got ()")
        super().__init__(*[ATMBlock(channels, num_frames, op, options) for op in ops])
        self.ops = ops

