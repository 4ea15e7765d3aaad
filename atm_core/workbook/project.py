"""Where the project lives: the folder holding ``params/``, and the main job's output folders."""
from __future__ import annotations

import os
from pathlib import Path

WORK_DIR = "runs/reproduce"  # training runs with checkpoints: <WORK_DIR>/<variant>/
RESULTS_DIR = "results"  # tables, figures and the runs' small artefacts
DATA_SEEDS_DIR = f"{RESULTS_DIR}/data_seeds"  # runs on other draws of the benchmark: <DATA_SEEDS_DIR>/seed_<N>/


def project_root(start: str | Path | None = None) -> Path:
    """The project folder (holding ``params/`` and ``pyproject.toml``): searched upwards from
    ``start`` (default: the working directory), else the folder above this package."""
    here = Path(start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "params").is_dir() and (folder / "pyproject.toml").is_file():
            return folder
    return Path(__file__).resolve().parents[2]


def enter_project_root() -> Path:
    """``chdir`` to the project folder, so that notebooks opened from ``notebooks/`` resolve
    ``params/``, ``data/`` and ``results/`` like the command line does."""
    root = project_root()
    os.chdir(root)
    return root
