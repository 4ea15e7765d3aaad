"""Pretrained weights: OpenAI CLIP (state dict and TorchScript archive), timm, EVA-CLIP, video-model
checkpoints and the official ATM code's checkpoints round-trip into the video models; bad files fail
clearly. Nothing is downloaded: every checkpoint is written here, key by key, from random tensors."""
import argparse
import logging
import re

import pytest
import timm
import torch
import torch.nn as nn

import atm_core  # noqa: F401  (registers the models)
from safetensors.torch import save_file

from atm_core.models import load_video_weights, read_state_dict, to_official

# a 2-block OpenAI-CLIP-style ViT (pre-norm, QuickGELU, bias-free projection) at tiny width
CLIP = "atm_vit_base_patch16_clip_224"
CLIP_TINY = dict(embed_dim=32, depth=2, num_heads=2, img_size=32, proj_dim=16, num_frames=2, num_classes=3,
                 atm=dict(after_blocks=1, hidden=16, width=16))
EVA = "atm_eva02_large_patch14_clip_224"
EVA_TINY = dict(embed_dim=32, depth=2, num_heads=2, img_size=28, num_frames=2, num_classes=3,
                atm=dict(after_blocks=1, hidden=16, width=16))


def with_atm(kwargs: dict, **fields) -> dict:
    """``kwargs`` with the ATM options ``fields`` set over its own."""
    return {**kwargs, "atm": {**kwargs.get("atm", {}), **fields}}


def randomised(model: nn.Module, seed: int) -> nn.Module:
    """Every tensor drawn afresh, so that loaded values cannot match by accident of initialisation."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g))
        for name, buffer in model.named_buffers():
            if name.endswith("running_var"):
                buffer.copy_(torch.rand(buffer.shape, generator=g) + 0.5)
            elif name.endswith("running_mean"):
                buffer.copy_(torch.randn(buffer.shape, generator=g))
            elif name.endswith("num_batches_tracked"):
                buffer.fill_(int(torch.randint(1, 100, (), generator=g)))
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


def official_atm(model: nn.Module, block_prefix: str) -> dict[str, torch.Tensor]:
    """ATM as the official ``ATMBlock`` in ``control_point_c`` names it: one layer per op, 3-D convs
    with (1, k, k) kernels, each conv followed by its BatchNorm."""
    layers = {"mul": ("corrlayer", "sim2vis"), "sub": ("difflayer", "diff2vis"),
              "add": ("intelayer", "inte2vis"), "div": ("divlayer", "div2vis")}
    sd = {}

    def conv_bn(prefix: str, pair: nn.Module) -> None:
        sd[prefix + "0.weight"] = pair[0].weight.unsqueeze(2)
        for name in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked"):
            sd[f"{prefix}1.{name}"] = getattr(pair[1], name)

    for blk in model.atm:
        layer, transfer = layers[blk.op]
        prefix = f"{block_prefix}{model.atm_after_blocks}.control_point_c.{layer}."
        conv_bn(prefix + ("sim.downsample." if blk.op == "mul" else "downsample."), blk.reduce)
        if blk.op == "mul":
            for j, pair in enumerate(blk.encoder):
                conv_bn(f"{prefix}uv2c.conv{j}.", pair)
        conv_bn(f"{prefix}{transfer}.conv1.", blk.transfer[0])
        conv_bn(f"{prefix}{transfer}.conv2.", blk.transfer[1])
        sd[f"{prefix}{transfer}.conv3_fuse.1.weight"] = blk.fuse[0].weight.unsqueeze(2)
        for name in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked"):
            sd[f"{prefix}{transfer}.conv3_fuse.2.{name}"] = getattr(blk.fuse[1], name)
        sd[f"{prefix}{transfer}.upsample.0.weight"] = blk.proj.weight.unsqueeze(2)
    return sd


def official_layout(model: nn.Module) -> dict[str, torch.Tensor]:
    """The ``module`` state dict the official training script saves for this video model:
    ``visual`` (image tower with T1D in control_point1/2 and ATM in control_point_c) and ``fc``."""
    if model.is_eva:
        sd = eva_clip_layout(model)
        block_prefix = "visual.blocks."
        for i in range(len(model.backbone.blocks)):  # each attention holds the shared rotary tables
            sd[f"visual.blocks.{i}.attn.rope.freqs_cos"] = sd["visual.rope.freqs_cos"]
    else:
        sd = {k: v for k, v in openai_layout(model).items() if k.startswith("visual.")}
        block_prefix = "visual.transformer.resblocks."
    for i, stage in enumerate(model.temporal):
        sd[f"{block_prefix}{i}.control_point1.conv.weight"] = stage.pre.conv.weight
        sd[f"{block_prefix}{i}.control_point2.conv.weight"] = stage.mid.conv.weight
    sd |= official_atm(model, block_prefix)
    sd["fc.weight"], sd["fc.bias"] = model.head.weight, model.head.bias
    return {k: v.detach().clone() for k, v in sd.items()}


def deepspeed_checkpoint(state: dict[str, torch.Tensor], directory) -> None:
    """``checkpoint-N/mp_rank_00_model_states.pt`` as DeepSpeed writes it: the model under ``module``."""
    directory.mkdir(parents=True)
    torch.save({"module": state, "buffer_names": [k for k in state if "running" in k], "optimizer": None,
                "global_steps": 120, "ds_version": "0.9.5", "epoch": 3},
               directory / "mp_rank_00_model_states.pt")


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
    tsn = randomised(timm.create_model(CLIP, temporal="tsn", **with_atm(CLIP_TINY, ops=())), seed=5)
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


# ---------------------------------------------------------------- the official ATM code's checkpoints

def test_the_reference_video_model_has_the_official_252_entries():
    """ViT-B/16 (12 blocks) with T1D and ATM(mul, sub) after 7 blocks, narrow: the issue's 252 keys."""
    model = timm.create_model(CLIP, embed_dim=32, depth=12, num_heads=2, img_size=32, num_frames=2, num_classes=3)
    layout = official_layout(model)
    assert len(layout) == 252 and set(to_official(model)) == set(layout)
    assert "visual.transformer.resblocks.7.control_point_c.corrlayer.sim2vis.conv3_fuse.1.weight" in layout
    assert layout["visual.transformer.resblocks.7.control_point_c.corrlayer.uv2c.conv1.0.weight"].shape == (16, 4, 1, 3, 3)


@pytest.mark.parametrize("name, kwargs, ops", [
    (CLIP, CLIP_TINY, ("mul", "sub")),
    (CLIP, CLIP_TINY, ("mul", "sub", "add", "div")),
    (EVA, EVA_TINY, ("mul", "sub")),
    (EVA, EVA_TINY, ("add", "div")),
])
def test_official_checkpoint_loads_every_tensor_and_round_trips(tmp_path, name, kwargs, ops):
    source = randomised(timm.create_model(name, **with_atm(kwargs, ops=ops)), seed=11).eval()
    layout = official_layout(source)
    deepspeed_checkpoint(layout, tmp_path / "checkpoint-3")
    model = timm.create_model(name, **with_atm(kwargs, ops=ops)).eval()
    report = load_video_weights(model, tmp_path / "checkpoint-3", strict=True)
    assert report.layout == "official ATM" and not report.ignored and not report.new
    assert sorted(report.loaded) == sorted(model.state_dict())
    assert report.derived == sorted(k for k in layout if ".rope." in k)
    for key, value in source.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key
    back = to_official(model)
    assert set(back) == {k for k in layout if ".rope." not in k}
    for key, value in back.items():
        assert torch.equal(value, layout[key]), key
    x = torch.randn(2, 2, 3, kwargs["img_size"], kwargs["img_size"])
    with torch.no_grad():
        torch.testing.assert_close(model(x), source(x), rtol=0, atol=0)


def test_official_checkpoints_with_their_training_state(tmp_path):
    """The official script's other files: DeepSpeed with the EMA in its client state (the model is
    ``module``), and without DeepSpeed ``checkpoint-N.pth`` holding ``model`` beside its argparse arguments."""
    source = randomised(timm.create_model(CLIP, **CLIP_TINY), seed=14)
    layout = official_layout(source)
    ema = {k: torch.zeros_like(v) for k, v in layout.items()}
    (tmp_path / "checkpoint-1").mkdir()
    torch.save({"module": layout, "model_ema": ema, "epoch": 1}, tmp_path / "checkpoint-1/mp_rank_00_model_states.pt")
    torch.save({"model": layout, "optimizer": {"state": {}, "param_groups": []}, "epoch": 2, "scaler": {"scale": 1024.0},
                "args": argparse.Namespace(model="ViT-B/16", lr=7e-4)}, tmp_path / "checkpoint-2.pth")
    for path in (tmp_path / "checkpoint-1", tmp_path / "checkpoint-2.pth"):
        model = timm.create_model(CLIP, **CLIP_TINY)
        load_video_weights(model, path, strict=True)
        assert torch.equal(model.head.weight, source.head.weight), path


def test_official_checkpoint_gives_the_output_of_our_own_checkpoint(tmp_path):
    source = randomised(timm.create_model(CLIP, **CLIP_TINY), seed=12)
    torch.save(official_layout(source), tmp_path / "official.pth")  # the plain state dict is accepted too
    (tmp_path / "best").mkdir()
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(tmp_path / "best/model.safetensors"))
    ours = timm.create_model(CLIP, **CLIP_TINY).eval()
    load_video_weights(ours, tmp_path / "best", strict=True)
    official = timm.create_model(CLIP, pretrained_file=str(tmp_path / "official.pth"), **CLIP_TINY).eval()
    assert official.load_report.layout == "official ATM" and ours.load_report.layout == "video model"
    x = torch.randn(3, 2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(official(x), ours(x), rtol=0, atol=0)


def test_official_checkpoint_with_a_bad_tensor_or_key_is_refused(tmp_path):
    model = timm.create_model(CLIP, **CLIP_TINY)
    layout = official_layout(model)
    key = "visual.transformer.resblocks.1.control_point_c.difflayer.diff2vis.upsample.0.weight"
    bad = {**layout, key: torch.zeros(32, 48, 1, 1, 1)}
    torch.save(bad, tmp_path / "shape.pth")
    with pytest.raises(ValueError, match=r"shape\.pth: 1 tensor\(s\) of the official checkpoint do not fit the "
                                         rf"model: {re.escape(key)}: checkpoint \(32, 48, 1, 1, 1\) vs model "
                                         r"atm\.1\.proj\.weight \(32, 16, 1, 1\)"):
        load_video_weights(timm.create_model(CLIP, **CLIP_TINY), tmp_path / "shape.pth")
    extra = {**layout, "visual.transformer.resblocks.0.control_point_c.intelayer.downsample.0.weight":
             torch.zeros(16, 32, 3, 3)}
    torch.save(extra, tmp_path / "extra.pth")
    with pytest.raises(ValueError, match=r"extra\.pth: 1 key\(s\) of the official checkpoint have no place in this "
                                         r"model: visual\.transformer\.resblocks\.0\.control_point_c\.intelayer"):
        load_video_weights(timm.create_model(CLIP, **CLIP_TINY), tmp_path / "extra.pth")
    # ATM one block off: every ATM key of the checkpoint is unknown to the model
    with pytest.raises(ValueError, match=r"have no place in this model: .*resblocks\.1\.control_point_c.*"
                                         r"atm\.after_blocks=0"):
        load_video_weights(timm.create_model(CLIP, **with_atm(CLIP_TINY, after_blocks=0)), tmp_path / "shape.pth")
    with pytest.raises(ValueError, match=r"the official ATMBlock runs its ops in the order mul, sub, add, div, each "
                                         r"at most once; this model's ATM runs sub, mul"):
        load_video_weights(timm.create_model(CLIP, **with_atm(CLIP_TINY, ops=("sub", "mul"))), tmp_path / "shape.pth")


def test_strict_loading_refuses_a_partial_checkpoint(tmp_path):
    """Evaluation loads strictly: an image-backbone checkpoint leaves ATM, T1D and head untrained."""
    torch.save(openai_layout(timm.create_model(CLIP, **CLIP_TINY)), tmp_path / "clip.pth")
    with pytest.raises(ValueError, match=r"clip\.pth: not a checkpoint of this whole model: it lacks \d+ "
                                         r"tensor\(s\): head\.weight, head\.bias, temporal\.0\.pre\.conv\.weight"):
        load_video_weights(timm.create_model(CLIP, **CLIP_TINY), tmp_path / "clip.pth", strict=True)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"no weights in .*empty: expected one of model\.safetensors, "
                                                r"pytorch_model\.bin, mp_rank_00_model_states\.pt"):
        load_video_weights(timm.create_model(CLIP, **CLIP_TINY), tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match=r"empty has no EMA weights \(ema\.safetensors\)"):
        load_video_weights(timm.create_model(CLIP, **CLIP_TINY), tmp_path / "empty", use_ema=True)


def test_config_pretrained_file_takes_an_official_checkpoint(tmp_path):
    """model.pretrained_file (training) accepts the DeepSpeed directory's file."""
    from atm_core.engine import load_config
    from atm_core.engine.builders import build_model

    source = randomised(timm.create_model(CLIP, **CLIP_TINY), seed=13)
    deepspeed_checkpoint(official_layout(source), tmp_path / "checkpoint-9")
    cfg = load_config(None, [f"model.name={CLIP}", "data.num_frames=2",
                             f"model.pretrained_file={tmp_path / 'checkpoint-9/mp_rank_00_model_states.pt'}",
                             "model.atm.after_blocks=1", "model.atm.hidden=16", "model.atm.width=16",
                             "model.conv_stem=[]"])
    cfg.model.kwargs = {k: CLIP_TINY[k] for k in ("embed_dim", "depth", "num_heads", "proj_dim")}
    model = build_model(cfg, num_classes=3, img_size=32)
    assert torch.equal(model.atm[0].encoder[2][1].running_var, source.atm[0].encoder[2][1].running_var)
    assert model.load_report.layout == "official ATM" and not model.load_report.new


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
