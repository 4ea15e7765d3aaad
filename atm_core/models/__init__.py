"""Video models registered with timm: ``timm.create_model("atm_vit_base_patch16_clip_224", ...)``.

Each name maps to a timm image backbone, its CLIP projection, its default ATM depth and
the timm filter function that converts its foreign checkpoints.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import timm
import timm.models.eva as timm_eva
import timm.models.vision_transformer as timm_vit
from timm.models import register_model

from .video_resnet import VideoResNet
from .video_vit import VideoViT
from .weights import LoadReport, load_backbone_weights, read_checkpoint


@dataclass(frozen=True)
class VideoModelSpec:
    backbone: str
    pretrained_tag: str | None
    atm_layer: int
    proj_dim: int | None = None
    proj_bias: bool = False
    temporal: str = "tokent1d"
    filter_fn: object = None
    backbone_kwargs: dict = field(default_factory=dict)


SPECS: dict[str, VideoModelSpec] = {
    "atm_vit_base_patch16_clip_224": VideoModelSpec(
        "vit_base_patch16_clip_quickgelu_224", "openai", 7, 512, filter_fn=timm_vit.checkpoint_filter_fn),
    "atm_vit_large_patch14_clip_224": VideoModelSpec(
        "vit_large_patch14_clip_quickgelu_224", "openai", 14, 768, filter_fn=timm_vit.checkpoint_filter_fn),
    "atm_eva02_large_patch14_clip_224": VideoModelSpec(
        "eva02_large_patch14_clip_224", "merged2b", 14, 768, True, filter_fn=timm_eva.checkpoint_filter_fn),
    "atm_eva02_large_patch14_clip_336": VideoModelSpec(
        "eva02_large_patch14_clip_336", "merged2b", 14, 768, True, filter_fn=timm_eva.checkpoint_filter_fn),
    "atm_vit_tiny_patch8_64": VideoModelSpec(
        "vit_tiny_patch16_224", None, 3, filter_fn=timm_vit.checkpoint_filter_fn,
        backbone_kwargs=dict(img_size=64, patch_size=8, embed_dim=128, depth=4, num_heads=4)),
    "atm_resnet50": VideoModelSpec("resnet50", "a1_in1k", 3, temporal="tsm"),
}


def create_video_model(
    name: str,
    pretrained: bool = False,
    pretrained_file: str | Path | None = None,
    num_frames: int = 8,
    num_classes: int = 174,
    temporal: str | None = None,
    atm_ops: tuple[str, ...] = ("mul", "sub"),
    atm_layer: int | None = None,
    atm_residual: str = "relu",
    dropout: float = 0.0,
    **backbone_kwargs,
):
    spec = SPECS[name]
    backbone_kwargs = {**spec.backbone_kwargs, **backbone_kwargs}
    backbone_kwargs.pop("pretrained_cfg", None)
    backbone_kwargs.pop("pretrained_cfg_overlay", None)
    tagged = f"{spec.backbone}.{spec.pretrained_tag}" if spec.pretrained_tag else spec.backbone
    backbone = timm.create_model(tagged, pretrained=False, num_classes=0, **backbone_kwargs)
    common = dict(num_frames=num_frames, num_classes=num_classes, temporal=temporal or spec.temporal,
                  atm_ops=tuple(atm_ops), atm_layer=atm_layer or spec.atm_layer,
                  atm_residual=atm_residual, dropout=dropout)
    if spec.backbone.startswith("resnet"):
        model = VideoResNet(backbone, **common)
    else:
        model = VideoViT(backbone, proj_dim=spec.proj_dim, proj_bias=spec.proj_bias, **common)
    model.pretrained_cfg = dict(backbone.pretrained_cfg, num_frames=num_frames, num_classes=num_classes)
    model.load_report = None
    if pretrained_file is not None:
        state = read_checkpoint(pretrained_file)
        model.load_report = load_backbone_weights(model, state, spec.filter_fn, str(pretrained_file))
    elif pretrained:
        hub_model = timm.create_model(tagged, pretrained=True, num_classes=spec.proj_dim or 0, **backbone_kwargs)
        model.load_report = load_backbone_weights(model, hub_model.state_dict(), None, tagged)
    return model


def _register(name: str) -> None:
    def constructor(pretrained: bool = False, **kwargs):
        return create_video_model(name, pretrained=pretrained, **kwargs)

    constructor.__name__ = constructor.__qualname__ = name
    constructor.__module__ = __name__
    constructor.__doc__ = f"Video model over timm's {SPECS[name].backbone} (see atm_core.models)."
    register_model(constructor)


for _name in SPECS:
    _register(_name)

__all__ = ["SPECS", "LoadReport", "VideoResNet", "VideoViT", "create_video_model", "read_checkpoint"]
