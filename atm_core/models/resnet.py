"""Video ResNet over timm's ResNet: TSM in the residual branches, ATM between two stages.

The paper states ATM works in CNNs; the reference ships only the ViT path. Here ATM runs
on the output of the first ``atm.after_blocks`` stages (0: on the stem's output) with
``downsample=True`` (the reduce conv halves the map, the transposed projection restores it). TSM shifts the input of every
bottleneck's first convolution, the residual-branch placement of TSM ("blockres"), through
forward pre-hooks on this backbone's own ``conv1`` modules: timm's classes stay untouched
and the parameter names stay those of the plain ResNet.
"""
from __future__ import annotations

from functools import partial
from typing import Sequence

import torch
import torch.nn as nn
from timm.models import checkpoint_seq
from timm.models.resnet import ResNet

from ..temporal import shift_frames
from .classifier import VideoClassifier
from ..atm import ATM, PUBLISHED, ATMOptions

CNN_TEMPORAL = ("tsn", "tsm")


def _shift_input(module: nn.Module, args: tuple, num_frames: int, fold_div: int) -> tuple:
    return (shift_frames(args[0], num_frames, fold_div),) + args[1:]


class ResidualShift(nn.Module):
    """TSM for CNN maps: shifts ``1/fold_div`` of the channels one frame each way, ``(B*T, C, H, W)``."""

    def __init__(self, num_frames: int, fold_div: int = 8):
        super().__init__()
        self.num_frames, self.fold_div = num_frames, fold_div

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return shift_frames(x, self.num_frames, self.fold_div)

    def attach(self, convs: Sequence[nn.Module]) -> None:
        """Shift the input of every conv in ``convs`` (the residual branch of each block)."""
        hook = partial(_shift_input, num_frames=self.num_frames, fold_div=self.fold_div)
        for conv in convs:
            conv.register_forward_pre_hook(hook)


class VideoResNet(VideoClassifier):
    """A timm ResNet run on every frame, with TSM and ATM after ``atm.after_blocks`` stages (0..3)."""

    def __init__(
        self,
        backbone: ResNet,
        num_frames: int,
        num_classes: int,
        temporal: str = "tsm",
        atm: ATMOptions = ATMOptions(after_blocks=2, downsample=True),
        dropout: float = 0.0,
        head_init: str = "pytorch",
    ):
        if not isinstance(backbone, ResNet):
            raise TypeError(f"VideoResNet needs a timm ResNet backbone, got {type(backbone).__name__}")
        super().__init__(num_frames, num_classes, backbone.num_features, dropout, head_init)
        if temporal not in CNN_TEMPORAL:
            raise ValueError(f"unknown temporal module {temporal!r} for a ResNet; choose from "
                             f"{', '.join(CNN_TEMPORAL)} (TokenShift / TokenT1D act on ViT class tokens)")
        stages = self.stages_of(backbone)
        atm = atm.over(PUBLISHED)
        atm_after_blocks = atm.after_blocks
        if atm.ops and (atm_after_blocks is None or not 0 <= atm_after_blocks < len(stages)):
            raise ValueError(f"atm.after_blocks={atm_after_blocks} is out of range for a {len(stages)}-stage "
                             f"ResNet: choose 0..{len(stages) - 1} (the number of stages before ATM)")
        self.temporal_name, self.atm_after_blocks = temporal, atm_after_blocks
        self.backbone = backbone
        self.temporal = None
        if temporal == "tsm":
            self.temporal = ResidualShift(num_frames)
            self.temporal.attach([block.conv1 for stage in stages for block in stage])
        self.atm = None
        if atm.ops:
            self.atm = ATM(stages[atm_after_blocks][0].conv1.in_channels, num_frames, atm)

    @staticmethod
    def stages_of(backbone: ResNet) -> list[nn.Sequential]:
        return [backbone.layer1, backbone.layer2, backbone.layer3, backbone.layer4]

    def checkpoint_filter(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return state

    def forward_frames(self, frames: torch.Tensor) -> torch.Tensor:
        b = self.backbone
        x = b.maxpool(b.act1(b.bn1(b.conv1(frames))))
        for index, stage in enumerate(self.stages_of(b)):
            if self.atm is not None and index == self.atm_after_blocks:
                x = self.atm(x)
            if self.grad_checkpointing and self.training and not torch.jit.is_scripting():
                x = checkpoint_seq(stage, x)
            else:
                x = stage(x)
        return b.forward_head(x, pre_logits=True)

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        return set()

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict:
        """timm's ResNet grouping (per block, or per stage when ``coarse``); ATM joins the first
        block of the stage it precedes."""
        stage = self.atm_after_blocks + 1  # timm numbers the stages layer1..layer4
        first = (stage,) if coarse else (stage, 0)
        stage_re = r"^backbone\.layer(\d+)" if coarse else r"^backbone\.layer(\d+)\.(\d+)"
        return dict(
            stem=r"^backbone\.(?:conv1|bn1|maxpool)",
            blocks=[(stage_re, None), (r"^atm\.", first)],
        )
