"""Video models: registration, parameter counts, block wiring, invariances, errors, optimiser groups,
and the EVA02 towers against the reference's EVA-CLIP computation."""
import math
from pathlib import Path

import pytest
import timm
import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.models import group_parameters
from timm.models.vision_transformer_hybrid import ConvStem
from timm.optim import param_groups_layer_decay

import atm_core  # noqa: F401  (registers the models)
from atm_core.engine.builders import build_model
from atm_core.engine.config import load_config
from atm_core.models import SPECS, VideoResNet, VideoViT
from atm_core.models.vit import attention_half, mlp_half
from atm_core.temporal import shift_frames

TINY = "atm_vit_tiny_patch8_64"
# a 2-block EVA02 (rotary embeddings, SwiGLU, layer-scale-free) small enough for the CPU
TINY_EVA = dict(embed_dim=32, depth=2, num_heads=2, img_size=28, atm=dict(after_blocks=1))
TINY_RESNET = dict(layers=[1, 1, 1, 1])


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def tiny(frames: int = 4, **kwargs) -> nn.Module:
    kwargs = {"num_frames": frames, "num_classes": 5, **kwargs}
    return timm.create_model(TINY, **kwargs).eval()


PARAMS = Path(__file__).resolve().parents[1] / "params"


def clips(batch: int = 2, frames: int = 4, size: int = 64) -> torch.Tensor:
    return torch.randn(batch, frames, 3, size, size)


def same_weights(dst: nn.Module, src: nn.Module) -> nn.Module:
    """Load ``src``'s tensors into ``dst``; the keys left over must be ``dst``'s ATM/temporal modules."""
    missing, unexpected = dst.load_state_dict(src.state_dict(), strict=False)
    assert not unexpected
    assert all(k.startswith(("atm.", "temporal.")) for k in missing)
    return dst


# ---------------------------------------------------------------- registration and counts

def test_all_models_registered_after_importing_the_package():
    for name in SPECS:
        assert timm.is_model(name), name
    assert set(SPECS) >= {"atm_vit_base_patch16_clip_224", "atm_vit_large_patch14_clip_224",
                          "atm_eva02_large_patch14_clip_224", "atm_eva02_large_patch14_clip_336",
                          "atm_resnet50", "atm_resnet_tiny_64", TINY}


def test_reference_configuration_has_the_reference_parameter_count():
    with torch.device("meta"):
        model = timm.create_model("atm_vit_base_patch16_clip_224", num_frames=8, num_classes=174,
                                  temporal="tokent1d", atm=dict(ops=("mul", "sub")))
    assert n_params(model) == 87_884_346
    # the parts: OpenAI CLIP ViT-B/16 image tower with its bias-free 768->512 projection,
    # T1D twice per block (2 * 3 * 768 each), ATM(mul, sub) at C=768, Linear(512, 174)
    assert n_params(model.backbone) + n_params(model.proj) == 86_192_640
    assert model.proj.bias is None and model.proj.weight.shape == (512, 768)
    assert n_params(model.temporal) == 12 * 2 * 3 * 768
    assert n_params(model.atm) == 1_547_148
    assert n_params(model.head) == 512 * 174 + 174
    assert isinstance(model.backbone.blocks[0].mlp.act, timm.layers.QuickGELU)


@pytest.mark.parametrize("name, embed, proj_bias", [
    ("atm_vit_large_patch14_clip_224", 768, False),
    ("atm_eva02_large_patch14_clip_224", 768, True),
    ("atm_eva02_large_patch14_clip_336", 768, True),
])
def test_large_models_project_to_clip_embeddings(name, embed, proj_bias):
    with torch.device("meta"):
        model = timm.create_model(name, num_classes=10)
    assert model.proj.weight.shape == (embed, 1024) and (model.proj.bias is not None) == proj_bias
    assert model.atm_after_blocks == 14 and len(model.backbone.blocks) == 24
    assert n_params(model.atm) == 1_874_828
    assert model.head.weight.shape == (10, embed)


def test_every_registered_model_runs_at_a_small_size():
    shapes = {TINY: {}, "atm_eva02_large_patch14_clip_224": TINY_EVA, "atm_resnet50": TINY_RESNET,
              "atm_vit_base_patch16_clip_224": dict(embed_dim=32, depth=2, num_heads=2, img_size=32,
                                                    atm=dict(after_blocks=1), proj_dim=16)}
    for name, kwargs in shapes.items():
        model = timm.create_model(name, num_frames=4, num_classes=3, **kwargs).eval()
        size = model.pretrained_cfg["input_size"][-1] if name != "atm_resnet50" else 64
        assert model(clips(2, 4, size)).shape == (2, 3), name
        assert model.pretrained_cfg["num_frames"] == 4 and model.num_classes == 3


def test_backbone_parameter_names_do_not_depend_on_atm_or_temporal_modules():
    plain = timm.create_model("vit_tiny_patch16_224", img_size=64, patch_size=8, embed_dim=64, depth=4,
                              num_heads=2, num_classes=0)
    linear_patches = {k for k in tiny(conv_stem=()).state_dict() if k.startswith("backbone.")}
    assert linear_patches == {f"backbone.{k}" for k in plain.state_dict()}
    expected = {k for k in tiny(temporal="tsn", atm=dict(ops=())).state_dict() if k.startswith("backbone.")}
    for temporal in ("tsn", "tsm", "tokenshift", "tokent1d"):
        for ops in ((), ("mul", "sub")):
            model = tiny(temporal=temporal, atm=dict(ops=ops))
            names = set(model.state_dict())
            assert {k for k in names if k.startswith("backbone.")} == expected
            assert all(k.startswith(("backbone.", "atm.", "temporal.", "head.", "proj.")) for k in names)
            assert (model.atm is None) == (ops == ())


def test_tiny_vit_tokens_come_from_a_local_conv_stem():
    model = tiny(atm=dict(ops=())).eval()
    assert isinstance(model.backbone.patch_embed.backbone, ConvStem) and model.grid == (8, 8)
    frames = torch.randn(2, 3, 64, 64)
    changed = frames.clone()
    changed[:, :, :8, :8] += 1.0  # the top-left 8x8-pixel cell
    with torch.inference_mode():
        moved = (model.backbone.patch_embed(changed) - model.backbone.patch_embed(frames)).abs()
    moved = moved.amax(dim=(0, 2)).view(8, 8) > 0
    assert moved[0, 0] and moved[:2, :2].sum() == moved.sum()  # its token and at most 3 neighbours
    with pytest.raises(ValueError, match="a conv stem of 2 stride-2 layers makes 4-pixel tokens, but patch_size is 8"):
        tiny(conv_stem=(16, 32))
    with pytest.raises(ValueError, match="conv_stem replaces the patch embedding of a ViT trained from scratch"):
        timm.create_model("atm_resnet50", conv_stem=(8, 16, 32), **TINY_RESNET)


# ---------------------------------------------------------------- forward wiring

def test_tsn_equals_timm_backbone_per_frame_then_mean():
    model = tiny(temporal="tsn", atm=dict(ops=()))
    x = clips()
    frames = x.flatten(0, 1)
    b = model.backbone
    per_frame = b.forward_head(b.forward_features(frames), pre_logits=True)  # timm's own forward
    expected = model.head(per_frame.view(2, 4, -1).mean(1))
    torch.testing.assert_close(model(x), expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(model(frames), expected, rtol=1e-5, atol=1e-6)  # flat (B*T) input


@pytest.mark.parametrize("family", ["vit", "eva"])
def test_block_halves_compose_to_the_timm_block(family):
    if family == "vit":
        backbone = timm.create_model("vit_tiny_patch16_224", img_size=32, depth=1, num_classes=0, init_values=0.3)
        rope, kwargs = None, {}
    else:
        backbone = timm.create_model("eva02_large_patch14_clip_224", num_classes=0, init_values=0.3,
                                     **{k: v for k, v in TINY_EVA.items() if k != "atm"})
        rope = backbone.rope.get_embed()
        kwargs = {"rope": rope}
    block = backbone.blocks[0].eval()
    x = torch.randn(3, 5 if family == "vit" else 5, backbone.embed_dim)
    torch.testing.assert_close(mlp_half(block, attention_half(block, x, rope)), block(x, **kwargs))


@pytest.mark.parametrize("family", ["vit", "eva"])
def test_modules_run_in_reference_order_inside_blocks(family):
    """ATM after ``atm.after_blocks`` blocks, then T1D, attention, T1D, MLP in every block (the
    reference's control_point_c, control_point1, attention, control_point2, MLP, in CLIP and EVA alike)."""
    if family == "vit":
        model = tiny(temporal="tokent1d", atm=dict(after_blocks=2))
    else:
        model = timm.create_model("atm_eva02_large_patch14_clip_224", num_frames=4, num_classes=5,
                                  **{**TINY_EVA, "depth": 4, "atm": dict(after_blocks=2)}).eval()
    calls = []
    watched = {"atm": model.atm}
    for i, block in enumerate(model.backbone.blocks):
        watched |= {f"pre{i}": model.temporal[i].pre, f"attn{i}": block.attn,
                    f"mid{i}": model.temporal[i].mid, f"mlp{i}": block.mlp}
    for label, module in watched.items():
        module.register_forward_pre_hook(lambda m, a, label=label: calls.append(label))
    model(clips(size=model.pretrained_cfg["input_size"][-1]))
    expected = []
    for i in range(len(model.backbone.blocks)):
        expected += (["atm"] if i == 2 else []) + [f"pre{i}", f"attn{i}", f"mid{i}", f"mlp{i}"]
    assert calls == expected
    # around ATM: the class token passes untouched, the patch tokens fold row-major into the grid
    tokens = torch.randn(8, 1 + model.grid[0] * model.grid[1], model.embed_dim)
    with torch.no_grad():
        out = model.apply_atm(tokens)
        grid = tokens[:, 1:].transpose(1, 2).reshape(8, model.embed_dim, *model.grid)
        expected_patches = model.atm(grid).flatten(2).transpose(1, 2)
    assert torch.equal(out[:, 0], tokens[:, 0])
    torch.testing.assert_close(out[:, 1:], expected_patches)
    assert not torch.allclose(out[:, 1:], tokens[:, 1:])


# the reference calls make_ATM(visual, T, locations_list=[start]) with start = 7 (12 blocks) or 14,
# which sets resblocks[start].control_point_c, the first thing that block runs
@pytest.mark.parametrize("name, depth, after", [
    ("atm_vit_base_patch16_clip_224", 12, 7),
    ("atm_vit_large_patch14_clip_224", 24, 14),
    ("atm_eva02_large_patch14_clip_224", 24, 14),
    ("atm_eva02_large_patch14_clip_336", 24, 14),
])
def test_atm_receives_the_output_of_the_reference_number_of_blocks(name, depth, after):
    patch = 16 if "patch16" in name else 14
    assert SPECS[name].atm.after_blocks == after  # of `depth` blocks (test_large_models_... counts them)
    # narrow, and two blocks past ATM are enough to tell the neighbouring positions apart
    model = timm.create_model(name, num_frames=2, num_classes=3, temporal="tsn", embed_dim=32, num_heads=2,
                              img_size=2 * patch, depth=after + 2).eval()
    assert model.atm_after_blocks == after
    received = []
    model.atm.register_forward_pre_hook(lambda m, args: received.append(args[0]))
    frames = torch.randn(2, 3, 2 * patch, 2 * patch)
    with torch.no_grad():
        model.forward_frames(frames)
        b = model.backbone  # timm's own modules, block by block
        x = b.patch_embed(frames)
        x, rope = b._pos_embed(x) if model.is_eva else (b._pos_embed(x), None)
        x = b.norm_pre(x)
        outputs = []
        for block in b.blocks:
            x = block(x) if rope is None else block(x, rope=rope)
            outputs.append(x[:, 1:].transpose(1, 2).reshape(2, 32, 2, 2))
    assert len(received) == 1
    torch.testing.assert_close(received[0], outputs[after - 1])
    for moved in (after - 2, after):  # one block earlier or later is another tensor
        assert not torch.allclose(received[0], outputs[moved])


@pytest.mark.parametrize("name, kwargs, after, side, channels", [
    ("atm_resnet50", {**TINY_RESNET, "atm": dict(context=1)}, 2, 8, 512),  # its default: after stage 2 (28x28 at 224 px)
    ("atm_resnet_tiny_64", dict(atm=dict(context=1)), 1, 16, 32),  # its default: after stage 1
    ("atm_resnet_tiny_64", dict(atm=dict(after_blocks=0, context=1)), 0, 16, 64),  # timm's plain stem is 64 wide
    ("atm_resnet_tiny_64", dict(atm=dict(after_blocks=2, context=1)), 2, 8, 64),
])
def test_resnet_atm_receives_the_output_of_its_first_stages(name, kwargs, after, side, channels):
    model = timm.create_model(name, num_frames=2, num_classes=3, temporal="tsn", **kwargs).eval()
    assert model.atm_after_blocks == after
    received = []
    model.atm.register_forward_pre_hook(lambda m, args: received.append(args[0]))
    frames = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        model.forward_frames(frames)
        b = model.backbone
        x = b.maxpool(b.act1(b.bn1(b.conv1(frames))))
        for stage in [b.layer1, b.layer2, b.layer3][:after]:
            x = stage(x)
    torch.testing.assert_close(received[0], x)
    assert received[0].shape[-1] == side
    assert received[0].shape[1] == model.atm[0].reduce[0].in_channels == channels


def test_tiny_resnet_default_and_its_recipes():
    model = timm.create_model("atm_resnet_tiny_64", num_frames=8, atm=dict(ops=("mul", "sub")))
    assert model.atm_after_blocks == 1 and model.temporal is None
    assert [len(stage) for stage in model.stages_of(model.backbone)] == [1, 1, 1, 1]
    assert model.backbone.num_features == 256 and model.num_classes == 12
    assert all(block.downsample for block in model.atm)  # the map is reduced before pairing
    for recipe, ops in (("synthetic_resnet_tsn.yaml", ()), ("synthetic_resnet_atm_mul_sub.yaml", ("mul", "sub"))):
        cfg = load_config(PARAMS / recipe)
        assert cfg.model.name == "atm_resnet_tiny_64" and cfg.model.atm.ops == ops
        built = build_model(cfg, 12, 64).train()
        if ops:
            _perturb_atm(built)
        x = clips(2, 8, 64)
        assert built(x).shape == (2, 12)
        # TSN-ResNet is blind to frame order (also with BatchNorm's batch statistics); ATM inside
        # the ResNet is not
        same = torch.allclose(built(x), built(x[:, torch.randperm(8, generator=torch.Generator().manual_seed(0))]),
                              rtol=1e-5, atol=1e-5)
        assert same == (not ops), recipe


@pytest.mark.parametrize("name", ["atm_vit_base_patch16_clip_224", "atm_eva02_large_patch14_clip_224"])
def test_paper_models_keep_the_default_linear_initialisation(name):
    """The reference's classifier is nn.Linear(embed_dim, num_classes) as PyTorch initialises it:
    weight and bias uniform in +-1/sqrt(fan_in); the tiny CPU model keeps std 0.02 and a zero bias."""
    model = timm.create_model(name, embed_dim=32, num_heads=2, depth=1, img_size=32 if "16" in name else 28,
                              atm=dict(after_blocks=0), num_classes=200)
    head, bound = model.head, model.head.in_features ** -0.5
    assert model.head.in_features == (512 if "vit" in name else 768)
    for tensor in (head.weight, head.bias):
        assert tensor.abs().max() <= bound and tensor.abs().max() > 0.9 * bound
    torch.testing.assert_close(head.weight.std().item(), bound / 3 ** 0.5, rtol=0.02, atol=0)
    model.reset_classifier(7)
    assert model.head.bias.abs().max() > 0
    small = tiny(num_classes=200).head
    assert not small.bias.any()
    torch.testing.assert_close(small.weight.std().item(), 0.02, rtol=0.05, atol=0)


def test_the_placement_key_of_the_config():
    from atm_core.engine import ConfigError, load_config
    from atm_core.engine.builders import build_model

    with pytest.raises(ConfigError, match=r"unknown key 'model\.atm_layer'; it is now 'model\.atm\.after_blocks'"):
        load_config(None, ["model.atm_layer=7"])
    with pytest.raises(ConfigError, match=r"key 'model\.atm\.after_blocks': must be an integer >= 0, got -1"):
        load_config(None, ["model.atm.after_blocks=-1"])
    cfg = load_config(None, ["model.atm.after_blocks=4"])
    with pytest.raises(ConfigError, match=r"atm\.after_blocks=4 is out of range for a 4-block backbone: choose 0\.\.3"):
        build_model(cfg, num_classes=3, img_size=64)
    assert build_model(load_config(None, ["model.atm.after_blocks=2"]), 3, 64).atm_after_blocks == 2
    assert build_model(load_config(None), 3, 64).atm_after_blocks == 0  # the tiny model's default


def test_atm_options_reach_the_blocks_once_built():
    from atm_core.models import ATMOptions

    options = ATMOptions(ops=["sub", "div"], hidden=8, width=16, context=3, residual="identity")
    model = tiny(atm=options)
    assert options.ops == ("sub", "div") and model.atm.ops == ("sub", "div")
    assert [(b.op, b.reduce[0].out_channels, b.fuse[0].out_channels, b.context, b.residual) for b in model.atm] == \
        [("sub", 8, 16, 3, "identity"), ("div", 8, 16, 3, "identity")]
    assert tiny(atm=ATMOptions(ops=())).atm is None
    # unset fields are the model's defaults, set ones override them; a mapping works as the options
    assert ATMOptions(hidden=8).over(SPECS[TINY].atm) == ATMOptions(after_blocks=0, hidden=8, width=32)
    assert tiny(atm={"hidden": 8}).atm[0].reduce[0].out_channels == 8


def test_t1d_with_identity_kernels_equals_tsn():
    reference = tiny(temporal="tsn", atm=dict(ops=()))
    model = same_weights(tiny(temporal="tokent1d", atm=dict(ops=())), reference)
    with torch.no_grad():
        for stage in model.temporal:
            for t1d in (stage.pre, stage.mid):
                t1d.conv.weight.zero_()
                t1d.conv.weight[:, 0, 1] = 1.0
    x = clips()
    torch.testing.assert_close(model(x), reference(x), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("temporal", ["tsn", "tokent1d"])
def test_fresh_identity_residual_atm_leaves_the_output_unchanged(temporal):
    base = tiny(temporal=temporal, atm=dict(ops=()))
    model = same_weights(tiny(temporal=temporal, atm=dict(ops=("mul", "sub"), residual="identity")), base)
    x = clips()
    assert torch.equal(model(x), base(x))
    # the reference residual ReLU(x + 0) clips negative tokens: not the identity at init
    relu = same_weights(tiny(temporal=temporal, atm=dict(ops=("mul", "sub"))), base)
    assert not torch.allclose(relu(x), base(x))


def test_fresh_identity_residual_atm_in_a_resnet_leaves_the_output_unchanged():
    base = timm.create_model("atm_resnet50", num_frames=4, num_classes=5, atm=dict(ops=()), **TINY_RESNET).eval()
    model = timm.create_model("atm_resnet50", num_frames=4, num_classes=5, atm=dict(residual="identity"),
                              **TINY_RESNET).eval()
    same_weights(model, base)
    x = clips(size=64)
    assert torch.equal(model(x), base(x))


def _perturb_atm(model: nn.Module) -> nn.Module:
    """A trained-looking ATM: nonzero output projections (fresh ones add exactly zero)."""
    with torch.no_grad():
        for block in model.atm:
            block.proj.weight.normal_(0, 0.05)
    return model


@pytest.mark.parametrize("temporal, ops, invariant", [
    ("tsn", (), True),
    ("tsm", (), False),
    ("tokenshift", (), False),
    ("tokent1d", (), False),
    ("tsn", ("mul",), False),
    ("tsn", ("sub",), False),
])
def test_only_tsn_is_blind_to_frame_order(temporal, ops, invariant):
    model = tiny(temporal=temporal, atm=dict(ops=ops))
    if ops:  # in training mode, where BatchNorm scales the branch to unit size (deterministic: no dropout)
        _perturb_atm(model).train()
    x = clips()
    shuffled = x[:, torch.tensor([2, 0, 3, 1])]
    same = torch.allclose(model(x), model(shuffled), rtol=1e-5, atol=1e-5)
    assert same == invariant


@pytest.mark.parametrize("temporal, invariant", [("tsn", True), ("tsm", False)])
def test_resnet_frame_order(temporal, invariant):
    # zero_init_last=False: timm zeroes each residual branch's last BatchNorm, and with it the shift
    model = timm.create_model("atm_resnet50", num_frames=4, num_classes=5, temporal=temporal, atm=dict(ops=()),
                              zero_init_last=False, **TINY_RESNET).eval()
    x = clips(size=64)
    shuffled = x[:, torch.tensor([3, 1, 0, 2])]
    assert torch.allclose(model(x), model(shuffled), rtol=1e-5, atol=1e-5) == invariant


def test_resnet_tsm_shifts_the_residual_branch_only():
    model = timm.create_model("atm_resnet50", num_frames=4, num_classes=5, temporal="tsm", atm=dict(ops=()),
                              **TINY_RESNET).eval()
    block = model.backbone.layer2[0]
    seen = {}
    block.register_forward_pre_hook(lambda m, a: seen.__setitem__("block", a[0]))
    block.conv1.register_forward_hook(lambda m, a, out: seen.__setitem__("conv1", a[0]))
    block.downsample.register_forward_hook(lambda m, a, out: seen.__setitem__("shortcut", a[0]))
    model(clips(size=64))
    assert torch.equal(seen["conv1"], shift_frames(seen["block"], 4, 8))
    assert torch.equal(seen["shortcut"], seen["block"])


def test_grad_checkpointing_gives_the_same_output_and_gradients():
    model = tiny(temporal="tokent1d").train()
    x = clips()
    model(x).sum().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    model.set_grad_checkpointing(True)
    model(x).sum().backward()
    for name, p in model.named_parameters():
        torch.testing.assert_close(p.grad, grads[name], rtol=1e-4, atol=1e-6, msg=name)


def test_cpu_bf16_attention_runs_the_math_kernel_and_matches_fp32():
    model = tiny(temporal="tokent1d", atm=dict(ops=["mul", "sub"])).eval()
    flash_allowed = []
    model.backbone.blocks[0].attn.register_forward_hook(
        lambda *_: flash_allowed.append(torch.backends.cuda.flash_sdp_enabled()))
    x = clips()
    with torch.no_grad():
        full = model(x)
        with torch.autocast("cpu", torch.bfloat16):
            half = model(x)
    assert flash_allowed == [True, False]  # PyTorch's choice in fp32, the math kernel under bf16
    assert torch.backends.cuda.flash_sdp_enabled()  # restored after the forward
    assert half.dtype == torch.bfloat16
    assert (half.float() - full).abs().max() <= 0.05 * full.abs().max()


def test_backward_reaches_every_parameter():
    model = tiny(temporal="tokent1d").train()
    _perturb_atm(model)  # with zero projections nothing flows into the ATM convolutions
    model(clips()).logsumexp(1).sum().backward()
    unreached = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum()]
    assert not unreached


# ---------------------------------------------------------------- errors

@pytest.mark.parametrize("kwargs, message", [
    (dict(atm=dict(after_blocks=-1)), r"ATM option 'after_blocks': must be an integer >= 0, got -1"),
    (dict(atm=dict(after_blocks=4)), r"atm\.after_blocks=4 is out of range for a 4-block backbone: choose 0\.\.3"),
    (dict(atm_ops=("sub",), atm_context=3), r"ATM's options are one argument now: atm=ATMOptions\(context=..., ops=...\) "
                                            r"instead of atm_context, atm_ops"),
    (dict(temporal="lstm"), r"unknown temporal module 'lstm'; choose from tsn, tsm, tokenshift, tokent1d"),
    (dict(img_size=(64, 96)), r"ATM needs a square token grid, got 8x12 patches \(img_size \(64, 96\), tokens of 8x8 pixels\)"),
    (dict(atm=dict(ops=("mul", "pow"))), r"unknown ATM op 'pow'"),
    (dict(atm=dict(ops="mul")), r"expected a sequence of ATM op names, got the string .mul."),
    (dict(pretrained=True), r"has no pretrained backbone weights"),
])
def test_bad_model_arguments_fail_clearly(kwargs, message):
    with pytest.raises(ValueError, match=message):
        tiny(**kwargs)


def test_non_square_grid_is_fine_without_atm():
    model = tiny(atm=dict(ops=()), img_size=(64, 96))
    assert model(torch.randn(1, 4, 3, 64, 96)).shape == (1, 5)


def test_resnet_errors():
    with pytest.raises(ValueError, match=r"unknown temporal module 'tokent1d' for a ResNet; choose from tsn, tsm"):
        timm.create_model("atm_resnet50", temporal="tokent1d", **TINY_RESNET)
    with pytest.raises(ValueError, match=r"atm\.after_blocks=4 is out of range for a 4-stage ResNet: choose 0\.\.3"):
        timm.create_model("atm_resnet50", atm=dict(after_blocks=4), **TINY_RESNET)


def test_inputs_with_the_wrong_number_of_frames_fail_clearly():
    model = tiny(frames=4)
    with pytest.raises(ValueError, match=r"expected clips of num_frames=4 frames, got input of shape \(2, 3, 3, 64, 64\)"):
        model(torch.randn(2, 3, 3, 64, 64))
    with pytest.raises(ValueError, match=r"a batch of 6 frames is not divisible by num_frames=4"):
        model(torch.randn(6, 3, 64, 64))
    with pytest.raises(ValueError, match=r"expected \(B, T, 3, H, W\) clips"):
        model(torch.randn(3, 64, 64))


# ---------------------------------------------------------------- optimiser interfaces

def test_atm_and_temporal_modules_share_the_layer_id_of_their_block():
    with torch.device("meta"):
        model = timm.create_model("atm_vit_base_patch16_clip_224")  # ATM after 7 blocks, before blocks[7]
    layers = group_parameters(model, model.group_matcher(coarse=False), reverse=True)
    block7 = layers["backbone.blocks.7.attn.qkv.weight"]
    assert layers["atm.0.reduce.0.weight"] == layers["atm.1.proj.weight"] == block7
    assert layers["temporal.7.pre.conv.weight"] == layers["temporal.7.mid.conv.weight"] == block7
    assert layers["backbone.blocks.6.mlp.fc2.bias"] == block7 - 1
    assert layers["backbone.pos_embed"] == layers["backbone.patch_embed.proj.weight"] == 0
    assert layers["backbone.blocks.0.norm1.weight"] == 1 and block7 == 8
    assert layers["backbone.norm.weight"] < layers["proj.weight"] == layers["head.weight"] == max(layers.values())

    groups = param_groups_layer_decay(model, weight_decay=0.05, no_weight_decay_list=model.no_weight_decay(),
                                      layer_decay=0.7)
    scale = {id(p): g["lr_scale"] for g in groups for p in g["params"]}
    named = dict(model.named_parameters())
    assert scale[id(named["atm.0.reduce.0.weight"])] == scale[id(named["backbone.blocks.7.mlp.fc1.weight"])]
    assert scale[id(named["head.weight"])] == 1.0


def test_no_weight_decay_names_the_position_embedding_and_class_token():
    model = tiny()
    names = model.no_weight_decay()
    assert names == {"backbone.pos_embed", "backbone.cls_token"}
    groups = param_groups_layer_decay(model, weight_decay=0.05, no_weight_decay_list=names, layer_decay=0.7)
    decay = {id(p): g["weight_decay"] for g in groups for p in g["params"]}
    params = dict(model.named_parameters())
    assert decay[id(params["backbone.pos_embed"])] == 0.0
    assert decay[id(params["atm.0.reduce.0.weight"])] == 0.05


def test_resnet_atm_joins_the_first_block_of_its_stage():
    model = timm.create_model("atm_resnet50", **TINY_RESNET)
    layers = group_parameters(model, model.group_matcher(), reverse=True)
    assert layers["atm.0.reduce.0.weight"] == layers["backbone.layer3.0.conv1.weight"]
    assert layers["backbone.layer2.0.conv1.weight"] < layers["atm.0.reduce.0.weight"]
    assert isinstance(model, VideoResNet) and isinstance(tiny(), VideoViT)


def test_atm_widths_and_downsampling_reach_the_blocks():
    """Registry defaults for the tiny model, explicit factory arguments, and the published default."""
    default = tiny(atm=dict(ops=("mul", "sub")))
    assert [(b.reduce[0].out_channels, b.fuse[0].out_channels, b.downsample) for b in default.atm] == \
        [(32, 32, False)] * 2
    assert [b.context for b in default.atm] == [5, 5]
    model = tiny(atm=dict(ops=("mul", "sub"), hidden=8, width=16, downsample=True, context=3))
    for block in model.atm:
        assert block.reduce[0].out_channels == 8 and block.reduce[0].stride == (2, 2)
        assert block.fuse[0].out_channels == 16 and block.proj.in_channels == 16
        assert block.context == 3 and block.fuse[0].in_channels == 3 * 16
    assert model.atm[0].encoder[-1][0].out_channels == 16
    x = clips()
    assert model(x).shape == (2, 5)
    vit_b = timm.create_model("atm_vit_base_patch16_clip_224", depth=1, atm=dict(after_blocks=0), num_classes=3)
    assert [(b.reduce[0].out_channels, b.fuse[0].out_channels, b.downsample) for b in vit_b.atm] == \
        [(64, 64, False)] * 2


# ---------------------------------------------------------------- EVA02 against the reference's EVA-CLIP tower

def reference_rope_tables(head_dim: int, grid: int, pretrain_grid: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """The reference's rotary tables (eva_clip/rope.py, VisionRotaryEmbeddingFast with intp_freq), written
    from its formula: half the head width per axis, frequencies 10000^(-2k/d), positions on the
    pretraining grid's scale, each frequency repeated for a pair of channels; rows first, then columns."""
    dim = head_dim // 2
    freqs = 1.0 / 10000 ** (torch.arange(0, dim, 2).float() / dim)
    pos = torch.arange(grid) / grid * pretrain_grid
    axis = torch.repeat_interleave(pos[:, None] * freqs[None], 2, dim=-1)  # (grid, dim)
    table = torch.cat([axis[:, None].expand(grid, grid, dim), axis[None].expand(grid, grid, dim)], -1)
    table = table.reshape(grid * grid, head_dim)
    return table.cos(), table.sin()


def reference_rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    pairs = x.unflatten(-1, (-1, 2))
    rotated = torch.stack([-pairs[..., 1], pairs[..., 0]], dim=-1).flatten(-2)  # (x1, x2) -> (-x2, x1)
    return x * cos + rotated * sin


def reference_eva_tower(b: nn.Module, proj: nn.Linear, frames: torch.Tensor) -> torch.Tensor:
    """EVA02-CLIP's visual tower as the reference computes it (eva_vit_model.py with the EVA02-CLIP-L-14
    configs: rope, subln, naiveswiglu, xattn, no layer scale, class-token output), written out with
    the weights of timm's modules under the reference's names in the comments."""
    ln = lambda x, norm: F.layer_norm(x, x.shape[-1:], norm.weight, norm.bias, 1e-6)  # noqa: E731
    x = F.conv2d(frames, b.patch_embed.proj.weight, b.patch_embed.proj.bias, stride=14).flatten(2).transpose(1, 2)
    x = torch.cat([b.cls_token.expand(x.shape[0], -1, -1), x], 1) + b.pos_embed
    heads = b.blocks[0].attn.num_heads
    cos, sin = reference_rope_tables(x.shape[-1] // heads, math.isqrt(x.shape[1] - 1))
    for blk in b.blocks:
        a = blk.attn
        y = ln(x, blk.norm1)
        q = F.linear(y, a.q_proj.weight, a.q_proj.bias)  # q_bias
        k = F.linear(y, a.k_proj.weight)  # no k bias
        v = F.linear(y, a.v_proj.weight, a.v_proj.bias)  # v_bias
        q, k, v = (t.unflatten(-1, (heads, -1)).transpose(1, 2) for t in (q, k, v))
        q = torch.cat([q[:, :, :1], reference_rotate(q[:, :, 1:], cos, sin)], 2)  # not the class token
        k = torch.cat([k[:, :, :1], reference_rotate(k[:, :, 1:], cos, sin)], 2)
        attn = ((q * q.shape[-1] ** -0.5) @ k.transpose(-2, -1)).softmax(-1)
        o = (attn @ v).transpose(1, 2).flatten(2)
        x = x + F.linear(ln(o, a.norm), a.proj.weight, a.proj.bias)  # inner_attn_ln, proj
        y = ln(x, blk.norm2)
        m = blk.mlp
        hidden = F.silu(F.linear(y, m.fc1_g.weight, m.fc1_g.bias)) * F.linear(y, m.fc1_x.weight, m.fc1_x.bias)  # w1, w2
        x = x + F.linear(ln(hidden, m.norm), m.fc2.weight, m.fc2.bias)  # ffn_ln, w3
    return proj(ln(x, b.norm)[:, 0])  # norm (use_mean_pooling=False), class token, head


@pytest.mark.parametrize("name, size", [("atm_eva02_large_patch14_clip_224", 224),
                                        ("atm_eva02_large_patch14_clip_336", 336)])
def test_eva02_frames_match_the_reference_tower(name, size):
    """Head width 64 and the real token grids (16x16, 24x24 on a 16x16 pretraining grid) at two heads."""
    model = timm.create_model(name, embed_dim=128, num_heads=2, depth=2, num_frames=1, num_classes=0,
                              temporal="tsn", atm=dict(ops=())).eval()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.1 + (1.0 if p.dim() == 1 and p.shape[0] > 0 else 0.0))
        frames = torch.randn(1, 3, size, size, generator=g)
        torch.testing.assert_close(model.forward_frames(frames),
                                   reference_eva_tower(model.backbone, model.proj, frames), rtol=1e-4, atol=1e-4)


def test_eva02_large_has_the_reference_configuration():
    """EVA02-CLIP-L-14(-336).json: 24 blocks of width 1024, 16 heads, SwiGLU hidden int(1024 * 2.6667),
    LayerNorm eps 1e-6, no layer scale, no pre-norm, class-token pooling, biased 1024->768 head."""
    for name, grid in (("atm_eva02_large_patch14_clip_224", 16), ("atm_eva02_large_patch14_clip_336", 24)):
        with torch.device("meta"):
            b = timm.create_model(name).backbone
        blk = b.blocks[0]
        assert (len(b.blocks), b.embed_dim, blk.attn.num_heads) == (24, 1024, 16)
        assert blk.mlp.fc1_g.out_features == int(1024 * 2.6667) == 2730
        assert all(n.eps == 1e-6 for n in (blk.norm1, blk.norm2, blk.attn.norm, blk.mlp.norm, b.norm))
        assert blk.gamma_1 is None and blk.gamma_2 is None
        assert isinstance(b.norm_pre, nn.Identity) and isinstance(b.fc_norm, nn.Identity) and b.global_pool == "token"
        assert blk.attn.k_proj.bias is None and blk.attn.q_proj.bias is not None
        assert b.patch_embed.proj.bias is not None and b.pos_embed.shape == (1, grid * grid + 1, 1024)
        assert tuple(b.patch_embed.grid_size) == (grid, grid) and b.num_prefix_tokens == 1
