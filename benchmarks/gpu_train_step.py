"""Training throughput of the reference configuration on one CUDA GPU, and the loader it needs.

    python benchmarks/gpu_train_step.py [--batch auto|N] [--steps 20] [--warmup 5]

ViT-B/16 CLIP, 8 frames, 224^2, 174 classes, TokenT1D + ATM(mul, sub) after 7 of its 12 blocks: one
training step = bf16 autocast forward (PyTorch SDPA attention), cross-entropy, backward, AdamW
step, with fp32 master weights (what Accelerate's ``mixed_precision="bf16"`` does). Measured
eager and with ``torch.compile``, at the largest batch that fits (doubling, then the largest
multiple of 8 below the first failure), giving clips/s, peak memory and model FLOP utilisation
(MFU): 3 x fvcore's forward MACs x 2 FLOP per MAC per clip, over this GPU's bf16 matmul rate
measured in the same run (8192^3 ``torch.mm``). Then the decord loader's clips/s with one
worker process (one CPU core) on 240p H.264 clips with the SS-V2 training transforms, and how
many cores that makes per GPU. Without a CUDA device only the loader is measured (it needs no GPU);
the GPU figures are recorded as not measured.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import timm
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import common

import atm_core  # noqa: F401  (registers the video models with timm)

MODEL = "atm_vit_base_patch16_clip_224"
FRAMES, CLASSES, SIZE = 8, 174, 224


def build() -> torch.nn.Module:
    timm.layers.set_fused_attn(True)  # F.scaled_dot_product_attention in every attention
    return timm.create_model(MODEL, pretrained=False, num_frames=FRAMES, num_classes=CLASSES,
                             temporal="tokent1d", atm=dict(ops=("mul", "sub"))).cuda().train()


def make_step(model: torch.nn.Module, compiled: bool):
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.05, fused=True)
    forward = torch.compile(model) if compiled else model

    def step(clips: torch.Tensor, labels: torch.Tensor) -> None:
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = F.cross_entropy(forward(clips), labels)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def batch_fits(compiled: bool, batch: int) -> bool:
    model = build()
    step = make_step(model, compiled)
    try:
        clips, labels = random_batch(batch)
        for _ in range(2):
            step(clips, labels)
        torch.cuda.synchronize()
        return True
    except torch.OutOfMemoryError:
        return False
    finally:
        del model, step
        torch.cuda.empty_cache()


def largest_batch(compiled: bool) -> int:
    batch = 8
    if not batch_fits(compiled, batch):
        raise RuntimeError("a batch of 8 clips does not fit on this GPU")
    while batch_fits(compiled, batch * 2):
        batch *= 2
    low, high = batch, batch * 2  # fits, does not fit
    while high - low > 8:
        mid = (low + high) // 16 * 8
        low, high = (mid, high) if batch_fits(compiled, mid) else (low, mid)
    return low


def random_batch(batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    clips = torch.randn(batch, FRAMES, 3, SIZE, SIZE, device="cuda")
    return clips, torch.randint(0, CLASSES, (batch,), device="cuda")


def measure(compiled: bool, batch: int, steps: int, warmup: int) -> dict:
    model = build()
    step = make_step(model, compiled)
    clips, labels = random_batch(batch)
    for _ in range(warmup):
        step(clips, labels)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(steps):
        step(clips, labels)
    torch.cuda.synchronize()
    seconds = (time.perf_counter() - start) / steps
    result = {"batch": batch, "step_s": seconds, "clips_per_s": batch / seconds,
              "peak_gib": torch.cuda.max_memory_allocated() / 2**30}
    del model, step
    torch.cuda.empty_cache()
    return result


def bf16_matmul_tflops(size: int = 8192, repeats: int = 20) -> float:
    a = torch.randn(size, size, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(size, size, device="cuda", dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    torch.cuda.synchronize()
    return 2 * size**3 * repeats / (time.perf_counter() - start) / 1e12


def forward_gmac_per_clip() -> float:
    from fvcore.nn import FlopCountAnalysis

    model = timm.create_model(MODEL, pretrained=False, num_frames=FRAMES, num_classes=CLASSES,
                              temporal="tokent1d", atm=dict(ops=("mul", "sub"))).eval()
    analysis = FlopCountAnalysis(model, (torch.randn(1, FRAMES, 3, SIZE, SIZE),))
    analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
    return analysis.total() / 1e9


def loader_clips_per_core(clips: int) -> float:
    from data_loader import clips_per_second

    from atm_core.data import generate_benchmark

    with tempfile.TemporaryDirectory() as tmp:
        per_class = -(-(clips + 16) // 12)
        generate_benchmark(tmp, seed=0, train_per_class=per_class, val_per_class=1, size=240,
                           num_frames=48)
        return clips_per_second(Path(tmp), "decord", workers=1, clips=clips, batch_size=8,
                                input_size=SIZE, num_frames=FRAMES)


LOADER_TITLE = "decord loader, one worker process, 240p H.264, SS-V2 train transforms"


def not_measured(args, applied: dict, reason: str) -> None:
    loader = loader_clips_per_core(args.loader_clips)
    last = f"not measured: {reason}; loader_clips_per_s_per_core={loader:.1f}"
    common.save(args.name, {
        "title": "Training step on one GPU (bf16, SDPA), eager and torch.compile",
        "machine": common.machine(applied),
        "tables": [{"title": LOADER_TITLE, "columns": ["clips/s per core"], "rows": [[loader]]}],
        "notes": [f"No GPU figures: {reason}. The loader figure is this machine's CPU; run this "
                  "script on a CUDA machine for the training step and the cores per GPU."],
        "summary": last,
    })
    print(last)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", default="auto", help="clips per step, or auto (largest)")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--loader-clips", type=int, default=96)
    parser.add_argument("--name", default="gpu_train_step", help="record name under results/bench/")
    args = parser.parse_args()

    applied = {"threads": torch.get_num_threads(), "malloc": "glibc defaults"}
    if not torch.cuda.is_available():
        not_measured(args, applied, "no GPU lent (torch.cuda.is_available() is False)")
        return
    device = torch.cuda.get_device_name()
    applied["gpu"] = device
    machine = common.machine(applied)
    machine["versions"].update(cuda=torch.version.cuda, cudnn=torch.backends.cudnn.version())
    peak = bf16_matmul_tflops()
    gflop_per_clip = 3 * 2 * forward_gmac_per_clip()
    rows, mfu = [], {}
    for compiled in (False, True):
        batch = largest_batch(compiled) if args.batch == "auto" else int(args.batch)
        r = measure(compiled, batch, args.steps, args.warmup)
        achieved = r["clips_per_s"] * gflop_per_clip / 1e3
        mfu[compiled] = achieved / peak
        rows.append(["torch.compile" if compiled else "eager", r["batch"], r["step_s"],
                     r["clips_per_s"], r["peak_gib"], achieved, f"{mfu[compiled]:.0%}"])
        print(rows[-1], flush=True)
    loader = loader_clips_per_core(args.loader_clips)
    best = max(row[3] for row in rows)
    cores = best / loader
    last = (f"mfu_eager={mfu[False]:.2f} mfu_compiled={mfu[True]:.2f} "
            f"clips_per_s={best:.1f} loader_clips_per_s_per_core={loader:.1f} "
            f"cores_per_gpu={cores:.1f}")
    common.save(args.name, {
        "title": "Training step on one GPU (bf16, SDPA), eager and torch.compile",
        "machine": machine,
        "tables": [
            {"title": f"{device}: measured bf16 matmul rate {peak:.0f} TFLOP/s; model "
                      f"{gflop_per_clip:.0f} GFLOP per clip per training step",
             "columns": ["mode", "batch", "step (s)", "clips/s", "peak memory (GiB)",
                         "TFLOP/s", "MFU"], "rows": rows},
            {"title": LOADER_TITLE,
             "columns": ["clips/s per core", "cores per GPU at the best clips/s"],
             "rows": [[loader, cores]]},
        ],
        "summary": last,
    })
    print(last)


if __name__ == "__main__":
    main()
