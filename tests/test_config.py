"""Configuration: recipes, inheritance, overrides, and errors that name the key."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from atm_core.engine.config import Config, ConfigError, load_config

PARAMS = Path(__file__).resolve().parents[1] / "params"

# The published runs (docs/technical.md): recipe -> (model, frames, lr, layer decay, epochs, RandAugment, input)
PUBLISHED = {
    **{f"{ds}_vit_b16_f{f}": ("atm_vit_base_patch16_clip_224", f, 7e-4, 0.70, 20, True, 224)
       for ds in ("ssv1", "ssv2") for f in (8, 16, 32)},
    **{f"k400_vit_b16_f{f}": ("atm_vit_base_patch16_clip_224", f, 3e-4, 0.65, 20, False, 224)
       for f in (8, 16, 32)},
    "ssv1_eva02_l14_f16": ("atm_eva02_large_patch14_clip_224", 16, 1e-3, 0.75, 15, True, 224),
    "ssv2_eva02_l14_f16": ("atm_eva02_large_patch14_clip_224", 16, 1e-3, 0.75, 15, True, 224),
    "k400_eva02_l14_224_f8": ("atm_eva02_large_patch14_clip_224", 8, 2e-4, 0.70, 20, False, 224),
    "k400_eva02_l14_336_f8": ("atm_eva02_large_patch14_clip_336", 8, 2e-4, 0.70, 20, False, 336),
}


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_published_recipes(name):
    model, frames, lr, layer_decay, epochs, randaug, size = PUBLISHED[name]
    cfg = load_config(PARAMS / f"{name}.yaml")
    assert cfg.model.name == model
    assert cfg.data.num_frames == frames
    assert cfg.optim.lr == lr and cfg.optim.layer_decay == layer_decay and cfg.optim.epochs == epochs
    assert cfg.data.dataset == name.split("_")[0]
    opts = cfg.data.options
    assert bool(opts.get("randaugment")) == randaug
    if randaug:
        assert opts["randaugment"] == "rand-m7-n4-mstd0.5-inc1"
    assert opts["input_size"] == size and cfg.model.img_size == size
    # shared by all published runs
    assert cfg.model.temporal == "tokent1d" and cfg.model.atm.ops == ("mul", "sub")
    assert (cfg.optim.weight_decay, cfg.optim.betas, cfg.optim.warmup_epochs) == (0.05, (0.9, 0.999), 5)
    assert cfg.optim.warmup_lr == cfg.optim.min_lr == 1e-6 and cfg.optim.sched == "cosine"
    assert cfg.optim.scale_lr
    assert (cfg.loss.label_smoothing, cfg.loss.mixup, cfg.loss.cutmix, cfg.loss.mixup_switch_prob) == \
        (0.1, 0.8, 1.0, 0.5)
    assert cfg.data.num_sample == 2 and cfg.model.drop_path_rate == 0.0
    assert cfg.train.batch_size == 16 and cfg.train.mixed_precision == "fp16"
    assert opts["mean"] == [0.48145466, 0.4578275, 0.40821073]
    assert opts["std"] == [0.26862954, 0.26130258, 0.27577711]
    if cfg.data.dataset != "k400":
        assert opts["scale"] == [256, 320] and opts["test_num_segment"] == 2 and opts["test_num_crop"] == 3
    else:
        assert opts["grayscale_p"] == 0.2


def test_every_recipe_loads():
    recipes = sorted(PARAMS.glob("*.yaml"))
    assert len(recipes) >= len(PUBLISHED)
    for path in recipes:
        assert isinstance(load_config(path), Config), path


def test_overrides_are_typed():
    cfg = load_config(None, ["optim.lr=1e-3", "train.batch_size=4", "model.atm.ops=[mul]",
                             "model.atm.ops=[add, div]", "train.resume=null", "optim.clip_grad=5",
                             "train.output_dir=2024", "data.options.input_size=96"])
    assert cfg.optim.lr == 1e-3 and isinstance(cfg.optim.lr, float)
    assert cfg.train.batch_size == 4
    assert cfg.model.atm.ops == ("add", "div")
    assert cfg.train.resume is None and cfg.optim.clip_grad == 5.0
    assert cfg.train.output_dir == "2024"  # a string key keeps the override's text
    assert cfg.data.options == {"input_size": 96}
    assert load_config(None, ["model.atm.ops=[]"]).model.atm.ops == ()


def test_base_inheritance_merges_options(tmp_path):
    (tmp_path / "base.yaml").write_text(
        "optim:\n  lr: 2.0e-3\n  epochs: 9\ndata:\n  options:\n    input_size: 64\n    flip: false\n")
    (tmp_path / "child.yaml").write_text(
        "base: base.yaml\noptim:\n  epochs: 3\ndata:\n  options:\n    flip: true\n")
    cfg = load_config(tmp_path / "child.yaml", ["optim.warmup_epochs=1"])
    assert (cfg.optim.lr, cfg.optim.epochs, cfg.optim.warmup_epochs) == (2e-3, 3, 1.0)
    assert cfg.data.options == {"input_size": 64, "flip": True}


def test_the_atm_section_merges_over_its_base_and_null_means_the_model_default(tmp_path):
    (tmp_path / "base.yaml").write_text("model:\n  atm:\n    ops: [sub]\n    context: 3\n    hidden: 16\n")
    (tmp_path / "child.yaml").write_text("base: base.yaml\nmodel:\n  atm:\n    ops: [mul, sub]\n    hidden: null\n")
    atm = load_config(tmp_path / "child.yaml", ["model.atm.residual=identity"]).model.atm
    assert (atm.ops, atm.context, atm.hidden, atm.residual) == (("mul", "sub"), 3, None, "identity")
    assert atm.width is None and atm.after_blocks is None  # never set: the model's own


@pytest.mark.parametrize("text, line, message", [
    ("model:\n  temporal: tsm\n  atm_ops: [sub]\n", 3, "unknown key 'model.atm_ops'; it is now 'model.atm.ops'"),
    ("model:\n  atm:\n    ops: [sub]\n    contxt: 3\n", 4, "unknown key 'model.atm.contxt'; did you mean 'model.atm.context'"),
    ("model:\n  atm:\n    ops: [sub]\n    context: 2\n", 4, "key 'model.atm.context': context must be a positive odd"),
])
def test_atm_keys_fail_at_their_line(tmp_path, text, line, message):
    path = tmp_path / "recipe.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=rf"^{re.escape(str(path))}:{line}: {re.escape(message)}"):
        load_config(path)


def test_circular_base(tmp_path):
    (tmp_path / "a.yaml").write_text("base: b.yaml\n")
    (tmp_path / "b.yaml").write_text("base: a.yaml\n")
    with pytest.raises(ConfigError, match="circular"):
        load_config(tmp_path / "a.yaml")


@pytest.mark.parametrize("override, message", [
    ("optim.lrr=1", "unknown key 'optim.lrr'; did you mean 'optim.lr'"),
    ("lr=1", "unknown key 'lr'; did you mean 'optim.lr'"),
    ("trian.epochs=3", "did you mean 'train.seed'|did you mean 'optim.epochs'"),
    ("model.temporl=tsm", "did you mean 'model.temporal'"),
    ("train.batch_size=1.5", "key 'train.batch_size' expects an integer, got 1.5"),
    ("train.batch_size=true", "key 'train.batch_size' expects an integer"),
    ("optim.lr=fast", "key 'optim.lr' expects a number, got 'fast'"),
    ("train.ema=yes please", "key 'train.ema' expects true/false"),
    ("model.temporal=lstm", "key 'model.temporal' must be one of"),
    ("model.atm.ops=[mul,prod]", "key 'model.atm.ops': unknown ATM op 'prod'; valid: add, sub, mul, div"),
    ("model.atm.opz=[mul]", "unknown key 'model.atm.opz'; did you mean 'model.atm.ops'"),
    ("model.atm_ops=[mul]", "unknown key 'model.atm_ops'; it is now 'model.atm.ops'"),
    ("model.atm.residual=gelu", r"key 'model.atm.residual' must be one of \['relu', 'identity'\], got 'gelu'"),
    ("model.atm.impl=cuda", r"key 'model.atm.impl' must be one of \['auto', 'plain', 'cpu_fast', 'cpu_fused'\], got 'cuda'"),
    ("model.atm=3", "key 'model.atm' expects a mapping of ops, after_blocks"),
    ("model.kwargs=3", "key 'model.kwargs' expects a mapping"),
    ("optim.layer_decay=1.5", "optim.layer_decay"),
    ("train.batch_size=0", "key 'train.batch_size' must be > 0"),
    ("optim.atm_lr_scale=0", "key 'optim.atm_lr_scale' must be > 0"),
    ("model.atm.context=4", "key 'model.atm.context': context must be a positive odd number of frames, got 4"),
    ("model.atm.context=0", "key 'model.atm.context': context must be a positive odd number of frames, got 0"),
    ("model.atm.hidden=0", "key 'model.atm.hidden': must be a positive integer, got 0"),
    ("data.num_frames=0", "key 'data.num_frames' must be > 0"),
    ("model.num_frames=16", "unknown key 'model.num_frames'; did you mean 'data.num_frames'"),
    ("train.resume=/nonexistent/ckpt", "checkpoint /nonexistent/ckpt does not exist"),
    ("train.save_every_steps=3", "must be a multiple of 'train.grad_accum'"),
    ("novalue", "must look like section.key=value"),
])
def test_bad_overrides(override, message):
    extra = ["train.grad_accum=2"] if override.startswith("train.save_every_steps") else []
    with pytest.raises(ConfigError, match=message):
        load_config(None, extra + [override])


def test_bad_key_in_file_names_file_and_line(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("model:\n  temporal: tsm\noptim:\n  lr: 1.0e-3\n  warmup_epoch: 1\n")
    with pytest.raises(ConfigError, match=rf"{path}:5: unknown key 'optim.warmup_epoch'; "
                                          r"did you mean 'optim.warmup_epochs'"):
        load_config(path)
    path.write_text("optim:\n  epochs: many\n")
    with pytest.raises(ConfigError, match=rf"{path}:2: key 'optim.epochs' expects an integer"):
        load_config(path)
    path.write_text("optimiser:\n  lr: 1\n")
    with pytest.raises(ConfigError, match="unknown section 'optimiser'; did you mean 'optim"):
        load_config(path)


def test_config_round_trips_through_yaml(tmp_path):
    cfg = load_config(PARAMS / "ssv1_vit_b16_f8.yaml", ["optim.epochs=7", "data.options.flip=false"])
    cfg.to_yaml(tmp_path / "config.yaml")
    assert load_config(tmp_path / "config.yaml").to_dict() == cfg.to_dict()


def test_model_conv_stem_key_reaches_the_model():
    from timm.layers import HybridEmbed, PatchEmbed

    from atm_core.engine.builders import build_model

    def embedding(*overrides: str):
        cfg = load_config(None, ["model.atm.ops=[]", *overrides])
        return build_model(cfg, num_classes=12, img_size=64).backbone.patch_embed

    assert isinstance(embedding(), HybridEmbed)  # the tiny ViT's default stem
    linear = embedding("model.conv_stem=[]")
    assert isinstance(linear, PatchEmbed) and linear.patch_size == (8, 8) and linear.grid_size == (8, 8)
    with pytest.raises(ConfigError, match="makes 4-pixel tokens, but patch_size is 8"):
        embedding("model.conv_stem=[8, 16]")


def test_model_atm_context_key_reaches_the_blocks():
    from atm_core.engine.builders import build_model

    cfg = load_config(None, ["model.atm.ops=[mul,sub]", "model.atm.context=3"])
    model = build_model(cfg, num_classes=12, img_size=64)
    assert [(block.context, block.fuse[0].in_channels) for block in model.atm] == [(3, 3 * 32)] * 2
    volume = model.atm[0].cue(torch.randn(16, 32, 8, 8))  # 2 clips of 8 frames, the reduced width
    assert volume.shape == (2, 8, 3, 81, 8, 8)


def test_old_model_num_frames_key_points_to_data_num_frames(tmp_path):
    path = tmp_path / "old.yaml"
    path.write_text("model:\n  temporal: tsm\n  num_frames: 16\ndata:\n  num_frames: 16\n")
    with pytest.raises(ConfigError, match=rf"{path}:3: unknown key 'model.num_frames'; "
                                          r"did you mean 'data.num_frames'"):
        load_config(path)


def test_data_num_frames_is_the_clip_length_the_model_is_built_for():
    from atm_core.engine.builders import build_model

    cfg = load_config(None, ["model.atm.ops=[sub]", "data.num_frames=4"])
    model = build_model(cfg, num_classes=12, img_size=64)
    assert model.num_frames == 4 and model.atm[0].num_frames == 4
    assert model(torch.randn(1, 4, 3, 64, 64)).shape == (1, 12)
    with pytest.raises(ValueError, match="expected clips of num_frames=4 frames"):
        model(torch.randn(1, 8, 3, 64, 64))


def test_a_run_record_from_before_the_atm_section_reads_as_the_same_settings(tmp_path):
    from atm_core.engine.config import load_run_config

    path = tmp_path / "config.yaml"
    path.write_text("model:\n  temporal: tokent1d\n  atm_ops: [mul, sub]\n  atm_context: 3\n  atm_hidden: null\n"
                    "train:\n  tensorboard: false\n  seed: 2\n")
    cfg = load_run_config(path)
    assert (cfg.model.atm.ops, cfg.model.atm.context, cfg.model.atm.hidden) == (("mul", "sub"), 3, None)
    assert cfg.train.log_with == () and cfg.train.seed == 2
    assert load_run_config(path).to_dict() == load_config(data=cfg.to_dict()).to_dict()
    with pytest.raises(ConfigError, match=r"config\.yaml:3: unknown key 'model\.atm_ops'; it is now 'model\.atm\.ops'"):
        load_config(path)  # as a recipe, the old keys are refused


def test_string_keys_keep_the_override_text():
    cfg = load_config(None, ["train.mixed_precision=no", "eval.checkpoint=007", "train.output_dir=2024",
                             "model.pretrained_file=null"])
    assert (cfg.train.mixed_precision, cfg.eval.checkpoint, cfg.train.output_dir) == ("no", "007", "2024")
    assert cfg.model.pretrained_file is None
