"""The ablation table: one row per run, read from the runs' artefacts, or one row per variant
over its training seeds (mean and spread), and the prose that says what its numbers are."""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from ..engine import Config
from ..engine.builders import atm_options
from ..data.presets import PRESETS
from .runs import MissingMetrics, read_run
from .variants import TRACK_TITLES, config_label, config_track

TABLE_COLUMNS = ("variant", "model", "temporal", "atm_ops", "top1", "top5", "mean_class_acc",
                 "params_M", "gmacs", "train_min", "run_min", "epochs", "views", "test_videos")


def model_stats(cfg: Config, num_classes: int) -> tuple[int, float]:
    """Parameters and G(MAC) per clip of the model a run config describes."""
    from ..macs import count_macs
    from ..engine.builders import build_model, input_size

    img_size = input_size(cfg)
    model = build_model(cfg, num_classes, img_size).eval()
    params = sum(p.numel() for p in model.parameters())
    return params, count_macs(model, (1, cfg.data.num_frames, 3, img_size, img_size)) / 1e9


def build_table(runs: Mapping[str, str | Path]) -> pd.DataFrame:
    """One row per run (``key -> run directory``), in the given order. Every run is checked
    first; runs with missing metrics are refused, all named in one :class:`MissingMetrics`."""
    if not runs:
        raise MissingMetrics("no runs to tabulate")
    loaded, problems = {}, []
    for key, run_dir in runs.items():
        try:
            loaded[key] = read_run(run_dir)
        except MissingMetrics as e:
            problems.append(str(e))
    if problems:
        raise MissingMetrics("refusing to build the table:\n  " + "\n  ".join(problems))
    rows = []
    for key, run in loaded.items():
        cfg, summary = run["config"], run["summary"]
        num_classes = int(np.load(Path(runs[key]) / "eval/confusion.npy").shape[0])
        params, gmacs = model_stats(cfg, num_classes)
        rows.append({
            "variant": key, "model": config_label(cfg),
            "temporal": cfg.model.temporal, "atm_ops": ", ".join(atm_options(cfg).ops) or "-",
            "top1": round(summary["top1"], 2), "top5": round(summary["top5"], 2),
            "mean_class_acc": round(summary.get("mean_class_acc", float("nan")), 2),
            "params_M": round(params / 1e6, 4), "gmacs": round(gmacs, 4),
            "train_min": round(sum(r["train_time"] for r in run["metrics"]) / 60, 2),
            "run_min": round((sum(r["epoch_time"] for r in run["metrics"]) + summary["eval_time"]) / 60, 2),
            "epochs": len(run["metrics"]), "views": summary.get("views", 1),
            "test_videos": summary["num_videos"],
        })
    return pd.DataFrame(rows, columns=list(TABLE_COLUMNS))


def seed_run_name(key: str, seed: int) -> str:
    """The run folder of a variant trained with ``train.seed = seed``: ``<key>`` for seed 0."""
    return key if seed == 0 else f"{key}_seed{seed}"


def build_seed_table(runs: Mapping[str, list[str | Path]]) -> pd.DataFrame:
    """One row per variant (``key -> its runs, one per training seed``): the columns of
    :func:`build_table` averaged over the seeds, plus ``seeds``, ``top1_sd`` (the sample
    standard deviation of top-1; NaN for one seed) and ``top1_seeds`` (every seed's top-1)."""
    per_run = build_table({f"{key}#{i}": path for key, paths in runs.items() for i, path in enumerate(paths)})
    per_run["key"] = per_run.variant.str.split("#").str[0]
    rows = []
    for key in runs:
        mine = per_run[per_run.key == key]
        row = mine.iloc[0].to_dict()
        for column in ("top1", "top5", "mean_class_acc", "train_min", "run_min"):
            row[column] = round(float(mine[column].mean()), 2)
        row.update({"variant": key, "seeds": len(mine),
                    "top1_sd": round(float(mine.top1.std(ddof=1)), 2) if len(mine) > 1 else float("nan"),
                    "top1_seeds": " / ".join(f"{v:.1f}" for v in mine.top1)})
        rows.append(row)
    return pd.DataFrame(rows, columns=[*TABLE_COLUMNS, "seeds", "top1_sd", "top1_seeds"])


def describe_setup(run_dirs: str | Path | list[str | Path]) -> dict:
    """The settings every row of a table shares, read from its first run directory, and the
    backbones of all of them (``models``, in order of appearance)."""
    run_dirs = [run_dirs] if isinstance(run_dirs, (str, Path)) else list(run_dirs)
    runs = [read_run(d) for d in run_dirs]
    cfg, summary = runs[0]["config"], runs[0]["summary"]
    configs = [run["config"] for run in runs]
    models = list(dict.fromkeys(c.model.name for c in configs))
    precisions = list(dict.fromkeys(c.train.mixed_precision for c in configs))
    options = {**dataclasses.asdict(PRESETS[cfg.data.dataset]), **cfg.data.options}
    sampling = (f"taken {options['dense_stride']} frames apart from a random window in training, "
                "the centred one in validation" if options["sampling"] == "dense" else
                "one per segment, at random in training and centred in validation")
    return {"model": cfg.model.name, "models": models, "track": config_track(cfg),
            "frames": cfg.data.num_frames, "epochs": cfg.optim.epochs, "batch": cfg.train.batch_size,
            "threads": cfg.train.threads, "seed": cfg.train.seed, "data_seed": data_seed(cfg), "videos": summary["num_videos"], "views": summary.get("views", 1),
            "sampling": sampling, "precisions": precisions,
            "held_out": cfg.data.test_list is not None and cfg.data.test_list != cfg.data.val_list}


def markdown_table(df: pd.DataFrame) -> str:
    """The ablation table as a Markdown pipe table (no extra dependency)."""
    header = ["model", "temporal module", "ATM ops", "top-1 (%)", "top-5 (%)", "params (M)",
              "G(MAC) / clip", "training time (min)", "run time (min)"]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * 3 + ["---:"] * 6) + "|"]
    for row in df.itertuples():
        top1 = f"{row.top1:.1f}"
        if getattr(row, "seeds", 1) > 1:
            top1 += f" ± {row.top1_sd:.1f} ({row.top1_seeds})"
        lines.append(f"| {row.model} | {row.temporal} | {row.atm_ops} | {top1} | {row.top5:.1f} "
                     f"| {row.params_M:.3f} | {row.gmacs:.3f} | {row.train_min:.1f} | {row.run_min:.1f} |")
    return "\n".join(lines)


TRACK_DESCRIPTIONS = {
    "shapes": ("Its default difficulty: one or two objects, brighter than a darker flat, gradient or "
               "textured background, with up to two static distractors and mild noise (sizes and speeds: "
               "`atm_core.data.synthetic.shapes`)."),
    "textures": ("Its clips are cut from ten public-domain and CC0 photographs and textures that ship "
                 "with scikit-image: camera pans in four directions, zoom, camera roll, a photo "
                 "cut-out travelling over another photo and a photo sliding in to cover the view, "
                 "with motion blur, hand-held shake, sensor noise and H.264 at quantiser 28 "
                 "(`atm_core.data.synthetic.textures`); no brightness or flat-background cue separates what "
                 "moves from what does not."),
}

RUN_SPECIFIC = ("train.seed", "train.output_dir", "train.progress", "train.threads", "eval.out_dir")


def _flat_config(run_dir: Path) -> dict:
    import yaml

    data = yaml.safe_load((run_dir / "config.yaml").read_text()) or {}
    return {f"{section}.{key}": value for section, values in data.items() if isinstance(values, dict)
            for key, value in values.items() if f"{section}.{key}" not in RUN_SPECIFIC}


def recipe_differences(row_dir: str | Path, other_dir: str | Path, allowed: Sequence[str] = ()) -> list[str]:
    """The recipe keys, other than ``allowed`` and the run-specific ones, in which the runs in
    ``row_dir`` and ``other_dir`` differ."""
    ours, theirs = _flat_config(Path(row_dir)), _flat_config(Path(other_dir))
    return sorted(k for k in ours.keys() | theirs.keys() if k not in allowed and ours.get(k) != theirs.get(k))


def _recipe_clause(differ: Sequence[str], same: str) -> str:
    return f"; those runs differ from this row's in {', '.join(differ)}" if differ else f"; {same}"


def seed_spreads(seeds_dir: str | Path, rows: Mapping[str, str | Path]) -> list[str]:
    """What a seeds run (``python -m atm_core.reproduce --seeds N --results <seeds_dir>``) measured
    for the table's rows ``key -> run directory``: one sentence per row with runs of two or more
    training seeds there, every seed's top-1 read from its run, and the recipe keys in which those
    runs differ from the row's own run (so that a spread of another recipe is not taken for this one)."""
    sentences = []
    for key, row_dir in rows.items():
        seed_dirs = []
        while (Path(seeds_dir) / "runs" / seed_run_name(key, len(seed_dirs)) / "eval" / "summary.json").is_file():
            seed_dirs.append(Path(seeds_dir) / "runs" / seed_run_name(key, len(seed_dirs)))
        if len(seed_dirs) < 2:
            continue
        top1 = [read_run(d)["summary"]["top1"] for d in seed_dirs]
        recipe = _recipe_clause(recipe_differences(row_dir, seed_dirs[0]), "same recipe and data as this row")
        sentences.append(f"{config_label(read_run(seed_dirs[0])['config'])}: "
                         f"{' / '.join(f'{v:.1f}' for v in top1)} % over training seeds 0..{len(top1) - 1} "
                         f"(mean {np.mean(top1):.1f} ± {np.std(top1, ddof=1):.1f}, `{seeds_dir}`){recipe}")
    return sentences


def quoted_spreads(quoted_dir: str | Path, rows: Mapping[str, str | Path]) -> list[str]:
    """:func:`seed_spreads` of every seeds run under ``quoted_dir`` (``seeds/``, and
    ``seeds_<name>/`` for runs of a changed recipe, e.g. another precision), in name order."""
    runs = sorted(d for d in Path(quoted_dir).glob("seeds*") if d.is_dir())
    return [sentence for seeds_dir in runs for sentence in seed_spreads(seeds_dir, rows)]


def precision_note(precisions: Sequence[str], compared: bool = False) -> str:
    """The sentence on the rows' ``train.mixed_precision`` (as their runs recorded it); with
    ``compared``, the note also quotes runs that differ from the rows in it."""
    if list(precisions) == ["bf16"]:
        return ("Precision: bf16 autocast (bf16 products, fp32 weights and optimiser): the recipes' "
                "train.mixed_precision=auto chose it because this CPU computes bf16 natively; on a "
                "CPU that does not it trains in fp32 and gives other numbers"
                + (" (the runs quoted below that differ in train.mixed_precision measure that "
                   "difference)." if compared else "."))
    if list(precisions) == ["no"]:
        return "Precision: fp32 (train.mixed_precision=no, or auto on a CPU without native bf16)."
    return f"Precision differs between rows: train.mixed_precision {', '.join(precisions)}."


PRECISION_KEY = "train.mixed_precision"
DATA_DRAW_KEYS = ("data.root", "data.generate")  # what a run on another draw of the benchmark changes


def data_seed(cfg: Config) -> int | None:
    """The seed the built-in benchmark of ``cfg`` is drawn with (None for other datasets)."""
    return None if cfg.data.generate is None else cfg.data.generate.get("seed", 0)


def data_seed_results(data_seeds_dir: str | Path, rows: Mapping[str, str | Path]) -> list[str]:
    """What runs on other draws of the benchmark (``python -m atm_core.reproduce --data-seed N``,
    each in ``<data_seeds_dir>/seed_<N>``) measured for the table's rows ``key -> run directory``:
    one sentence per row with such runs, each draw's top-1 beside the row's own, and for each
    draw whose run differs from the row's in recipe keys besides the data, those keys."""
    draws = sorted((d for d in Path(data_seeds_dir).glob("seed_*") if d.name.removeprefix("seed_").isdigit()),
                   key=lambda d: int(d.name.removeprefix("seed_")))
    sentences = []
    for key, row_dir in rows.items():
        found = [d / "runs" / key for d in draws if (d / "runs" / key / "eval" / "summary.json").is_file()]
        if not found:
            continue
        row = read_run(row_dir)
        measured = [read_run(d) for d in found]
        each = ", ".join(f"{run['summary']['top1']:.1f} % on data seed {data_seed(run['config'])}" for run in measured)
        differing: dict[tuple[str, ...], list[str]] = {}  # recipe keys -> the draws whose runs differ in them
        for path, run in zip(found, measured):
            if keys := tuple(recipe_differences(row_dir, path, DATA_DRAW_KEYS)):
                differing.setdefault(keys, []).append(str(data_seed(run["config"])))
        recipe = "".join(f"; on data seed {', '.join(seeds)} the recipe differs from this row's in {', '.join(keys)}"
                         for keys, seeds in differing.items()) or "; same recipe"
        sentences.append(f"{config_label(row['config'])}: {each} (this row: {row['summary']['top1']:.1f} % on "
                         f"data seed {data_seed(row['config'])}, `{data_seeds_dir}`){recipe}")
    return sentences


def table_notes(setup: Mapping, *, quick: bool = False, seeds: int = 1, spreads: Sequence[str] = (),
                draws: Sequence[str] = ()) -> str:
    """What the table is, in words: data, budget, chance level, which split, the seed spread (over
    the table's own ``seeds``, else the sentences of :func:`seed_spreads`) and the results on other
    draws of the data (the sentences of :func:`data_seed_results`)."""
    if setup.get("held_out"):
        split = (f"top-1 / top-5 on {setup['videos']} held-out test videos (clips of their own, "
                 "never seen in training nor in checkpoint selection), of the checkpoint with the "
                 "best validation top-1")
    else:
        split = (f"top-1 / top-5 on {setup['videos']} validation videos, of the checkpoint chosen "
                 "as best on those same videos (optimistic)")
    track = setup.get("track", "shapes")
    if seeds > 1:
        spread = (f"Each row: mean ± sample standard deviation over {seeds} training seeds "
                  f"(train.seed 0..{seeds - 1}; same data), every seed's top-1 in brackets.")
    else:
        measured = ("Measured spread over training seeds: " + "; ".join(spreads) + "." if spreads else
                    "No spread over training seeds has been measured for these rows.")
        spread = ("One training seed per row: rows a few points apart are not ranked by it. " + measured
                  + " `python -m atm_core.reproduce --seeds N` reports mean ± spread.")
    redrawn = ("Other draws of the benchmark (written again with another data.generate.seed, trained "
               "with the same recipes; their test clips were read for this note only, and a recipe's "
               "header names the draws whose validation clips chose it): " + "; ".join(draws) + "."
               if draws else
               "No other draw of the benchmark has been measured for these rows.")
    redrawn += " `python -m atm_core.reproduce --data-seed N` trains on one."
    drawn = "" if setup.get("data_seed") is None else f", drawn with data seed {setup['data_seed']}"
    others = [m for m in setup.get("models", [setup["model"]]) if m != setup["model"]]
    backbones = f"`{setup['model']}`" + "".join(f" (the -ResNet rows: `{m}`)" for m in others)
    text = (
        f"Measured on the **{TRACK_TITLES[track]} of the built-in CPU benchmark** "
        f"(`atm_core.data.synthetic`: 12 classes in 6 time-reversal pairs{drawn}), **not** on "
        "Something-Something or Kinetics: it says whether a temporal mechanism works, not what it "
        "scores on real video. " + TRACK_DESCRIPTIONS[track] +
        f" Every row: {backbones}, {setup['frames']} frames ({setup['sampling']}), "
        f"the same recipe and budget "
        f"({setup['epochs']} epochs, batch {setup['batch']}); {split}, {setup['views']} view(s) each. Chance is 8.3 %; a model blind to "
        "frame order (TSN) cannot beat 50 %, since every clip has a reversed twin made of the same "
        f"frames. G(MAC) per clip by fvcore; training time is the training loop on {setup['threads']} "
        "CPU thread(s), without per-epoch validation; run time adds the per-epoch validation and the final "
        "evaluation (not the start-up). Fixed seeds: a rerun on the same machine gives the same "
        "accuracies; on other hardware expect differences of a few points (floating-point order). "
        + (precision_note(setup["precisions"], any(PRECISION_KEY in s for s in (*spreads, *draws))) + " "
           if "precisions" in setup else "")
        + spread + " " + redrawn
    )
    if quick:
        text = ("**Quick mode (tiny data, one short epoch): these numbers only show that the "
                "pipeline runs.** " + text)
    return text


def write_tables(tables: Mapping[str, tuple[pd.DataFrame, str]], out_dir: str | Path) -> tuple[Path, Path]:
    """``ablation.csv`` (every column, and the track) and ``ablation.md`` (title, then per track
    a section with its notes and table) from ``track -> (table, notes)``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    csv_path, md_path = out_dir / "ablation.csv", out_dir / "ablation.md"
    pd.concat([df.assign(track=track) for track, (df, _) in tables.items()]).to_csv(csv_path, index=False)
    md_path.write_text(tables_markdown(tables))
    return csv_path, md_path


def tables_markdown(tables: Mapping[str, tuple[pd.DataFrame, str]]) -> str:
    """``ablation.md``: the title, then per track a section with its notes and table."""
    sections = [f"## {TRACK_TITLES[track].capitalize()}\n\n{notes}\n\n{markdown_table(df)}\n"
                for track, (df, notes) in tables.items()]
    return "# Temporal modules and ATM operations on the built-in CPU benchmark\n\n" + "\n".join(sections)
