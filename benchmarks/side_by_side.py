"""Two trainings on a 2-core machine: one after the other on 2 threads, or side by side on 1 each.

    python benchmarks/side_by_side.py [--recipes synthetic_atm_mul_sub synthetic_tsn] [--steps 8]
                                      [--repeats 2] [--malloc keep|default]

For each recipe, two identical training jobs (the recipe's model and batch, ``--steps`` AdamW
steps on a fixed random batch, each job in a process of its own, as the main job runs them) are
timed both ways, interleaved over ``--repeats``:
  sequential   job 1 then job 2, each on ``train.threads: 2`` (the recipes' own setting);
  side_by_side job 1 and job 2 at once, each on 1 thread (``python -m atm_core.reproduce``'s default).
Times are the wall time of the pair of jobs from the first step to the last (model builds and
imports excluded: they are the same both ways and overlap side by side, which favours the
sequential layout here). The speed-up is the median of the per-repeat ratios; the last line
is the summary.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common

ROOT = Path(__file__).resolve().parents[1]


def child(recipe: str, threads: int, steps: int, start_at: float) -> None:
    """One training job: build the recipe's model, wait for ``start_at``, time ``steps`` steps."""
    import torch

    sys.path.insert(0, str(ROOT))
    from atm_core.engine.builders import build_model
    from atm_core.engine.config import load_config

    torch.set_num_threads(threads)
    cfg = load_config(ROOT / "params" / f"{recipe}.yaml")
    torch.manual_seed(0)
    model = build_model(cfg, 12, cfg.model.img_size).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    size = cfg.model.img_size
    clips = torch.randn(cfg.train.batch_size, cfg.data.num_frames, 3, size, size)
    labels = torch.randint(0, 12, (cfg.train.batch_size,))
    time.sleep(max(0.0, start_at - time.time()))
    begin = time.time()
    for _ in range(steps):
        loss = torch.nn.functional.cross_entropy(model(clips), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    print(json.dumps({"begin": begin, "end": time.time()}))


def jobs(recipe: str, threads: int, steps: int, parallel: bool) -> float:
    """Wall time of two jobs of ``recipe``, from the first step taken to the last."""
    def launch(start_at: float) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, __file__, "--child", recipe, str(threads), str(steps),
                                 str(start_at)], stdout=subprocess.PIPE, text=True)

    def spans(processes: list[subprocess.Popen]) -> list[dict]:
        outs = [p.communicate()[0] for p in processes]
        if any(p.returncode for p in processes):
            raise RuntimeError(f"a {recipe} job failed")
        return [json.loads(out.strip().splitlines()[-1]) for out in outs]

    if parallel:  # both build their models, then start their steps together
        runs = spans([launch(time.time() + 40), launch(time.time() + 40)])
        return max(r["end"] for r in runs) - min(r["begin"] for r in runs)
    runs = [spans([launch(0.0)])[0] for _ in range(2)]
    return sum(r["end"] - r["begin"] for r in runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipes", nargs="+", default=["synthetic_atm_mul_sub", "synthetic_tsn"])
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--malloc", choices=("keep", "default"), default="keep",
                        help="keep: glibc keeps freed memory (see common.setup)")
    parser.add_argument("--name", default="side_by_side", help="record name under results/bench/")
    args = parser.parse_args()

    applied = common.setup(2, args.malloc)  # exported to the job processes through the environment
    load_start = common.load_average()
    rows, ratios = [], {}
    for recipe in args.recipes:
        times = {"sequential": [], "side_by_side": []}
        for _ in range(args.repeats):
            times["sequential"].append(jobs(recipe, 2, args.steps, parallel=False))
            times["side_by_side"].append(jobs(recipe, 1, args.steps, parallel=True))
        ratios[recipe] = common.paired_ratio(times["sequential"], times["side_by_side"])
        seq, par = common.median(times["sequential"]), common.median(times["side_by_side"])
        rows.append([recipe, args.steps, seq, par, ratios[recipe]])
        print(f"{recipe}: two jobs of {args.steps} steps, sequential on 2 threads {seq:.1f} s, "
              f"side by side on 1 thread each {par:.1f} s, speed-up {ratios[recipe]:.2f}x", flush=True)
    summary = " ".join(f"{recipe}_speedup={ratio:.2f}" for recipe, ratio in ratios.items())
    print(summary)
    common.save(args.name, {
        "title": "Two trainings on 2 cores: one after the other (2 threads) vs side by side (1 thread each)",
        "machine": {**common.machine(applied), "threads": "2 (sequential) / 1 per job (side by side)"},
        "load": [load_start, common.load_average()],
        "tables": [{"title": f"Wall time of two jobs, first step to last (s, medians of {args.repeats} "
                             "interleaved repeats; speed-up: median of per-repeat ratios)",
                    "columns": ["recipe", "steps per job", "sequential, 2 threads", "side by side, 1 thread each",
                                "speed-up"],
                    "rows": rows}],
        "summary": summary,
    })


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5]))
    else:
        main()
