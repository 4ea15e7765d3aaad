"""The training loop on Accelerate: one function, the Accelerator owns devices, precision,
gradient accumulation, gathering and checkpoint state.

Run directory (``train.output_dir``), held by one training at a time (:mod:`.rundir`):
    config.yaml      the start's resolved configuration, never rewritten (changes.jsonl: a resume's)
    identity.json    the model and data the weights are of; a resume must match it
    metrics.jsonl    one line per epoch (lr, train_loss, val_*, epoch_time, samples_per_s)
    tensorboard/     the same scalars for TensorBoard (train.log_with; MLflow, W&B where named)
    checkpoints/     step_<batches>/ (full state, last ``keep_last``) and best/ (weights)
    eval/            multi-view evaluation of best/ (``eval.after_train``)

Step checkpoints are written at every epoch end, every ``train.save_every_steps`` batches and
once ``train.save_every_minutes`` passed since the last one, and before a data error ends the
run; ``--resume`` takes one of them or the run directory (its latest). Ctrl-C or SIGTERM stops
the run at the next step boundary, after saving a checkpoint (a second one stops at once).

Exact resume: the data order and every sample's augmentation are functions of
``(seed, epoch, position)`` and the step randomness (Mixup, drop-path) is reseeded from
``(seed, epoch, batch, rank)`` before every step, so a run resumed from any checkpoint
replays the uninterrupted run; on the CPU the final metrics are bit-identical.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import broadcast, set_seed
from timm.utils import ModelEmaV3
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from ..data.dataset import VideoDataset
from ..data.errors import DataError, error_message
from ..data.preflight import preflight
from . import builders, rundir
from .builders import build_model, check_sample
from .checkpoint import TrainState, load_weights, resolve_resume, save_checkpoint, save_weights, write_atomically
from .config import Config, ConfigError, as_config
from .described import describe_best
from .evaluation import count_marked, count_skipped, run_evaluation, validate
from .inference import IndexedDataset
from .optim import build_loss, build_optimizer, build_scheduler, build_video_mixup, scaled_lrs
from .runtime import make_accelerator, release_accelerator
from .sampling import EpochSampler, SeededDataset, derive_seed
from .stopping import Interrupted, StopRequest
from .tracking import MetricsLog, read_metrics


def train(cfg: Config | str | Path | dict) -> dict:
    """Python API of ``python -m atm_core.train``. Returns ``{"output_dir", "best_top1",
    "best_epoch", "last" (the last metrics record), "skipped" (unreadable videos per split),
    "padded" (short videos sampled with repeated frames, per split), "eval" (the evaluation
    summary or None)}``."""
    cfg = as_config(cfg)
    accelerator = make_accelerator(cfg, trackers=True)
    try:
        with rundir.owned(accelerator, Path(cfg.train.output_dir)):
            return _train(accelerator, cfg)
    finally:
        release_accelerator()


@dataclass
class Run:
    """Everything one training run holds, built by :func:`_build_run`."""

    cfg: Config
    accelerator: Accelerator
    train_set: VideoDataset
    val_set: VideoDataset
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: object
    mixup: object
    criterion: object
    ema: ModelEmaV3 | None
    sampler: EpochSampler
    train_loader: DataLoader
    val_loader: DataLoader
    state: TrainState = field(default_factory=TrainState)
    last_save: float = field(default_factory=time.monotonic)
    last_saved: Path | None = None
    stop: StopRequest = field(default_factory=StopRequest)
    # the epoch's loss sum on the device since it was last read (no host sync per step)
    loss_total: torch.Tensor | None = None

    @property
    def ckpt_root(self) -> Path:
        return Path(self.cfg.train.output_dir) / "checkpoints"

    @property
    def global_batch(self) -> int:
        return self.cfg.train.batch_size * self.accelerator.num_processes

    def add_loss(self, loss: torch.Tensor) -> None:
        if self.loss_total is None:
            self.loss_total = torch.tensor(self.state.loss_sum, dtype=torch.float64, device=loss.device)
        self.loss_total += loss.detach()
        self.state.loss_count += 1

    def train_loss(self) -> float:
        """The mean training loss of the epoch so far, read to the host (over all processes)."""
        if self.loss_total is not None:
            self.state.loss_sum = float(self.accelerator.reduce(self.loss_total, "mean"))
            self.loss_total = None
        return self.state.loss_sum / max(self.state.loss_count, 1)

    def save(self) -> Path:
        self.train_loss()  # the checkpoint holds the loss so far
        path = save_checkpoint(self.accelerator, self.ckpt_root, self.state, self.ema,
                               self.cfg.train.keep_last)
        self.last_save, self.last_saved = time.monotonic(), path
        return path

    def skipped(self) -> dict:
        return {"train": count_skipped(self.accelerator, self.train_set),
                "val": count_skipped(self.accelerator, self.val_set)}

    def padded(self) -> dict:
        """Short videos sampled with repeated frames so far, per split (``data.short_clips=pad``)."""
        return {"train": count_marked(self.accelerator, self.train_set.padded()),
                "val": count_marked(self.accelerator, self.val_set.padded())}

    def stop_if_asked(self, saved: bool) -> None:
        """After a step (at an accumulation boundary) or an epoch: a requested stop saves the
        state, unless ``saved`` just now, and ends the run naming the checkpoint."""
        if not self.stop.requested(self.accelerator):
            return
        path = self.last_saved if saved else self.save()
        raise Interrupted(f"stopped by {self.stop.name()} at epoch {self.state.epoch + 1}, batch "
                          f"{self.state.batch}: the training so far is saved in {path}; continue "
                          "with --resume auto", self.stop.signum)


def _prepare_data(accelerator: Accelerator, cfg: Config) -> tuple[VideoDataset, VideoDataset]:
    """The benchmark where asked for, then both splits, checked against the model's input.
    Everything that can be wrong with the configuration or the lists fails here."""
    if accelerator.is_main_process:
        builders.prepare_dataset(cfg)
    accelerator.wait_for_everyone()
    train_set, val_set = builders.dataset(cfg, "train"), builders.dataset(cfg, "val")
    if cfg.data.preflight:
        preflight((train_set, val_set), cfg.data.on_error, Path(cfg.train.output_dir), cfg.train.progress)
    check_sample(cfg, train_set, "train")
    check_sample(cfg, val_set, "val")
    if cfg.eval.after_train:
        builders.dataset(cfg, "test")  # the final evaluation's list (data.test_list) is checked now too
    global_batch = cfg.train.batch_size * accelerator.num_processes
    if len(train_set) < global_batch:
        raise ConfigError(f"train.batch_size={cfg.train.batch_size} x {accelerator.num_processes} "
                          f"process(es) exceeds the {len(train_set)} training videos")
    clips_per_batch = cfg.train.batch_size * train_set.num_sample
    if (cfg.loss.mixup > 0 or cfg.loss.cutmix > 0) and clips_per_batch % 2:
        raise ConfigError(f"Mixup/CutMix need an even number of clips per device batch, got "
                          f"{clips_per_batch} (train.batch_size x data.num_sample)")
    return train_set, val_set


def _resume_point(cfg: Config) -> Path | None:
    if cfg.train.resume is None:
        return None
    try:
        return resolve_resume(cfg.train.resume, cfg.train.output_dir)
    except ValueError as e:
        raise ConfigError(f"key 'train.resume': {e}") from e


def _build_run(accelerator: Accelerator, cfg: Config, train_set: VideoDataset,
               val_set: VideoDataset) -> Run:
    """Model, optimizer, schedule and loaders, prepared by the Accelerator."""
    num_classes = len(train_set.classes)
    set_seed(cfg.train.seed)  # identical initial weights on every process
    model = build_model(cfg, num_classes, train_set.transform.input_size)
    global_batch = cfg.train.batch_size * accelerator.num_processes
    lrs = scaled_lrs(cfg.optim, global_batch * cfg.train.grad_accum)
    optimizer = build_optimizer(model, cfg.optim, lrs["lr"])
    mixup = build_video_mixup(cfg.loss, num_classes)
    sampler = EpochSampler(len(train_set), cfg.train.seed)
    workers = cfg.data.num_workers
    train_loader = DataLoader(SeededDataset(train_set), batch_size=global_batch, sampler=sampler,
                              drop_last=True, num_workers=workers, persistent_workers=workers > 0,
                              collate_fn=train_set.collate_fn)
    val_loader = DataLoader(IndexedDataset(val_set), batch_size=cfg.eval.batch_size * accelerator.num_processes,
                            shuffle=False, num_workers=workers, persistent_workers=workers > 0)
    model, optimizer, train_loader, val_loader = accelerator.prepare(model, optimizer, train_loader, val_loader)
    if workers > 0:
        # Fork the persistent validation workers now, while this process is small: forked after the
        # first epoch they would share its training-sized heap copy-on-write, and the next training
        # steps would pay a page fault per page.
        iter(getattr(val_loader, "base_dataloader", val_loader))
    updates_per_epoch = math.ceil(len(train_loader) / cfg.train.grad_accum)
    scheduler = build_scheduler(optimizer, cfg.optim, lrs, updates_per_epoch)
    run = Run(cfg, accelerator, train_set, val_set, model, optimizer, scheduler, mixup,
              build_loss(cfg.loss, mixup), None, sampler, train_loader, val_loader)
    accelerator.register_for_checkpointing(scheduler, run.state)
    unwrapped = accelerator.unwrap_model(model)
    if cfg.train.ema:
        run.ema = ModelEmaV3(unwrapped, decay=cfg.train.ema_decay)
    accelerator.print(f"{cfg.model.name}: {sum(p.numel() for p in unwrapped.parameters()) / 1e6:.2f} M "
                      f"parameters; {len(train_set)} train / {len(val_set)} val videos, {num_classes} "
                      f"classes; total batch {global_batch * cfg.train.grad_accum} "
                      f"({accelerator.num_processes} process(es)); lr {lrs['lr']:.2e}"
                      + (f", ATM parameters x{cfg.optim.atm_lr_scale:g}" if cfg.optim.atm_lr_scale != 1 else ""))
    return run


def _restore(run: Run, resume_from: Path | None) -> None:
    if resume_from is not None:
        try:
            run.accelerator.load_state(str(resume_from))
            if run.ema is not None:
                load_weights(run.ema.module, resume_from / "ema.safetensors")
        except (RuntimeError, ValueError, KeyError, FileNotFoundError) as e:
            reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ConfigError(f"cannot resume from {resume_from}: it does not fit the model and "
                              f"data of this configuration ({reason})") from e
        run.accelerator.print(f"resumed from {resume_from}: epoch {run.state.epoch + 1}, "
                              f"batch {run.state.batch}")
    elif run.cfg.train.resume == "auto":
        run.accelerator.print(f"no checkpoint in {run.ckpt_root}; starting from scratch")


def _checkpoint_due(run: Run, batches_per_epoch: int) -> bool:
    """A mid-epoch checkpoint after this batch: every ``save_every_steps`` batches, or once
    ``save_every_minutes`` passed (decided on the main process, so that all processes agree)."""
    cfg, state = run.cfg.train, run.state
    if state.batch >= batches_per_epoch or state.batch % cfg.grad_accum:
        return False  # the epoch end saves anyway; never half-accumulated gradients
    due = bool(cfg.save_every_steps) and state.batch % cfg.save_every_steps == 0
    if cfg.save_every_minutes and not due:
        due = time.monotonic() - run.last_save >= 60 * cfg.save_every_minutes
        if run.accelerator.num_processes > 1:
            flag = torch.tensor([int(due)], device=run.accelerator.device)
            due = bool(broadcast(flag, from_process=0).item())
    return due


def _train_step(run: Run, clips: torch.Tensor, labels: torch.Tensor, epoch: int) -> None:
    cfg, accelerator, state = run.cfg, run.accelerator, run.state
    set_seed(derive_seed(cfg.train.seed, epoch, state.batch, accelerator.process_index, 1))
    targets = labels
    if run.mixup is not None:
        clips, targets = run.mixup(clips, labels)
    with accelerator.accumulate(run.model):
        with accelerator.autocast():
            loss = run.criterion(run.model(clips), targets)
        accelerator.backward(loss)
        if accelerator.sync_gradients and cfg.optim.clip_grad is not None:
            accelerator.clip_grad_norm_(run.model.parameters(), cfg.optim.clip_grad)
        run.optimizer.step()
        run.optimizer.zero_grad(set_to_none=True)
    state.batch += 1
    state.batches_total += 1
    run.add_loss(loss)
    if accelerator.sync_gradients:
        state.global_step += 1
        run.scheduler.step_update(num_updates=state.global_step)
        if run.ema is not None:
            run.ema.update(accelerator.unwrap_model(run.model), step=state.global_step)


def _train_epoch(run: Run, epoch: int) -> dict:
    """Train (the rest of) one epoch; returns its training record. A data error ends the run
    after saving the batches trained so far."""
    cfg, accelerator, state = run.cfg, run.accelerator, run.state
    run.sampler.epoch = epoch
    batches = len(run.train_loader)
    loader = (run.train_loader if state.batch == 0
              else accelerator.skip_first_batches(run.train_loader, state.batch))
    run.model.train()
    bar = tqdm(total=batches, initial=state.batch, desc=f"epoch {epoch + 1}/{cfg.optim.epochs}", leave=False,
               disable=not (cfg.train.progress and accelerator.is_local_main_process))
    started = time.perf_counter() - state.train_time
    try:
        for clips, labels in loader:
            _train_step(run, clips, labels, epoch)
            bar.update(1)
            if state.batch % cfg.train.log_every == 0:
                bar.set_postfix(loss=f"{run.train_loss():.4f}",
                                lr=f"{run.optimizer.param_groups[0]['lr']:.2e}")
            state.train_time = time.perf_counter() - started
            due = _checkpoint_due(run, batches)
            if due:
                run.save()
            if state.batch % cfg.train.grad_accum == 0 and state.batch < batches:
                run.stop_if_asked(saved=due)
    except DataError as e:
        raise _stopped_by(run, e, started) from e
    finally:
        bar.close()
    train_time = time.perf_counter() - started
    return {"epoch": epoch, "global_step": state.global_step,
            "lr": max(g["lr"] for g in run.optimizer.param_groups),
            "train_loss": run.train_loss(), "train_time": train_time,
            "samples_per_s": batches * run.global_batch * run.train_set.num_sample / train_time}


def _stopped_by(run: Run, error: DataError, started: float) -> DataError:
    """The data error that ends a run, saying where the batches trained before it are."""
    message = error_message(error)
    state = run.state
    if state.batch == 0 or state.batch % run.cfg.train.grad_accum:
        return DataError(message)
    state.train_time = time.perf_counter() - started
    path = run.save()
    return DataError(f"{message}\nthe training so far (epoch {state.epoch + 1}, batch {state.batch}) is "
                     f"saved in {path}: fix or remove that video (or set data.on_error=skip) and "
                     "continue with --resume auto")


def _validate_epoch(run: Run, epoch: int, record: dict) -> bool:
    """Validation metrics into ``record`` (where due); returns whether the epoch is the best."""
    cfg, state = run.cfg, run.state
    if (epoch + 1) % cfg.train.eval_every and epoch + 1 != cfg.optim.epochs:
        return False
    val = validate(run.accelerator, run.model, run.val_loader, run.val_set, cfg.train.progress)
    record.update({f"val_{k}": v for k, v in val.items()})
    score = val["top1"]
    if run.ema is not None:
        ema_val = validate(run.accelerator, run.ema.module, run.val_loader, run.val_set,
                           cfg.train.progress)
        record.update({f"val_ema_{k}": v for k, v in ema_val.items()})
        if cfg.eval.use_ema:
            score = ema_val["top1"]
    if score <= state.best_top1:
        return False
    state.best_top1, state.best_epoch = score, epoch
    return True


def _end_epoch(run: Run, epoch: int, record: dict, improved: bool, log: MetricsLog | None) -> None:
    """best/ if improved, the metrics record, the epoch checkpoint and the epoch line."""
    accelerator, state = run.accelerator, run.state
    state.epoch, state.batch, state.loss_sum, state.loss_count, state.train_time = epoch + 1, 0, 0.0, 0, 0.0
    if accelerator.is_main_process:
        if improved:
            unwrapped = accelerator.unwrap_model(run.model)
            ema = run.ema.module if run.ema is not None else None
            write_atomically(run.ckpt_root / "best",
                             lambda tmp: (save_weights(tmp, unwrapped, ema, {"epoch": epoch, **record}),
                                          describe_best(tmp, run.cfg, run.train_set, epoch, record)))
        log.write(record)
    run.save()
    val_text = (f"val top1 {record['val_top1']:.2f} top5 {record['val_top5']:.2f} "
                if "val_top1" in record else "")
    skip_text = (f"skipped train {record['train_skipped']} val {record['val_skipped']}  "
                 if run.cfg.data.on_error == "skip" else "")
    if run.cfg.data.short_clips == "pad":
        skip_text += f"padded train {record['train_padded']} val {record['val_padded']}  "
    accelerator.print(f"epoch {epoch + 1}/{run.cfg.optim.epochs}  loss {record['train_loss']:.4f}  "
                      f"lr (largest group) {record['lr']:.2e}  {val_text}best {state.best_top1:.2f}  {skip_text}"
                      f"({record['epoch_time']:.1f} s, {record['samples_per_s']:.1f} clips/s)")


def _train(accelerator: Accelerator, cfg: Config) -> dict:
    out = Path(cfg.train.output_dir)
    resume_from = _resume_point(cfg)
    continuing = rundir.claim_for(accelerator, cfg, resume_from)
    train_set, val_set = _prepare_data(accelerator, cfg)
    rundir.check_identity(accelerator, cfg, resume_from, train_set, continuing)
    run = _build_run(accelerator, cfg, train_set, val_set)
    _restore(run, resume_from)
    if resume_from is not None:
        rundir.report_changes(accelerator, cfg, run.state.batches_total, run.state.epoch)
    log = MetricsLog(out, accelerator, cfg.to_dict()) if accelerator.is_main_process else None
    if log is not None:
        log.truncate(run.state.epoch)

    record: dict = {}
    with run.stop.installed():
        for epoch in range(run.state.epoch, cfg.optim.epochs):
            started = time.perf_counter() - run.state.train_time
            record = _train_epoch(run, epoch)
            improved = _validate_epoch(run, epoch, record)
            record.update({"epoch_time": time.perf_counter() - started,
                           **{f"{split}_skipped": n for split, n in run.skipped().items()},
                           **{f"{split}_padded": n for split, n in run.padded().items()}})
            _end_epoch(run, epoch, record, improved, log)
            run.stop_if_asked(saved=True)
    if log is not None:
        log.close()

    summary = None
    if cfg.eval.after_train and (run.ckpt_root / "best").exists():
        summary = run_evaluation(accelerator, cfg, run.ckpt_root / "best")
    if not record and (out / "metrics.jsonl").is_file():  # resumed after the last epoch
        record = read_metrics(out)[-1]
    skipped, padded = run.skipped(), run.padded()
    if cfg.data.on_error == "skip":
        accelerator.print(f"unreadable videos skipped: train {skipped['train']} of {len(train_set)}, "
                          f"val {skipped['val']} of {len(val_set)}")
    if cfg.data.short_clips == "pad":
        accelerator.print(f"short videos padded with repeated frames: train {padded['train']} of "
                          f"{len(train_set)}, val {padded['val']} of {len(val_set)}")
    return {"output_dir": str(out), "best_top1": run.state.best_top1, "best_epoch": run.state.best_epoch,
            "last": record, "skipped": skipped, "padded": padded, "eval": summary}
