"""Training from the notebook: Accelerate's notebook launcher on 2 CPU processes against one
process, and train.ipynb on a paper recipe and on a benchmark recipe with its run parameters."""
from __future__ import annotations

import json
import os
from pathlib import Path

import nbformat
import pytest

from atm_core.engine import load_config, read_metrics, train
from atm_core.engine.launch import launch_training

ROOT = Path(__file__).resolve().parents[1]
PARAMS = ROOT / "params"


@pytest.fixture(scope="module")
def bench(tmp_path_factory) -> Path:
    """12 train / 12 val / 12 test videos of 8 frames, as mp4 and as SS-V1 style JPEG folders."""
    from atm_core.data import generate_benchmark

    root = tmp_path_factory.mktemp("bench")
    generate_benchmark(root, seed=0, train_per_class=1, val_per_class=1, test_per_class=1, size=72,
                       num_frames=8, frames=True)
    return root


def tiny(root: Path, out: Path, *extra: str) -> list[str]:
    return [f"data.root={root}", f"train.output_dir={out}", "data.generate=null", "data.num_workers=0",
            "optim.epochs=2", "optim.warmup_epochs=0.5", "train.threads=1", "eval.batch_size=3",
            "eval.after_train=false", "train.log_with=[]", *extra]


@pytest.mark.slow
def test_notebook_launcher_two_processes_match_one_process(bench, tmp_path):
    # no BatchNorm (no ATM, no conv stem): the two runs differ only in the order of gradient sums
    # (in fp32: bf16 products would round each process's half of the batch on their own)
    extra = ["model.temporal=tokent1d", "model.atm.ops=[]", "model.conv_stem=[]", "train.mixed_precision=no"]
    one = train(load_config(PARAMS / "synthetic_base.yaml", tiny(bench, tmp_path / "one", *extra,
                                                                  "train.batch_size=8")))
    two = launch_training(load_config(PARAMS / "synthetic_base.yaml",
                                      tiny(bench, tmp_path / "two", *extra, "train.batch_size=4")), 2)
    rec_one, rec_two = read_metrics(tmp_path / "one"), read_metrics(tmp_path / "two")
    assert [r["global_step"] for r in rec_two] == [r["global_step"] for r in rec_one] == [1, 2]
    for r1, r2 in zip(rec_one, rec_two):
        assert r1["lr"] == pytest.approx(r2["lr"], rel=1e-12)  # same global batch, same schedule
        # tolerance: float32 reassociation of the gradient average only
        assert r1["train_loss"] == pytest.approx(r2["train_loss"], abs=1e-4)
        assert r1["val_loss"] == pytest.approx(r2["val_loss"], abs=1e-4)
        for key in ("val_top1", "val_top5", "val_mean_class_acc"):
            assert r1[key] == pytest.approx(r2[key], abs=1e-9), key
    assert (two["best_top1"], two["best_epoch"]) == (one["best_top1"], one["best_epoch"])
    assert two["output_dir"] == str(tmp_path / "two") and two["eval"] is None


def test_launch_refuses_zero_processes(tmp_path):
    with pytest.raises(ValueError, match="num_processes=0"):
        launch_training(load_config(PARAMS / "synthetic_base.yaml", [f"train.output_dir={tmp_path}"]), 0)


def run_notebook(tmp_path: Path, notebook: str, parameters: dict) -> nbformat.NotebookNode:
    import papermill as pm

    out = tmp_path / f"{notebook}.ipynb"
    env = {"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        pm.execute_notebook(str(ROOT / "notebooks" / f"{notebook}.ipynb"), str(out), kernel_name="python3",
                            parameters={"work_dir": str(tmp_path / "runs"), "results_dir": str(tmp_path / "results"),
                                        **parameters}, cwd=str(ROOT), progress_bar=False)
    finally:
        for k, v in old.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
    return nbformat.read(out, as_version=4)


CPU_SIZED_SS = ["model.name=atm_vit_tiny_patch8_64", "model.img_size=64", "model.pretrained=false",
                "data.options.input_size=64", "data.options.scale=[72,80]", "data.options.num_classes=12",
                "data.train_list=train_frames.txt", "data.val_list=val_frames.txt", "data.num_workers=0",
                "train.mixed_precision=no", "optim.epochs=1", "optim.warmup_epochs=0", "train.batch_size=4",
                "eval.batch_size=4", "train.threads=1", "train.log_with=[]"]


@pytest.mark.slow
@pytest.mark.parametrize("recipe, overrides, views", [
    # the published SS-V1 recipe (RandAugment, Mixup/CutMix, repeated augmentation, 2 x 3 test
    # views) on JPEG frame folders, with the tiny model and image size of a CPU
    ("params/ssv1_vit_b16_f8.yaml", CPU_SIZED_SS, 6),
    ("params/synthetic_atm_mul_sub.yaml",
     ["data.generate=null", "data.num_workers=0", "optim.epochs=1", "optim.warmup_epochs=0",
      "train.batch_size=6", "train.threads=1", "train.log_with=[]", "eval.num_crops=1"], 1),
], ids=["ssv1_paper_recipe", "benchmark_recipe"])
def test_train_notebook_trains_a_recipe_on_two_processes(bench, tmp_path, recipe, overrides, views):
    nb = run_notebook(tmp_path, "train", {"variant": None, "recipe": recipe, "overrides": overrides, "progress": False,
                                          "data_root": str(bench), "num_processes": 2, "mixed_precision": "no"})
    name = Path(recipe).stem
    run = tmp_path / "runs" / name
    cfg = load_config(run / "config.yaml")
    assert cfg.data.root == str(bench) and cfg.optim.epochs == 1 and cfg.train.mixed_precision == "no"
    assert [r["epoch"] for r in read_metrics(run)] == [0]
    summary = json.loads((tmp_path / "results" / "runs" / name / "eval" / "summary.json").read_text())
    assert summary["num_videos"] == 12 and summary["views"] == views
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    assert "(2 process(es))" in text  # the trainer's own report: one group of two processes


def outputs_text(nb: nbformat.NotebookNode) -> str:
    return json.dumps([c.outputs for c in nb.cells if c.cell_type == "code"])


@pytest.mark.slow
def test_evaluate_notebook_on_a_checkpoint_of_a_paper_recipe(bench, tmp_path):
    """The SS-V1 recipe's 2 x 3 test views and one view side by side on a checkpoint trained
    here, with the benchmark's left/right classes as the recipe's mirrored pairs."""
    overrides = [*CPU_SIZED_SS, "data.options.flip_labels={0: 1, 1: 0}", "optim.epochs=1"]
    cfg = load_config(PARAMS / "ssv1_vit_b16_f8.yaml",
                      [*overrides, f"data.root={bench}", f"train.output_dir={tmp_path / 'run'}", "eval.after_train=false"])
    train(cfg)
    nb = run_notebook(tmp_path, "evaluate", {"variant": None, "recipe": "params/ssv1_vit_b16_f8.yaml",
                                             "overrides": overrides, "data_root": str(bench),
                                             "checkpoint": str(tmp_path / "run" / "checkpoints" / "best"),
                                             "out_dir": str(tmp_path / "eval")})
    views = {name: json.loads((tmp_path / "eval" / name / "summary.json").read_text())
             for name in ("test_views", "single_view")}
    assert (views["test_views"]["num_clips"], views["test_views"]["num_crops"]) == (2, 3)
    assert (views["single_view"]["num_clips"], views["single_view"]["num_crops"]) == (1, 1)
    text = outputs_text(nb)
    assert "moving_left / moving_right" in text and "taken_for_mirror" in text
    assert "no time-reversal pairs" in text  # ssv1 data: not the benchmark's report
