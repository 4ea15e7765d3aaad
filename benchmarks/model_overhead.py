"""What ATM(mul, sub) adds to the 8-frame ViT-B/16 forward on CPU.

    python benchmarks/model_overhead.py [--threads 2] [--repeats 7] [--malloc keep|default]

Two models of the reference configuration (CLIP ViT-B/16, 224^2, 8 frames, 174 classes, TokenT1D
in every block), one with ATM(mul, sub) after 7 of 12 blocks and one without (``atm=dict(ops=())``), share
every other weight. Both run inference (eval mode, inference_mode) on one clip, interleaved;
the overhead is the median of the paired time ratios. fvcore's MAC counts of both models are
printed beside it. The last line is the ratio.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import timm
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import common

import atm_core  # noqa: F401  (registers the video models with timm)

MODEL = "atm_vit_base_patch16_clip_224"
FRAMES, CLASSES = 8, 174


def build(atm_ops: tuple[str, ...]) -> torch.nn.Module:
    return timm.create_model(MODEL, pretrained=False, num_frames=FRAMES, num_classes=CLASSES,
                             temporal="tokent1d", atm=dict(ops=atm_ops)).eval()


def gmac(model: torch.nn.Module, clip: torch.Tensor) -> float:
    """fvcore count through the model card's counter (attention products and ATM blocks included)."""
    from atm_core.macs import count_macs

    return count_macs(model, clip) / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--malloc", choices=("keep", "default"), default="keep",
                        help="keep: glibc keeps freed memory (see common.setup)")
    parser.add_argument("--name", default="model_overhead", help="record name under results/bench/")
    args = parser.parse_args()

    applied = common.setup(args.threads, args.malloc)
    load_start = common.load_average()
    with_atm, without = build(("mul", "sub")), build(())
    missing, unexpected = without.load_state_dict(with_atm.state_dict(), strict=False)
    assert not missing and all(".atm." in k or k.startswith("atm.") for k in unexpected), (
        missing, unexpected)
    clip = torch.randn(1, FRAMES, 3, 224, 224)

    def forward(model):
        def run():
            with torch.inference_mode():
                model(clip)
        return run

    times = common.interleaved({"with": forward(with_atm), "without": forward(without)},
                               args.repeats)
    ratio = common.paired_ratio(times["with"], times["without"])
    med = {k: common.median(v) for k, v in times.items()}
    macs = {"with": gmac(with_atm, clip), "without": gmac(without, clip)}
    params = {k: sum(p.numel() for p in m.parameters())
              for k, m in (("with", with_atm), ("without", without))}
    print(f"with ATM {med['with']:.3f} s, without {med['without']:.3f} s; "
          f"GMAC {macs['with']:.1f} vs {macs['without']:.1f}")
    last = f"atm_forward_overhead={ratio - 1:.2%} ratio_with_over_without={ratio:.3f}"
    record = {
        "title": "ATM(mul, sub) in the 8-frame ViT-B/16 forward (CPU, fp32, inference)",
        "machine": common.machine(applied),
        "load": [load_start, common.load_average()],
        "tables": [{
            "title": f"{MODEL}, 1 clip x {FRAMES} x 3 x 224 x 224, temporal=tokent1d "
                     f"(medians of {args.repeats} interleaved repeats)",
            "columns": ["model", "parameters", "GMAC (fvcore)", "forward (s)", "GMAC/s"],
            "rows": [[f"atm_ops={ops}", params[k], macs[k], med[k], macs[k] / med[k]]
                     for k, ops in (("with", ("mul", "sub")), ("without", ()))],
        }],
        "notes": [(f"ratio = median of paired (with / without) forward times = {ratio:.3f}; "
                   f"extra MACs = {macs['with'] / macs['without'] - 1:.2%}.")],
        "summary": last,
    }
    common.save(args.name, record)
    print(last)


if __name__ == "__main__":
    main()
