"""The main job's training step on the CPU: the committed path against the current default.

    python benchmarks/train_step_cpu.py [--threads 1,2] [--repeats 5] [--models all|name,...]

One training step as the trainer runs it (forward, label-smoothed cross-entropy, backward,
gradient clipping at 1.0, AdamW step, gradients cleared) of each model of the main job, built
from its recipe (``params/synthetic_*.yaml``) at the recipe's batch size (``train.batch_size``) of
8 frames at 64^2, on random clips:

  committed  the path the main job ran before this benchmark existed: eager, fp32,
             ``model.atm.impl=cpu_fast`` (what ``auto`` chose on the CPU then);
  default    what a recipe runs now: eager, ``model.atm.impl=auto``, and the recipe's
             ``train.mixed_precision=auto`` decided for this CPU (bf16 autocast where it computes
             bf16 natively, else fp32).

Both are built from the same code with the same seed and weights. Before anything is timed, the
two are compared on one batch: logits and every parameter gradient (max abs difference over the
largest magnitude, at most ``TOLERANCE`` per tensor where both run fp32); where the default runs
bf16, whose 8-bit mantissa moves single gradient entries by up to tenths of their tensor's largest
magnitude, the logits within ``BF16_LOGITS`` and the cosine between the two whole gradients at
least ``BF16_COSINE``. Then, at each thread count, the two steps alternate
(A, B, B, A, ...) with a 2048^3 fp32 GEMM (the faster of MKL sgemm and oneDNN) timed in the same
repeats, and the table gives the median step time, clips/s, the step's GMAC/s (3 x fvcore's
forward MACs of one clip, the ATM blocks on their plain path, times the clips per second) and that
rate's share of the GEMM rate: the share of the machine's fp32 peak the model reaches.

The last line gives the 1-thread speed-ups (median of per-repeat ratios) of ATM(mul, sub) on the
tiny ViT and on the tiny ResNet and of TSN, and the share of peak of ATM(mul, sub) on the default
path.
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import common

from atm_core.macs import mac_count
from atm_core.engine.builders import build_model
from atm_core.engine.config import Config, load_config
from atm_core.engine.optim import build_optimizer
from atm_core.engine.runtime import inference_autocast, resolve_precision

PARAMS = common.ROOT / "params"
MODELS = {  # label -> recipe, the main job's trainings
    "tsn": "synthetic_tsn",
    "atm_sub": "synthetic_atm_sub",
    "atm_mul": "synthetic_atm_mul",
    "atm_mul_sub": "synthetic_atm_mul_sub",
    "resnet_tsn": "synthetic_resnet_tsn",
    "resnet_atm_mul_sub": "synthetic_resnet_atm_mul_sub",
    "textures_atm_mul_sub": "synthetic_textures_atm_mul_sub",
}
TOLERANCE = 1e-4  # fp32 paths: max abs difference over the largest magnitude
BF16_LOGITS, BF16_COSINE = 0.02, 0.97  # bf16 default against the fp32 committed path
FRAMES, SIZE, CLASSES = 8, 64, 12


@dataclass(frozen=True)
class StepPath:
    """How a step is computed: the ATM kernel choice (``model.atm.impl``) and the precision
    (``train.mixed_precision``; None: the recipe's)."""

    name: str
    atm_impl: str
    precision: str | None


COMMITTED = StepPath("committed", "cpu_fast", "no")
DEFAULT = StepPath("default", "auto", None)


def recipe(label: str, path: StepPath) -> Config:
    precision = [] if path.precision is None else [f"train.mixed_precision={path.precision}"]
    return resolve_precision(load_config(PARAMS / f"{MODELS[label]}.yaml",
                                         [f"model.atm.impl={path.atm_impl}", *precision]))


def build(label: str, path: StepPath, state: dict | None = None) -> tuple[nn.Module, torch.optim.Optimizer, Config]:
    """The recipe's model (seed 0, or ``state``'s weights) in train mode and its AdamW."""
    cfg = recipe(label, path)
    torch.manual_seed(0)
    model = build_model(cfg, CLASSES, SIZE).train()
    if state is not None:
        model.load_state_dict(state)
    return model, build_optimizer(model, cfg.optim, cfg.optim.lr * cfg.train.batch_size / 256), cfg


def batch(cfg: Config) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    clips = torch.randn(cfg.train.batch_size, FRAMES, 3, SIZE, SIZE, generator=generator)
    return clips, torch.randint(0, CLASSES, (cfg.train.batch_size,), generator=generator)


def loss_of(model: nn.Module, cfg: Config, clips: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    with inference_autocast(cfg, "cpu"):  # as Accelerate runs the forward; the loss in fp32
        logits = model(clips)
    return F.cross_entropy(logits.float(), labels, label_smoothing=cfg.loss.label_smoothing)


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, cfg: Config,
               clips: torch.Tensor, labels: torch.Tensor) -> Callable[[], None]:
    def step() -> None:
        loss_of(model, cfg, clips, labels).backward()
        nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.clip_grad)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return step


def relative_gap(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-12))


def compare(label: str) -> dict:
    """The two paths on one batch: ``worst`` (the largest relative gap of the logits or any
    gradient), ``logits`` (the logits' gap) and ``cosine`` (between the whole gradients); raises
    where they differ by more than their precision allows (module docstring)."""
    reference, _, cfg = build(label, COMMITTED)
    candidate, _, candidate_cfg = build(label, DEFAULT, reference.state_dict())
    clips, labels = batch(cfg)
    gaps = {}
    outputs = {}
    for name, model, model_cfg in (("committed", reference, cfg), ("default", candidate, candidate_cfg)):
        torch.manual_seed(1)
        with inference_autocast(model_cfg, "cpu"):
            logits = model(clips).float()
        F.cross_entropy(logits, labels, label_smoothing=cfg.loss.label_smoothing).backward()
        outputs[name] = logits.detach()
    gaps["logits"] = relative_gap(outputs["default"], outputs["committed"])
    for (name, p), q in zip(reference.named_parameters(), candidate.parameters()):
        if p.grad is not None:
            gaps[name] = relative_gap(q.grad, p.grad)
    worst = max(gaps, key=gaps.get)
    pairs = [(p.grad.flatten(), q.grad.flatten()) for p, q in zip(reference.parameters(), candidate.parameters())
             if p.grad is not None]
    cosine = float(F.cosine_similarity(torch.cat([p for p, _ in pairs]), torch.cat([q for _, q in pairs]), dim=0))
    if candidate_cfg.train.mixed_precision == "bf16":
        if gaps["logits"] > BF16_LOGITS or cosine < BF16_COSINE:
            raise AssertionError(f"{label}: the bf16 default differs from the committed fp32 path: "
                                 f"logits by {gaps['logits']:.2e} of their largest magnitude (at most "
                                 f"{BF16_LOGITS:g}), gradient cosine {cosine:.4f} (at least {BF16_COSINE:g})")
    elif gaps[worst] > TOLERANCE:
        raise AssertionError(f"{label}: default path differs from the committed one in {worst} by "
                             f"{gaps[worst]:.2e} of its largest magnitude (tolerance {TOLERANCE:g})")
    return {"worst": gaps[worst], "logits": gaps["logits"], "cosine": cosine}


def measure(label: str, threads: int, repeats: int, gemm: dict[str, Callable[[], object]],
            gemm_macs: int) -> dict:
    torch.set_num_threads(threads)
    steps, cfg = {}, None
    for path in (COMMITTED, DEFAULT):  # the same seed, so the same weights
        model, optimizer, cfg = build(label, path)
        steps[path.name] = train_step(model, optimizer, cfg, *batch(cfg))
    times = common.interleaved({**steps, **gemm}, repeats)
    gemm_rates = [max(gemm_macs / times[name][r] for name in gemm) / 1e9 for r in range(repeats)]
    return {"batch": cfg.train.batch_size, "precision": cfg.train.mixed_precision, "times": times,
            "gemm_gmac_s": gemm_rates}


def shares(times: list[float], gemm_rates: list[float], gmac_per_step: float) -> float:
    """Median over repeats of the step's GMAC/s over the GEMM rate of the same repeat."""
    return common.median([gmac_per_step / t / rate for t, rate in zip(times, gemm_rates)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", default="1,2", help="comma-separated thread counts")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--models", default="all", help=f"all, or some of {', '.join(MODELS)}")
    parser.add_argument("--malloc", choices=("keep", "default"), default="keep")
    parser.add_argument("--name", default="train_step_cpu", help="record name under results/bench/")
    args = parser.parse_args()
    labels = list(MODELS) if args.models == "all" else args.models.split(",")
    unknown = [label for label in labels if label not in MODELS]
    if unknown:
        parser.error(f"unknown model {unknown[0]!r}; choose from {', '.join(MODELS)}")
    thread_counts = [int(t) for t in args.threads.split(",")]
    applied = common.setup(max(thread_counts), args.malloc)
    applied["threads"] = args.threads
    load_start = common.load_average()
    gemm, gemm_macs = common.matmul_engines()

    rows, speedup, share = [], {}, {}
    for label in labels:
        gap = compare(label)
        model, _, cfg = build(label, COMMITTED)
        gmac_per_clip = 3 * mac_count(model, (1, FRAMES, 3, SIZE, SIZE)).total / 1e9
        for threads in thread_counts:
            r = measure(label, threads, args.repeats, gemm, gemm_macs)
            t = r["times"]
            gmac_step = gmac_per_clip * r["batch"]
            committed, default = common.median(t["committed"]), common.median(t["default"])
            speedup[label, threads] = common.paired_ratio(t["committed"], t["default"])
            share[label, threads] = shares(t["default"], r["gemm_gmac_s"], gmac_step)
            rows.append([label, threads, r["batch"], r["precision"], committed, default,
                         speedup[label, threads],
                         r["batch"] / default, gmac_step / default,
                         f"{shares(t['committed'], r['gemm_gmac_s'], gmac_step):.1%}",
                         f"{share[label, threads]:.1%}", common.median(r["gemm_gmac_s"]),
                         f"{gap['worst']:.1e}", f"{gap['logits']:.1e}", f"{gap['cosine']:.5f}"])
            print(rows[-1], flush=True)

    def one_thread(values: dict, label: str) -> str:
        return f"{values[label, 1]:.2f}" if (label, 1) in values else "nan"

    last = (f"speedup_atm_mul_sub={one_thread(speedup, 'atm_mul_sub')} "
            f"speedup_atm_mul_sub_resnet={one_thread(speedup, 'resnet_atm_mul_sub')} "
            f"speedup_tsn={one_thread(speedup, 'tsn')} "
            f"share_of_peak_atm_mul_sub={one_thread(share, 'atm_mul_sub')}")
    common.save(args.name, {
        "title": "Training step of the main job's models on the CPU: committed path and default",
        "machine": common.machine(applied),
        "load": [load_start, common.load_average()],
        "tables": [{
            "title": f"One training step (forward, cross-entropy, backward, clipping, AdamW) at the "
                     f"recipe's batch of 8-frame 64^2 clips; median of {args.repeats} interleaved "
                     f"repeats",
            "columns": ["model", "threads", "batch", "default precision", "committed step (s)",
                        "default step (s)",
                        "speed-up", "clips/s", "GMAC/s", "share of peak, committed",
                        "share of peak, default", "fp32 GEMM GMAC/s", "max gap", "logits gap",
                        "gradient cosine"],
            "rows": rows,
        }],
        "notes": [
            "committed: eager, fp32, model.atm.impl=cpu_fast (the main job's path before this "
            "benchmark); default: eager, model.atm.impl=auto, train.mixed_precision=auto as "
            "decided on this CPU (default precision: bf16 = bf16 autocast, no = fp32).",
            "share of peak is against the fp32 GEMM rate for both paths, also where the default "
            "runs bf16 products.",
            "GMAC/s: 3 x fvcore's forward MACs of one clip (ATM blocks counted on their plain path) "
            "times clips per second; share of peak: that over the faster fp32 2048^3 GEMM (MKL "
            "sgemm or oneDNN 1x1 conv) timed in the same repeats.",
            f"max gap: the largest difference between the two paths' logits or any parameter "
            f"gradient on one batch, over that tensor's largest magnitude (checked <= "
            f"{TOLERANCE:g} before timing where both run fp32); logits gap: the same for the "
            f"logits; gradient cosine: between the two paths' whole gradients. Where the default "
            f"runs bf16, the logits gap is checked <= {BF16_LOGITS:g} and the cosine >= "
            f"{BF16_COSINE:g} instead.",
            "speed-up: median over repeats of committed / default step time within the repeat.",
        ],
        "summary": last,
    })
    print(last)


if __name__ == "__main__":
    main()
