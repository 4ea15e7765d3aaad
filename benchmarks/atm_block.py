"""ATM block speed and correlation memory: ours against a naive formulation of the reference.

    python benchmarks/atm_block.py [--threads 2] [--repeats 15] [--malloc keep|default]

The naive formulation below is written here, from DESIGN §2, the way the reference computes
the block: Conv3d with (1, 3, 3) kernels and BatchNorm3d over (N, C, T, h, w) volumes,
explicit (frame, offset) pairs stacked in memory, and the correlation as a full (hw) x (hw)
product per pair followed by extraction of the W x W window around each position. It is loaded
with our block's weights (Conv2d kernels unsqueezed to Conv3d) and must give the same outputs
(max abs difference <= 1e-4 in fp32) and gradients before anything is timed.

Measured, for ATM(mul, sub) at four sizes (batch 1 clip of 8 frames):
  vit_b16   C=768,  14x14 tokens (ViT-B/16, 224^2)
  vit_l14   C=1024, 16x16 tokens (ViT-L/14, 224^2)
  r50_res3  C=512,  28x28 (ResNet-50 stage 2 output), downsample=True -> correlation at 14x14
  r50_res2  C=256,  56x56 (ResNet-50 stage 1 output), downsample=True -> correlation at 28x28
- forward: inference (eval mode, inference_mode), and the training forward (train mode, no grad);
- forward+backward: train mode, upstream gradient fixed, parameter gradients accumulated;
- work: fvcore's count of the naive formulation (the reference's MACs), so GMAC/s compares
  both against this machine's fp32 matmul rate: a 2048^3 GEMM of the faster engine timed in
  every repeat, interleaved with the blocks (the load of a shared machine drifts between
  repeats), the share being the median of the per-repeat shares;
- peak memory of the correlation alone (reduced map -> similarity volume, no grad) at map
  sides 14, 16, 28, 56, through the allocator events of the profiler.
ViT inputs are token grids viewed as maps (channels-last strides, as the models pass them);
ResNet inputs are contiguous NCHW. The last line is the summary.
"""
from __future__ import annotations

import argparse
import copy
import datetime
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
from atm_core.ops import clip_correlation

CONFIGS = {
    "vit_b16": {"channels": 768, "size": 14, "downsample": False, "tokens": True},
    "vit_l14": {"channels": 1024, "size": 16, "downsample": False, "tokens": True},
    "r50_res3": {"channels": 512, "size": 28, "downsample": True, "tokens": False},
    "r50_res2": {"channels": 256, "size": 56, "downsample": True, "tokens": False},
}
CORRELATION_SIDES = (14, 16, 28, 56)
FRAMES, CONTEXT, WINDOW, HIDDEN = 8, 5, 9, 64


# ---------------------------------------------------------------- the naive formulation

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
    """One ATM block as DESIGN §2 describes the reference: Conv3d over (N, C, T, h, w)."""

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
    """ATM(mul, sub) with every weight random (the projection is zero at init)."""
    atm = ATM(channels, FRAMES, ("mul", "sub"), downsample=downsample)
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


def check_equal(ours: nn.Module, naive: nn.Module, x: torch.Tensor) -> dict:
    """Outputs agree in fp32 (train and eval mode, max abs diff <= 1e-4). Gradients are compared
    in float64 copies: with random weights the fp32 gradients of either formulation carry
    rounding of order 1e-3 relative (BatchNorm in train mode over large activations), which
    would hide a real error; in float64 the two must agree to 1e-9 relative."""
    grad = torch.randn(x.shape)
    out = {name: _train_step(model, x, grad)[0] for name, model in (("ours", ours), ("naive", naive))}
    with torch.no_grad():
        evals = {name: model.eval()(x) for name, model in (("ours", ours), ("naive", naive))}
    forward = (out["ours"] - out["naive"]).abs().max().item()
    inference = (evals["ours"] - evals["naive"]).abs().max().item()
    grads = {name: _train_step(copy.deepcopy(model).double(), x.double(), grad.double())[1]
             for name, model in (("ours", ours), ("naive", naive))}
    n = grads["naive"]
    relative = max(((grads["ours"][k].reshape(n[k].shape) - n[k]).abs().max() / n[k].abs().max()).item()
                   for k in n)
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


def time_block(ours: nn.Module, naive: nn.Module, x: torch.Tensor, repeats: int,
               matmul: Callable[[], object]) -> dict:
    """Seconds per call of each mode of both blocks and of ``matmul``, interleaved."""
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
    for name, model in (("ours", ours), ("naive", naive)):
        fns[f"{name}_fwd"] = inference(model)
        fns[f"{name}_trainfwd"] = train_forward(model)
        fns[f"{name}_fwdbwd"] = train_step(model)
    return common.interleaved(fns, repeats)


def correlation_memory(side: int) -> dict:
    reduced = torch.randn(FRAMES, HIDDEN, side, side).contiguous(memory_format=torch.channels_last)
    volume = reduced.view(1, FRAMES, HIDDEN, side, side).transpose(1, 2)
    with torch.no_grad():
        ours = common.peak_bytes(lambda: clip_correlation(reduced, FRAMES, CONTEXT, WINDOW))
        naive = common.peak_bytes(lambda: naive_correlation(*naive_pairs(volume, CONTEXT), WINDOW))
    return {"side": side, "ours_mb": ours / 2**20, "naive_mb": naive / 2**20,
            "ratio": naive / ours}


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

    rows, checks, summary = [], [], {}
    for name in args.configs:
        cfg = CONFIGS[name]
        ours = randomised_atm(cfg["channels"], cfg["downsample"])
        naive = naive_like(ours, cfg["downsample"])
        x = block_input(cfg["channels"], cfg["size"], cfg["tokens"])
        check = check_equal(ours, naive, x)
        gmac = reference_gmac(naive, x)
        times = time_block(ours, naive, x, args.repeats, engines[fastest])
        med = {k: common.median(v) * 1e3 for k, v in times.items()}
        rate = [matmul_macs / t / 1e9 for t in times["matmul"]]  # GMAC/s in each repeat
        peak_rates.append(statistics.median(rate))
        speed_fwd = common.paired_ratio(times["naive_fwd"], times["ours_fwd"])
        speed_train_fwd = common.paired_ratio(times["naive_trainfwd"], times["ours_trainfwd"])
        speed_bwd = common.paired_ratio(times["naive_fwdbwd"], times["ours_fwdbwd"])
        share = statistics.median(gmac / t / r for t, r in zip(times["ours_fwd"], rate))
        share_naive = statistics.median(gmac / t / r for t, r in zip(times["naive_fwd"], rate))
        rows.append([name, cfg["channels"], f"{cfg['size']}x{cfg['size']}", cfg["downsample"],
                     gmac, med["ours_fwd"], med["naive_fwd"], speed_fwd,
                     med["ours_trainfwd"], med["naive_trainfwd"], speed_train_fwd,
                     med["ours_fwdbwd"], med["naive_fwdbwd"], speed_bwd,
                     f"{share:.0%}", f"{share_naive:.0%}"])
        checks.append([name, check["max_abs_diff_train"], check["max_abs_diff_eval"],
                       check["max_rel_grad_diff_float64"]])
        print(f"{name}: fwd {med['ours_fwd']:.1f} vs {med['naive_fwd']:.1f} ms ({speed_fwd:.2f}x), "
              f"train fwd {speed_train_fwd:.2f}x, fwd+bwd {med['ours_fwdbwd']:.1f} vs "
              f"{med['naive_fwdbwd']:.1f} ms ({speed_bwd:.2f}x), {gmac:.2f} GMAC, "
              f"{share:.0%} of matmul peak (naive {share_naive:.0%}); max diff "
              f"{check['max_abs_diff_train']:.1e}", flush=True)
        if name == "vit_b16":
            summary.update(speedup_fwd=speed_fwd, speedup_fwd_bwd=speed_bwd,
                           share_of_matmul_peak=share)

    memory = []
    for side in CORRELATION_SIDES:
        m = correlation_memory(side)
        memory.append([f"{side}x{side}", m["ours_mb"], m["naive_mb"], m["ratio"]])
        print(f"correlation {side}x{side}: ours {m['ours_mb']:.1f} MB, naive {m['naive_mb']:.1f} MB"
              f" ({m['ratio']:.1f}x)", flush=True)
        if side in (28, 56):
            summary[f"corr_memory_ratio_{side}"] = m["ratio"]

    last = " ".join(f"{k}={v:.2f}" for k, v in summary.items())
    record = {
        "title": "ATM(mul, sub) block: ours vs the naive reference formulation (CPU, fp32)",
        "command": common.command(),
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "machine": common.machine(applied),
        "load": [load_start, common.load_average()],
        "tables": [
            {"title": "fp32 matmul rate (GMAC/s), measured in the same run: each engine before the "
                      f"blocks; {fastest} again in every repeat beside them (median per config)",
             "columns": [*rates, *(f"{fastest} beside {name}" for name in args.configs)],
             "rows": [[*rates.values(), *peak_rates]]},
            {"title": f"Block time, batch of 1 clip x {FRAMES} frames (ms, medians of "
                      f"{args.repeats} interleaved repeats; speed-ups are medians of paired ratios)",
             "columns": ["config", "C", "map", "downsample", "GMAC (fvcore, naive)",
                         "ours fwd", "naive fwd", "fwd speed-up", "ours train fwd",
                         "naive train fwd", "train fwd speed-up", "ours fwd+bwd",
                         "naive fwd+bwd", "fwd+bwd speed-up", "ours share of matmul peak",
                         "naive share"],
             "rows": rows},
            {"title": "Agreement checked before timing (fp32; gradients relative to their max)",
             "columns": ["config", "max abs diff (train)", "max abs diff (eval)",
                         "max rel grad diff (float64)"], "rows": checks},
            {"title": f"Peak memory of the correlation alone ({FRAMES} frames, D={HIDDEN}, "
                      f"K={CONTEXT}, W={WINDOW}, no grad; MB through PyTorch's allocator)",
             "columns": ["map side", "ours", "naive", "naive / ours"], "rows": memory},
        ],
        "notes": [
            ("fwd = inference (eval mode, inference_mode); train fwd = train mode without "
             "autograd; fwd+bwd = train mode, forward and backward with a fixed upstream "
             "gradient."),
            ("share of matmul peak = fvcore GMAC of the naive formulation / ours fwd time / the "
             "fp32 GEMM rate of the faster engine in the same repeat; median over repeats."),
            "r50_* use downsample=True: the correlation runs at half the map side.",
        ],
        "summary": last,
    }
    common.save(args.name, record)
    print(last)


if __name__ == "__main__":
    main()
