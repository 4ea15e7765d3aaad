"""The model card's MAC counts: the attention handle against its formula, ATM blocks traced on their
plain path against the reference's fvcore figure, and the reference configuration within 1 %."""
import pytest
import timm
import torch

import atm_core  # registers the models; atm_core.ATM is used below
from atm_core import ATMBlock, ATMOptions
from atm_core.card import REFERENCE, card_row, render
from atm_core.macs import mac_count

TINY = "atm_vit_tiny_patch8_64"


def test_attention_products_follow_their_formula():
    model = timm.create_model(TINY, atm=dict(ops=()), temporal="tsn")
    backbone = model.backbone
    tokens = backbone.patch_embed.num_patches + backbone.num_prefix_tokens
    count = mac_count(model, (1, model.num_frames, 3, 64, 64))
    # per block and frame: QK^T and AV, each tokens^2 x width
    expected = model.num_frames * len(backbone.blocks) * 2 * tokens ** 2 * backbone.embed_dim
    assert count.attention == expected
    assert count.atm == 0 and count.without_attention == count.total - expected


def test_atm_blocks_are_counted_at_the_shape_they_receive_on_their_plain_path():
    with_atm = timm.create_model(TINY, atm=dict(ops=("mul", "sub")))
    without = timm.create_model(TINY, atm=dict(ops=()))
    shape = (1, with_atm.num_frames, 3, 64, 64)
    a, b = mac_count(with_atm, shape), mac_count(without, shape)
    side = 64 // 8
    blocks = [m for m in with_atm.modules() if isinstance(m, ATMBlock)]
    assert all(blk.impl == "auto" for blk in blocks)  # restored after the count
    expected = mac_count(with_atm.atm, (with_atm.num_frames, with_atm.embed_dim, side, side)).atm
    assert a.atm == expected > 0
    assert a.total - a.atm == b.total  # everything outside the blocks is the same model


def test_vit_b16_atm_block_matches_the_reference_count():
    """fvcore on the plain ATM(mul, sub) block of ViT-B/16 (8 frames, 14x14 tokens): the reference's
    4.475 G(MAC) once its dense correlation replaces the local window; the window alone is the
    D*W^2 multiply-adds per frame pair and position."""
    count = mac_count(atm_core.ATM(768, 8, ATMOptions(ops=("mul", "sub"))), (8, 768, 14, 14))
    pairs, positions = 8 * 5, 14 * 14
    assert count.correlation == pytest.approx(pairs * positions * 81 * 64, rel=1e-3)
    assert count.dense_correlation == pytest.approx(pairs * positions ** 2 * 64, rel=1e-3)
    assert count.atm_dense / 1e9 == pytest.approx(4.475, rel=0.01)
    assert count.atm < count.atm_dense


@pytest.mark.slow
def test_reference_configuration_card_within_one_percent():
    row = card_row("atm_vit_base_patch16_clip_224")
    assert row["params"] == REFERENCE["params"]
    assert row["gmac_no_attention"] == pytest.approx(REFERENCE["gmac_no_attention"], rel=0.01)
    assert row["gmac"] == pytest.approx(REFERENCE["gmac"], rel=0.01)
    text = render([row])
    assert "87,884,346" in text and "## Reference configuration" in text


@pytest.mark.parametrize("name", [TINY, "atm_resnet_tiny_64"])
def test_shape_counter_on_the_meta_device_equals_fvcore(name):
    """The card counts on a model built on the meta device; every figure must be fvcore's on the
    real model (convolutions, linears, norms, einsum, attention handle, ATM blocks and cues)."""
    real = timm.create_model(name)
    with torch.device("meta"):
        meta = timm.create_model(name)
    shape = (1, real.num_frames, *real.pretrained_cfg["input_size"])
    by_shapes = mac_count(meta, torch.empty(shape, device="meta"), counter="shapes")
    assert by_shapes == mac_count(real, shape, counter="fvcore")
    assert by_shapes.total > by_shapes.atm > by_shapes.correlation > 0


def test_card_row_figures_equal_fvcore_on_the_built_model():
    row = card_row(TINY)
    model = timm.create_model(TINY)
    count = mac_count(model, (1, model.num_frames, 3, 64, 64))
    assert row["params"] == sum(p.numel() for p in model.parameters())
    assert (row["gmac"], row["gmac_no_attention"], row["atm_gmac"]) == (
        count.total / 1e9, count.without_attention / 1e9, count.atm / 1e9)
