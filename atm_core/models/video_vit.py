"""Video classifiers over timm image backbones, with ATM and token-level temporal modules.

The backbone (a timm ``VisionTransformer`` or ``Eva``, built with ``num_classes=0``) keeps
its own parameter names; temporal modules live in ``temporal``, ATM in ``atm``, the CLIP
projection in ``proj`` and the classifier in ``head``. One checkpoint therefore loads
into every variant of a backbone.

Per frame: backbone -> final class token -> CLIP projection; then mean over the T
frames -> dropout -> linear classifier.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
from torch.utils.checkpoint import checkpoint

from ..atm import ATM
from ..ops import check_frames
from ..temporal import TEMPORAL_MODULES, TSM, TokenShift, TokenT1D


def build_temporal(kind: str, channels: int, num_frames: int, depth: int) -> nn.ModuleList | None:
    """Per-block temporal modules: one shift before each block, or two T1D per block."""
    if kind not in TEMPORAL_MODULES:
        raise ValueError(f"unknown temporal module {kind!r}; choose from {TEMPORAL_MODULES}")
    if kind == "tsn":
        return None
    if kind == "tokent1d":
        return nn.ModuleList(
            nn.ModuleList([TokenT1D(channels, num_frames), TokenT1D(channels, num_frames)])
            for _ in range(depth)
        )
    shift = TSM if kind == "tsm" else TokenShift
    return nn.ModuleList(shift(num_frames) for _ in range(depth))


def check_atm_layer(atm_layer: int, depth: int) -> None:
    if not 1 <= atm_layer <= depth:
        raise ValueError(f"atm_layer={atm_layer} is out of range: ATM goes before one of blocks 1..{depth}")


def as_frames(x: torch.Tensor, num_frames: int) -> torch.Tensor:
    """``(B, T, 3, H, W)`` or ``(B*T, 3, H, W)`` -> ``(B*T, 3, H, W)``, checking T."""
    if x.dim() == 5:
        if x.shape[1] != num_frames:
            raise ValueError(f"clips have {x.shape[1]} frames but the model was built for num_frames={num_frames}")
        return x.flatten(0, 1)
    if x.dim() == 4:
        check_frames(x.shape[0], num_frames)
        return x
    raise ValueError(f"expected (B, T, 3, H, W) clips, got a tensor of shape {tuple(x.shape)}")


class VideoClassifierHead(nn.Module):
    """Mean of per-frame features over time -> dropout -> linear classifier."""

    def __init__(self, in_features: int, num_classes: int, num_frames: int, dropout: float):
        super().__init__()
        self.num_frames = num_frames
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(in_features, num_classes) if num_classes > 0 else nn.Identity()

    def forward(self, frame_features: torch.Tensor) -> torch.Tensor:
        clip = frame_features.reshape(-1, self.num_frames, frame_features.shape[-1]).mean(1)
        return self.fc(self.dropout(clip))


class VideoViT(nn.Module):
    """A timm ViT / EVA image backbone run on every frame, with ATM before block ``atm_layer``."""

    def __init__(
        self,
        backbone: nn.Module,
        num_frames: int = 8,
        num_classes: int = 174,
        temporal: str = "tokent1d",
        atm_ops: tuple[str, ...] = ("mul", "sub"),
        atm_layer: int = 7,
        atm_residual: str = "relu",
        proj_dim: int | None = None,
        proj_bias: bool = False,
        dropout: float = 0.0,
    ):
        super().__init__()
        self.backbone = backbone
        self.num_frames, self.num_classes = num_frames, num_classes
        self.is_eva = hasattr(backbone, "rope")
        depth, width = len(backbone.blocks), backbone.embed_dim
        self.temporal_kind = temporal
        self.temporal = build_temporal(temporal, width, num_frames, depth)
        self.atm_layer = atm_layer
        check_atm_layer(self.atm_layer, depth)
        self.atm = ATM(width, num_frames, tuple(atm_ops), residual=atm_residual) if atm_ops else None
        self.proj = nn.Linear(width, proj_dim, bias=proj_bias) if proj_dim else nn.Identity()
        self.num_features = proj_dim or width
        self.head = VideoClassifierHead(self.num_features, num_classes, num_frames, dropout)
        self.grad_checkpointing = False

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable

    def no_weight_decay(self) -> set[str]:
        return {f"backbone.{name}" for name in self.backbone.no_weight_decay()}

    def group_matcher(self, coarse: bool = False) -> dict:
        """Layer-decay groups: ATM takes the depth of the block it precedes, T1D of its block."""
        atm_index = self.atm_layer - 1
        blocks = [
            (r"^backbone\.blocks\.(\d+)", None),
            (r"^temporal\.(\d+)", None),
            (r"^atm\.", (atm_index,)),
            (r"^backbone\.(norm|fc_norm|head)\.|^proj\.|^head\.", (99999,)),
        ]
        return dict(stem=r"^backbone\.(cls_token|pos_embed|reg_token|patch_embed|rope)", blocks=blocks)

    def apply_atm(self, tokens: torch.Tensor) -> torch.Tensor:
        """Fold patch tokens into their square grid, run ATM, unfold; the class token passes untouched."""
        prefix = self.backbone.num_prefix_tokens
        patches = tokens[:, prefix:]
        side = math.isqrt(patches.shape[1])
        if side * side != patches.shape[1]:
            raise ValueError(f"ATM needs a square token grid, got {patches.shape[1]} patch tokens")
        grid = patches.transpose(1, 2).reshape(tokens.shape[0], -1, side, side)
        patches = self.atm(grid).flatten(2).transpose(1, 2)
        return torch.cat([tokens[:, :prefix], patches], dim=1)

    def attn_branch(self, block: nn.Module, x: torch.Tensor, rope: torch.Tensor | None) -> torch.Tensor:
        if self.is_eva:
            out = block.attn(block.norm1(x), rope=rope)
            return block.drop_path1(out if block.gamma_1 is None else block.gamma_1 * out)
        return block.drop_path1(block.ls1(block.attn(block.norm1(x))))

    def mlp_branch(self, block: nn.Module, x: torch.Tensor) -> torch.Tensor:
        if self.is_eva:
            out = block.mlp(block.norm2(x))
            return block.drop_path2(out if block.gamma_2 is None else block.gamma_2 * out)
        return block.drop_path2(block.ls2(block.mlp(block.norm2(x))))

    def run_block(self, index: int, x: torch.Tensor, rope: torch.Tensor | None) -> torch.Tensor:
        block = self.backbone.blocks[index]
        if self.temporal_kind == "tokent1d":
            before_attn, before_mlp = self.temporal[index]
            x = before_attn(x)
            x = x + self.attn_branch(block, x, rope)
            x = before_mlp(x)
            return x + self.mlp_branch(block, x)
        if self.temporal is not None:
            x = self.temporal[index](x)
        return block(x, rope=rope) if self.is_eva else block(x)

    def forward_frames(self, frames: torch.Tensor) -> torch.Tensor:
        """``(B*T, 3, H, W)`` -> per-frame projected class-token features ``(B*T, D)``."""
        bb = self.backbone
        x = bb.patch_embed(frames)
        if self.is_eva:
            x, rope = bb._pos_embed(x)
        else:
            x, rope = bb.patch_drop(bb._pos_embed(x)), None
        x = bb.norm_pre(x)
        for index in range(len(bb.blocks)):
            if self.atm is not None and index == self.atm_layer - 1:
                x = self.apply_atm(x)
            if self.grad_checkpointing and self.training:
                x = checkpoint(self.run_block, index, x, rope, use_reentrant=False)
            else:
                x = self.run_block(index, x, rope)
        x = bb.norm(x)
        return self.proj(bb.fc_norm(x[:, 0]))

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_frames(as_frames(clips, self.num_frames)))

