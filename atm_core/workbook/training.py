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
from .tables import seed_run_name
from .variants import VARIANT_KEYS, variant, variant_config


def prepare_data(cfg: Config) -> dict:
    """Write the benchmark to ``data.root`` as ``data.generate`` describes, unless the folder
    already holds exactly that (its ``benchmark.json`` records the generator's settings); a
    benchmark generated otherwise is replaced. Returns ``data.generate``."""
    from ..engine.builders import prepare_dataset

    if cfg.data.generate is None:
        raise ValueError(f"{cfg.data.root}: nothing to write without data.generate (the built-in benchmark's settings)")
    prepare_dataset(cfg, replace=True)
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
    """Where the main job commits the best weights of a variant, named like its recipe:
    ``<results_dir>/checkpoints/synthetic_<key>`` for ``params/synthetic_<key>.yaml`` (a run of
    another recipe: ``<results_dir>/checkpoints/<key>``)."""
    name = Path(variant(key).recipe).stem if key in VARIANT_KEYS else key
    return Path(results_dir) / "checkpoints" / name


def find_committed(key: str, results_dir: str | Path = RESULTS_DIR) -> Path | None:
    """The committed weights of variant ``key``: :func:`committed_checkpoint`, else the folder
    named by the key alone that the main job wrote before; ``None`` when neither holds any."""
    for folder in (committed_checkpoint(key, results_dir), Path(results_dir) / "checkpoints" / key):
        if (folder / "model.safetensors").is_file():
            return folder
    return None


def ensure_trained(cfg: Config, *, key: str, results_dir: str | Path = RESULTS_DIR,
                   train_if_missing: bool = False) -> Path:
    """The checkpoint to load for ``cfg``'s run: its ``best/`` checkpoint, else the committed
    weights of variant ``key`` (:func:`committed_checkpoint`), else -- only with
    ``train_if_missing`` -- the ``best/`` of a run trained here first."""
    best = Path(cfg.train.output_dir) / "checkpoints" / "best"
    committed = find_committed(key, results_dir)
    if best.is_dir():
        return best
    if committed is not None:
        return committed
    committed = committed_checkpoint(key, results_dir)
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
    from ..engine import builders

    return builders.load_model(cfg, checkpoint), builders.dataset(cfg, "val")
