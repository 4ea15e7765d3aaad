"""Video ViTs over timm's VisionTransformer and Eva (EVA02) backbones.

The backbone is an unmodified timm model built with ``num_classes=0``; the video model
drives its modules frame-batch by frame-batch so that temporal modules and ATM can sit
between them without touching timm's classes. Per transformer block ``i`` (0-based):

    ATM (only when ``i == atm_after_blocks``: it receives the output of the first
         ``atm.after_blocks`` blocks, patch tokens as an (H, W) map)
    -> temporal ``pre`` (TSM / TokenShift / TokenT1D) on the residual stream
    -> attention half of the block
    -> temporal ``mid`` (TokenT1D only) on the residual stream
    -> MLP half of the block

as in the reference, whose blocks carry hooks before attention and before the MLP and
run ``control_point_c`` (ATM) first: ``resblocks[7]`` there is ``atm.after_blocks=7`` here.
ATM and the temporal modules live in ``model.atm`` and ``model.temporal``, so the
backbone's parameter names are the same in every variant and one checkpoint loads into all.
"""
from __future__ import annotations

import contextlib
from typing import Callable, Optional

import torch
import torch.nn as nn
from timm.models.eva import Eva, EvaBlock
from timm.models.eva import checkpoint_filter_fn as eva_filter_fn
from timm.models.vision_transformer import Block, VisionTransformer
from timm.models.vision_transformer import checkpoint_filter_fn as vit_filter_fn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.checkpoint import checkpoint

from ..temporal import TSM, TEMPORAL_MODULES, TokenShift, TokenT1D
from .classifier import VideoClassifier
from ..atm import ATM, PUBLISHED, ATMOptions


class BlockTemporal(nn.Module):
    """The temporal modules of one transformer block: ``pre`` before attention, ``mid`` before the MLP."""

    def __init__(self, pre: nn.Module, mid: Optional[nn.Module] = None):
        super().__init__()
        self.pre = pre
        self.mid = mid


def token_temporal(name: str, channels: int, num_frames: int, depth: int) -> Optional[nn.ModuleList]:
    """One :class:`BlockTemporal` per block for ``name`` in ``TEMPORAL_MODULES``; None for TSN."""
    if name not in TEMPORAL_MODULES:
        raise ValueError(f"unknown temporal module {name!r}; choose from {', '.join(TEMPORAL_MODULES)}")
    if name == "tsn":
        return None
    makers: dict[str, Callable[[], BlockTemporal]] = {
        "tsm": lambda: BlockTemporal(TSM(num_frames)),
        "tokenshift": lambda: BlockTemporal(TokenShift(num_frames)),
        "tokent1d": lambda: BlockTemporal(TokenT1D(channels, num_frames), TokenT1D(channels, num_frames)),
    }
    return nn.ModuleList([makers[name]() for _ in range(depth)])


def tokens_to_map(tokens: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """Patch tokens ``(N, h*w, C)`` -> a channels-last view ``(N, C, h, w)`` (row-major grid)."""
    n, count, channels = tokens.shape
    if count != grid[0] * grid[1]:
        raise ValueError(f"{count} patch tokens do not fill the {grid[0]}x{grid[1]} token grid")
    return tokens.reshape(n, grid[0], grid[1], channels).permute(0, 3, 1, 2)


def map_to_tokens(x: torch.Tensor) -> torch.Tensor:
    """``(N, C, h, w)`` -> ``(N, h*w, C)``, the inverse of :func:`tokens_to_map`."""
    return x.permute(0, 2, 3, 1).reshape(x.shape[0], -1, x.shape[1])


def attention_kernels(x: torch.Tensor) -> contextlib.AbstractContextManager:
    """The attention kernels for ``x``: on the CPU under bf16 autocast only SDPA's math kernel,
    whose backward on short token sequences runs much faster there than the CPU flash kernel's
    bf16 backward (``benchmarks/train_step_cpu.py`` times both paths); elsewhere PyTorch's
    choice."""
    if x.device.type == "cpu" and torch.is_autocast_enabled("cpu") \
            and torch.get_autocast_dtype("cpu") == torch.bfloat16:
        return sdpa_kernel([SDPBackend.MATH])
    return contextlib.nullcontext()


def attention_half(block: nn.Module, x: torch.Tensor, rope: Optional[torch.Tensor] = None) -> torch.Tensor:
    """The residual attention step of a timm ``Block`` or ``EvaBlock``."""
    if isinstance(block, EvaBlock):
        y = block.attn(block.norm1(x), rope=rope)
        if block.gamma_1 is not None:
            y = block.gamma_1 * y
        return x + block.drop_path1(y)
    return x + block.drop_path1(block.ls1(block.attn(block.norm1(x))))


def mlp_half(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The residual MLP step of a timm ``Block`` or ``EvaBlock``."""
    if isinstance(block, EvaBlock):
        y = block.mlp(block.norm2(x))
        if block.gamma_2 is not None:
            y = block.gamma_2 * y
        return x + block.drop_path2(y)
    return x + block.drop_path2(block.ls2(block.mlp(block.norm2(x))))


class VideoViT(VideoClassifier):
    """A timm ViT / EVA02 run on every frame, with temporal modules, ATM and a CLIP projection.

    Args:
        backbone: timm ``VisionTransformer`` or ``Eva`` with ``num_classes=0``.
        num_frames: frames per clip ``T``.
        num_classes: classifier outputs (0: return the clip embedding).
        temporal: one of ``TEMPORAL_MODULES``.
        atm: ATM's options; ``ops=()`` builds no ATM (``model.atm is None``); ``after_blocks`` is
            the number of transformer blocks that run before ATM (0: ATM before the first block);
            the reference's ViT-B/16 uses 7 of 12, its 24-block models 14.
        proj_dim: width of the CLIP image projection after the class token; None for no projection.
        proj_bias: OpenAI CLIP's projection has no bias, EVA-CLIP's has one.
        dropout: dropout before the classifier.
        head_init: the classifier's initialisation, see :class:`VideoClassifier`.
    """

    def __init__(
        self,
        backbone: nn.Module,
        num_frames: int,
        num_classes: int,
        temporal: str = "tokent1d",
        atm: ATMOptions = ATMOptions(after_blocks=7),
        proj_dim: Optional[int] = None,
        proj_bias: bool = False,
        dropout: float = 0.0,
        head_init: str = "pytorch",
    ):
        if not isinstance(backbone, (VisionTransformer, Eva)):
            raise TypeError(f"VideoViT needs a timm VisionTransformer or Eva backbone, got {type(backbone).__name__}")
        blocks = list(backbone.blocks)
        if not all(isinstance(b, (Block, EvaBlock)) for b in blocks):
            kinds = sorted({type(b).__name__ for b in blocks})
            raise TypeError(f"VideoViT drives timm Block / EvaBlock layers, this backbone has {kinds}")
        depth, embed_dim = len(blocks), backbone.embed_dim
        super().__init__(num_frames, num_classes, proj_dim or embed_dim, dropout, head_init)
        atm = atm.over(PUBLISHED)
        atm_after_blocks = atm.after_blocks
        if atm.ops and (atm_after_blocks is None or not 0 <= atm_after_blocks < depth):
            raise ValueError(f"atm.after_blocks={atm_after_blocks} is out of range for a {depth}-block "
                             f"backbone: choose 0..{depth - 1} (the number of blocks before ATM)")
        self.grid = tuple(backbone.patch_embed.grid_size)
        if atm.ops and self.grid[0] != self.grid[1]:
            size = tuple(backbone.patch_embed.img_size)
            token = tuple(s // g for s, g in zip(size, self.grid))  # pixels per token, stem or not
            raise ValueError(f"ATM needs a square token grid, got {self.grid[0]}x{self.grid[1]} patches "
                             f"(img_size {size}, tokens of {token[0]}x{token[1]} pixels)")
        self.embed_dim, self.depth = embed_dim, depth
        self.temporal_name, self.atm_after_blocks = temporal, atm_after_blocks

        self.backbone = backbone
        self.proj = nn.Linear(embed_dim, proj_dim, bias=proj_bias) if proj_dim else nn.Identity()
        self.temporal = token_temporal(temporal, embed_dim, num_frames, depth)
        self.atm = ATM(embed_dim, num_frames, atm) if atm.ops else None

    @property
    def is_eva(self) -> bool:
        return isinstance(self.backbone, Eva)

    def checkpoint_filter(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """timm's own conversion of a foreign checkpoint (OpenAI / open_clip / EVA-CLIP) into backbone keys."""
        return (eva_filter_fn if self.is_eva else vit_filter_fn)(state, self.backbone)

    def embed(self, frames: torch.Tensor) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        """Patch embedding, class token, position embedding: ``(B*T, 1+N, C)`` and EVA's rotary embedding."""
        b = self.backbone
        x = b.patch_embed(frames)
        if self.is_eva:
            x, rope = b._pos_embed(x)
        else:
            x, rope = b.patch_drop(b._pos_embed(x)), None
        return b.norm_pre(x), rope

    def apply_atm(self, x: torch.Tensor) -> torch.Tensor:
        """ATM on the patch tokens folded into their grid; prefix (class) tokens pass untouched."""
        prefix = self.backbone.num_prefix_tokens
        patches = map_to_tokens(self.atm(tokens_to_map(x[:, prefix:], self.grid)))
        return torch.cat([x[:, :prefix], patches], dim=1)

    def run_block(self, index: int, x: torch.Tensor, rope: Optional[torch.Tensor]) -> torch.Tensor:
        block = self.backbone.blocks[index]
        kwargs = {} if rope is None else {"rope": rope}
        stage = None if self.temporal is None else self.temporal[index]
        if stage is None:
            return block(x, **kwargs)
        x = stage.pre(x)
        if stage.mid is None:
            return block(x, **kwargs)
        return mlp_half(block, stage.mid(attention_half(block, x, rope)))

    def forward_frames(self, frames: torch.Tensor) -> torch.Tensor:
        x, rope = self.embed(frames)
        with attention_kernels(x):
            for index in range(self.depth):
                if self.atm is not None and index == self.atm_after_blocks:
                    x = self.apply_atm(x)
                if self.grad_checkpointing and self.training and not torch.jit.is_scripting():
                    x = checkpoint(self.run_block, index, x, rope, use_reentrant=False)
                else:
                    x = self.run_block(index, x, rope)
        x = self.backbone.forward_head(self.backbone.norm(x), pre_logits=True)
        return self.proj(x)

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        names = {n for n, _ in self.named_parameters()}
        return {f"backbone.{n}" for n in self.backbone.no_weight_decay()} & names

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict:
        """Layer groups for timm's ``param_groups_layer_decay``: the temporal modules of block ``i``
        and an ATM placed before block ``i`` (after ``i`` blocks) share block ``i``'s layer id; projection and head come last."""
        return dict(
            stem=r"^backbone\.(?:cls_token|reg_token|pos_embed|patch_embed|norm_pre)",
            blocks=[
                (r"^backbone\.blocks\.(\d+)", None),
                (r"^temporal\.(\d+)\.", None),
                (r"^atm\.", (self.atm_after_blocks,)),
                (r"^backbone\.(?:norm|fc_norm)\.", (99999,)),
            ],
        )
