"""The training loop on Accelerate: one function, the Accelerator owns devices, precision,
gradient accumulation, gathering and checkpoint state.

Run directory (``train.output_dir``):
    config.yaml      the resolved configuration
    metrics.jsonl    one line per epoch (lr, train_loss, val_*, epoch_time, samples_per_s)
    tensorboard/     the same scalars, when tensorboard is installed
    checkpoints/     step_<batches>/ (full state, last ``keep_last``) and best/ (weights)
    eval/            multi-view evaluation of best/ (``eval.after_train``)

Exact resume: the data order and every sample's augmentation are functions of
``(seed, epoch, position)`` and the step randomness (Mixup, drop-path) is reseeded from
``(seed, epoch, batch, rank)`` before every step, so a run resumed from any checkpoint
replays the uninterrupted run; on the CPU the final metrics are bit-identical.
"""
from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from accelerate import Accelerator
from timm.utils import ModelEmaV3
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from .builders import build_model, build_split, check_sample, ensure_synthetic_data
from .checkpoint import (clear, latest_checkpoint, load_weights, prune, publish, save_module,
                         save_weights, tmp_path, write_meta)
from .config import Config, ConfigError, as_config
from .evaluation import run_evaluation
from .inference import IndexedDataset, predict
from .metrics import classification_metrics
from .optim import build_loss, build_optimizer, build_scheduler, build_video_mixup, scaled_lrs
from .runtime import make_accelerator, release_accelerator
from .sampling import EpochSampler, SeededDataset, derive_seed, seed_everything
from .tracking import MetricsLog, read_metrics


@dataclass
class TrainState:
    """Progress saved with every checkpoint (registered with the Accelerator)."""

    epoch: int = 0  # the epoch in progress, or the next one to start
    batch: int = 0  # batches of that epoch already trained
    global_step: int = 0  # optimizer updates
    batches_total: int = 0  # batches trained since the start; names the checkpoints
    best_top1: float = -1.0
    best_epoch: int = -1
    loss_sum: float = 0.0  # over the batches of the epoch in progress
    loss_count: int = 0
    train_time: float = 0.0  # seconds spent training in the epoch in progress

    def state_dict(self) -> dict:
        return dataclasses.asdict(self)

    def load_state_dict(self, state: dict) -> None:
        for key, value in state.items():
            setattr(self, key, value)


def save_checkpoint(accelerator: Accelerator, ckpt_root: Path, state: TrainState, ema, keep_last: int) -> Path:
    """``save_state`` into a temporary directory, then rename it into place."""
    final = ckpt_root / f"step_{state.batches_total:08d}"
    tmp = tmp_path(final)
    if accelerator.is_main_process:
        clear(tmp)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    accelerator.wait_for_everyone()  # every process has written its RNG state into tmp
    if accelerator.is_main_process:
        if ema is not None:
            save_module(ema.module, tmp / "ema.safetensors")
        write_meta(tmp, state.state_dict())
        publish(tmp, final)
        prune(ckpt_root, keep_last)
    accelerator.wait_for_everyone()
    return final


def validate(accelerator: Accelerator, model, loader, progress: bool) -> dict:
    probs, labels, _ = predict(accelerator, model, loader, desc="val", progress=progress)
    metrics = classification_metrics(probs.numpy(), labels.numpy())
    nll = -probs[torch.arange(len(labels)), labels].clamp_min(1e-12).log().mean()
    return {"top1": metrics["top1"], "top5": metrics["top5"],
            "mean_class_acc": metrics["mean_class_acc"], "loss": float(nll)}


def train(cfg: Config | str | Path | dict) -> dict:
    """Python API of ``python -m atm_core.train``. Returns ``{"output_dir", "best_top1",
    "best_epoch", "last" (the last metrics record), "eval" (the evaluation summary or None)}``."""
    cfg = as_config(cfg)
    accelerator = make_accelerator(cfg)
    try:
        return _train(accelerator, cfg)
    finally:
        release_accelerator()


def _train(accelerator: Accelerator, cfg: Config) -> dict:
    out = Path(cfg.train.output_dir)
    ckpt_root = out / "checkpoints"
    main = accelerator.is_main_process
    if main:
        ensure_synthetic_data(cfg)
    accelerator.wait_for_everyone()

    # Everything that can be wrong with the configuration fails here, before any training.
    train_set, val_set = build_split(cfg, "train"), build_split(cfg, "val")
    check_sample(cfg, train_set, "train")
    check_sample(cfg, val_set, "val")
    if cfg.eval.after_train:
        build_split(cfg, "test")  # the final evaluation's list (data.test_list) is checked now too
    num_classes = len(train_set.classes)
    global_batch = cfg.train.batch_size * accelerator.num_processes
    if len(train_set) < global_batch:
        raise ConfigError(f"train.batch_size={cfg.train.batch_size} x {accelerator.num_processes} "
                          f"process(es) exceeds the {len(train_set)} training videos")
    clips_per_batch = cfg.train.batch_size * train_set.num_sample
    if (cfg.loss.mixup > 0 or cfg.loss.cutmix > 0) and clips_per_batch % 2:
        raise ConfigError(f"Mixup/CutMix need an even number of clips per device batch, got "
                          f"{clips_per_batch} (train.batch_size x data.num_sample)")
    resume_from = None
    if cfg.train.resume == "auto":
        resume_from = latest_checkpoint(ckpt_root)
    elif cfg.train.resume is not None:
        resume_from = Path(cfg.train.resume)

    seed_everything(cfg.train.seed)  # identical initial weights on every process
    model = build_model(cfg, num_classes, train_set.transform.input_size)
    total_batch = global_batch * cfg.train.grad_accum
    lrs = scaled_lrs(cfg.optim, total_batch)
    optimizer = build_optimizer(model, cfg.optim, lrs["lr"])
    mixup = build_video_mixup(cfg.loss, num_classes)
    criterion = build_loss(cfg.loss, mixup)

    sampler = EpochSampler(len(train_set), cfg.train.seed)
    train_loader = DataLoader(SeededDataset(train_set), batch_size=global_batch, sampler=sampler,
                              drop_last=True, num_workers=cfg.data.num_workers,
                              persistent_workers=cfg.data.num_workers > 0, collate_fn=train_set.collate_fn)
    val_loader = DataLoader(IndexedDataset(val_set), batch_size=cfg.eval.batch_size * accelerator.num_processes,
                            shuffle=False, num_workers=cfg.data.num_workers,
                            persistent_workers=cfg.data.num_workers > 0)
    model, optimizer, train_loader, val_loader = accelerator.prepare(model, optimizer, train_loader, val_loader)
    if cfg.data.num_workers > 0:
        # Fork the persistent validation workers now, while this process is small: forked after the
        # first epoch they would share its training-sized heap copy-on-write, and the next training
        # steps would pay a page fault per page (measured: ~5 s of a 3-minute CPU run).
        iter(getattr(val_loader, "base_dataloader", val_loader))
    batches_per_epoch = len(train_loader)
    updates_per_epoch = math.ceil(batches_per_epoch / cfg.train.grad_accum)
    scheduler = build_scheduler(optimizer, cfg.optim, lrs, updates_per_epoch)
    state = TrainState()
    accelerator.register_for_checkpointing(scheduler, state)
    unwrapped = accelerator.unwrap_model(model)
    ema = ModelEmaV3(unwrapped, decay=cfg.train.ema_decay) if cfg.train.ema else None

    if resume_from is not None:
        accelerator.load_state(str(resume_from))
        if ema is not None:
            load_weights(ema.module, resume_from / "ema.safetensors")
        accelerator.print(f"resumed from {resume_from}: epoch {state.epoch + 1}, batch {state.batch}")
    elif cfg.train.resume == "auto":
        accelerator.print(f"no checkpoint in {ckpt_root}; starting from scratch")
    log = MetricsLog(out, cfg.train.tensorboard) if main else None
    if main:
        out.mkdir(parents=True, exist_ok=True)
        cfg.to_yaml(out / "config.yaml")
        log.truncate(state.epoch)
        n_params = sum(p.numel() for p in unwrapped.parameters())
        accelerator.print(f"{cfg.model.name}: {n_params / 1e6:.2f} M parameters; {len(train_set)} train / "
                          f"{len(val_set)} val videos, {num_classes} classes; total batch {total_batch} "
                          f"({accelerator.num_processes} process(es)); lr {lrs['lr']:.3g}")

    rank = accelerator.process_index
    record: dict = {}
    for epoch in range(state.epoch, cfg.optim.epochs):
        sampler.epoch = epoch
        loader = train_loader if state.batch == 0 else accelerator.skip_first_batches(train_loader, state.batch)
        model.train()
        bar = tqdm(total=batches_per_epoch, initial=state.batch, desc=f"epoch {epoch + 1}/{cfg.optim.epochs}",
                   leave=False, disable=not (cfg.train.progress and accelerator.is_local_main_process))
        started = time.perf_counter() - state.train_time
        for clips, labels in loader:
            seed_everything(derive_seed(cfg.train.seed, epoch, state.batch, rank, 1))
            targets = labels
            if mixup is not None:
                clips, targets = mixup(clips, labels)
            with accelerator.accumulate(model):
                with accelerator.autocast():
                    loss = criterion(model(clips), targets)
                accelerator.backward(loss)
                if accelerator.sync_gradients and cfg.optim.clip_grad is not None:
                    accelerator.clip_grad_norm_(model.parameters(), cfg.optim.clip_grad)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            state.batch += 1
            state.batches_total += 1
            state.loss_sum += float(accelerator.reduce(loss.detach(), "mean"))
            state.loss_count += 1
            if accelerator.sync_gradients:
                state.global_step += 1
                scheduler.step_update(num_updates=state.global_step)
                if ema is not None:
                    ema.update(unwrapped, step=state.global_step)
            bar.update(1)
            if state.batch % cfg.train.log_every == 0:
                bar.set_postfix(loss=f"{state.loss_sum / state.loss_count:.4f}",
                                lr=f"{optimizer.param_groups[0]['lr']:.2e}")
            if cfg.train.save_every_steps and state.batch % cfg.train.save_every_steps == 0 \
                    and state.batch < batches_per_epoch:
                state.train_time = time.perf_counter() - started
                save_checkpoint(accelerator, ckpt_root, state, ema, cfg.train.keep_last)
        bar.close()
        train_time = time.perf_counter() - started

        record = {"epoch": epoch, "global_step": state.global_step,
                  "lr": max(g["lr"] for g in optimizer.param_groups),
                  "train_loss": state.loss_sum / max(state.loss_count, 1)}
        improved = False
        last_epoch = epoch + 1 == cfg.optim.epochs
        if (epoch + 1) % cfg.train.eval_every == 0 or last_epoch:
            val = validate(accelerator, model, val_loader, cfg.train.progress)
            record.update({f"val_{k}": v for k, v in val.items()})
            score = val["top1"]
            if ema is not None:
                ema_val = validate(accelerator, ema.module, val_loader, cfg.train.progress)
                record.update({f"val_ema_{k}": v for k, v in ema_val.items()})
                if cfg.eval.use_ema:
                    score = ema_val["top1"]
            if score > state.best_top1:
                state.best_top1, state.best_epoch, improved = score, epoch, True
        record.update({"epoch_time": time.perf_counter() - started, "train_time": train_time,
                       "samples_per_s": batches_per_epoch * global_batch * train_set.num_sample / train_time})
        state.epoch, state.batch, state.loss_sum, state.loss_count, state.train_time = epoch + 1, 0, 0.0, 0, 0.0
        if main:
            if improved:
                best_tmp = tmp_path(ckpt_root / "best")
                clear(best_tmp)
                save_weights(best_tmp, unwrapped, ema.module if ema is not None else None,
                             {"epoch": epoch, **record})
                publish(best_tmp, ckpt_root / "best")
            log.write(record)
        save_checkpoint(accelerator, ckpt_root, state, ema, cfg.train.keep_last)
        val_text = (f"val top1 {record['val_top1']:.2f} top5 {record['val_top5']:.2f} "
                    if "val_top1" in record else "")
        accelerator.print(f"epoch {epoch + 1}/{cfg.optim.epochs}  loss {record['train_loss']:.4f}  "
                          f"lr {record['lr']:.2e}  {val_text}best {state.best_top1:.2f}  "
                          f"({record['epoch_time']:.1f} s, {record['samples_per_s']:.1f} clips/s)")
    if log is not None:
        log.close()

    summary = None
    if cfg.eval.after_train and (ckpt_root / "best").exists():
        summary = run_evaluation(accelerator, cfg, ckpt_root / "best")
    if not record and (out / "metrics.jsonl").is_file():  # resumed after the last epoch
        record = read_metrics(out)[-1]
    return {"output_dir": str(out), "best_top1": state.best_top1, "best_epoch": state.best_epoch,
            "last": record, "eval": summary}
