"""A video ResNet: timm ResNet per frame, TSM inside the bottlenecks, ATM after a stage.

TSM is the residual shift of Lin et al.: the input of each bottleneck's first conv is
shifted in time, the identity path is not. It is applied by forward pre-hooks, so the
backbone keeps timm's parameter names.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from ..atm import ATM
from ..temporal import shift_frames
from .video_vit import VideoClassifierHead, as_frames

STAGES = ("layer1", "layer2", "layer3", "layer4")


class VideoResNet(nn.Module):
    def __init__(
        self,
        backbone: nn.Module,
        num_frames: int = 8,
        num_classes: int = 174,
        temporal: str = "tsm",
        atm_ops: tuple[str, ...] = ("mul", "sub"),
        atm_layer: int = 3,
        atm_residual: str = "relu",
        dropout: float = 0.0,
    ):
        super().__init__()
        if temporal not in ("tsn", "tsm"):
            raise ValueError(f"temporal={temporal!r} needs a class token; a ResNet supports 'tsn' and 'tsm'")
        if not 1 <= atm_layer <= len(STAGES):
            raise ValueError(f"atm_layer={atm_layer} is out of range: ATM goes after one of stages 1..4")
        self.backbone = backbone
        self.num_frames, self.num_classes = num_frames, num_classes
        self.temporal_kind, self.atm_layer = temporal, atm_layer
        channels = getattr(backbone, STAGES[atm_layer - 1])[-1].conv3.out_channels
        self.atm = (
            ATM(channels, num_frames, tuple(atm_ops), downsample=True, residual=atm_residual)
            if atm_ops else None
        )
        self.num_features = backbone.num_features
        self.head = VideoClassifierHead(self.num_features, num_classes, num_frames, dropout)
        if temporal == "tsm":
            for stage in STAGES:
                for block in getattr(backbone, stage):
                    block.conv1.register_forward_pre_hook(self._shift_input)

    def _shift_input(self, module: nn.Module, inputs: tuple[torch.Tensor]) -> tuple[torch.Tensor]:
        return (shift_frames(inputs[0], self.num_frames, fold_div=8),)

    def no_weight_decay(self) -> set[str]:
        return set()

    def group_matcher(self, coarse: bool = False) -> dict:
        blocks = [
            (r"^backbone\.layer(\d+)\.(\d+)" if not coarse else r"^backbone\.layer(\d+)", None),
            (r"^atm\.", (self.atm_layer, 99998)),
            (r"^head\.", (99999,)),
        ]
        return dict(stem=r"^backbone\.(conv1|bn1)", blocks=blocks)

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        bb = self.backbone
        x = bb.maxpool(bb.act1(bb.bn1(bb.conv1(as_frames(clips, self.num_frames)))))
        for index, stage in enumerate(STAGES, start=1):
            x = getattr(bb, stage)(x)
            if self.atm is not None and index == self.atm_layer:
                x = self.atm(x)
        return self.head(bb.forward_head(x, pre_logits=True))
