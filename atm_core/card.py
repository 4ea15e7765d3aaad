"""Model card: parameters and G(MAC) per clip of every registered video model.

    python -m atm_core.card                       # all models -> results/model_card.md
    python -m atm_core.card --models atm_vit_tiny_patch8_64 --out /tmp/card.md

MACs are counted by fvcore (one multiply-add = 1), which traces the model on one clip.
Two counting choices, both stated on the card:

* fvcore skips ``aten::scaled_dot_product_attention``; a handle here counts its two
  products, ``QK^T`` and ``AV``: ``2 * N^2 * C`` per frame and block. The card shows
  totals with and without them (the reference's 139.4 G is without).
* An ATM block is counted as the operation it defines -- its convolutions at their true
  input sizes (fvcore on each conv stack) plus ``D * W^2`` multiply-adds per frame pair
  and position for the local correlation of ``mul`` -- rather than the CPU kernels
  :mod:`atm_core.atm` runs (a basis-matrix first encoder conv, a correlation batched over
  time-padded frames), whose traced counts include work on padding.

``count_macs(model, inputs)`` is the function notebooks reuse for their tables.
"""
from __future__ import annotations

import argparse
import fnmatch
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from math import prod
from pathlib import Path
from typing import Any, Iterator, Sequence

import timm
import torch
import torch.nn as nn
from fvcore.nn import FlopCountAnalysis
from fvcore.nn.jit_handles import get_shape

from .atm import ATMBlock
from .models import SPECS

DEFAULT_OUT = Path(__file__).resolve().parents[1] / "results" / "model_card.md"

# Read off the reference implementation with fvcore (DESIGN.md section 2).
REFERENCE_MODEL = "atm_vit_base_patch16_clip_224"
REFERENCE = {"params": 87_884_346, "atm_gmac": 4.48, "gmac_no_attention": 139.4, "gmac": 145.1}


def sdpa_macs(inputs: list[Any], outputs: list[Any]) -> int:
    """fvcore handle for ``aten::scaled_dot_product_attention``: ``QK^T`` plus ``AV``."""
    q, k, v = (get_shape(i) for i in inputs[:3])
    rows = prod(q[:-1])  # batch * heads * queries
    return rows * k[-2] * q[-1] + rows * k[-2] * v[-1]


def _analysis(module: nn.Module, x: torch.Tensor) -> FlopCountAnalysis:
    analysis = FlopCountAnalysis(module, (x,)).set_op_handle("aten::scaled_dot_product_attention", sdpa_macs)
    return analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False).tracer_warnings("none")


def _fvcore_macs(module: nn.Module, x: torch.Tensor) -> int:
    return _analysis(module, x).total()


@dataclass
class ATMCount:
    macs: int  # the whole block
    correlation: int  # of which the local correlation of ``mul`` (0 for the other ops)
    dense_correlation: int  # what a dense (hw)x(hw) correlation, as the reference computes it, costs


@torch.no_grad()
def atm_block_macs(block: ATMBlock, shape: Sequence[int]) -> ATMCount:
    """MACs of one ATM block on a ``(B*T, C, H, W)`` input, counted as the layers it defines
    (in eval mode: BatchNorm as fvcore counts it at inference, running statistics untouched)."""
    was_training = block.training
    block.eval()
    try:
        return _atm_block_macs(block, shape)
    finally:
        block.train(was_training)


def _atm_block_macs(block: ATMBlock, shape: Sequence[int]) -> ATMCount:
    n, channels, height, width = shape
    x = torch.zeros(n, channels, height, width)
    macs = _fvcore_macs(block.reduce, x)
    hidden, h, w = block.reduce(x).shape[1:]
    pairs = n * block.context
    correlation = dense = 0
    cue_channels = hidden
    if block.encoder is not None:
        correlation = pairs * h * w * block.window ** 2 * hidden
        dense = pairs * (h * w) ** 2 * hidden
        patches = torch.zeros(pairs * h * w, 1, block.window, block.window)
        macs += _fvcore_macs(nn.Sequential(*block.encoder), patches)
        cue_channels = block.encoder[-1][0].out_channels
    macs += _fvcore_macs(block.transfer, torch.zeros(pairs, cue_channels, h, w))
    transferred = block.transfer[-1][0].out_channels
    macs += _fvcore_macs(block.fuse, torch.zeros(n, block.context * transferred, h, w))
    macs += _fvcore_macs(block.proj, torch.zeros(n, block.fuse[0].out_channels, h, w))
    return ATMCount(macs + correlation, correlation, dense)


@dataclass
class MacCount:
    """MACs of one forward pass. ``total`` includes attention products and ATM blocks."""

    total: int
    attention: int  # QK^T and AV of every attention call
    atm: int  # all ATM blocks
    correlation: int  # local correlation inside the ATM blocks
    dense_correlation: int  # the same correlation computed densely, as the reference does

    @property
    def without_attention(self) -> int:
        return self.total - self.attention

    @property
    def without_atm(self) -> int:
        return self.total - self.atm

    @property
    def atm_dense(self) -> int:
        """The ATM blocks with the reference's dense correlation count instead of the local one."""
        return self.atm - self.correlation + self.dense_correlation


def _as_input(inputs: torch.Tensor | Sequence[int]) -> torch.Tensor:
    if isinstance(inputs, torch.Tensor):
        return inputs
    return torch.randn(tuple(inputs), generator=torch.Generator().manual_seed(0))


class _Probe(nn.Identity):
    """Stands in for an ATM block while the model is traced; records the block's input shape."""

    def __init__(self):
        super().__init__()
        self.shape: tuple = ()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.shape = tuple(int(s) for s in x.shape)  # the tracer hands out sizes as 0-d tensors
        return x


@contextmanager
def _atm_probes(model: nn.Module) -> Iterator[list[tuple[ATMBlock, _Probe]]]:
    """Swap every ATM block of ``model`` for a shape probe (same output shape), then put them back."""
    slots = [(parent, name, child) for parent in model.modules()
             for name, child in parent.named_children() if isinstance(child, ATMBlock)]
    probes = [(block, _Probe()) for _, _, block in slots]
    try:
        for (parent, name, _), (_, probe) in zip(slots, probes):
            setattr(parent, name, probe)
        yield probes
    finally:
        for parent, name, block in slots:
            setattr(parent, name, block)


@torch.no_grad()
def mac_count(model: nn.Module, inputs: torch.Tensor | Sequence[int]) -> MacCount:
    """Count the MACs of ``model(inputs)`` in eval mode (``inputs``: a tensor or its shape).

    fvcore traces the model with its ATM blocks replaced by shape probes (a block returns
    its input's shape, so the rest of the trace is unchanged); each block is then counted
    by :func:`atm_block_macs` at the input shape it receives.
    """
    x = _as_input(inputs)
    was_training = model.training
    model.eval()
    try:
        with _atm_probes(model) as probes:
            analysis = _analysis(model, x)
            traced = analysis.total()
            attention = analysis.by_operator().get("scaled_dot_product_attention", 0)
        counts = [atm_block_macs(block, probe.shape) for block, probe in probes]
    finally:
        model.train(was_training)
    atm = sum(c.macs for c in counts)
    return MacCount(total=traced + atm, attention=attention, atm=atm,
                    correlation=sum(c.correlation for c in counts),
                    dense_correlation=sum(c.dense_correlation for c in counts))


def count_macs(model: nn.Module, inputs: torch.Tensor | Sequence[int], attention: bool = True) -> int:
    """MACs of ``model(inputs)``, with or without the attention products (see :func:`mac_count`)."""
    count = mac_count(model, inputs)
    return count.total if attention else count.without_attention


# ---------------------------------------------------------------- the card

def card_row(name: str) -> dict[str, Any]:
    """Parameters and G(MAC) per clip of model ``name`` at its default frames, size and modules."""
    model = timm.create_model(name)
    frames, size = model.num_frames, model.pretrained_cfg["input_size"]
    count = mac_count(model, (1, frames, *size))
    params = sum(p.numel() for p in model.parameters())
    atm_params = sum(p.numel() for p in model.atm.parameters()) if model.atm is not None else 0
    return dict(
        model=name, backbone=SPECS[name].arch, temporal=model.temporal_name,
        atm="+".join(model.atm.ops) if model.atm is not None else "-", atm_after_blocks=model.atm_after_blocks,
        frames=frames, size=f"{size[1]}x{size[2]}", classes=model.num_classes,
        params=params, params_no_atm=params - atm_params, atm_params=atm_params,
        gmac=count.total / 1e9, gmac_no_attention=count.without_attention / 1e9,
        gmac_no_atm=count.without_atm / 1e9, gmac_no_atm_no_attention=(count.without_atm - count.attention) / 1e9,
        atm_gmac=count.atm / 1e9, atm_dense_gmac=count.atm_dense / 1e9,
    )


def _pct(measured: float, reference: float) -> str:
    return f"{100 * (measured - reference) / reference:+.2f} %"


def render(rows: list[dict[str, Any]]) -> str:
    lines = [
        "# Model card",
        "",
        "Registered video models at their defaults (`timm.create_model(name)`): frames, input size, "
        "temporal module, ATM ops and position, classes. Parameters and fvcore G(MAC) per clip "
        "(one clip of `frames` frames; 1 MAC = one multiply-add). \"attn\" = the `QK^T` and `AV` "
        "products of attention, which fvcore skips unless given a handle. \"no ATM\" = the same model "
        "with `atm_ops=()`. Regenerate: `python -m atm_core.card`.",
        "",
        "| model | backbone | temporal | ATM (after blocks/stages) | frames | input | classes | params | "
        "params no ATM | G(MAC) | G(MAC) no attn | G(MAC) no ATM | G(MAC) no ATM, no attn | ATM G(MAC) |",
        "|---|---|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['backbone']} | {r['temporal']} | {r['atm']} ({r['atm_after_blocks']}) | {r['frames']} "
            f"| {r['size']} | {r['classes']} | {r['params']:,} | {r['params_no_atm']:,} | {r['gmac']:.2f} "
            f"| {r['gmac_no_attention']:.2f} | {r['gmac_no_atm']:.2f} | {r['gmac_no_atm_no_attention']:.2f} "
            f"| {r['atm_gmac']:.3f} |")
    lines += [
        "",
        "ATM blocks are counted as the layers they define: each convolution stack at its true input "
        "size, plus `D*W^2` multiply-adds per frame pair and position for the local correlation of "
        "`mul` (the kernels in `atm_core/atm.py` compute the same values with extra work on padding). "
        "Element-wise operations (activations, softmax, residual adds, the `add`/`sub`/`div` cues) "
        "are not counted, as fvcore does not count them.",
    ]
    ref = next((r for r in rows if r["model"] == REFERENCE_MODEL), None)
    if ref is not None:
        lines += [
            "",
            "## Reference configuration",
            "",
            "CLIP ViT-B/16 (QuickGELU), 8 frames at 224x224, T1D in every block, ATM(mul, sub) after "
            "7 of 12 blocks, 174 classes; reference figures measured with fvcore on the reference code "
            "(docs: `DESIGN.md` section 2).",
            "",
            "| quantity | this project | reference | difference |",
            "|---|---:|---:|---:|",
            f"| parameters | {ref['params']:,} | {REFERENCE['params']:,} | {ref['params'] - REFERENCE['params']:+,} |",
            f"| ATM(mul, sub) G(MAC), local correlation | {ref['atm_gmac']:.3f} | {REFERENCE['atm_gmac']} "
            f"| {_pct(ref['atm_gmac'], REFERENCE['atm_gmac'])} |",
            f"| ATM(mul, sub) G(MAC), correlation counted densely as the reference computes it "
            f"| {ref['atm_dense_gmac']:.3f} | {REFERENCE['atm_gmac']} | {_pct(ref['atm_dense_gmac'], REFERENCE['atm_gmac'])} |",
            f"| whole model G(MAC), no attention products | {ref['gmac_no_attention']:.2f} "
            f"| {REFERENCE['gmac_no_attention']} | {_pct(ref['gmac_no_attention'], REFERENCE['gmac_no_attention'])} |",
            f"| whole model G(MAC), with attention products | {ref['gmac']:.2f} | {REFERENCE['gmac']} "
            f"| {_pct(ref['gmac'], REFERENCE['gmac'])} |",
            "",
            "The reference computes the `mul` correlation as a dense `(hw) x (hw)` product per frame pair "
            "(`D*(hw)^2` MACs) and keeps the `W x W` window around the diagonal; this project computes "
            "only the window (`D*hw*W^2`), which is the whole difference in the ATM row.",
        ]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["*"],
                        help="registered model names or shell patterns (default: all)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="markdown file to write")
    args = parser.parse_args(argv)
    names = [n for n in SPECS if any(fnmatch.fnmatch(n, p) for p in args.models)]
    if not names:
        parser.error(f"no registered model matches {args.models}; known: {', '.join(SPECS)}")
    rows = []
    for name in names:
        tic = time.perf_counter()
        rows.append(card_row(name))
        print(f"{name}: {time.perf_counter() - tic:.0f} s", file=sys.stderr)
    text = render(rows)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
