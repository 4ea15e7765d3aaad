"""Training a variant for the notebooks: its data, the run and its export, and the trained model
loaded back."""
from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import torch

from ..engine import Config
from .project import RESULTS_DIR, WORK_DIR
from .runs import export_run
from .variants import variant, variant_config


def prepare_data(cfg: Config) -> dict:
    """Write the benchmark to ``data.root`` as ``data.generate`` describes, unless the folder
    already holds exactly that (its ``benchmark.json`` records the generator's settings); a
    benchmark generated otherwise is replaced. Returns ``data.generate``."""
    from ..data.synthetic import ensure_benchmark

    if cfg.data.dataset != "synthetic" or cfg.data.generate is None:
        raise ValueError(f"{cfg.data.root}: the main job needs data.dataset=synthetic with data.generate")
    ensure_benchmark(cfg.data.root, cfg.data.generate, create=True, replace=True)
    return json.loads(json.dumps(cfg.data.generate))


def run_variant(key: str, work_dir: str | Path = WORK_DIR, results_dir: str | Path = RESULTS_DIR,
                quick: bool = False, data_root: str | Path | None = None,
                overrides: Iterable[str] = (), progress: bool = True) -> dict:
    """Train and evaluate one variant, then export its artefacts; the engine's result dict."""
    from ..engine import train

    cfg = variant_config(key, work_dir, quick, data_root, overrides, progress)
    prepare_data(cfg)
    result = train(cfg)
    export_run(cfg.train.output_dir, Path(results_dir) / "runs" / key)
    return result


def ensure_trained(cfg: Config, key: str, results_dir: str | Path = RESULTS_DIR,
                   train_if_missing: bool = True) -> Path:
    """The ``best/`` checkpoint of ``cfg``'s run, training the variant first if it has none."""
    best = Path(cfg.train.output_dir) / "checkpoints" / "best"
    if not best.is_dir():
        if not train_if_missing:
            raise FileNotFoundError(f"no trained model at {best}: run `make reproduce` or train.ipynb "
                                    f"with variant={key!r} first")
        print(f"no trained model at {best}: training {variant(key).label} first", flush=True)
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
