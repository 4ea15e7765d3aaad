"""What the notebooks call, one job per module; ``atm_core.reproduce`` runs the notebooks in batch.

    project    the project folder and the main job's output folders
    variants   the benchmark's variants (a recipe each) and their configurations
    recipes    any run: a recipe file with overrides and a data root, or a variant
    runs       a run's small artefacts: exported, read back and checked
    training   a variant's data, training and trained model
    tables     the ablation table and its notes
    analysis   per-class accuracy, time-reversal and left/right pairs, single predictions
    clips      a recipe's model and one of its clips, loaded for the feature-map figures
    plots      run-summary figures: training curves, confusion matrices, ablation bars
    testing    a checkpoint tested with the recipe's views and with one view
    paper      the paper's published numbers

Run layout: training writes ``<work_dir>/<variant>/`` (checkpoints, metrics, evaluation);
:func:`export_run` copies the small artefacts to ``<results_dir>/runs/<variant>/``, from which
:func:`build_table` reads the ablation table, and the main job copies the best weights to
``<results_dir>/checkpoints/synthetic_<variant>/``, named like its recipe, with the recipe and
model card (:func:`export_checkpoint`), which the evaluate and
visualise notebooks load when no run of their own is there. Notebooks use the names below as
``workbook.<name>``.
"""
from ..engine.builders import class_names
from .analysis import (
    direction_report,
    find_clip,
    flip_labels,
    pair_report,
    per_class_accuracy,
    predict_clip,
    read_predictions,
)
from .clips import (
    benchmark_clip,
    clip_classes,
    clip_stats,
    feature_map_report,
    load_clip,
    load_model,
)
from .paper import PAPER_RESULTS
from .plots import feature_map_captions, plot_ablation, plot_confusions, plot_training_curves
from .project import RESULTS_DIR, WORK_DIR, enter_project_root, project_root
from .recipes import run_config, run_name
from .runs import (
    RUN_FILES,
    MissingMetrics,
    export_checkpoint,
    export_run,
    read_run,
    report_time,
    run_classes,
)
from .tables import (
    build_seed_table,
    build_table,
    data_seed_results,
    describe_setup,
    markdown_table,
    model_stats,
    seed_run_name,
    quoted_spreads,
    seed_spreads,
    table_notes,
    tables_markdown,
    write_tables,
)
from .opened import drawn_runs, evaluated_run
from .testing import evaluate_views
from .training import committed_checkpoint, ensure_trained, load_trained, prepare_data, run_variant
from .variants import (
    QUICK_DATA,
    QUICK_OVERRIDES,
    TRACK_TITLES,
    VARIANT_KEYS,
    VARIANTS,
    Variant,
    by_track,
    config_label,
    config_track,
    model_label,
    run_label,
    variant,
    variant_config,
)

__all__ = [
    "MissingMetrics",
    "PAPER_RESULTS",
    "QUICK_DATA",
    "QUICK_OVERRIDES",
    "RESULTS_DIR",
    "RUN_FILES",
    "TRACK_TITLES",
    "VARIANTS",
    "VARIANT_KEYS",
    "Variant",
    "WORK_DIR",
    "benchmark_clip",
    "build_seed_table",
    "build_table",
    "by_track",
    "class_names",
    "clip_classes",
    "clip_stats",
    "committed_checkpoint",
    "config_label",
    "config_track",
    "data_seed_results",
    "describe_setup",
    "direction_report",
    "drawn_runs",
    "ensure_trained",
    "enter_project_root",
    "evaluate_views",
    "evaluated_run",
    "export_checkpoint",
    "export_run",
    "feature_map_captions",
    "feature_map_report",
    "find_clip",
    "flip_labels",
    "load_clip",
    "load_model",
    "load_trained",
    "markdown_table",
    "model_label",
    "model_stats",
    "pair_report",
    "per_class_accuracy",
    "plot_ablation",
    "plot_confusions",
    "plot_training_curves",
    "predict_clip",
    "prepare_data",
    "project_root",
    "read_predictions",
    "read_run",
    "report_time",
    "run_classes",
    "run_config",
    "run_label",
    "run_name",
    "run_variant",
    "seed_run_name",
    "quoted_spreads",
    "seed_spreads",
    "table_notes",
    "tables_markdown",
    "variant",
    "variant_config",
    "write_tables",
]
