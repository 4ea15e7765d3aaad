"""A run directory belongs to one run: who holds it, whether a start may use it, what the run is.

Files beside the run's outputs (``train.output_dir``):
    .lock            an OS lock (``filelock``) held by the training for its lifetime; the OS
                     releases it when the process dies, so a killed run never blocks its resume
    .lock.holder     who holds it (pid, host, start time), for the refusal message
    identity.json    what the checkpoints are weights of (model and data settings, classes, input
                     size), written once at the start; a resume must match it
    config.yaml      the resolved configuration of the start, never rewritten
    changes.jsonl    settings a resume changed (``{"step", "epoch", "changes": {key: [old, new]}}``)
"""
from __future__ import annotations

import datetime
import json
import os
import shutil
import socket
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import yaml
from accelerate import Accelerator
from accelerate.utils import broadcast_object_list
from filelock import FileLock, Timeout

from .checkpoint import step_dirs
from .config import Config, ConfigError

LOCK, HOLDER = ".lock", ".lock.holder"
IDENTITY, CONFIG, CHANGES = "identity.json", "config.yaml", "changes.jsonl"
# what a fresh start (train.overwrite=true) removes: everything a run writes but the preflight cache
RUN_OUTPUTS = ("checkpoints", "metrics.jsonl", "tensorboard", "eval", IDENTITY, CONFIG, CHANGES)
# settings that decide what the weights are and what data they fit: a resume may not change them
IDENTITY_KEYS = ("model.name", "model.img_size", "model.temporal", "model.atm.ops",
                 "model.atm.after_blocks", "model.atm.residual", "model.atm.hidden", "model.atm.width",
                 "model.atm.context", "model.atm.window", "model.atm.downsample", "model.conv_stem",
                 "model.kwargs", "data.dataset", "data.num_frames", "data.num_sample")
# sections flattened key by key, so that a change names the setting (model.atm.ops, not model.atm)
NESTED = ("model.atm",)
# settings that say nothing about the run itself
NOT_RECORDED = ("train.resume", "train.overwrite")


class RunDirError(ConfigError):
    """The run directory is held by another training or holds another run."""


def _as_read_back(value):
    """``value`` as YAML and JSON read it back: tuples as lists."""
    if isinstance(value, (list, tuple)):
        return [_as_read_back(v) for v in value]
    if isinstance(value, dict):
        return {k: _as_read_back(v) for k, v in value.items()}
    return value


def _flat(mapping: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in mapping.items():
        name = f"{prefix}{key}"
        if name in NESTED and isinstance(value, dict):
            flat.update(_flat(value, name + "."))
        else:
            flat[name] = _as_read_back(value)
    return flat


def flat_config(cfg: Config) -> dict:
    """``{"section.key": value}`` of every setting (lists, not tuples, as YAML reads them back)."""
    return {k: v for section, values in cfg.to_dict().items() for k, v in _flat(values, section + ".").items()}


def run_identity(cfg: Config, classes: list[str], input_size: int, sampling: str, dense_stride: int) -> dict:
    """What a run's weights are: the model and data settings and what the data resolved to."""
    flat = flat_config(cfg)
    resolved = {"classes": list(classes), "input_size": input_size, "sampling": sampling}
    if sampling == "dense":
        resolved["dense_stride"] = dense_stride
    return {**{k: flat[k] for k in IDENTITY_KEYS}, **resolved}


def _holder_text(out: Path) -> str:
    try:
        holder = json.loads((out / HOLDER).read_text())
        return f"pid {holder['pid']} on {holder['host']}, started {holder['started']}"
    except (OSError, ValueError, KeyError):
        return "holder unknown"


@contextmanager
def hold(out: Path) -> Iterator[None]:
    """Hold ``out`` exclusively for the body; refused in one line naming the holder. A directory
    created here and left without outputs is removed again."""
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(out / LOCK))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise RunDirError(f"train.output_dir {out} is in use by another training ({_holder_text(out)}): "
                          "wait for it to end, or choose another train.output_dir") from None
    try:
        started = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        (out / HOLDER).write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                              "started": started}))
        yield
    finally:
        (out / HOLDER).unlink(missing_ok=True)
        lock.release()
        if created and {p.name for p in out.iterdir()} <= {LOCK}:
            (out / LOCK).unlink(missing_ok=True)
            out.rmdir()


def on_main(accelerator: Accelerator, check: Callable[[], None]) -> None:
    """``check()`` on the main process; a :class:`RunDirError` it raises is raised on every
    process (the others would otherwise wait for the main one forever)."""
    problem = None
    if accelerator.is_main_process:
        try:
            check()
        except RunDirError as e:
            problem = str(e)
    if accelerator.num_processes > 1:
        box = [problem]
        broadcast_object_list(box)
        problem = box[0]
    if problem is not None:
        raise RunDirError(problem)


@contextmanager
def owned(accelerator: Accelerator, out: Path) -> Iterator[None]:
    """:func:`hold` ``out`` on the main process for the body, refused on every process."""
    with ExitStack() as stack:
        on_main(accelerator, lambda: stack.enter_context(hold(out)))
        yield


def previous_run(out: Path) -> list[str]:
    """What of another run ``out`` holds: its checkpoints and epoch records."""
    found = [f"checkpoints/{p.name}" for p in step_dirs(out / "checkpoints")]
    if (out / "checkpoints" / "best").exists():
        found.append("checkpoints/best")
    metrics = out / "metrics.jsonl"
    if metrics.is_file() and metrics.read_text().strip():
        epochs = sum(1 for line in metrics.read_text().splitlines() if line.strip())
        found.append(f"metrics.jsonl ({epochs} epoch record(s))")
    return found


def claim(out: Path, overwrite: bool, continuing: bool) -> None:
    """A start that does not continue the run of ``out`` needs it empty of runs: with
    ``overwrite`` the old run's outputs are removed, without it the start is refused."""
    if continuing:
        return
    found = previous_run(out)
    if found and not overwrite:
        shown = ", ".join(found[:3]) + (f" and {len(found) - 3} more" if len(found) > 3 else "")
        raise RunDirError(f"train.output_dir {out} holds another run ({shown}): continue it with "
                          "--resume auto, start over with train.overwrite=true (removes it), or "
                          "choose another train.output_dir")
    if overwrite:
        for name in RUN_OUTPUTS:
            path = out / name
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)


def start(out: Path, cfg: Config, identity: dict) -> None:
    """Record a new run: its configuration and identity, once."""
    cfg.to_yaml(out / CONFIG)
    (out / IDENTITY).write_text(json.dumps(identity, indent=1))


def _describe(value) -> str:
    return json.dumps(value) if not isinstance(value, str) else value


def check_resume(run_dir: Path, identity: dict) -> None:
    """Refuse a resume whose model or data differ from the run that wrote the checkpoint."""
    path = run_dir / IDENTITY
    if not path.is_file():
        return  # a run from before identities were recorded
    saved = json.loads(path.read_text())
    differences = [f"{key} {_describe(saved.get(key))} -> {_describe(identity.get(key))}"
                   for key in sorted(set(saved) | set(identity)) if saved.get(key) != identity.get(key)]
    if differences:
        shown = "; ".join(d if len(d) < 160 else d[:157] + "..." for d in differences)
        raise RunDirError(f"cannot resume the run of {run_dir} with another model or data: {shown} "
                          f"(its settings are in {run_dir / CONFIG}; start a new run in another "
                          "train.output_dir to train these)")


def effective_config(out: Path) -> dict | None:
    """The flat settings the run of ``out`` trains with now: its start's, with the recorded changes."""
    if not (out / CONFIG).is_file():
        return None
    saved = yaml.safe_load((out / CONFIG).read_text()) or {}  # as written: not re-checked against today's files
    flat = {k: v for section, values in saved.items() for k, v in _flat(values, section + ".").items()}
    if (out / CHANGES).is_file():
        for line in (out / CHANGES).read_text().splitlines():
            if line.strip():
                flat.update({k: new for k, (_, new) in json.loads(line)["changes"].items()})
    return flat


def record_changes(out: Path, cfg: Config, step: int, epoch: int) -> dict:
    """Append the settings this resume changed (with the step from which they apply) to
    ``changes.jsonl``; returns them (``{key: [old, new]}``)."""
    before = effective_config(out)
    if before is None:
        return {}
    now = flat_config(cfg)
    changes = {k: [before.get(k), v] for k, v in now.items()
               if k not in NOT_RECORDED and before.get(k) != v}
    if changes:
        with (out / CHANGES).open("a") as f:
            f.write(json.dumps({"step": step, "epoch": epoch, "changes": changes}) + "\n")
    return changes


def checkpoint_run_dir(checkpoint: Path) -> Path | None:
    """The run directory that wrote ``checkpoint`` (``<run>/checkpoints/<name>[/file]``), if any."""
    for parent in (checkpoint.parent, checkpoint.parent.parent):
        if parent.name == "checkpoints" and (parent.parent / IDENTITY).is_file():
            return parent.parent
    return None


def built_for(checkpoint: Path) -> dict | None:
    """The identity of the run that wrote ``checkpoint``, when it is known."""
    run_dir = checkpoint_run_dir(checkpoint)
    return json.loads((run_dir / IDENTITY).read_text()) if run_dir is not None else None



# ---------------------------------------------------------------- what the trainer calls

def claim_for(accelerator: Accelerator, cfg: Config, resume_from: Path | None) -> bool:
    """Refuse a start that would mix with another run in ``train.output_dir`` (on every
    process); returns whether this start continues the run there."""
    out = Path(cfg.train.output_dir)
    continuing = resume_from is not None and resume_from.parent.resolve() == (out / "checkpoints").resolve()
    # "auto" with nothing to resume restarts this directory's own run from scratch
    overwrite = cfg.train.overwrite or (cfg.train.resume == "auto" and resume_from is None)
    on_main(accelerator, lambda: claim(out, overwrite, continuing))
    return continuing


def check_identity(accelerator: Accelerator, cfg: Config, resume_from: Path | None, train_set,
                   continuing: bool) -> None:
    """Refuse a resume with another model or data than its checkpoint's run (``train_set``: the
    training dataset, which says what the data resolved to); record a new run's start."""
    out = Path(cfg.train.output_dir)
    identity = run_identity(cfg, train_set.classes, train_set.transform.input_size, train_set.sampling,
                            train_set.dense_stride)
    if resume_from is not None:
        check_resume(resume_from.parent.parent, identity)
    if accelerator.is_main_process and (not continuing or not (out / CONFIG).is_file()):
        start(out, cfg, identity)
    accelerator.wait_for_everyone()


def report_changes(accelerator: Accelerator, cfg: Config, step: int, epoch: int) -> None:
    """Record and print the settings a resume changed (main process)."""
    out = Path(cfg.train.output_dir)
    if not accelerator.is_main_process:
        return
    changes = record_changes(out, cfg, step, epoch)
    if changes:
        listed = ", ".join(f"{k} {old} -> {new}" for k, (old, new) in changes.items())
        accelerator.print(f"settings changed from step {step} on: {listed} (recorded in {out / CHANGES})")
