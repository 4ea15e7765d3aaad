"""What the notebooks call: the benchmark's variants, their configurations, run outputs, the
ablation table and small analyses. ``atm_core.reproduce`` runs the notebooks in batch.

Run layout: training writes ``<work_dir>/<variant>/`` (checkpoints, metrics, evaluation);
:func:`export_run` copies the small artefacts to ``<results_dir>/runs/<variant>/``, from which
:func:`build_table` reads the ablation table.
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from .data.presets import PRESETS
from .engine import Config, load_config


@dataclass(frozen=True)
class Variant:
    key: str
    label: str
    temporal: str
    ops: tuple[str, ...]

    @property
    def recipe(self) -> str:
        return f"params/synthetic_{self.key}.yaml"


VARIANTS: tuple[Variant, ...] = (
    Variant("tsn", "TSN", "tsn", ()),
    Variant("tsm", "TSM", "tsm", ()),
    Variant("tokenshift", "TokenShift", "tokenshift", ()),
    Variant("tokent1d", "TokenT1D", "tokent1d", ()),
    Variant("atm_add", "ATM(add)", "tokent1d", ("add",)),
    Variant("atm_sub", "ATM(sub)", "tokent1d", ("sub",)),
    Variant("atm_mul", "ATM(mul)", "tokent1d", ("mul",)),
    Variant("atm_div", "ATM(div)", "tokent1d", ("div",)),
    Variant("atm_mul_sub", "ATM(mul, sub)", "tokent1d", ("mul", "sub")),
)
VARIANT_KEYS = tuple(v.key for v in VARIANTS)
ATM_KEYS = tuple(v.key for v in VARIANTS if v.ops)
WORK_DIR = "runs/reproduce"
RESULTS_DIR = "results"

# --quick: a handful of tiny clips and one short epoch; everything else as in the full job.
QUICK_DATA = {"train_per_class": 1, "val_per_class": 1, "size": 64, "num_frames": 24}
QUICK_OVERRIDES = (
    "optim.epochs=1", "optim.warmup_epochs=0", "train.batch_size=6", "eval.batch_size=12",
    "data.num_workers=0", "eval.num_clips=1", "eval.num_crops=1", "train.tensorboard=false",
)


class MissingMetrics(RuntimeError):
    """A run directory lacks a file or a value the table needs."""


# ---------------------------------------------------------------- locations

def project_root(start: str | Path | None = None) -> Path:
    """The project folder (holding ``params/`` and ``pyproject.toml``): searched upwards from
    ``start`` (default: the working directory), else the folder above this package."""
    here = Path(start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "params").is_dir() and (folder / "pyproject.toml").is_file():
            return folder
    return Path(__file__).resolve().parents[1]


def enter_project_root() -> Path:
    """``chdir`` to the project folder, so that notebooks opened from ``notebooks/`` resolve
    ``params/``, ``data/`` and ``results/`` like the command line does."""
    root = project_root()
    os.chdir(root)
    return root


def variant(key: str) -> Variant:
    for v in VARIANTS:
        if v.key == key:
            return v
    raise KeyError(f"unknown variant {key!r}; choose from {list(VARIANT_KEYS)}")


def quick_data_root(root: str | Path) -> str:
    return f"{Path(root)}_quick"


def prepare_data(cfg: Config) -> dict:
    """Write the benchmark to ``data.root`` as ``data.generate`` describes, unless the folder
    already holds exactly that (its ``benchmark.json`` records the generator's settings); a
    benchmark generated otherwise is replaced. Returns ``data.generate``."""
    from .engine.builders import ensure_synthetic_data

    if cfg.data.dataset != "synthetic" or cfg.data.generate is None:
        raise ValueError(f"{cfg.data.root}: the main job needs data.dataset=synthetic with data.generate")
    ensure_synthetic_data(cfg, replace=True)
    return json.loads(json.dumps(cfg.data.generate))


def variant_config(key: str, work_dir: str | Path = WORK_DIR, quick: bool = False,
                   data_root: str | Path | None = None, overrides: Iterable[str] = (),
                   progress: bool = True) -> Config:
    """The configuration of one variant: its CPU recipe with the output in ``work_dir/<key>``.
    ``quick`` adds the tiny-data overrides (data in ``<data.root>_quick`` unless ``data_root``)."""
    v = variant(key)
    extra = [f"train.output_dir={Path(work_dir) / key}", f"train.progress={str(progress).lower()}"]
    if quick:
        base = load_config(v.recipe)
        extra += [*QUICK_OVERRIDES, f"data.root={quick_data_root(base.data.root)}",
                  f"data.generate={json.dumps({**(base.data.generate or {}), **QUICK_DATA})}"]
    if data_root is not None:
        extra.append(f"data.root={data_root}")
    cfg = load_config(v.recipe, [*extra, *overrides])
    if cfg.model.temporal != v.temporal or tuple(cfg.model.atm_ops) != v.ops:
        raise ValueError(f"{v.recipe} trains temporal={cfg.model.temporal} atm_ops={cfg.model.atm_ops}, "
                         f"but variant {key!r} is {v.temporal} with ops {v.ops}")
    return cfg


# ---------------------------------------------------------------- run outputs

RUN_FILES = ("config.yaml", "metrics.jsonl", "eval/summary.json", "eval/predictions.csv",
             "eval/confusion.npy", "eval/confusion.png")


def export_run(run_dir: str | Path, dest: str | Path) -> Path:
    """Copy a training run's small artefacts (no checkpoints) to ``dest``."""
    run_dir, dest = Path(run_dir), Path(dest)
    missing = [name for name in RUN_FILES if not (run_dir / name).is_file()]
    if missing:
        raise MissingMetrics(f"run {run_dir} has no {', '.join(missing)}: did training or its "
                             "evaluation (eval.after_train) fail?")
    if dest.exists():
        shutil.rmtree(dest)
    for name in RUN_FILES:
        (dest / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(run_dir / name, dest / name)
    return dest


def read_run(run_dir: str | Path) -> dict:
    """Metrics of one run directory: ``config`` (Config), ``metrics`` (epoch records),
    ``summary`` (evaluation). Raises :class:`MissingMetrics` naming the file or key."""
    run_dir = Path(run_dir)
    for name in ("config.yaml", "metrics.jsonl", "eval/summary.json"):
        if not (run_dir / name).is_file():
            raise MissingMetrics(f"run {run_dir}: missing {name}")
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()
               if line.strip()]
    if not records:
        raise MissingMetrics(f"run {run_dir}: metrics.jsonl has no epoch records")
    for i, record in enumerate(records, start=1):
        for key in ("train_time", "epoch_time"):
            if key not in record:
                raise MissingMetrics(f"run {run_dir}: metrics.jsonl line {i} has no '{key}'")
    summary = json.loads((run_dir / "eval/summary.json").read_text())
    for key in ("top1", "top5", "num_videos", "eval_time"):
        if not isinstance(summary.get(key), (int, float)):
            raise MissingMetrics(f"run {run_dir}: eval/summary.json has no number '{key}'")
    return {"config": load_config(run_dir / "config.yaml"), "metrics": records, "summary": summary}


def model_stats(cfg: Config, num_classes: int) -> tuple[int, float]:
    """Parameters and G(MAC) per clip of the model a run config describes."""
    from .card import count_macs
    from .data import PRESETS
    from .engine.builders import build_model

    img_size = cfg.model.img_size or cfg.data.options.get("input_size", PRESETS[cfg.data.dataset].input_size)
    model = build_model(cfg, num_classes, img_size).eval()
    params = sum(p.numel() for p in model.parameters())
    return params, count_macs(model, (1, cfg.model.num_frames, 3, img_size, img_size)) / 1e9


TABLE_COLUMNS = ("variant", "model", "temporal", "atm_ops", "top1", "top5", "mean_class_acc",
                 "params_M", "gmacs", "train_min", "run_min", "epochs", "views", "val_videos")


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
        label = variant(key).label if key in VARIANT_KEYS else key
        rows.append({
            "variant": key, "model": label, "temporal": cfg.model.temporal,
            "atm_ops": ", ".join(cfg.model.atm_ops) or "-",
            "top1": round(summary["top1"], 2), "top5": round(summary["top5"], 2),
            "mean_class_acc": round(summary.get("mean_class_acc", float("nan")), 2),
            "params_M": round(params / 1e6, 4), "gmacs": round(gmacs, 4),
            "train_min": round(sum(r["train_time"] for r in run["metrics"]) / 60, 2),
            "run_min": round((sum(r["epoch_time"] for r in run["metrics"]) + summary["eval_time"]) / 60, 2),
            "epochs": len(run["metrics"]), "views": summary.get("views", 1),
            "val_videos": summary["num_videos"],
        })
    return pd.DataFrame(rows, columns=list(TABLE_COLUMNS))


def describe_setup(run_dir: str | Path) -> dict:
    """The settings every row of a table shares, read from one run directory."""
    run = read_run(run_dir)
    cfg, summary = run["config"], run["summary"]
    options = {**dataclasses.asdict(PRESETS[cfg.data.dataset]), **cfg.data.options}
    sampling = (f"taken {options['dense_stride']} frames apart from a random window in training, "
                "the centred one in validation" if options["sampling"] == "dense" else
                "one per segment, at random in training and centred in validation")
    return {"model": cfg.model.name, "frames": cfg.model.num_frames, "epochs": cfg.optim.epochs,
            "seed": cfg.train.seed, "videos": summary["num_videos"], "views": summary.get("views", 1),
            "sampling": sampling}


def markdown_table(df: pd.DataFrame) -> str:
    """The ablation table as a Markdown pipe table (no extra dependency)."""
    header = ["model", "temporal module", "ATM ops", "top-1 (%)", "top-5 (%)", "params (M)",
              "G(MAC) / clip", "training time (min)", "run time (min)"]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * 3 + ["---:"] * 6) + "|"]
    for row in df.itertuples():
        lines.append(f"| {row.model} | {row.temporal} | {row.atm_ops} | {row.top1:.1f} | {row.top5:.1f} "
                     f"| {row.params_M:.3f} | {row.gmacs:.3f} | {row.train_min:.1f} | {row.run_min:.1f} |")
    return "\n".join(lines)


def table_notes(setup: Mapping, quick: bool = False) -> str:
    """What the table is, in words: data, budget, chance level, tolerance."""
    text = (
        "Measured on the **built-in CPU benchmark** (`atm_core.data.synthetic`: 12 classes in 6 "
        "time-reversal pairs), **not** on Something-Something or Kinetics: it says whether a "
        "temporal mechanism works, not what it scores on real video. "
        "Its default difficulty: one or two objects, brighter than a darker flat, gradient or "
        "textured background, with up to two static distractors and mild noise (see the "
        "module's docstring for sizes and speeds). "
        f"Every row: `{setup['model']}`, {setup['frames']} frames ({setup['sampling']}), "
        f"the same recipe and budget "
        f"({setup['epochs']} epochs, seed {setup['seed']}); top-1 / top-5 on {setup['videos']} "
        f"validation videos, {setup['views']} view(s) each. Chance is 8.3 %; a model blind to "
        "frame order (TSN) cannot beat 50 %, since every clip has a reversed twin made of the same "
        "frames. G(MAC) per clip by fvcore; training time is the training loop on 2 CPU threads, "
        "without per-epoch validation; run time adds the per-epoch validation and the final "
        "evaluation (not the start-up). Fixed seeds: a rerun on the same machine gives the same "
        "accuracies; on other hardware expect differences of a few points (floating-point order)."
    )
    if quick:
        text = ("**Quick mode (tiny data, one short epoch): these numbers only show that the "
                "pipeline runs.** " + text)
    return text


def write_tables(df: pd.DataFrame, out_dir: str | Path, notes: str) -> tuple[Path, Path]:
    """``ablation.csv`` (every column) and ``ablation.md`` (title, notes, table)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    csv_path, md_path = out_dir / "ablation.csv", out_dir / "ablation.md"
    df.to_csv(csv_path, index=False)
    md_path.write_text("# Temporal modules and ATM operations on the built-in CPU benchmark\n\n"
                       f"{notes}\n\n{markdown_table(df)}\n")
    return csv_path, md_path


# ---------------------------------------------------------------- training and trained models

def run_variant(key: str, work_dir: str | Path = WORK_DIR, results_dir: str | Path = RESULTS_DIR,
                quick: bool = False, data_root: str | Path | None = None,
                overrides: Iterable[str] = (), progress: bool = True) -> dict:
    """Train and evaluate one variant, then export its artefacts; the engine's result dict."""
    from .engine import train

    cfg = variant_config(key, work_dir, quick, data_root, overrides, progress)
    prepare_data(cfg)
    result = train(cfg)
    export_run(cfg.train.output_dir, Path(results_dir) / "runs" / key)
    return result


def ensure_trained(cfg: Config, key: str, results_dir: str | Path = RESULTS_DIR, train_if_missing: bool = True) -> Path:
    """The ``best/`` checkpoint of ``cfg``'s run, training the variant first if it has none."""
    best = Path(cfg.train.output_dir) / "checkpoints" / "best"
    if not best.is_dir():
        if not train_if_missing:
            raise FileNotFoundError(f"no trained model at {best}: run `make reproduce` or train.ipynb "
                                    f"with variant={key!r} first")
        print(f"no trained model at {best}: training {variant(key).label} first", flush=True)
        from .engine import train

        prepare_data(cfg)
        train(cfg)
        export_run(cfg.train.output_dir, Path(results_dir) / "runs" / key)
    return best


def load_trained(cfg: Config, checkpoint: str | Path):
    """The model ``cfg`` describes with the weights of ``checkpoint``, in eval mode, and the
    validation dataset it was evaluated on."""
    from .engine.builders import build_model, build_split
    from .models.weights import load_video_weights

    dataset = build_split(cfg, "val")
    model = build_model(cfg, len(dataset.classes), dataset.transform.input_size)
    load_video_weights(model, checkpoint, strict=True)
    return model.eval(), dataset


def find_clip(dataset, class_name: str, number: int = 0) -> int:
    """Index of the ``number``-th validation video of ``class_name``."""
    if class_name not in dataset.classes:
        raise ValueError(f"unknown class {class_name!r}; classes: {dataset.classes}")
    label = dataset.classes.index(class_name)
    matches = [i for i, r in enumerate(dataset.records) if r.label == label]
    if number >= len(matches):
        raise ValueError(f"class {class_name!r} has {len(matches)} validation videos, asked for number {number}")
    return matches[number]


# ---------------------------------------------------------------- analysis

def read_predictions(eval_dir: str | Path) -> pd.DataFrame:
    """``predictions.csv`` of an evaluation folder (a run's ``eval/``)."""
    return pd.read_csv(Path(eval_dir) / "predictions.csv")


def class_names(cfg: Config) -> list[str]:
    from .data import read_labels

    return read_labels(Path(cfg.data.root) / "labels.csv")


@torch.no_grad()
def predict_clip(model: torch.nn.Module, clip: torch.Tensor, classes: list[str]) -> str:
    """The class ``model`` predicts for one normalised clip ``(T, 3, H, W)``."""
    return classes[int(model.eval()(clip[None]).argmax())]


def per_class_accuracy(predictions: pd.DataFrame, classes: list[str]) -> pd.DataFrame:
    """Accuracy and the most frequent wrong answer per true class."""
    rows = []
    for label, name in enumerate(classes):
        mine = predictions[predictions.label == label]
        wrong = mine[mine.pred != label]
        top_wrong = wrong.pred.value_counts()
        rows.append({"class": name, "videos": len(mine),
                     "accuracy": 100.0 * float(mine.correct.mean()) if len(mine) else float("nan"),
                     "most_confused_with": classes[int(top_wrong.index[0])] if len(top_wrong) else "-"})
    return pd.DataFrame(rows)


def pair_report(predictions: pd.DataFrame, classes: list[str]) -> pd.DataFrame:
    """Per time-reversal pair ``(2p, 2p+1)``: accuracy, and how often a video is taken for its
    reversed twin -- the error an order-blind model cannot avoid."""
    rows = []
    for first in range(0, len(classes) - 1, 2):
        mine = predictions[predictions.label.isin([first, first + 1])]
        twin = mine.label.to_numpy() ^ 1
        rows.append({"pair": f"{classes[first]} / {classes[first + 1]}", "videos": len(mine),
                     "accuracy": 100.0 * float(mine.correct.mean()),
                     "taken_for_reversed_twin": 100.0 * float((mine.pred.to_numpy() == twin).mean()),
                     "in_pair": 100.0 * float(mine.pred.isin([first, first + 1]).mean())})
    return pd.DataFrame(rows)


# The paper's published top-1 (DESIGN.md section 1); not measured by this project.
PAPER_RESULTS = pd.DataFrame([
    {"dataset": "Something-Something V1", "backbone": "EVA02-CLIP-L/14", "frames": 16, "top1": 65.6},
    {"dataset": "Something-Something V2", "backbone": "EVA02-CLIP-L/14", "frames": 16, "top1": 74.6},
    {"dataset": "Kinetics-400", "backbone": "EVA02-CLIP-L/14", "frames": 8, "top1": 89.4},
    {"dataset": "Something-Something V1", "backbone": "CLIP ViT-B/16", "frames": 8, "top1": 58.744},
    {"dataset": "Something-Something V1", "backbone": "CLIP ViT-B/16", "frames": 16, "top1": 60.609},
    {"dataset": "Something-Something V1", "backbone": "CLIP ViT-B/16", "frames": 32, "top1": 61.450},
])
