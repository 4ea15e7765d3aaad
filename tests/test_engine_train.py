"""Training runs on a tiny generated benchmark: exact resume after SIGKILL, one process vs
two, the full-size recipe's training step, and configuration errors caught before training."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from atm_core.engine import ConfigError, load_config, read_metrics, train
from atm_core.engine.checkpoint import step_dirs

from test_engine_eval import accelerate_launch

PARAMS = Path(__file__).resolve().parents[1] / "params"
TIMING_KEYS = {"epoch_time", "train_time", "samples_per_s"}


@pytest.fixture(scope="module")
def bench(tmp_path_factory) -> Path:
    from atm_core.data import generate_benchmark

    root = tmp_path_factory.mktemp("bench")
    generate_benchmark(root, seed=0, train_per_class=2, val_per_class=1, size=72, num_frames=8)
    return root


def tiny_overrides(root: Path, out: Path, *extra: str) -> list[str]:
    """2 epochs of 3 steps of 8 clips (24 train / 12 val videos), deterministic single thread;
    the tiny benchmark has no test split, so the final evaluation reads the validation list."""
    return [f"data.root={root}", f"train.output_dir={out}", "data.generate=null", "data.num_workers=0",
            "data.test_list=val.txt",
            "optim.epochs=2", "optim.warmup_epochs=0.5", "train.batch_size=8", "train.threads=1",
            "eval.batch_size=6", "eval.after_train=false", "train.keep_last=2", *extra]


def strip_timing(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in records]


def final_weights(out: Path) -> dict[str, torch.Tensor]:
    return load_file(str(step_dirs(out / "checkpoints")[-1] / "model.safetensors"))


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_is_exact(bench, tmp_path):
    # ATM(mul, sub) with T1D: BatchNorm, temporal conv, repeated clips and Mixup all in play
    extra = ["model.temporal=tokent1d", "model.atm.ops=[mul,sub]", "train.save_every_steps=1",
             "loss.mixup=0.8", "loss.cutmix=1.0", "optim.clip_grad=1.0", "train.ema=true",
             "train.ema_decay=0.9"]
    reference = train(load_config(PARAMS / "synthetic_base.yaml", tiny_overrides(bench, tmp_path / "a", *extra)))

    out = tmp_path / "b"
    cmd = [sys.executable, "-m", "atm_core.train", "--config", str(PARAMS / "synthetic_base.yaml"),
           *tiny_overrides(bench, out, *extra)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    target = out / "checkpoints" / "step_00000004"  # epoch 2, after its first step
    deadline = time.monotonic() + 240
    while not target.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, f"the run ended before it could be killed: {proc.stderr.read()}"
    done = read_metrics(out)
    assert [r["epoch"] for r in done] == [0]  # killed inside the second epoch

    resumed = train(load_config(PARAMS / "synthetic_base.yaml",
                                tiny_overrides(bench, out, *extra, "train.resume=auto")))
    assert strip_timing(read_metrics(out)) == strip_timing(read_metrics(tmp_path / "a"))
    assert resumed["best_top1"] == reference["best_top1"]
    a, b = final_weights(tmp_path / "a"), final_weights(out)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)  # bit-identical on CPU
    ema_a = load_file(str(step_dirs(tmp_path / "a" / "checkpoints")[-1] / "ema.safetensors"))
    ema_b = load_file(str(step_dirs(out / "checkpoints")[-1] / "ema.safetensors"))
    assert all(torch.equal(ema_a[k], ema_b[k]) for k in ema_a)


@pytest.mark.slow
def test_persistent_worker_with_cached_frames_trains_like_in_process_loading(bench, tmp_path):
    # the CPU recipe's loader (one persistent worker, decoded videos cached in it after epoch 1)
    # must hand the model the same clips, with the same augmentation, in every epoch
    extra = ["model.temporal=tokent1d", "model.atm.ops=[sub]", "train.mixed_precision=no"]  # fp32 rounding below
    runs = {"in_process": ["data.num_workers=0", "data.options.cache_frames=false"],
            "worker": ["data.num_workers=1", "data.options.cache_frames=false"],
            "worker_cached": ["data.num_workers=1", "data.options.cache_frames=true"]}
    records = {}
    for name, options in runs.items():
        train(load_config(PARAMS / "synthetic_base.yaml", tiny_overrides(bench, tmp_path / name, *extra, *options)))
        records[name] = strip_timing(read_metrics(tmp_path / name))
    assert records["worker_cached"] == records["worker"]  # the cache changes nothing, bit for bit
    a, b = final_weights(tmp_path / "worker"), final_weights(tmp_path / "worker_cached")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # with a worker the batches are bit-identical but the run differs from in-process loading by
    # float rounding (~1e-7 in the loss here); another clip or augmentation would change far more
    for ours, expected in zip(records["worker_cached"], records["in_process"]):
        assert ours.keys() == expected.keys()
        for key, value in expected.items():
            assert ours[key] == pytest.approx(value, rel=1e-5, abs=1e-6), key


@pytest.mark.slow
def test_two_processes_match_one_process(bench, tmp_path):
    # without ATM and the conv stem the model has no BatchNorm, so the only difference is the
    # order of the gradient sums (in fp32: bf16 would round each process's half batch on its own)
    extra = ["model.temporal=tokent1d", "model.atm.ops=[]", "model.conv_stem=[]", "eval.batch_size=3",
             "train.mixed_precision=no"]
    one = tiny_overrides(bench, tmp_path / "one", *extra)
    train(load_config(PARAMS / "synthetic_base.yaml", one))
    two = tiny_overrides(bench, tmp_path / "two", *extra, "train.batch_size=4")
    accelerate_launch(["-m", "atm_core.train", "--config", str(PARAMS / "synthetic_base.yaml"), *two])
    rec_one, rec_two = read_metrics(tmp_path / "one"), read_metrics(tmp_path / "two")
    assert [r["global_step"] for r in rec_one] == [r["global_step"] for r in rec_two] == [3, 6]
    for r1, r2 in zip(rec_one, rec_two):
        assert r1["lr"] == pytest.approx(r2["lr"], rel=1e-12)  # same total batch -> same schedule
        # tolerance: float32 reassociation of the gradient average only
        assert r1["train_loss"] == pytest.approx(r2["train_loss"], abs=1e-4)
        assert r1["val_loss"] == pytest.approx(r2["val_loss"], abs=1e-4)
        for key in ("val_top1", "val_top5", "val_mean_class_acc"):
            assert r1[key] == pytest.approx(r2[key], abs=1e-9), key
        # the skip counts gathered over both processes
        assert (r2["train_skipped"], r2["val_skipped"], r2["val_num_videos"]) == (0, 0, 12)
    config = (tmp_path / "two" / "config.yaml").read_text()
    assert "batch_size: 4" in config


@pytest.mark.slow
def test_full_size_ssv1_recipe_step_on_cpu():
    """One AdamW step of the SS-V1 ViT-B/16 8-frame recipe at 224 px, batch 1, on the CPU."""
    from atm_core.engine.builders import build_model
    from atm_core.engine.optim import build_loss, build_optimizer

    cfg = load_config(PARAMS / "ssv1_vit_b16_f8.yaml", ["model.pretrained=false", "train.mixed_precision=no"])
    model = build_model(cfg, num_classes=174, img_size=224)
    optimizer = build_optimizer(model, cfg.optim, lr=1e-4)
    criterion = build_loss(cfg.loss, mixup=None)
    assert model.num_frames == 8 and model.atm is not None
    group_of = {id(p): g for g in optimizer.param_groups for p in g["params"]}
    params = dict(model.named_parameters())
    scale = {n: group_of[id(p)]["lr_scale"] for n, p in params.items()}
    # 14 layer ids (embeddings, 12 blocks, head): decay 0.70 per layer below the head
    assert scale["head.weight"] == 1.0
    assert scale["backbone.patch_embed.proj.weight"] == pytest.approx(0.70 ** 13)
    block7 = scale["backbone.blocks.7.attn.qkv.weight"]  # the block ATM runs before, after 7 blocks
    assert block7 == pytest.approx(0.70 ** 5)  # layer id 8 of 0..13
    atm = [n for n in params if n.startswith("atm.")]
    assert atm and all(scale[n] == block7 for n in atm)  # ATM takes the depth of blocks[7]
    model.train()
    clip = torch.randn(1, 8, 3, 224, 224)
    loss = criterion(model(clip), torch.tensor([86]))
    loss.backward()
    assert torch.isfinite(loss)
    assert all(params[n].grad is not None for n in atm)
    before = {n: p.detach().clone() for n, p in params.items()}
    optimizer.step()
    changed = {n for n, p in params.items() if not torch.equal(before[n], p)}
    with_grad = {n for n, p in params.items() if p.grad is not None and p.grad.abs().sum() > 0}
    assert len(with_grad) > 0.8 * len(params) and with_grad <= changed
    # the zero-initialised ATM output projection is where ATM starts to learn
    assert any(n.startswith("atm.") and n in with_grad for n in params)


def test_missing_data_root_fails_before_training(tmp_path):
    cfg = load_config(PARAMS / "synthetic_tsn.yaml",
                      [f"data.root={tmp_path / 'nowhere'}", "data.generate=null", f"train.output_dir={tmp_path / 'o'}"])
    with pytest.raises(ConfigError, match="key 'data.root': directory .*nowhere does not exist"):
        train(cfg)
    assert not (tmp_path / "o").exists()


def test_bad_data_option_and_model_name(bench, tmp_path):
    base = tiny_overrides(bench, tmp_path / "o")
    with pytest.raises(ConfigError, match="data.options.*'input_sise'.*did you mean 'input_size'"):
        train(load_config(PARAMS / "synthetic_base.yaml", base + ["data.options.input_sise=64"]))
    with pytest.raises(ConfigError, match="no timm model named 'atm_vit_tiny_patch8_46'; did you mean"
                                          " 'atm_vit_tiny_patch8_64'"):
        train(load_config(PARAMS / "synthetic_base.yaml", base + ["model.name=atm_vit_tiny_patch8_46"]))
    with pytest.raises(ConfigError, match="64 px but model.img_size=96"):
        train(load_config(PARAMS / "synthetic_base.yaml", base + ["model.img_size=96"]))
    missing_list = base + ["data.train_list=nope.txt"]
    with pytest.raises(ConfigError, match="nope.txt"):
        train(load_config(PARAMS / "synthetic_base.yaml", missing_list))
    assert not (tmp_path / "o" / "checkpoints").exists()


def test_cli_reports_config_errors(tmp_path):
    result = subprocess.run([sys.executable, "-m", "atm_core.train", "--config",
                             str(PARAMS / "synthetic_tsn.yaml"), "optim.lrr=1"],
                            capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert result.returncode == 2
    assert "unknown key 'optim.lrr'; did you mean 'optim.lr'?" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_trackers_get_the_epoch_records_tensorboard_and_mlflow(bench, tmp_path, monkeypatch):
    """train.log_with=[tensorboard, mlflow]: TensorBoard event files and an MLflow run (local file
    store) hold the same numbers as metrics.jsonl, and the run's config as MLflow parameters."""
    from mlflow.tracking import MlflowClient
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    store = (tmp_path / "mlruns").as_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 keeps the file store opt-in
    out = tmp_path / "tracked"
    overrides = tiny_overrides(bench, out, "model.atm.ops=[]", "optim.epochs=2",
                               "train.log_with=[tensorboard, mlflow]")
    train(load_config(PARAMS / "synthetic_base.yaml", overrides))
    records = read_metrics(out)

    events = sorted((out / "tensorboard").rglob("events.out.tfevents.*"))
    assert events, "no TensorBoard event file"
    scalars = {}
    for path in events:
        accumulator = EventAccumulator(str(path))
        accumulator.Reload()
        for tag in accumulator.Tags()["scalars"]:
            scalars[tag] = [(e.step, e.value) for e in accumulator.Scalars(tag)]
    for key in ("train_loss", "val_top1", "lr"):
        assert scalars[key] == [(r["epoch"], pytest.approx(r[key], rel=1e-6)) for r in records], key

    client = MlflowClient(tracking_uri=store)
    (run,) = client.search_runs([e.experiment_id for e in client.search_experiments()])
    history = client.get_metric_history(run.info.run_id, "val_top1")
    assert [(m.step, m.value) for m in history] == [(r["epoch"], pytest.approx(r["val_top1"])) for r in records]
    assert run.data.params["model.atm.ops"] == "[]" and run.data.params["train.seed"] == "0"
    assert run.info.status == "FINISHED"


def test_the_training_loss_stays_on_the_device_until_read():
    """Run.add_loss keeps a float64 sum on the device (no host sync per step); reading it reduces
    once over the processes and gives the per-step host sum of before, bit for bit."""
    from atm_core.engine.trainer import Run

    class CountingAccelerator:
        reads = 0

        def reduce(self, tensor, reduction):
            self.reads += 1
            return tensor

    run = Run(*[None] * 13)
    run.accelerator = CountingAccelerator()
    losses = torch.rand(7, generator=torch.Generator().manual_seed(0))
    for loss in losses[:4]:
        run.add_loss(loss)
    assert run.accelerator.reads == 0 and run.loss_total.dtype == torch.float64
    expected = 0.0
    for loss in losses[:4]:
        expected += float(loss)
    assert run.train_loss() == expected / 4 and run.accelerator.reads == 1
    for loss in losses[4:]:  # after a read the sum goes on from the value read
        run.add_loss(loss)
        expected += float(loss)
    assert run.train_loss() == expected / 7 and run.state.loss_count == 7
