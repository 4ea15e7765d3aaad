"""What the report notebooks read and say: step times from the main job's timings, the base recipes
of a variant, the test views a recipe scores, the model card's recipe settings."""
import json

import pytest

from atm_core import card, workbook
from atm_core.engine import load_config
from atm_core.workbook import testing
from atm_core.workbook.variants import recipe_chain


def test_report_time_reads_the_main_jobs_timings(tmp_path):
    assert "No timing of `results`" in workbook.report_time("results", results_dir=tmp_path)
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "timings.json").write_text(json.dumps({"results": 12.6, "train_tsn": 88.2}))
    assert workbook.report_time("train_tsn", results_dir=tmp_path).startswith("_The main job ran `train_tsn` in 88 s")
    assert "No timing of `ablation`" in workbook.report_time("ablation", results_dir=tmp_path)


def test_variant_bases_follow_the_recipe_chain(tmp_path):
    assert workbook.variant("textures_atm_mul_sub").bases == ["synthetic_textures_base.yaml", "synthetic_base.yaml"]
    assert workbook.variant("atm_sub").bases == ["synthetic_base.yaml"]
    (tmp_path / "a.yaml").write_text("base: b.yaml\n")
    (tmp_path / "b.yaml").write_text("base: a.yaml\n")
    with pytest.raises(ValueError, match="circular 'base' chain"):
        recipe_chain(tmp_path / "a.yaml")


def test_a_single_view_recipe_is_scored_once(tmp_path, monkeypatch):
    cfg = workbook.variant_config("tsn", work_dir=tmp_path)
    assert testing.recipe_test_views(cfg) == (1, 1)
    calls = []

    def fake_evaluate(run, checkpoint):
        calls.append(run.eval.out_dir)
        return {"num_clips": run.eval.num_clips or 1, "num_crops": run.eval.num_crops or 1, "top1": 50.0,
                "top5": 90.0, "mean_class_acc": 50.0, "num_videos": 3, "eval_time": 1.0}

    monkeypatch.setattr(testing, "evaluate", fake_evaluate)
    views = workbook.evaluate_views(cfg, "ckpt", tmp_path / "out")
    assert list(views.index) == ["test_views"] and calls == [str(tmp_path / "out" / "test_views")]
    several = load_config(workbook.variant("tsn").recipe, ["eval.num_clips=2", f"train.output_dir={tmp_path}"])
    assert testing.recipe_test_views(several) == (2, 1)
    assert list(workbook.evaluate_views(several, "ckpt", tmp_path / "out").index) == ["test_views", "single_view"]


def test_model_card_builds_a_model_with_the_recipes_settings(tmp_path):
    default = card.card_row("atm_vit_tiny_patch8_64")
    recipe = card.card_row("atm_vit_tiny_patch8_64", **{"atm.context": 3})
    assert recipe["model"] == "atm_vit_tiny_patch8_64 (atm.context=3)" and default["model"] == "atm_vit_tiny_patch8_64"
    assert recipe["gmac"] < default["gmac"]  # fewer neighbours to compare
    _, table_gmacs = workbook.model_stats(workbook.variant_config("atm_mul_sub"), 12)
    assert recipe["gmac"] == pytest.approx(table_gmacs, rel=1e-3)  # the card's row is the table's model
    with pytest.raises(SystemExit):
        card.main(["--models", "atm_vit_tiny_patch8_64", "--set", "atm.context=3", "--out", str(tmp_path / "c.md")])
