"""Pretrained weights: OpenAI CLIP (state dict and TorchScript archive), timm, EVA-CLIP and video-model
checkpoints round-trip into the video models; bad files fail clearly. Nothing is downloaded."""
import logging

import pytest
import timm
import torch
import torch.nn as nn

import atm_core  # noqa: F401  (registers the models)
from atm_core.models import load_video_weights, read_state_dict

# a 2-block OpenAI-CLIP-style ViT (pre-norm, QuickGELU, bias-free projection) at tiny width
CLIP = "atm_vit_base_patch16_clip_224"
CLIP_TINY = dict(embed_dim=32, depth=2, num_heads=2, img_size=32, proj_dim=16, num_frames=2, num_classes=3,
                 atm_after_blocks=1)
EVA = "atm_eva02_large_patch14_clip_224"
EVA_TINY = dict(embed_dim=32, depth=2, num_heads=2, img_size=28, num_frames=2, num_classes=3, atm_after_blocks=1)


def randomised(model: nn.Module, seed: int) -> nn.Module:
    """Every tensor drawn afresh, so that loaded values cannot match by accident of initialisation."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g))
    return model


def openai_layout(model: nn.Module) -> dict[str, torch.Tensor]:
    """The state dict OpenAI's CLIP would hold for this image tower (written out key by key), plus
    text-tower tensors and scalars that the loader has to leave alone."""
    b = model.backbone
    sd = {
        "visual.conv1.weight": b.patch_embed.proj.weight,
        "visual.class_embedding": b.cls_token[0, 0],
        "visual.positional_embedding": b.pos_embed[0],
        "visual.ln_pre.weight": b.norm_pre.weight, "visual.ln_pre.bias": b.norm_pre.bias,
        "visual.ln_post.weight": b.norm.weight, "visual.ln_post.bias": b.norm.bias,
        "visual.proj": model.proj.weight.t(),  # OpenAI multiplies x @ proj
    }
    for i, blk in enumerate(b.blocks):
        prefix = f"visual.transformer.resblocks.{i}."
        sd[prefix + "attn.in_proj_weight"] = blk.attn.qkv.weight
        sd[prefix + "attn.in_proj_bias"] = blk.attn.qkv.bias
        for name, module in {"ln_1": blk.norm1, "attn.out_proj": blk.attn.proj, "ln_2": blk.norm2,
                             "mlp.c_fc": blk.mlp.fc1, "mlp.c_proj": blk.mlp.fc2}.items():
            sd[f"{prefix}{name}.weight"], sd[f"{prefix}{name}.bias"] = module.weight, module.bias
    width = b.embed_dim
    sd |= {"transformer.resblocks.0.attn.in_proj_weight": torch.randn(3 * width, width),
           "token_embedding.weight": torch.randn(50, width), "positional_embedding": torch.randn(7, width),
           "text_projection": torch.randn(width, 16), "logit_scale": torch.tensor(4.6),
           "input_resolution": torch.tensor(32), "context_length": torch.tensor(7), "vocab_size": torch.tensor(50)}
    return {k: v.detach().clone() for k, v in sd.items()}


def eva_clip_layout(model: nn.Module) -> dict[str, torch.Tensor]:
    """The EVA-CLIP checkpoint naming of this EVA02 tower (``visual.`` prefix, SwiGLU ``w1/w2/w3``,
    ``q_bias``/``v_bias``, ``ffn_ln``/``inner_attn_ln``), with its rotary tables that timm rebuilds."""
    renames = [(".mlp.fc1_g.", ".mlp.w1."), (".mlp.fc1_x.", ".mlp.w2."), (".mlp.fc2.", ".mlp.w3."),
               (".mlp.norm.", ".mlp.ffn_ln."), (".attn.norm.", ".attn.inner_attn_ln."),
               (".attn.q_proj.bias", ".attn.q_bias"), (".attn.v_proj.bias", ".attn.v_bias")]
    sd = {}
    for key, value in model.backbone.state_dict().items():
        for timm_name, eva_name in renames:
            key = key.replace(timm_name, eva_name)
        sd["visual." + key] = value
    sd["visual.head.weight"], sd["visual.head.bias"] = model.proj.weight, model.proj.bias
    sd["visual.rope.freqs_cos"] = torch.randn(4, 8)
    return {k: v.detach().clone() for k, v in sd.items()}


def torchscript_archive(state: dict[str, torch.Tensor], path) -> None:
    """Save ``state`` the way OpenAI released CLIP: a TorchScript module whose state dict it is."""
    root = nn.Module()
    for key, value in state.items():
        *parents, leaf = key.split(".")
        module = root
        for name in parents:
            if not hasattr(module, name):
                module.add_module(name, nn.Module())
            module = getattr(module, name)
        module.register_parameter(leaf, nn.Parameter(value, requires_grad=False))
    torch.jit.save(torch.jit.script(root), str(path))


def assert_backbone_and_projection_equal(model: nn.Module, source: nn.Module, cast=lambda t: t) -> None:
    got = dict(model.named_parameters())
    for name, value in source.named_parameters():
        if name.startswith(("backbone.", "proj.")):
            assert torch.equal(got[name], cast(value)), name


def new_parameters(model: nn.Module) -> list[str]:
    return [n for n, _ in model.named_parameters() if n.startswith(("atm.", "temporal.", "head."))]


# ---------------------------------------------------------------- round trips

def test_openai_state_dict_round_trip(tmp_path, caplog):
    source = randomised(timm.create_model(CLIP, **CLIP_TINY), seed=1)
    torch.save(openai_layout(source), tmp_path / "ViT-B-16.pth")
    before = timm.create_model(CLIP, **CLIP_TINY)
    head = before.head.weight.clone()
    with caplog.at_level(logging.INFO, logger="atm_core.models.weights"):
        model = timm.create_model(CLIP, pretrained_file=str(tmp_path / "ViT-B-16.pth"), **CLIP_TINY)
    assert_backbone_and_projection_equal(model, source)
    report = model.load_report
    assert report.new == new_parameters(model) and report.new  # ATM, T1D and head stay new
    assert any(n.startswith("atm.") for n in report.new) and "head.weight" in report.new
    assert not report.ignored  # the zero bias timm adds to OpenAI's projection is dropped quietly
    assert "newly initialised" in caplog.text and "atm.0.reduce.0.weight" in caplog.text
    assert model.head.weight.shape == head.shape


def test_openai_torchscript_archive_round_trip(tmp_path):
    source = randomised(timm.create_model(CLIP, **CLIP_TINY), seed=2)
    half = {k: v.half() for k, v in openai_layout(source).items()}  # released in fp16
    torchscript_archive(half, tmp_path / "ViT-B-16.pt")
    assert set(read_state_dict(tmp_path / "ViT-B-16.pt")) == set(half)
    model = timm.create_model(CLIP, pretrained_file=str(tmp_path / "ViT-B-16.pt"), **CLIP_TINY)
    assert_backbone_and_projection_equal(model, source, cast=lambda t: t.half().float())
    assert model.backbone.pos_embed.dtype == torch.float32


def test_timm_state_dict_loads_through_pretrained_true_offline(tmp_path):
    """``pretrained=True`` goes through timm's own loader; a local file stands in for the hub."""
    source = randomised(timm.create_model(CLIP, **CLIP_TINY), seed=3)
    backbone = timm.create_model("vit_base_patch16_clip_quickgelu_224", num_classes=16,
                                 **{k: CLIP_TINY[k] for k in ("embed_dim", "depth", "num_heads", "img_size")})
    state = {k[len("backbone."):]: v for k, v in source.state_dict().items() if k.startswith("backbone.")}
    state |= {"head.weight": source.proj.weight.detach(), "head.bias": torch.zeros(16)}
    backbone.load_state_dict(state)
    torch.save(backbone.state_dict(), tmp_path / "timm.pth")

    # the overlay describes the local file: its path, and its 16-wide projection (the hub's is 512)
    overlay = dict(file=str(tmp_path / "timm.pth"), num_classes=16)
    model = timm.create_model(CLIP, pretrained=True, pretrained_cfg_overlay=overlay, **CLIP_TINY)
    assert_backbone_and_projection_equal(model, source)
    assert model.load_report.new == new_parameters(model)
    assert timm.create_model(CLIP, pretrained_file=str(tmp_path / "timm.pth"), **CLIP_TINY).load_report.loaded


def test_eva_clip_state_dict_round_trip(tmp_path):
    source = randomised(timm.create_model(EVA, **EVA_TINY), seed=4)
    torch.save({"state_dict": eva_clip_layout(source)}, tmp_path / "EVA02_CLIP_L.pt")
    model = timm.create_model(EVA, pretrained_file=str(tmp_path / "EVA02_CLIP_L.pt"), **EVA_TINY)
    assert_backbone_and_projection_equal(model, source)
    assert model.proj.bias is not None and model.load_report.new == new_parameters(model)


def test_a_video_checkpoint_moves_between_variants(tmp_path):
    """A trained TSN model's checkpoint initialises an ATM + T1D model: only those modules are new."""
    tsn = randomised(timm.create_model(CLIP, temporal="tsn", atm_ops=(), **CLIP_TINY), seed=5)
    torch.save(tsn.state_dict(), tmp_path / "tsn.pth")
    model = timm.create_model(CLIP, temporal="tokent1d", pretrained_file=str(tmp_path / "tsn.pth"), **CLIP_TINY)
    assert_backbone_and_projection_equal(model, tsn)
    assert torch.equal(model.head.weight, tsn.head.weight)
    assert model.load_report.new == [n for n, _ in model.named_parameters() if n.startswith(("atm.", "temporal."))]


def test_resnet_drops_the_imagenet_classifier(tmp_path):
    kwargs = dict(layers=[1, 1, 1, 1], num_frames=2, num_classes=3)
    image = timm.create_model("resnet50", layers=[1, 1, 1, 1])  # with its 1000-class fc
    torch.save(image.state_dict(), tmp_path / "resnet.pth")
    model = timm.create_model("atm_resnet50", pretrained_file=str(tmp_path / "resnet.pth"), **kwargs)
    assert torch.equal(model.backbone.layer3[0].conv2.weight, image.layer3[0].conv2.weight)
    assert model.load_report.ignored == ["fc.weight", "fc.bias"]


# ---------------------------------------------------------------- bad files

def test_shape_mismatch_names_the_tensor(tmp_path):
    wide = timm.create_model(CLIP, **{**CLIP_TINY, "embed_dim": 48})
    torch.save(openai_layout(wide), tmp_path / "wide.pth")
    with pytest.raises(ValueError, match=r"wide\.pth: 32 tensor\(s\) do not fit the model: .*backbone\.cls_token: "
                                         r"checkpoint \(1, 1, 48\) vs model \(1, 1, 32\)"):
        timm.create_model(CLIP, pretrained_file=str(tmp_path / "wide.pth"), **CLIP_TINY)
    other_proj = timm.create_model(CLIP, **{**CLIP_TINY, "proj_dim": 24})
    torch.save(openai_layout(other_proj), tmp_path / "proj24.pth")
    with pytest.raises(ValueError, match=r"proj24\.pth: 1 tensor\(s\) do not fit the model: "
                                         r"proj\.weight: checkpoint \(24, 32\) vs model \(16, 32\)$"):
        timm.create_model(CLIP, pretrained_file=str(tmp_path / "proj24.pth"), **CLIP_TINY)


def test_checkpoint_of_another_architecture_is_refused(tmp_path):
    torch.save(timm.create_model("resnet50", layers=[1, 1, 1, 1]).state_dict(), tmp_path / "resnet.pth")
    with pytest.raises(ValueError, match=r"resnet\.pth: none of its 104 tensors fits the model \(e\.g\. bn1\.bias, "
                                         r".*\); is it a checkpoint for another architecture\?"):
        timm.create_model(CLIP, pretrained_file=str(tmp_path / "resnet.pth"), **CLIP_TINY)


def test_missing_backbone_tensors_are_an_error(tmp_path):
    state = openai_layout(timm.create_model(CLIP, **CLIP_TINY))
    del state["visual.transformer.resblocks.1.mlp.c_fc.weight"]
    torch.save(state, tmp_path / "partial.pth")
    with pytest.raises(ValueError, match=r"lacks 1 backbone tensor\(s\): backbone\.blocks\.1\.mlp\.fc1\.weight"):
        timm.create_model(CLIP, pretrained_file=str(tmp_path / "partial.pth"), **CLIP_TINY)


@pytest.mark.parametrize("content, message", [
    (b"not a checkpoint at all", r"notes\.pt is not a checkpoint torch can read"),
    (None, r"notes\.pt is not a checkpoint: it holds a list, not a state dict"),
    ({"epoch": 3, "note": "x"}, r"notes\.pt is not a checkpoint: it holds no named tensors"),
])
def test_files_that_are_not_checkpoints_fail_clearly(tmp_path, content, message):
    path = tmp_path / "notes.pt"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        torch.save([1, 2, 3] if content is None else content, path)
    with pytest.raises(ValueError, match=message):
        timm.create_model(CLIP, pretrained_file=str(path), **CLIP_TINY)


def test_missing_file_and_unreadable_safetensors(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"checkpoint .*absent\.pt does not exist"):
        load_video_weights(timm.create_model(CLIP, **CLIP_TINY), tmp_path / "absent.pt")
    (tmp_path / "bad.safetensors").write_bytes(b"\x00" * 16)
    with pytest.raises(ValueError, match=r"bad\.safetensors is not a readable safetensors checkpoint"):
        read_state_dict(tmp_path / "bad.safetensors")
