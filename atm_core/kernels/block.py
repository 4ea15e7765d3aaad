"""The branch of an ATM block on the CPU kernels: the same weights and results as the plain path.

Three differences from ``ATMBlock.branch``, each giving its result to float rounding:

* the maps are channels-last from the reduced map on (per-position vectors contiguous for the
  correlation, the BatchNorms and the convs; a ViT's token grid already is);
* ``mul`` runs ``clip_correlation`` and ``encode_patches`` instead of ``ops.mul`` and the encoder's
  Conv2d layers, and eval-mode BatchNorms are folded into their convs (``folding``);
* an element-wise op with a separable form (``Op.separable`` in :mod:`atm_core.ops`) is
  ``combine(g(a), g(b))`` with ``combine`` linear, so the domain transfer's first conv, linear too,
  runs on ``g`` of the T frames and the pairs are combined after it: a K-th of that conv's work.
  The cue itself is never materialised. An op without a fast form computes its cue as the plain
  path does; the rest of the block still runs on these kernels.
"""
from __future__ import annotations

import torch
from torch import nn

from ..ops import OPS, pair_frames
from .correlation import clip_correlation
from .encoder import encode_patches
from .folding import activate, conv_bn_relu, convolve, run_layers


def transfer_cue(block: nn.Module, reduced: torch.Tensor) -> torch.Tensor:
    """The domain transfer of ``block``'s cue of the reduced map: ``(B*T*K, width, h, w)``."""
    if block.op == "mul":
        volume = clip_correlation(reduced, block.num_frames, block.context, block.window)
        b, t, k, area, h, w = volume.shape
        patches = volume.permute(0, 1, 2, 4, 5, 3).reshape(-1, area)
        encoded = encode_patches(block.encoder, patches, blocked=block.impl != "cpu_fast")
        features = encoded.view(b, t, k, h, w, -1).permute(0, 1, 2, 5, 3, 4)  # channels-last
        return run_layers(block.transfer, features.reshape(b * t * k, -1, h, w))
    separable = OPS[block.op].separable
    if separable is None:
        cue = block.cue(reduced)
        cue = cue if block.encoder is None else block.encode(cue)
        return run_layers(block.transfer, cue.flatten(0, 2))
    frame_map, combine = separable.frame_map, separable.combine
    first, rest = block.transfer[0], block.transfer[1:]
    frames = convolve(first, reduced if frame_map is None else frame_map(reduced))
    pairs = combine(*pair_frames(frames, block.num_frames, block.context))
    return run_layers(rest, activate(first, pairs.flatten(0, 2)))


def cpu_fast_branch(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """What ``block`` adds to its input ``x`` ``(B*T, C, H, W)``, on the CPU kernels."""
    reduced = conv_bn_relu(block.reduce, x).contiguous(memory_format=torch.channels_last)
    transferred = transfer_cue(block, reduced)
    bt, k = x.shape[0], block.context
    h, w = reduced.shape[-2:]
    # offsets into channels, offset-major: (B*T, K*width, h, w), still channels-last
    grouped = transferred.permute(0, 2, 3, 1).reshape(bt, k, h, w, -1).permute(0, 2, 3, 1, 4)
    grouped = grouped.reshape(bt, h, w, -1).permute(0, 3, 1, 2)
    return block.proj(conv_bn_relu(block.fuse, grouped))
