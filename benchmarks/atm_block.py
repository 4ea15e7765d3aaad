"""ATM block speed and correlation memory: the project's two implementations and a naive baseline.

    python benchmarks/atm_block.py [--threads 2] [--repeats 15] [--malloc keep|default]

Side by side, in one process, with the same weights:
  cpu_fast  ATMBlock(impl="cpu_fast"), the kernels of atm_core.kernels (the default on CPU);
  plain     ATMBlock(impl="plain"), the modules as the paper describes them (the reference for
            tests; the default on other devices);
  naive     the block the way the reference code computes it, written here as the baseline: Conv3d
            with (1, 3, 3) kernels and BatchNorm3d over (N, C, T, h, w) volumes, explicit
            (frame, offset) pairs stacked in memory, and the correlation as a full (hw) x (hw)
            product per pair followed by extraction of the W x W window around each position.
Before anything is timed, cpu_fast and naive are checked against plain: outputs in fp32 (max abs
difference <= 1e-4, train and eval mode) and gradients in float64 copies (<= 1e-9 relative).

Measured, for ATM(mul, sub) at four sizes (batch 1 clip of 8 frames):
  vit_b16   C=768,  14x14 tokens (ViT-B/16, 224^2)
  vit_l14   C=1024, 16x16 tokens (ViT-L/14, 224^2)
  r50_res3  C=512,  28x28 (ResNet-50 stage 2 output), downsample=True -> correlation at 14x14
  r50_res2  C=256,  56x56 (ResNet-50 stage 1 output), downsample=True -> correlation at 28x28
- forward: inference (eval mode, inference_mode), and the training forward (train mode, no grad);
- forward+backward: train mode, upstream gradient fixed, parameter gradients accumulated;
- work: fvcore's count of the naive formulation (the reference's MACs), so GMAC/s compares the
  implementations against this machine's fp32 matmul rate: a 2048^3 GEMM of the faster engine
  timed in every repeat, interleaved with the blocks (the load of a shared machine drifts
  between repeats), the share being the median of the per-repeat shares;
- peak memory of the correlation alone (reduced map -> similarity volume, no grad) at map
  sides 14, 16, 28, 56, through the allocator events of the profiler.
ViT inputs are token grids viewed as maps (channels-last strides, as the models pass them);
ResNet inputs are contiguous NCHW. The last line is the summary (cpu_fast against naive).
"""
from __future__ import annotations

import argparse
import copy
import statistics
import sys
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import common

from atm_core import ATM
from atm_core.kernels import clip_correlation
from atm_core.ops import mul, pair_frames

CONFIGS = {
    "vit_b16": {"channels": 768, "size": 14, "downsample": False, "tokens": True},
    "vit_l14": {"channels": 1024, "size": 16, "downsample": False, "tokens": True},
    "r50_res3": {"channels": 512, "size": 28, "downsample": True, "tokens": False},
    "r50_res2": {"channels": 256, "size": 56, "downsample": True, "tokens": False},
}
CORRELATION_SIDES = (14, 16, 28, 56)
FRAMES, CONTEXT, WINDOW, HIDDEN = 8, 5, 9, 64
IMPLS = ("cpu_fast", "plain", "naive")


# ---------------------------------------------------------------- the naive baseline

def conv3d_bn_relu(cin: int, cout: int, stride: int = 1, padding=(0, 1, 1)) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv3d(cin, cout, (1, 3, 3), stride=(1, stride, stride), padding=padding, bias=False),
        nn.BatchNorm3d(cout),
        nn.ReLU(inplace=True),
    )


def naive_correlation(anchor: torch.Tensor, neighbour: torch.Tensor, window: int) -> torch.Tensor:
    """(n, D, h, w) pairs -> (n, W*W, h, w) through the full (hw) x (hw) product of each pair."""
    n, _, h, w = anchor.shape
    r = window // 2
    a = anchor / torch.sqrt(anchor.pow(2).sum(1, keepdim=True) + 1e-6)
    b = neighbour / torch.sqrt(neighbour.pow(2).sum(1, keepdim=True) + 1e-6)
    full = torch.matmul(a.flatten(2).transpose(1, 2), b.flatten(2))  # (n, hw, hw)
    ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    offsets = torch.arange(window) - r
    yy = ys.reshape(-1, 1, 1) + offsets.view(1, -1, 1)
    xx = xs.reshape(-1, 1, 1) + offsets.view(1, 1, -1)
    inside = ((yy >= 0) & (yy < h) & (xx >= 0) & (xx < w)).reshape(h * w, -1)
    index = (yy.clamp(0, h - 1) * w + xx.clamp(0, w - 1)).reshape(h * w, -1)
    volume = torch.gather(full, 2, index.expand(n, -1, -1)) * inside
    return volume.transpose(1, 2).reshape(n, window * window, h, w)


def naive_pairs(reduced: torch.Tensor, context: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, D, T, h, w) -> anchors and neighbours (B*T*K, D, h, w), pairs ordered (b, t, o)."""
    b, d, t, h, w = reduced.shape
    r = context // 2
    padded = F.pad(reduced, (0, 0, 0, 0, r, r))
    neighbours = torch.stack([padded[:, :, k : k + t] for k in range(context)], 3)  # (B,D,T,K,h,w)
    anchors = reduced.unsqueeze(3).expand_as(neighbours)
    flat = lambda v: v.permute(0, 2, 3, 1, 4, 5).reshape(b * t * context, d, h, w)
    return flat(anchors), flat(neighbours)


class NaiveBlock(nn.Module):
    """One ATM block computed the way the reference code computes it: Conv3d over (N, C, T, h, w)."""

    def __init__(self, channels: int, op: str, downsample: bool):
        super().__init__()
        self.op, self.downsample = op, downsample
        self.reduce = conv3d_bn_relu(channels, HIDDEN, 2 if downsample else 1)
        if op == "mul":
            self.encoder = nn.Sequential(conv3d_bn_relu(1, 4), conv3d_bn_relu(4, 16, 2),
                                         conv3d_bn_relu(16, 64, 2), conv3d_bn_relu(64, 64, 1, 0))
        self.transfer = nn.Sequential(conv3d_bn_relu(64 if op == "mul" else HIDDEN, 64),
                                      conv3d_bn_relu(64, 64))
        self.fuse = conv3d_bn_relu(CONTEXT * 64, 64)
        if downsample:
            self.proj = nn.ConvTranspose3d(64, channels, 1, stride=(1, 2, 2),
                                           output_padding=(0, 1, 1), bias=False)
        else:
            self.proj = nn.Conv3d(64, channels, 1, bias=False)

    def cue(self, reduced: torch.Tensor) -> torch.Tensor:
        """(B, D, T, h, w) -> (B*K, D', T, h, w)."""
        b, d, t, h, w = reduced.shape
        k = CONTEXT
        a, n = naive_pairs(reduced, k)
        if self.op == "mul":
            volume = naive_correlation(a, n, WINDOW).view(b, t, k, WINDOW, WINDOW, h, w)
            volume = volume.permute(0, 1, 5, 6, 2, 3, 4).reshape(b * t * h * w, 1, k, WINDOW, WINDOW)
            encoded = self.encoder(volume).view(b, t, h, w, 64, k)
            return encoded.permute(0, 5, 4, 1, 2, 3).reshape(b * k, 64, t, h, w)
        cues = {"add": lambda: n + a, "sub": lambda: n - a,
                "div": lambda: torch.log1p(n.abs()) - torch.log1p(a.abs())}
        cue = cues[self.op]().view(b, t, k, d, h, w)
        return cue.permute(0, 2, 3, 1, 4, 5).reshape(b * k, d, t, h, w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bt, c, height, width = x.shape
        b = bt // FRAMES
        reduced = self.reduce(x.view(b, FRAMES, c, height, width).transpose(1, 2))
        y = self.transfer(self.cue(reduced))
        y = self.proj(self.fuse(y.reshape(b, CONTEXT * 64, *y.shape[2:])))
        return torch.relu(x + y.transpose(1, 2).reshape(x.shape))


def plain_like(ours: ATM, downsample: bool) -> ATM:
    """The same ATM, weights and all, on the plain path."""
    plain = ATM(ours[0].proj.weight.shape[1 if downsample else 0], FRAMES, ours.ops,
                downsample=downsample, impl="plain")
    plain.load_state_dict(ours.state_dict())
    return plain


def naive_like(ours: ATM, downsample: bool) -> nn.Sequential:
    """A naive ATM with our weights: Conv2d kernels gain a time axis of size 1."""
    naive = nn.Sequential(*[NaiveBlock(block.proj.weight.shape[1 if downsample else 0],
                                       block.op, downsample) for block in ours])
    state = naive.state_dict()
    for key, value in ours.state_dict().items():
        state[key] = value.unsqueeze(2) if state[key].dim() == value.dim() + 1 else value
    naive.load_state_dict(state)
    return naive


# ---------------------------------------------------------------- measurements

def randomised_atm(channels: int, downsample: bool) -> ATM:
    """ATM(mul, sub) on the CPU kernels with every weight random (the projection is zero at init)."""
    atm = ATM(channels, FRAMES, ("mul", "sub"), downsample=downsample, impl="cpu_fast")
    with torch.no_grad():
        for name, p in atm.named_parameters():
            if name.endswith("proj.weight"):
                p.normal_(0, 0.02)
            elif p.dim() == 1:
                p.copy_(1 + 0.2 * torch.randn_like(p) if name.endswith("weight") else
                        0.2 * torch.randn_like(p))
    return atm


def block_input(channels: int, size: int, tokens: bool) -> torch.Tensor:
    if tokens:  # a ViT's patch tokens (B*T, N, C) folded into a grid, as the models do
        return torch.randn(FRAMES, size * size, channels).transpose(1, 2).view(
            FRAMES, channels, size, size)
    return torch.randn(FRAMES, channels, size, size)


def _train_step(model: nn.Module, x: torch.Tensor, grad: torch.Tensor) -> tuple[torch.Tensor, dict]:
    """Train-mode output and the gradients of the input and every parameter for ``grad``."""
    model.train()
    xi = x.detach().clone().requires_grad_()
    out = model(xi)
    out.backward(grad)
    grads = {"input": xi.grad, **{k: p.grad.clone() for k, p in model.named_parameters()}}
    model.zero_grad(set_to_none=True)
    return out.detach(), grads


def check_equal(model: nn.Module, plain: nn.Module, x: torch.Tensor) -> dict:
    """``model`` agrees with ``plain`` in fp32 (train and eval mode, max abs diff <= 1e-4).
    Gradients are compared in float64 copies: with random weights the fp32 gradients of either
    carry rounding of order 1e-3 relative (BatchNorm in train mode over large activations), which
    would hide a real error; in float64 they must agree to 1e-9 relative. Runs on copies: the
    train steps leave the models' running statistics as they were."""
    grad = torch.randn(x.shape)
    pair = (("model", copy.deepcopy(model)), ("plain", copy.deepcopy(plain)))
    out = {name: _train_step(m, x, grad)[0] for name, m in pair}
    with torch.no_grad():
        evals = {name: m.eval()(x) for name, m in pair}
    forward = (out["model"] - out["plain"]).abs().max().item()
    inference = (evals["model"] - evals["plain"]).abs().max().item()
    grads = {name: _train_step(copy.deepcopy(m).double(), x.double(), grad.double())[1] for name, m in pair}
    p = grads["plain"]
    relative = max(((grads["model"][k].reshape(p[k].shape) - p[k]).abs().max() / p[k].abs().max()).item()
                   for k in p)
    assert forward <= 1e-4 and inference <= 1e-4, (forward, inference)
    assert relative <= 1e-9, relative
    return {"max_abs_diff_train": forward, "max_abs_diff_eval": inference,
            "max_rel_grad_diff_float64": relative}


def reference_gmac(naive: nn.Module, x: torch.Tensor) -> float:
    from fvcore.nn import FlopCountAnalysis

    naive.eval()
    analysis = FlopCountAnalysis(naive, (x,))
    analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
    return analysis.total() / 1e9


def time_block(models: dict[str, nn.Module], x: torch.Tensor, repeats: int,
               matmul: Callable[[], object]) -> dict:
    """Seconds per call of each mode of every model and of ``matmul``, interleaved."""
    grad = torch.randn(x.shape)
    xg = x.detach().clone().requires_grad_()

    def inference(model):
        def run():
            model.eval()
            with torch.inference_mode():
                model(x)
        return run

    def train_forward(model):
        def run():
            model.train()
            with torch.no_grad():
                model(x)
        return run

    def train_step(model):
        def run():
            model.train()
            model(xg).backward(grad)
        return run

    fns = {"matmul": matmul}
    for name, model in models.items():
        fns[f"{name}_fwd"] = inference(model)
        fns[f"{name}_trainfwd"] = train_forward(model)
        fns[f"{name}_fwdbwd"] = train_step(model)
    return common.interleaved(fns, repeats)


def correlation_memory(side: int) -> dict:
    """Peak MB of each implementation's correlation (reduced map -> similarity volume)."""
    reduced = torch.randn(FRAMES, HIDDEN, side, side).contiguous(memory_format=torch.channels_last)
    volume = reduced.view(1, FRAMES, HIDDEN, side, side).transpose(1, 2)
    runs = {"cpu_fast": lambda: clip_correlation(reduced, FRAMES, CONTEXT, WINDOW),
            "plain": lambda: mul(*pair_frames(reduced, FRAMES, CONTEXT), WINDOW),
            "naive": lambda: naive_correlation(*naive_pairs(volume, CONTEXT), WINDOW)}
    with torch.no_grad():
        return {name: common.peak_bytes(run) / 2**20 for name, run in runs.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--malloc", choices=("keep", "default"), default="keep",
                        help="keep: glibc keeps freed memory (see common.setup)")
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--name", default="atm_block", help="record name under results/bench/")
    args = parser.parse_args()

    applied = common.setup(args.threads, args.malloc)
    load_start = common.load_average()
    engines, matmul_macs = common.matmul_engines()
    rates = common.matmul_rates(engines, matmul_macs)
    fastest = max(rates, key=rates.get)
    print("fp32 matmul GMAC/s: " + ", ".join(f"{k} {v:.1f}" for k, v in rates.items())
          + f"; {fastest} timed beside the blocks")
    peak_rates = []

    times_rows, speed_rows, checks, summary = [], [], [], {}
    for name in args.configs:
        cfg = CONFIGS[name]
        fast = randomised_atm(cfg["channels"], cfg["downsample"])
        models = {"cpu_fast": fast, "plain": plain_like(fast, cfg["downsample"]),
                  "naive": naive_like(fast, cfg["downsample"])}
        x = block_input(cfg["channels"], cfg["size"], cfg["tokens"])
        for impl in ("cpu_fast", "naive"):
            check = check_equal(models[impl], models["plain"], x)
            checks.append([name, f"{impl} vs plain", check["max_abs_diff_train"],
                           check["max_abs_diff_eval"], check["max_rel_grad_diff_float64"]])
        gmac = reference_gmac(models["naive"], x)
        times = time_block(models, x, args.repeats, engines[fastest])
        med = {k: common.median(v) * 1e3 for k, v in times.items()}
        rate = [matmul_macs / t / 1e9 for t in times["matmul"]]  # GMAC/s in each repeat
        peak_rates.append(statistics.median(rate))
        modes = ("fwd", "trainfwd", "fwdbwd")
        speed = {(impl, mode): common.paired_ratio(times[f"naive_{mode}"], times[f"{impl}_{mode}"])
                 for impl in ("cpu_fast", "plain") for mode in modes}
        share = {impl: statistics.median(gmac / t / r for t, r in zip(times[f"{impl}_fwd"], rate))
                 for impl in IMPLS}
        times_rows.append([name, cfg["channels"], f"{cfg['size']}x{cfg['size']}", cfg["downsample"], gmac,
                           *(med[f"{impl}_{mode}"] for mode in modes for impl in IMPLS)])
        speed_rows.append([name, *(speed[impl, mode] for impl in ("cpu_fast", "plain") for mode in modes),
                           *(f"{share[impl]:.0%}" for impl in IMPLS)])
        print(f"{name}: fwd ms cpu_fast {med['cpu_fast_fwd']:.1f}, plain {med['plain_fwd']:.1f}, naive "
              f"{med['naive_fwd']:.1f}; fwd+bwd ms {med['cpu_fast_fwdbwd']:.1f}, {med['plain_fwdbwd']:.1f}, "
              f"{med['naive_fwdbwd']:.1f}; cpu_fast vs naive fwd {speed['cpu_fast', 'fwd']:.2f}x, "
              f"fwd+bwd {speed['cpu_fast', 'fwdbwd']:.2f}x; {gmac:.2f} GMAC", flush=True)
        if name == "vit_b16":
            summary.update(speedup_fwd=speed["cpu_fast", "fwd"], speedup_fwd_bwd=speed["cpu_fast", "fwdbwd"],
                           plain_speedup_fwd=speed["plain", "fwd"],
                           plain_speedup_fwd_bwd=speed["plain", "fwdbwd"],
                           share_of_matmul_peak=share["cpu_fast"])

    memory = []
    for side in CORRELATION_SIDES:
        m = correlation_memory(side)
        memory.append([f"{side}x{side}", *(m[impl] for impl in IMPLS), m["naive"] / m["cpu_fast"],
                       m["naive"] / m["plain"]])
        print(f"correlation {side}x{side}: " + ", ".join(f"{impl} {m[impl]:.1f} MB" for impl in IMPLS),
              flush=True)
        if side in (28, 56):
            summary[f"corr_memory_ratio_{side}"] = m["naive"] / m["cpu_fast"]

    last = " ".join(f"{k}={v:.2f}" for k, v in summary.items())
    mode_names = {"fwd": "fwd", "trainfwd": "train fwd", "fwdbwd": "fwd+bwd"}
    record = {
        "title": "ATM(mul, sub) block: cpu_fast and plain implementations vs the naive reference "
                 "formulation (CPU, fp32)",
        "machine": common.machine(applied),
        "load": [load_start, common.load_average()],
        "tables": [
            {"title": "fp32 matmul rate (GMAC/s), measured in the same run: each engine before the "
                      f"blocks; {fastest} again in every repeat beside them (median per config)",
             "columns": [*rates, *(f"{fastest} beside {name}" for name in args.configs)],
             "rows": [[*rates.values(), *peak_rates]]},
            {"title": f"Block time, batch of 1 clip x {FRAMES} frames (ms, medians of "
                      f"{args.repeats} interleaved repeats)",
             "columns": ["config", "C", "map", "downsample", "GMAC (fvcore, naive)",
                         *(f"{impl} {mode_names[mode]}" for mode in modes for impl in IMPLS)],
             "rows": times_rows},
            {"title": "Speed-up over naive (medians of paired ratios) and share of the matmul peak",
             "columns": ["config", *(f"{impl} {mode_names[mode]}" for impl in ("cpu_fast", "plain")
                                     for mode in modes),
                         *(f"{impl} share of matmul peak" for impl in IMPLS)],
             "rows": speed_rows},
            {"title": "Agreement with plain, checked before timing (fp32; gradients relative to "
                      "their max, in float64)",
             "columns": ["config", "implementation", "max abs diff (train)", "max abs diff (eval)",
                         "max rel grad diff (float64)"], "rows": checks},
            {"title": f"Peak memory of the correlation alone ({FRAMES} frames, D={HIDDEN}, "
                      f"K={CONTEXT}, W={WINDOW}, no grad; MB through PyTorch's allocator)",
             "columns": ["map side", *IMPLS, "naive / cpu_fast", "naive / plain"], "rows": memory},
        ],
        "notes": [
            ("fwd = inference (eval mode, inference_mode); train fwd = train mode without "
             "autograd; fwd+bwd = train mode, forward and backward with a fixed upstream "
             "gradient."),
            ("share of matmul peak = fvcore GMAC of the naive formulation / fwd time / the "
             "fp32 GEMM rate of the faster engine in the same repeat; median over repeats."),
            "r50_* use downsample=True: the correlation runs at half the map side.",
        ],
        "summary": last,
    }
    common.save(args.name, record)
    print(last)


if __name__ == "__main__":
    main()
