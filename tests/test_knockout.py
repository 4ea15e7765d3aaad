"""Knocking out ATM blocks and offsets: exact against independent computations of what is left."""
from __future__ import annotations

import pandas as pd
import pytest
import timm
import torch

import atm_core.models  # noqa: F401  (registers the video models)
from atm_core.knockout import (
    FULL,
    Part,
    atm_block_list,
    knocked_out,
    knockout_predictions,
    model_parts,
    plot_top1_drops,
    reversal_confusions,
    summarise_drops,
    top1_drops,
)

T = 4


def video_model(ops=("mul", "sub"), residual="relu", seed=0, impl="auto") -> torch.nn.Module:
    torch.manual_seed(seed)
    model = timm.create_model("atm_vit_tiny_patch8_64", num_classes=6, num_frames=T, img_size=32,
                              atm=dict(ops=ops, residual=residual, context=3, impl=impl))
    with torch.no_grad():  # a trained-like ATM: its projections are not the zeros of initialisation
        for block in atm_block_list(model):
            block.proj.weight.normal_(0, 0.5)
    return model.eval()


@pytest.fixture(scope="module")
def clips() -> torch.Tensor:
    return torch.randn(3, T, 3, 32, 32, generator=torch.Generator().manual_seed(1))


def logits(model: torch.nn.Module, clips: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(clips)


def test_parts_name_blocks_and_offsets():
    names = [p.name for p in model_parts(video_model(("sub", "mul", "sub")))]
    assert names == ["sub1", "sub1 t-1", "sub1 t+0", "sub1 t+1", "mul", "mul t-1", "mul t+0", "mul t+1",
                     "sub2", "sub2 t-1", "sub2 t+0", "sub2 t+1"]
    with pytest.raises(ValueError, match="has no ATM blocks"):
        model_parts(timm.create_model("atm_vit_tiny_patch8_64", num_classes=6, num_frames=T, img_size=32,
                                      atm=dict(ops=())))


def test_knocking_out_a_block_with_zero_projection_changes_nothing(clips):
    model = video_model()
    with torch.no_grad():
        atm_block_list(model)[1].proj.weight.zero_()
    full = logits(model, clips)
    with knocked_out(model, Part("sub", 1)):
        assert torch.equal(logits(model, clips), full)
    with knocked_out(model, Part("mul", 0)):  # the other block's branch does count
        assert (logits(model, clips) - full).abs().max() > 1e-4


@pytest.mark.parametrize("impl", ["plain", "cpu_fast"])
def test_knocking_out_every_block_equals_the_backbone_without_atm(clips, impl):
    """With residual="identity" a knocked-out block returns its input, so the model is the same
    backbone without ATM on the same weights. With the reference's residual="relu" it returns
    ReLU(input): the backbone without ATM but one ReLU on the patch tokens where ATM sat."""
    for residual in ("identity", "relu"):
        model = video_model(residual=residual, impl=impl)
        plain = timm.create_model("atm_vit_tiny_patch8_64", num_classes=6, num_frames=T, img_size=32, atm=dict(ops=()))
        missing, unexpected = plain.load_state_dict(model.state_dict(), strict=False)
        assert not missing and unexpected and all(k.startswith("atm.") for k in unexpected)
        if residual == "relu":
            plain.atm = torch.nn.ReLU()  # apply_atm: ReLU on the patch-token map, class token untouched
        with knocked_out(model, model_parts(model, offsets=False)):
            assert torch.allclose(logits(model, clips), logits(plain.eval(), clips), atol=1e-5)
        assert not torch.allclose(logits(model, clips), logits(plain.eval(), clips), atol=1e-3)


@pytest.mark.parametrize("impl", ["plain", "cpu_fast"])
def test_knocking_out_an_offset_zeroes_its_channels_of_the_fusion(clips, impl):
    """Against zeroing the fusion conv's input channels of that offset on the plain path."""
    model = video_model(impl=impl)
    reference = video_model(impl="plain")
    block = atm_block_list(reference)[0]
    width = block.fuse[0].in_channels // block.context
    full = logits(model, clips)

    def zero_previous_frame(module, inputs):  # offset -1: the first channel group (offset-major)
        grouped = inputs[0].clone()
        grouped[:, :width] = 0
        return (grouped,)

    handle = block.fuse.register_forward_pre_hook(zero_previous_frame)
    expected = logits(reference, clips)
    handle.remove()
    with knocked_out(model, Part("mul t-1", 0, -1)):
        assert torch.allclose(logits(model, clips), expected, atol=1e-4)
    assert torch.allclose(logits(model, clips), full)  # weights restored on exit
    assert not torch.allclose(expected, full, atol=1e-4)


def test_drops_and_reversal_confusions_from_predictions(clips):
    model = video_model()
    labels = torch.tensor([0, 1, 3])
    predictions = knockout_predictions(model, clips, labels)
    assert list(predictions) == [FULL, *[p.name for p in model_parts(model)]]
    classes = [f"c{i}" for i in range(6)]
    drops = top1_drops(predictions, classes)
    for part in model_parts(model):
        with knocked_out(model, part):
            pred = logits(model, clips).argmax(-1)
        full = logits(model, clips).argmax(-1)
        assert drops.loc["all", part.name] == pytest.approx(
            100 * ((full == labels).float().mean() - (pred == labels).float().mean()).item())
        for i, label in enumerate(labels.tolist()):
            assert drops.loc[f"c{label}", part.name] == pytest.approx(
                100.0 * (int(full[i] == label) - int(pred[i] == label)))
    assert drops.loc["c2"].isna().all()  # no video of that class
    fake = {FULL: pd.DataFrame({"label": [0, 1, 2, 2], "pred": [1, 1, 3, 2]})}
    fake["mul"] = pd.DataFrame({"label": [0, 1, 2, 2], "pred": [0, 0, 3, 3]})
    confusions = reversal_confusions(fake, classes)
    assert confusions.index.tolist() == ["c0 / c1", "c2 / c3", "c4 / c5"]
    assert confusions.loc["c0 / c1"].tolist() == [50.0, 50.0] and confusions.loc["c2 / c3"].tolist() == [50.0, 100.0]
    assert confusions.loc["c4 / c5"].isna().all()
    fig = plot_top1_drops(drops, "ATM(mul, sub)")
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == list(drops.columns)


def test_the_summary_names_the_costliest_part_its_worst_class_and_the_cheapest_part():
    import pandas as pd

    drops = pd.DataFrame({"mul": [0.0, 40.0, 20.0], "sub": [50.0, 10.0, 30.0], "sub t+1": [-2.0, 0.0, -1.0]},
                         index=["moving_left", "moving_right", "all"])
    assert summarise_drops(drops) == ("knocking out `sub` costs the most, 30.0 points of top-1 over all classes "
                                      "and 50.0 on *moving_left*; `sub t+1` costs the least (-1.0 points).")
