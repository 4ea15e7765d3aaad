"""Registered video models: a config table of backbones, one builder, timm entry points last.

After ``import atm_core.models``::

    timm.create_model("atm_vit_base_patch16_clip_224", num_frames=8, num_classes=174,
                      temporal="tokent1d", atm=ATMOptions(ops=("mul", "sub"), after_blocks=7))

Keyword arguments: ``num_frames``, ``num_classes``, ``temporal``, ``atm`` (ATM's options, one
:class:`atm_core.atm.ATMOptions` or a mapping of its fields; unset fields are the model's
defaults: the reference's ViT-B/16 runs ATM after 7 of 12 blocks, its 24-block models after 14,
ResNets downsample; ``ops=()`` = no ATM); ``conv_stem`` (ViTs trained from scratch: widths of a stride-2 conv stem in place of the linear
patch embedding, ``()`` for none; the tiny ViT's default is ``(16, 32, 64)``),
``dropout`` (before the classifier), ``proj_dim`` (CLIP projection width, ViTs),
``pretrained`` (timm hub weights of the backbone), ``pretrained_file`` (a local checkpoint,
any checkpoint :func:`.weights.load_video_weights` reads); anything else goes to the timm backbone (``img_size``,
``drop_path_rate``, ``embed_dim``, ...).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Mapping, Optional, Sequence

import timm
import torch.nn as nn
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, OPENAI_CLIP_MEAN, OPENAI_CLIP_STD
from timm.layers import HybridEmbed
from timm.models import register_model
from timm.models.vision_transformer_hybrid import ConvStem

from .classifier import VideoClassifier
from .resnet import VideoResNet
from .vit import VideoViT
from ..atm import PUBLISHED, ATMOptions
from .weights import LoadReport, load_video_weights

_logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class BackboneSpec:
    """How one registered video model builds its backbone and what it defaults to."""

    arch: str  # timm architecture of the image backbone
    weights: Optional[str]  # timm pretrained tag used by pretrained=True (None: none exist)
    family: str  # "vit" (VisionTransformer / Eva) or "resnet"
    atm: ATMOptions  # this model's ATM defaults over the paper's, placement (after_blocks) included
    temporal: str
    num_classes: int
    img_size: int
    proj_dim: Optional[int] = None  # CLIP image projection after the class token
    proj_bias: bool = False
    head_init: str = "pytorch"  # nn.Linear's default, as the reference's classifier
    # ViTs: widths of stride-2 3x3 conv+BN+ReLU layers that, with a 1x1 conv to the embedding
    # width, replace the linear patch embedding (patch_size must be 2 ** their number); () = none
    conv_stem: tuple[int, ...] = ()
    mean: tuple = OPENAI_CLIP_MEAN
    std: tuple = OPENAI_CLIP_STD
    backbone_args: dict = field(default_factory=dict)


SPECS: dict[str, BackboneSpec] = {
    # OpenAI CLIP ViT-B/16 (QuickGELU), the reference configuration
    "atm_vit_base_patch16_clip_224": BackboneSpec(
        "vit_base_patch16_clip_quickgelu_224", "vit_base_patch16_clip_quickgelu_224.openai", "vit",
        atm=ATMOptions(after_blocks=7), temporal="tokent1d", num_classes=174, img_size=224, proj_dim=512),
    "atm_vit_large_patch14_clip_224": BackboneSpec(
        "vit_large_patch14_clip_quickgelu_224", "vit_large_patch14_clip_quickgelu_224.openai", "vit",
        atm=ATMOptions(after_blocks=14), temporal="tokent1d", num_classes=174, img_size=224, proj_dim=768),
    # EVA02-CLIP-L/14: its projection has a bias
    "atm_eva02_large_patch14_clip_224": BackboneSpec(
        "eva02_large_patch14_clip_224", "eva02_large_patch14_clip_224.merged2b", "vit",
        atm=ATMOptions(after_blocks=14), temporal="tokent1d", num_classes=174, img_size=224, proj_dim=768, proj_bias=True),
    "atm_eva02_large_patch14_clip_336": BackboneSpec(
        "eva02_large_patch14_clip_336", "eva02_large_patch14_clip_336.merged2b", "vit",
        atm=ATMOptions(after_blocks=14), temporal="tokent1d", num_classes=174, img_size=336, proj_dim=768, proj_bias=True),
    # ImageNet ResNet-50: ATM after stage 2 (28x28 map reduced to 14x14), TSM in the residual branches
    "atm_resnet50": BackboneSpec(
        "resnet50", "resnet50.a1_in1k", "resnet", atm=ATMOptions(after_blocks=2, downsample=True),
        temporal="tsm", num_classes=174, img_size=224, mean=IMAGENET_DEFAULT_MEAN, std=IMAGENET_DEFAULT_STD),
    # tiny ResNet for CPU runs on the built-in benchmark, trained from scratch: timm's plain stem
    # (7x7 conv, 64 wide, and max-pool), one BasicBlock per stage with widths 32-256, 64x64 input;
    # ATM after the first stage, on its 16x16 map reduced to 8x8 (downsample, as for ResNet-50),
    # with the tiny ViT's ATM widths.
    "atm_resnet_tiny_64": BackboneSpec(
        "resnet18", None, "resnet", atm=ATMOptions(after_blocks=1, hidden=32, width=32, downsample=True),
        temporal="tsn", num_classes=12, img_size=64,
        backbone_args=dict(layers=(1, 1, 1, 1), channels=(32, 64, 128, 256))),
    # tiny ViT for CPU runs on the built-in benchmark, trained from scratch. ATM sits before the
    # first block (the motion cue reaches every block) at half the published widths: at 8x8 tokens
    # the published widths cost more than the whole backbone. Its 8x8-pixel tokens come from a
    # stride-8 conv stem instead of a linear patch embedding (Xiao et al., "Early Convolutions Help
    # Transformers See Better", 2021); README.md compares it with the linear embedding.
    # Its classifier keeps the truncated-normal initialisation the committed results were trained
    # with (PyTorch's default, the reference's choice, has not been measured on this model).
    "atm_vit_tiny_patch8_64": BackboneSpec(
        "vit_tiny_patch16_224", None, "vit", atm=ATMOptions(after_blocks=0, hidden=32, width=32),
        temporal="tokent1d", num_classes=12, img_size=64, head_init="trunc_normal", conv_stem=(16, 32, 64),
        backbone_args=dict(patch_size=8, embed_dim=64, depth=4, num_heads=2)),
}


def _conv_stem_embedding(widths: tuple[int, ...], patch_size: Optional[int],
                         embed_dim: Optional[int]) -> partial:
    """timm's ``ConvStem`` (stride-2 3x3 conv+BN+ReLU layers, then a 1x1 conv to ``embed_dim``) as
    the ViT's embedding layer, making the tokens ``patch_size`` pixels wide."""
    if embed_dim is None:
        raise ValueError("conv_stem needs the backbone's embed_dim as an argument")
    if patch_size != 2 ** len(widths):
        raise ValueError(f"a conv stem of {len(widths)} stride-2 layers makes "
                         f"{2 ** len(widths)}-pixel tokens, but patch_size is {patch_size}")
    strided = len(widths)
    stem = ConvStem(depth=strided + 1, channels=(*widths, embed_dim),
                    kernel_size=(3,) * strided + (1,), stride=(2,) * strided + (1,))
    return partial(HybridEmbed, backbone=stem, proj=False)


def _backbone(spec: BackboneSpec, name: str, pretrained: bool, proj_dim: Optional[int],
              conv_stem: tuple[int, ...], timm_kwargs: dict[str, Any]) -> nn.Module:
    """The timm image backbone without classifier; with ``pretrained``, its hub weights, and the
    CLIP projection (timm's head) returned as the backbone's ``head`` until the caller moves it."""
    if pretrained and spec.weights is None:
        raise ValueError(f"{name} has no pretrained backbone weights (it is trained from scratch); "
                         "use pretrained=False or pretrained_file=...")
    kwargs = {**spec.backbone_args, **timm_kwargs}
    if conv_stem:
        if spec.family != "vit" or pretrained:
            raise ValueError("conv_stem replaces the patch embedding of a ViT trained from scratch "
                             f"({name}, pretrained={pretrained})")
        kwargs["embed_layer"] = _conv_stem_embedding(conv_stem, kwargs.get("patch_size"),
                                                     kwargs.get("embed_dim"))
        kwargs["patch_size"] = 1  # HybridEmbed's patches are pixels of the stem's output
    if spec.family == "resnet":
        kwargs.pop("img_size", None)  # a CNN takes any input size
    else:
        kwargs.setdefault("img_size", spec.img_size)
    keep_head = pretrained and proj_dim is not None
    return timm.create_model(spec.weights if pretrained else spec.arch, pretrained=pretrained,
                             num_classes=proj_dim if keep_head else 0, **kwargs)


def resolved_atm(name: str, atm: ATMOptions) -> ATMOptions:
    """``atm`` with its unset fields filled by the registered model ``name``'s defaults."""
    return atm.over(SPECS[name].atm.over(PUBLISHED))


def build_video_model(
    name: str,
    pretrained: bool = False,
    *,
    num_frames: int = 8,
    num_classes: Optional[int] = None,
    temporal: Optional[str] = None,
    atm: ATMOptions | Mapping[str, Any] = ATMOptions(),
    conv_stem: Optional[Sequence[int]] = None,
    dropout: float = 0.0,
    proj_dim: Optional[int] = None,
    pretrained_file: Optional[str] = None,
    pretrained_cfg: Any = None,
    **timm_kwargs: Any,
) -> VideoClassifier:
    """Build the registered video model ``name`` (see the module docstring for the arguments)."""
    spec = SPECS[name]
    old = sorted(k for k in timm_kwargs if k.startswith("atm_"))
    if old:
        fields = ", ".join(f"{k.removeprefix('atm_')}=..." for k in old)
        raise ValueError(f"ATM's options are one argument now: atm=ATMOptions({fields}) "
                         f"instead of {', '.join(old)}")
    atm = resolved_atm(name, atm if isinstance(atm, ATMOptions) else ATMOptions(**atm))
    num_classes = spec.num_classes if num_classes is None else num_classes
    temporal = spec.temporal if temporal is None else temporal
    conv_stem = spec.conv_stem if conv_stem is None else tuple(conv_stem)
    proj_dim = spec.proj_dim if proj_dim is None else proj_dim
    if pretrained and pretrained_file:
        _logger.info("%s: pretrained_file=%s given, not downloading %s", name, pretrained_file, spec.weights)
        pretrained = False
    if not pretrained:
        timm_kwargs.pop("pretrained_cfg_overlay", None)
        timm_kwargs.pop("cache_dir", None)
    backbone = _backbone(spec, name, pretrained, proj_dim, conv_stem, timm_kwargs)

    common = dict(num_frames=num_frames, num_classes=num_classes, temporal=temporal, atm=atm,
                  dropout=dropout, head_init=spec.head_init)
    if spec.family == "resnet":
        model: VideoClassifier = VideoResNet(backbone, **common)
    else:
        clip_proj = backbone.get_classifier() if isinstance(backbone.get_classifier(), nn.Linear) else None
        backbone.reset_classifier(0)
        model = VideoViT(backbone, proj_dim=proj_dim, proj_bias=spec.proj_bias, **common)
        if clip_proj is not None:  # hub weights: timm loaded the CLIP projection as the head
            model.proj.weight.data.copy_(clip_proj.weight.data)
            if model.proj.bias is not None:
                model.proj.bias.data.copy_(clip_proj.bias.data)

    size = getattr(getattr(backbone, "patch_embed", None), "img_size", None)
    img_size = tuple(size) if size is not None else (timm_kwargs.get("img_size", spec.img_size),) * 2
    model.pretrained_cfg = model.default_cfg = dict(
        architecture=name, backbone=spec.arch, backbone_weights=spec.weights,
        input_size=(3, *img_size), num_frames=num_frames, num_classes=num_classes,
        mean=spec.mean, std=spec.std, interpolation="bicubic", crop_pct=1.0, classifier="head")
    if pretrained_file:
        load_video_weights(model, pretrained_file)
    elif pretrained:
        loaded = {f"backbone.{k}" for k in backbone.state_dict()} | (
            {f"proj.{k}" for k in model.proj.state_dict()} if isinstance(model.proj, nn.Linear) else set())
        model.load_report = LoadReport(spec.weights, loaded=sorted(loaded),
                                       new=[n for n, _ in model.named_parameters() if n not in loaded])
        _logger.info(model.load_report.summary())
    return model


# ---------------------------------------------------------------- timm entry points

@register_model
def atm_vit_base_patch16_clip_224(pretrained: bool = False, **kwargs) -> VideoClassifier:
    """OpenAI CLIP ViT-B/16 (QuickGELU, 512-d projection); T1D in every block, ATM after 7 of 12 blocks."""
    return build_video_model("atm_vit_base_patch16_clip_224", pretrained, **kwargs)


@register_model
def atm_vit_large_patch14_clip_224(pretrained: bool = False, **kwargs) -> VideoClassifier:
    """OpenAI CLIP ViT-L/14 (QuickGELU, 768-d projection); ATM after 14 of 24 blocks."""
    return build_video_model("atm_vit_large_patch14_clip_224", pretrained, **kwargs)


@register_model
def atm_eva02_large_patch14_clip_224(pretrained: bool = False, **kwargs) -> VideoClassifier:
    """EVA02-CLIP-L/14 at 224 (768-d projection); ATM after 14 of 24 blocks."""
    return build_video_model("atm_eva02_large_patch14_clip_224", pretrained, **kwargs)


@register_model
def atm_eva02_large_patch14_clip_336(pretrained: bool = False, **kwargs) -> VideoClassifier:
    """EVA02-CLIP-L/14 at 336 (768-d projection); ATM after 14 of 24 blocks."""
    return build_video_model("atm_eva02_large_patch14_clip_336", pretrained, **kwargs)


@register_model
def atm_resnet50(pretrained: bool = False, **kwargs) -> VideoClassifier:
    """ImageNet ResNet-50 with TSM; ATM (downsample=True) after stage 2 of 4."""
    return build_video_model("atm_resnet50", pretrained, **kwargs)


@register_model
def atm_vit_tiny_patch8_64(pretrained: bool = False, **kwargs) -> VideoClassifier:
    """Tiny ViT for CPU runs: 64x64 input, 8x8 patches, width 64, 4 blocks, 2 heads; ATM (widths 32)
    before the first block."""
    return build_video_model("atm_vit_tiny_patch8_64", pretrained, **kwargs)


@register_model
def atm_resnet_tiny_64(pretrained: bool = False, **kwargs) -> VideoClassifier:
    """Tiny ResNet for CPU runs: 64x64 input, timm's 64-wide 7x7 stem, one BasicBlock per stage
    (widths 32, 64, 128, 256); ATM (widths 32, downsampled) after the first stage."""
    return build_video_model("atm_resnet_tiny_64", pretrained, **kwargs)
