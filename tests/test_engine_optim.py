"""Optimiser groups, lr scaling and the per-step warm-up + cosine schedule."""
from __future__ import annotations

import math

import pytest
import timm
import torch

from atm_core.engine.config import load_config
from atm_core.engine.optim import build_loss, build_optimizer, build_scheduler, scaled_lrs


@pytest.fixture
def vit():
    return timm.create_model("vit_tiny_patch16_224", img_size=32, depth=3, num_classes=5)


def test_lr_scaled_by_total_batch():
    cfg = load_config(None, ["optim.lr=8e-4", "optim.warmup_lr=2e-6", "optim.min_lr=4e-6"]).optim
    assert scaled_lrs(cfg, 128) == pytest.approx({"lr": 4e-4, "warmup_lr": 1e-6, "min_lr": 2e-6})
    assert scaled_lrs(cfg, 512)["lr"] == pytest.approx(1.6e-3)
    cfg.scale_lr = False
    assert scaled_lrs(cfg, 128)["lr"] == pytest.approx(8e-4)


def test_layer_decay_and_no_weight_decay_groups(vit):
    cfg = load_config(None, ["optim.layer_decay=0.5", "optim.weight_decay=0.05"]).optim
    opt = build_optimizer(vit, cfg, lr=1e-3)
    group_of = {id(p): g for g in opt.param_groups for p in g["params"]}
    params = dict(vit.named_parameters())
    assert sum(len(g["params"]) for g in opt.param_groups) == len(params)
    # layers: 0 = embeddings, 1..3 = blocks, 4 = final norm + head
    for name, layer in [("patch_embed.proj.weight", 0), ("blocks.0.attn.qkv.weight", 1),
                        ("blocks.2.mlp.fc1.weight", 3), ("head.weight", 4)]:
        assert group_of[id(params[name])]["lr_scale"] == pytest.approx(0.5 ** (4 - layer)), name
    for name in ("pos_embed", "cls_token", "blocks.1.norm1.weight", "blocks.1.attn.qkv.bias", "head.bias"):
        assert group_of[id(params[name])]["weight_decay"] == 0.0, name
    for name in ("blocks.1.attn.qkv.weight", "head.weight", "patch_embed.proj.weight"):
        assert group_of[id(params[name])]["weight_decay"] == 0.05, name
    assert isinstance(opt, torch.optim.AdamW) and opt.defaults["betas"] == (0.9, 0.999)


def test_atm_parameters_get_their_layer_scale_times_atm_lr_scale():
    from atm_core.models.factory import build_video_model

    model = build_video_model("atm_vit_tiny_patch8_64", atm=dict(ops=("sub",), after_blocks=1))
    cfg = load_config(None, ["optim.layer_decay=0.5", "optim.atm_lr_scale=4"]).optim
    scaled = {id(p): g for g in build_optimizer(model, cfg, lr=1e-3).param_groups for p in g["params"]}
    cfg.atm_lr_scale = 1.0
    plain = {id(p): g for g in build_optimizer(model, cfg, lr=1e-3).param_groups for p in g["params"]}
    atm = {id(p) for p in model.atm.parameters()}
    assert atm and len(scaled) == len(plain) == len(list(model.parameters()))
    for name, p in model.named_parameters():
        factor = 4.0 if id(p) in atm else 1.0
        assert scaled[id(p)]["lr_scale"] == pytest.approx(plain[id(p)]["lr_scale"] * factor), name
        assert scaled[id(p)]["weight_decay"] == plain[id(p)]["weight_decay"], name
    # ATM before block 2 takes block 1's depth (layer 2 of 0..5): 0.5 ** (5 - 2) * 4
    assert scaled[id(model.atm[0].proj.weight)]["lr_scale"] == pytest.approx(0.5 ** 3 * 4)


def test_per_step_warmup_then_cosine(vit):
    cfg = load_config(None, ["optim.epochs=4", "optim.warmup_epochs=1", "optim.layer_decay=0.5"]).optim
    lrs = {"lr": 1e-3, "warmup_lr": 1e-5, "min_lr": 1e-6}
    opt = build_optimizer(vit, cfg, lrs["lr"])
    per_epoch = 10
    sched = build_scheduler(opt, cfg, lrs, updates_per_epoch=per_epoch)
    head = next(g for g in opt.param_groups if g["lr_scale"] == 1.0)
    embed = min(opt.param_groups, key=lambda g: g["lr_scale"])

    def expected(n: int) -> float:
        if n < per_epoch:
            return lrs["warmup_lr"] + (lrs["lr"] - lrs["warmup_lr"]) * n / per_epoch
        t = (n - per_epoch) / (3 * per_epoch)
        return lrs["min_lr"] + 0.5 * (lrs["lr"] - lrs["min_lr"]) * (1 + math.cos(math.pi * t))

    assert head["lr"] == pytest.approx(lrs["warmup_lr"])
    for n in range(1, 4 * per_epoch):
        sched.step_update(num_updates=n)
        assert head["lr"] == pytest.approx(expected(n), rel=1e-9), n
        assert embed["lr"] == pytest.approx(expected(n) * 0.5 ** 4, rel=1e-9), n
    assert head["lr"] > lrs["min_lr"]
    sched.step_update(num_updates=4 * per_epoch)
    assert head["lr"] == pytest.approx(lrs["min_lr"])


def test_losses():
    logits = torch.randn(6, 4)
    labels = torch.tensor([0, 1, 2, 3, 0, 1])
    smooth = build_loss(load_config(None, ["loss.label_smoothing=0.1"]).loss, mixup=None)
    log_p = logits.log_softmax(-1)
    manual = (0.9 * -log_p[torch.arange(6), labels] + 0.1 * -log_p.mean(-1)).mean()
    assert smooth(logits, labels).item() == pytest.approx(manual.item(), rel=1e-6)
    plain = build_loss(load_config(None, ["loss.label_smoothing=0"]).loss, mixup=None)
    assert plain(logits, labels).item() == pytest.approx(
        torch.nn.functional.cross_entropy(logits, labels).item(), rel=1e-6)


def test_mixup_uses_soft_targets():
    from timm.loss import SoftTargetCrossEntropy

    from atm_core.engine.optim import build_video_mixup

    cfg = load_config(None, ["loss.mixup=0.8", "loss.cutmix=1.0", "loss.label_smoothing=0.1"]).loss
    mixup = build_video_mixup(cfg, num_classes=4)
    assert isinstance(build_loss(cfg, mixup), SoftTargetCrossEntropy)
    clips, targets = mixup(torch.randn(4, 2, 3, 8, 8), torch.tensor([0, 1, 2, 3]))
    assert clips.shape == (4, 2, 3, 8, 8) and targets.shape == (4, 4)
    assert torch.allclose(targets.sum(1), torch.ones(4))
    assert build_video_mixup(load_config().loss, num_classes=4) is None
