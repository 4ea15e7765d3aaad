"""Model card: parameters and G(MAC) per clip of every registered video model.

    python -m atm_core.card                       # all models -> results/model_card.md
    python -m atm_core.card --models atm_vit_tiny_patch8_64 --out /tmp/card.md

MACs are counted by the rules of :mod:`atm_core.macs` (fvcore's), on models built on the meta
device: no weight is initialised and no product computed.

"""
from __future__ import annotations

import argparse
import fnmatch
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Sequence

import timm
import torch
import yaml

with warnings.catch_warnings():  # fvcore runs torch.jit.script at import, which torch deprecates
    warnings.filterwarnings("ignore", message="`torch.jit.script` is deprecated", category=FutureWarning)

from .macs import mac_count
from .models import SPECS

DEFAULT_OUT = Path(__file__).resolve().parents[1] / "results" / "model_card.md"

# Measured with fvcore on the reference implementation (docs/technical.md).
REFERENCE_MODEL = "atm_vit_base_patch16_clip_224"
REFERENCE = {"params": 87_884_346, "atm_gmac": 4.48, "gmac_no_attention": 139.4, "gmac": 145.1}


def _nested(settings: dict[str, Any]) -> dict[str, Any]:
    """``{"atm.context": 3}`` -> ``{"atm": {"context": 3}}``."""
    nested: dict[str, Any] = {}
    for key, value in settings.items():
        *parents, last = key.split(".")
        node = nested
        for parent in parents:
            node = node.setdefault(parent, {})
        node[last] = value
    return nested


def card_row(name: str, **settings: Any) -> dict[str, Any]:
    """Parameters and G(MAC) per clip of model ``name`` at its default frames, size and modules, or
    with ``settings`` (constructor arguments, dotted into sections such as ``atm.context``, named
    in the row's model column)."""
    with torch.device("meta"):  # shapes only: no weights initialised, no arithmetic
        model = timm.create_model(name, **_nested(settings))
    frames, size = model.num_frames, model.pretrained_cfg["input_size"]
    count = mac_count(model, torch.empty(1, frames, *size, device="meta"), counter="shapes")
    params = sum(p.numel() for p in model.parameters())
    atm_params = sum(p.numel() for p in model.atm.parameters()) if model.atm is not None else 0
    return dict(
        model=name + "".join(f" ({key}={value})" for key, value in settings.items()), backbone=SPECS[name].arch, temporal=model.temporal_name,
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
        "Registered video models at their defaults (`timm.create_model(name)`; a setting in brackets after the name replaces its default): frames, input size, "
        "temporal module, ATM ops and position, classes. Parameters and fvcore G(MAC) per clip "
        "(one clip of `frames` frames; 1 MAC = one multiply-add). \"attn\" = the `QK^T` and `AV` "
        "products of attention, which fvcore skips unless given a handle. \"no ATM\" = the same model without "
        "its ATM blocks (their parameters and multiply-adds left out). Regenerate: `python -m atm_core.card`.",
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
        "ATM blocks are traced as the layers they define (BatchNorm included, as fvcore counts it at "
        "inference), the local correlation of `mul` as `D*W^2` multiply-adds per frame pair and "
        "position (counted on the plain block; the CPU kernels compute the same values with extra work on padding). "
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
            "(see `docs/technical.md`).",
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
    parser.add_argument("--set", nargs="+", default=[], metavar="MODEL:KEY=VALUE",
                        help="build MODEL with a constructor setting other than its default, such as a "
                             "recipe's atm.context=3 (the row names it)")
    args = parser.parse_args(argv)
    settings: dict[str, dict[str, Any]] = {}
    for item in args.set:
        model, sep, assignment = item.partition(":")
        key, eq, value = assignment.partition("=")
        if not (sep and eq and key):
            parser.error(f"--set {item!r}: expected MODEL:KEY=VALUE, such as atm_vit_tiny_patch8_64:atm.context=3")
        settings.setdefault(model, {})[key] = yaml.safe_load(value)
    names = [n for n in SPECS if any(fnmatch.fnmatch(n, p) for p in args.models)]
    if not names:
        parser.error(f"no registered model matches {args.models}; known: {', '.join(SPECS)}")
    rows = []
    for name in names:
        tic = time.perf_counter()
        rows.append(card_row(name, **settings.get(name, {})))
        print(f"{name}: {time.perf_counter() - tic:.0f} s", file=sys.stderr)
    text = render(rows)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
