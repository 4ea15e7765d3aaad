"""The model card's MAC counts: the attention handle against its formula, ATM blocks against the
reference's fvcore figure, and the reference configuration within 1 %."""
import pytest
import timm

import atm_core  # registers the models; atm_core.ATM is used below
from atm_core import ATMBlock
from atm_core.card import REFERENCE, atm_block_macs, card_row, mac_count, render

TINY = "atm_vit_tiny_patch8_64"


def test_attention_products_follow_their_formula():
    model = timm.create_model(TINY, atm_ops=(), temporal="tsn")
    backbone = model.backbone
    tokens = backbone.patch_embed.num_patches + backbone.num_prefix_tokens
    count = mac_count(model, (1, model.num_frames, 3, 64, 64))
    # per block and frame: QK^T and AV, each tokens^2 x width
    expected = model.num_frames * len(backbone.blocks) * 2 * tokens ** 2 * backbone.embed_dim
    assert count.attention == expected
    assert count.atm == 0 and count.without_attention == count.total - expected


def test_atm_blocks_are_counted_at_the_shape_they_receive():
    with_atm = timm.create_model(TINY, atm_ops=("mul", "sub"))
    without = timm.create_model(TINY, atm_ops=())
    shape = (1, with_atm.num_frames, 3, 64, 64)
    a, b = mac_count(with_atm, shape), mac_count(without, shape)
    side = 64 // 8
    blocks = [m for m in with_atm.modules() if isinstance(m, ATMBlock)]
    expected = sum(atm_block_macs(blk, (with_atm.num_frames, with_atm.embed_dim, side, side)).macs
                   for blk in blocks)
    assert a.atm == expected > 0
    assert a.total - a.atm == b.total  # the rest of the trace is unchanged by the probes


def test_vit_b16_atm_block_matches_the_reference_count():
    block = atm_core.ATM(768, num_frames=8, ops=("mul", "sub"))
    counts = [atm_block_macs(b, (8, 768, 14, 14)) for b in block]
    dense = sum(c.macs - c.correlation + c.dense_correlation for c in counts) / 1e9
    assert dense == pytest.approx(REFERENCE["atm_gmac"], rel=0.01)
    local = sum(c.macs for c in counts) / 1e9
    # the local window (9x9 of 196 positions) is cheaper than the dense product, by exactly that term
    mul = counts[0]
    assert mul.correlation == 8 * 5 * 196 * 81 * 64 and mul.dense_correlation == 8 * 5 * 196 ** 2 * 64
    assert local < dense


@pytest.mark.slow
def test_reference_configuration_card_within_one_percent():
    row = card_row("atm_vit_base_patch16_clip_224")
    assert row["params"] == REFERENCE["params"]
    assert row["gmac_no_attention"] == pytest.approx(REFERENCE["gmac_no_attention"], rel=0.01)
    assert row["gmac"] == pytest.approx(REFERENCE["gmac"], rel=0.01)
    text = render([row])
    assert "87,884,346" in text and "## Reference configuration" in text
