"""Any run for the notebooks: a recipe file (``params/*.yaml``, a paper one or your own) with
``key=value`` overrides and a data root, or a benchmark variant as the shortcut for its recipe."""
from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from ..engine import Config, load_config
from .project import WORK_DIR, project_root
from .variants import variant_config


def run_name(*, variant: str | None, recipe: str | Path | None, name: str | None = None) -> str:
    """The run's folder name: ``name``, else the variant's key, else the recipe's file stem."""
    if (variant is None) == (recipe is None):
        raise ValueError(f"give a variant or a recipe, not both nor neither (variant={variant!r}, "
                         f"recipe={recipe!r})")
    return name or (variant if variant is not None else Path(recipe).stem)


def run_config(*, variant: str | None = None, recipe: str | Path | None = None,
               overrides: Iterable[str] = (), data_root: str | Path | None = None,
               work_dir: str | Path = WORK_DIR, quick: bool = False, progress: bool = True,
               name: str | None = None) -> Config:
    """The configuration of one run, output in ``work_dir/<run_name>``: the variant's recipe
    (with ``quick``'s tiny data, see :func:`variant_config`), or ``recipe`` (relative paths
    from the project folder) with ``data.root`` set to ``data_root`` and then ``overrides``."""
    name = run_name(variant=variant, recipe=recipe, name=name)
    if variant is not None:
        return variant_config(variant, work_dir=work_dir, quick=quick, data_root=data_root, progress=progress,
                              overrides=[f"train.output_dir={Path(work_dir) / name}", *overrides])
    if quick:
        raise ValueError("quick applies to the benchmark's variants; give a recipe CPU-sized "
                         "overrides instead")
    path = Path(recipe)
    if not path.is_absolute():
        path = project_root() / path
    extra = [f"train.output_dir={Path(work_dir) / name}", f"train.progress={str(progress).lower()}",
             "train.overwrite=true"]  # runs under work_dir are the workbook's own: started over
    if data_root is not None:
        extra.append(f"data.root={data_root}")
    return load_config(path, [*extra, *overrides])
