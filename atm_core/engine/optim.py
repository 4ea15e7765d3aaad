"""AdamW with layer-wise lr decay, the per-step cosine schedule and the losses."""
from __future__ import annotations

import torch
import torch.nn as nn
from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy
from timm.optim import param_groups_layer_decay
from timm.scheduler import create_scheduler_v2
from timm.scheduler.scheduler import Scheduler

from ..data import VideoMixup, build_mixup
from .config import LossConfig, OptimConfig


def scaled_lrs(cfg: OptimConfig, total_batch: int) -> dict[str, float]:
    """lr, warmup_lr and min_lr, scaled linearly by ``total_batch / 256`` when ``scale_lr``."""
    factor = total_batch / 256 if cfg.scale_lr else 1.0
    return {"lr": cfg.lr * factor, "warmup_lr": cfg.warmup_lr * factor, "min_lr": cfg.min_lr * factor}


def build_optimizer(model: nn.Module, cfg: OptimConfig, lr: float) -> torch.optim.AdamW:
    """AdamW over timm's layer-decay groups: no weight decay on 1-d parameters (norms,
    biases) or on the model's ``no_weight_decay()`` names (position embeddings, class
    token); each group carries an ``lr_scale`` the timm scheduler applies. ATM's parameters
    (``model.atm``) get their layer's scale times ``cfg.atm_lr_scale``."""
    skip = model.no_weight_decay() if hasattr(model, "no_weight_decay") else ()
    groups = param_groups_layer_decay(
        model, weight_decay=cfg.weight_decay, no_weight_decay_list=skip, layer_decay=cfg.layer_decay)
    atm = getattr(model, "atm", None)
    if atm is not None and cfg.atm_lr_scale != 1.0:
        groups = scale_group_lr(groups, {id(p) for p in atm.parameters()}, cfg.atm_lr_scale)
    return torch.optim.AdamW(groups, lr=lr, betas=tuple(cfg.betas), eps=cfg.eps)


def scale_group_lr(groups: list[dict], selected: set[int], factor: float) -> list[dict]:
    """Split every group into its ``selected`` parameters (by ``id``), whose ``lr_scale`` is
    multiplied by ``factor``, and the rest; empty groups are dropped."""
    out = []
    for group in groups:
        for chosen, scale in ((False, 1.0), (True, factor)):
            params = [p for p in group["params"] if (id(p) in selected) == chosen]
            if params:
                out.append({**group, "params": params, "lr_scale": group.get("lr_scale", 1.0) * scale})
    return out


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: OptimConfig, lrs: dict[str, float],
                    updates_per_epoch: int) -> Scheduler:
    """Per-update schedule: linear warm-up from ``warmup_lr`` over ``warmup_epochs``, then
    cosine to ``min_lr`` over the remaining epochs. Call ``step_update(num_updates)``."""
    scheduler, _ = create_scheduler_v2(
        optimizer,
        sched=cfg.sched,
        num_epochs=cfg.epochs - cfg.warmup_epochs,
        warmup_epochs=cfg.warmup_epochs,
        warmup_prefix=True,
        warmup_lr=lrs["warmup_lr"],
        min_lr=lrs["min_lr"],
        step_on_epochs=False,
        updates_per_epoch=updates_per_epoch,
    )
    return scheduler


def build_video_mixup(cfg: LossConfig, num_classes: int) -> VideoMixup | None:
    """Mixup/CutMix on (B, T, 3, H, W) clips with soft, smoothed targets; None when off."""
    return build_mixup(num_classes, mixup_alpha=cfg.mixup, cutmix_alpha=cfg.cutmix, prob=cfg.mixup_prob,
                       switch_prob=cfg.mixup_switch_prob, label_smoothing=cfg.label_smoothing)


def build_loss(cfg: LossConfig, mixup: VideoMixup | None) -> nn.Module:
    """Soft-target CE when Mixup/CutMix makes soft labels (smoothing folded into them),
    else label-smoothing CE (plain CE at smoothing 0)."""
    if mixup is not None:
        return SoftTargetCrossEntropy()
    if cfg.label_smoothing > 0:
        return LabelSmoothingCrossEntropy(smoothing=cfg.label_smoothing)
    return nn.CrossEntropyLoss()
