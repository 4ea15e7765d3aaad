"""The Arithmetic Temporal Module: reduce -> pair -> operate -> domain transfer -> residual.

One block class serves the four operations; ``ATM`` applies several blocks in order
(the paper's best setting is ``("mul", "sub")``).

The reference writes its per-frame convolutions as Conv3d with ``(1, 3, 3)`` kernels
over ``(N, C, T, h, w)`` volumes. Such a kernel never mixes frames, so here they are
Conv2d over the frames folded into the batch: the same weights (one fewer singleton
dimension), the same BatchNorm statistics, and parameter counts equal to the
reference's.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .ops import OP_NAMES, check_frames, clip_correlation, get_op, pair_frames

RESIDUAL_MODES = ("relu", "identity")


class ConvBNReLU(nn.Sequential):
    """``Conv2d`` (no bias) -> ``BatchNorm2d`` -> ``ReLU``, the reference's unit.

    In eval mode the BatchNorm is an affine map per channel, so it is folded into the
    convolution (:meth:`conv_parameters`): one conv with a bias, then an in-place ReLU, instead of
    three passes over the output. Training mode runs the three modules as they are.
    """

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1, padding: int = 1):
        super().__init__(
            nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=padding, bias=False),
            nn.BatchNorm2d(out_ch),
            nn.ReLU(inplace=True),
        )

    def conv_parameters(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The conv's ``(weight, bias)``: the eval-mode BatchNorm folded in, else ``(weight, None)``."""
        conv, norm = self[0], self[1]
        if self.training or norm.running_var is None:
            return conv.weight, None
        scale = norm.weight * torch.rsqrt(norm.running_var + norm.eps)
        return conv.weight * scale.view(-1, 1, 1, 1), norm.bias - norm.running_mean * scale

    def finish(self, y: torch.Tensor, folded: bool) -> torch.Tensor:
        """What follows the conv: ReLU if the BatchNorm was folded into it, else BatchNorm and ReLU."""
        return y.relu_() if folded else self[2](self[1](y))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight, bias = self.conv_parameters()
        conv = self[0]
        return self.finish(F.conv2d(x, weight, bias, conv.stride, conv.padding), bias is not None)


def row_kernel(weight: torch.Tensor, width: int, stride: int, padding: int) -> torch.Tensor:
    """``weight`` ``(O, I, k, k)`` as a ``(O*w_out, I*width, k, 1)`` kernel over maps whose columns
    are folded into the channels: the conv along a row becomes a banded matrix.

    ``conv2d(x, row_kernel(...), stride=(stride, 1), padding=(padding, 0))`` on ``x`` laid out
    ``(1, I*width, height, N)`` (channel, column, row, item) equals ``conv2d`` with ``weight``
    on the ``N`` maps ``(I, height, width)``, laid out the same way.
    """
    out_ch, in_ch, k, _ = weight.shape
    out_width = (width + 2 * padding - k) // stride + 1
    column = torch.arange(width, device=weight.device)
    tap = column.view(1, -1) - stride * torch.arange(out_width, device=weight.device).view(-1, 1)
    tap = tap + padding  # (out_width, width): which kernel column joins output and input columns
    banded = weight[..., tap.clamp(0, k - 1)] * ((tap >= 0) & (tap < k))  # (O, I, k, w_out, width)
    return banded.permute(0, 3, 1, 4, 2).reshape(out_ch * out_width, in_ch * width, k, 1)


class SimilarityEncoder(nn.Sequential):
    """Encodes each ``W x W`` similarity patch to ``out_channels`` (64): 9x9 -> 9 -> 5 -> 3 -> 1.

    Stride-2 layers halve the patch, the last 3x3 valid conv collapses it, so this
    encoder is specific to ``window=9`` as in the reference.

    Takes the patches flattened, ``(N, 81)``, and returns ``(N, out_channels)``. Run as the reference's
    ``N`` tiny images, these convs starve the CPU kernels (1 to 16 channels, 9x9 to 3x3 pixels)
    and their BatchNorms either crawl (few pixels per image) or, channels-last, sum millions of
    values in float32 and drift by ~1e-4. Here all ``N`` patches form one wide image: the
    patch columns are folded into the channels (``row_kernel``), the rows stay rows and the
    patches run along the width, so each layer is one conv with tens to hundreds of channels
    over a 9 x N image, and each BatchNorm reads every channel as one contiguous run (exact,
    float64-accumulated statistics). Same weights, same BatchNorm statistics and running
    averages, same results up to float rounding. Beyond ``MAX_WIDTH`` patches the image is cut
    into a batch of equal slices of at most ``CHUNK`` patches (the largest divisor of the count
    not above it, if that is at least half of it): on images of tens of thousands of patches
    oneDNN's kernels, the backward ones above all, are up to twice as slow as on the slices
    (measured on a 2-core CPU: 32 clips of the tiny ViT's ATM(mul) step 1.05 -> 0.88 s; at
    ViT-B/16's 7,840 patches slicing gains nothing). As a batch the slices need no copy or
    concatenation between layers, and a BatchNorm channel stays one contiguous run per slice
    (the encoder alone, 81,920 patches, forward + backward: 0.56 s as separate conv calls, 0.49 s
    as a batch).
    """

    CHUNK, MAX_WIDTH = 2048, 8192  # patches per slice, for images wider than MAX_WIDTH

    def __init__(self, out_channels: int = 64):
        super().__init__(
            ConvBNReLU(1, 4),
            ConvBNReLU(4, 16, stride=2),
            ConvBNReLU(16, out_channels, stride=2),
            ConvBNReLU(out_channels, out_channels, padding=0),
        )

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        count, area = patches.shape
        width = math.isqrt(area)
        slices = self.slices(count)
        # (slices, columns, rows, patches of the slice): channel = (conv channel, column),
        # height = row, width = patch
        y = patches.view(slices, count // slices, width, width).permute(0, 3, 2, 1).contiguous()
        for layer in self:
            conv = layer[0]
            stride, padding = conv.stride[0], conv.padding[0]
            weight, bias = layer.conv_parameters()
            kernel = row_kernel(weight, width, stride, padding)
            width = kernel.shape[0] // conv.out_channels
            bias = None if bias is None else bias.repeat_interleave(width)  # channel = (o, column)
            y = F.conv2d(y, kernel, bias, stride=(stride, 1), padding=(padding, 0))
            per_channel = y.view(slices, conv.out_channels, -1, y.shape[-1])
            y = layer.finish(per_channel, bias is not None).view(y.shape)
        return y.view(slices, -1, count // slices).transpose(1, 2).reshape(count, -1)

    def slices(self, count: int) -> int:
        """How many equal slices the image of ``count`` patches is cut into (1 = not cut)."""
        if count > self.MAX_WIDTH:
            for size in range(self.CHUNK, (self.CHUNK - 1) // 2, -1):
                if count % size == 0:
                    return count // size
        return 1


class ATMBlock(nn.Module):
    """One arithmetic operation between each frame and its ``context`` temporal neighbours.

    Input and output ``(B*T, C, H, W)``. ``residual="relu"`` returns ``ReLU(x + branch)``
    as the reference does (not the identity at initialisation on signed ViT tokens);
    ``residual="identity"`` returns ``x + branch``, exactly ``x`` at initialisation
    because the output projection starts at zero.

    ``hidden`` is the reduced width ``D`` and ``width`` the width of the similarity encoder and
    the domain transfer (both 64 in the paper; smaller for tiny CPU models).

    Set ``capture = True`` to keep the last ``cue`` (``(B, T, K, D', h, w)``; for ``mul``
    ``D' = W*W``, the similarity volume) and ``branch`` (``(B*T, C, H, W)``) as detached
    tensors in ``last_cue`` / ``last_branch`` for visualisation.
    """

    def __init__(
        self,
        channels: int,
        num_frames: int,
        op: str,
        hidden: int = 64,
        context: int = 5,
        window: int = 9,
        downsample: bool = False,
        residual: str = "relu",
        width: int = 64,
    ):
        super().__init__()
        self.op_fn = get_op(op)
        if residual not in RESIDUAL_MODES:
            raise ValueError(f"unknown residual {residual!r}; choose from {RESIDUAL_MODES}")
        if op == "mul" and window != 9:
            raise ValueError(f"the similarity encoder needs window=9, got window={window}")
        self.op, self.num_frames, self.context, self.window = op, num_frames, context, window
        self.downsample, self.residual = downsample, residual
        self.capture = False
        self.last_cue: torch.Tensor | None = None
        self.last_branch: torch.Tensor | None = None

        self.reduce = ConvBNReLU(channels, hidden, stride=2 if downsample else 1)
        self.encoder = SimilarityEncoder(width) if op == "mul" else None
        transfer_in = width if op == "mul" else hidden
        self.transfer = nn.Sequential(ConvBNReLU(transfer_in, width), ConvBNReLU(width, width))
        self.fuse = ConvBNReLU(context * width, width)
        if downsample:
            self.proj = nn.ConvTranspose2d(width, channels, 1, stride=2, output_padding=1, bias=False)
        else:
            self.proj = nn.Conv2d(width, channels, 1, bias=False)
        nn.init.zeros_(self.proj.weight)

    def extra_repr(self) -> str:
        return f"op={self.op}, num_frames={self.num_frames}, context={self.context}, residual={self.residual}"

    def cue(self, x: torch.Tensor) -> torch.Tensor:
        """The arithmetic cue of the reduced map: ``(B, T, K, D', h, w)``."""
        if self.op == "mul":
            return clip_correlation(x, self.num_frames, self.context, self.window)
        return self.op_fn(*pair_frames(x, self.num_frames, self.context))

    def encode_similarity(self, volume: torch.Tensor) -> torch.Tensor:
        """``(B, T, K, W*W, h, w)`` similarity volume -> ``(B, T, K, width, h, w)``, channels-last."""
        b, t, k, area, h, w = volume.shape
        encoded = self.encoder(volume.permute(0, 1, 2, 4, 5, 3).reshape(-1, area))
        return encoded.view(b, t, k, h, w, -1).permute(0, 1, 2, 5, 3, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_frames(x.shape[0], self.num_frames)
        if self.downsample and (x.shape[-1] % 2 or x.shape[-2] % 2):
            raise ValueError(f"downsample=True needs an even feature map, got {tuple(x.shape[-2:])}")
        # channels-last from here on: per-position vectors contiguous for the ops, the BatchNorms
        # and the convs (a ViT's token grid already is)
        cue = self.cue(self.reduce(x).contiguous(memory_format=torch.channels_last))
        features = self.encode_similarity(cue) if self.encoder is not None else cue
        b, t, k, d, h, w = features.shape
        transferred = self.transfer(features.reshape(b * t * k, d, h, w))
        # offsets into channels, offset-major: (B*T, K*width, h, w), still channels-last
        grouped = transferred.permute(0, 2, 3, 1).reshape(b * t, k, h, w, -1).permute(0, 2, 3, 1, 4)
        grouped = grouped.reshape(b * t, h, w, -1).permute(0, 3, 1, 2)
        branch = self.proj(self.fuse(grouped))
        if self.capture:
            self.last_cue, self.last_branch = cue.detach(), branch.detach()
        out = x + branch
        return out.relu_() if self.residual == "relu" else out


class ATM(nn.Sequential):
    """ATM blocks applied in order, each one's output feeding the next."""

    def __init__(
        self,
        channels: int,
        num_frames: int,
        ops: Sequence[str] = ("mul", "sub"),
        hidden: int = 64,
        context: int = 5,
        window: int = 9,
        downsample: bool = False,
        residual: str = "relu",
        width: int = 64,
    ):
        if isinstance(ops, str) or not ops:
            raise ValueError(f"ops must be a non-empty sequence of names from {OP_NAMES}, got {ops!r}")
        super().__init__(*[
            ATMBlock(channels, num_frames, op, hidden, context, window, downsample, residual, width)
            for op in ops
        ])
        self.ops = tuple(ops)
