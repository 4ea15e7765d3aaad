"""Training a variant for the notebooks: its data, the run and its export, and the trained model
loaded back."""
from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path

import torch

from ..engine import Config
from .project import RESULTS_DIR, WORK_DIR
from .runs import export_run
from .tables import seed_run_name
from .variants import variant_config


def prepare_data(cfg: Config) -> dict:
    """Write the benchmark to ``data.root`` as ``data.generate`` describes, unless the folder
    already holds exactly that (its ``benchmark.json`` records the generator's settings); a
    benchmark generated otherwise is replaced. Returns ``data.generate``."""
    from ..data.synthetic import ensure_benchmark

    if cfg.data.generate is None:
        raise ValueError(f"{cfg.data.root}: nothing to write without data.generate (the built-in benchmark's settings)")
    ensure_benchmark(cfg.data.root, cfg.data.generate, create=True, replace=True, workers=os.cpu_count() or 1)
    return json.loads(json.dumps(cfg.data.generate))


def run_variant(key: str, *, work_dir: str | Path = WORK_DIR, results_dir: str | Path = RESULTS_DIR,
                quick: bool = False, data_root: str | Path | None = None,
                overrides: Iterable[str] = (), progress: bool = True, seed: int = 0) -> dict:
    """Train and evaluate one variant with ``train.seed = seed``, then export its artefacts to
    ``<results_dir>/runs/<seed_run_name(key, seed)>``; the engine's result dict."""
    from ..engine import train

    name = seed_run_name(key, seed)
    cfg = variant_config(key, work_dir=work_dir, quick=quick, data_root=data_root, progress=progress,
                         overrides=[f"train.output_dir={Path(work_dir) / name}", f"train.seed={seed}", *overrides])
    prepare_data(cfg)
    result = train(cfg)
    export_run(cfg.train.output_dir, Path(results_dir) / "runs" / name)
    return result


def committed_checkpoint(key: str, results_dir: str | Path = RESULTS_DIR) -> Path:
    """Where the main job commits the best weights of a variant: ``<results_dir>/checkpoints/<key>``."""
    return Path(results_dir) / "checkpoints" / key


def ensure_trained(cfg: Config, *, key: str, results_dir: str | Path = RESULTS_DIR,
                   train_if_missing: bool = False) -> Path:
    """The checkpoint to load for ``cfg``'s run: its ``best/`` checkpoint, else the committed
    weights of variant ``key`` (:func:`committed_checkpoint`), else -- only with
    ``train_if_missing`` -- the ``best/`` of a run trained here first."""
    best = Path(cfg.train.output_dir) / "checkpoints" / "best"
    committed = committed_checkpoint(key, results_dir)
    if best.is_dir():
        return best
    if (committed / "model.safetensors").is_file():
        return committed
    if not train_if_missing:
        raise FileNotFoundError(f"no trained model at {best} nor {committed}: run `make reproduce`, "
                                f"train.ipynb with variant={key!r}, or set train_if_missing = True")
    print(f"no trained model at {best} nor {committed}: training {key} first", flush=True)
    from ..engine import train

    prepare_data(cfg)
    train(cfg)
    export_run(cfg.train.output_dir, Path(results_dir) / "runs" / key)
    return best


def load_trained(cfg: Config, checkpoint: str | Path) -> tuple[torch.nn.Module, torch.utils.data.Dataset]:
    """The model ``cfg`` describes with the weights of ``checkpoint``, in eval mode, and the
    validation dataset it was evaluated on."""
    from ..engine.builders import build_model, build_split
    from ..models.weights import load_video_weights

    dataset = build_split(cfg, "val")
    model = build_model(cfg, len(dataset.classes), dataset.transform.input_size)
    load_video_weights(model, checkpoint, strict=True)
    return model.eval(), dataset
