"""The batch runner and the ablation table: run outputs -> tables, refusals, failure reports, and
the quick main job end to end through papermill."""
import json
import os
import shutil
import time
from pathlib import Path

import nbformat
import numpy as np
import pandas as pd
import pytest
import timm
from nbformat.v4 import new_code_cell, new_notebook

from atm_core import jobs, reproduce, workbook
from atm_core.data.synthetic import CLASSES as SYNTHETIC_CLASSES
from atm_core.engine import load_config

ROOT = Path(__file__).resolve().parents[1]


def fake_run(run_dir: Path, key: str, top1: float, train_times=(30.0, 42.0), *, summary=True, metrics=True,
             data_root: Path | None = None):
    """A run directory as the engine writes it, with chosen metrics."""
    run_dir.mkdir(parents=True)
    overrides = [f"data.root={data_root}"] if data_root else []
    load_config(ROOT / workbook.variant(key).recipe, overrides).to_yaml(run_dir / "config.yaml")
    if metrics:
        records = [{"epoch": i, "train_loss": 2.0 - i, "val_top1": top1, "train_time": t, "epoch_time": t + 3}
                   for i, t in enumerate(train_times)]
        (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (run_dir / "eval").mkdir()
    np.save(run_dir / "eval" / "confusion.npy", np.eye(12, dtype=np.int64) * 25)
    if summary:
        (run_dir / "eval" / "summary.json").write_text(json.dumps(
            {"top1": top1, "top5": 99.0, "mean_class_acc": top1, "num_videos": 300, "views": 1,
             "eval_time": 6.0}))
    return run_dir


def test_table_refuses_runs_with_missing_metrics(tmp_path):
    runs = {
        "tsn": fake_run(tmp_path / "tsn", "tsn", 48.0),
        "tsm": fake_run(tmp_path / "tsm", "tsm", 90.0, summary=False),
        "atm_mul": fake_run(tmp_path / "atm_mul", "atm_mul", 95.0, metrics=False),
    }
    with pytest.raises(workbook.MissingMetrics) as info:
        workbook.build_table(runs)
    message = str(info.value)
    assert "tsm: missing eval/summary.json" in message
    assert "atm_mul: missing metrics.jsonl" in message
    assert "tsn" not in message.replace("refusing", "")


def test_table_refuses_incomplete_records(tmp_path):
    run = fake_run(tmp_path / "tsn", "tsn", 48.0)
    (run / "metrics.jsonl").write_text(json.dumps({"epoch": 0, "train_loss": 1.0}) + "\n")
    with pytest.raises(workbook.MissingMetrics, match="metrics.jsonl line 1 has no 'train_time'"):
        workbook.read_run(run)
    (run / "metrics.jsonl").write_text(json.dumps({"epoch": 0, "train_time": 1.0}) + "\n")
    with pytest.raises(workbook.MissingMetrics, match="metrics.jsonl line 1 has no 'epoch_time'"):
        workbook.read_run(run)
    (run / "metrics.jsonl").write_text("")
    with pytest.raises(workbook.MissingMetrics, match="no epoch records"):
        workbook.read_run(run)
    fake = fake_run(tmp_path / "tsm", "tsm", 50.0)
    (fake / "eval" / "summary.json").write_text(json.dumps({"top1": 50.0, "num_videos": 3}))
    with pytest.raises(workbook.MissingMetrics, match="no number 'top5'"):
        workbook.read_run(fake)


def test_table_rows_come_from_the_run_outputs(tmp_path):
    runs = {"tsn": fake_run(tmp_path / "tsn", "tsn", 47.5, (60.0, 90.0)),
            "my_run": fake_run(tmp_path / "ms", "atm_mul_sub", 96.25, (100.0, 110.0))}
    table = workbook.build_table(runs)
    assert table.variant.tolist() == ["tsn", "my_run"]
    assert table.model.tolist() == ["TSN", "ATM(mul, sub)"]  # named after the run's own config
    assert table.top1.tolist() == [47.5, 96.25]
    assert table.train_min.tolist() == [2.5, 3.5]
    assert table.run_min.tolist() == [2.7, 3.7]  # + 3 s of validation per epoch, + 6 s of evaluation
    assert table.atm_ops.tolist() == ["-", "mul, sub"]
    for key, row in zip(runs, table.itertuples()):
        cfg = load_config(runs[key] / "config.yaml")
        model = timm.create_model(cfg.model.name, num_classes=12, num_frames=8, temporal=cfg.model.temporal,
                                  atm=cfg.model.atm,
                                  img_size=64)
        assert row.params_M == round(sum(p.numel() for p in model.parameters()) / 1e6, 4)
    assert table.params_M[1] > table.params_M[0] and table.gmacs[1] > table.gmacs[0] > 0

    csv_path, md_path = workbook.write_tables({"shapes": (table, "NOTES"), "textures": (table.iloc[:1], "OTHER")},
                                              tmp_path / "tables")
    written = pd.read_csv(csv_path)
    pd.testing.assert_frame_equal(written.iloc[:2].drop(columns="track"), table, check_dtype=False)
    assert written.track.tolist() == ["shapes", "shapes", "textures"]
    text = md_path.read_text()
    assert "built-in CPU benchmark" in text.splitlines()[0] and "NOTES" in text
    shapes, textures = text.split("## Shapes track")[1].split("## Real-texture track")
    assert "NOTES" in shapes and "OTHER" in textures and "ATM(mul, sub)" not in textures
    assert "| ATM(mul, sub) | tokent1d | mul, sub | 96.2 |" in text or "| ATM(mul, sub) | tokent1d | mul, sub | 96.3 |" in text


def test_notes_say_where_the_numbers_come_from():
    setup = {"model": "atm_vit_tiny_patch8_64", "frames": 8, "epochs": 12, "batch": 8, "threads": 1, "seed": 0,
             "videos": 300, "views": 1, "sampling": "one per segment"}
    notes = workbook.table_notes(setup)
    assert "(12 epochs, batch 8)" in notes and "training loop on 1 CPU thread(s)" in notes
    assert "built-in CPU benchmark" in notes and "not** on Something-Something" in notes
    assert "8 frames (one per segment)" in notes and "brighter than a darker" in notes
    assert "shapes track" in notes and "photographs" not in notes
    textures = workbook.table_notes({**setup, "track": "textures",
                                     "models": ["atm_vit_tiny_patch8_64", "atm_resnet_tiny_64"]})
    assert "real-texture track" in textures and "photographs" in textures and "brighter" not in textures
    assert "(the -ResNet rows: `atm_resnet_tiny_64`)" in textures
    # no spread typed in: without a seeds run the note says none was measured, with one it quotes it
    assert "No spread over training seeds has been measured" in notes and "%" not in notes.split("seeds")[-1]
    quoted = workbook.table_notes(setup, spreads=["ATM(mul, sub): 1.0 / 2.0 % over training seeds 0..1"])
    assert "Measured spread over training seeds: ATM(mul, sub): 1.0 / 2.0 %" in quoted
    assert "50 %" in notes and "Quick mode" not in notes
    assert "on 300 validation videos, of the checkpoint chosen as best on those same videos" in notes
    assert "One training seed per row" in notes and "--seeds N" in notes
    assert workbook.table_notes(setup, quick=True).startswith("**Quick mode")
    held_out = workbook.table_notes({**setup, "held_out": True}, seeds=3)
    assert "300 held-out test videos" in held_out and "best validation top-1" in held_out
    assert "over 3 training seeds" in held_out and "One training seed" not in held_out


def test_seed_spreads_are_read_from_a_seeds_run_and_name_a_different_recipe(tmp_path):
    row = fake_run(tmp_path / "results" / "runs" / "atm_mul_sub", "atm_mul_sub", 80.0)
    seeds = tmp_path / "seeds"
    for seed, top1 in enumerate((89.0, 94.25, 95.5)):
        fake_run(seeds / "runs" / workbook.seed_run_name("atm_mul_sub", seed), "atm_mul_sub", top1)
    fake_run(seeds / "runs" / "tsn", "tsn", 40.0)  # one seed: no spread to quote
    sentences = workbook.seed_spreads(seeds, {"atm_mul_sub": row, "tsn": tmp_path / "results" / "runs" / "tsn"})
    assert len(sentences) == 1
    spread = np.std([89.0, 94.25, 95.5], ddof=1)
    assert sentences[0].startswith("ATM(mul, sub): 89.0 / 94.2 / 95.5 % over training seeds 0..2")
    assert f"(mean 92.9 ± {spread:.1f}" in sentences[0] and "same recipe and data as this row" in sentences[0]
    other = fake_run(tmp_path / "other", "atm_mul_sub", 80.0)
    cfg = load_config(other / "config.yaml", ["optim.epochs=9"])
    cfg.to_yaml(other / "config.yaml")
    assert "differ from this row's in optim.epochs" in workbook.seed_spreads(seeds, {"atm_mul_sub": other})[0]
    assert workbook.seed_spreads(tmp_path / "nowhere", {"atm_mul_sub": row}) == []


def test_every_seeds_run_is_quoted_with_the_keys_its_recipe_changed(tmp_path):
    row = fake_run(tmp_path / "results" / "runs" / "atm_mul_sub", "atm_mul_sub", 80.0)
    load_config(row / "config.yaml", ["train.mixed_precision=bf16"]).to_yaml(row / "config.yaml")
    for folder, precision, top1s in (("seeds", "bf16", (81.0, 83.0)), ("seeds_fp32", "no", (70.0, 74.0))):
        for seed, top1 in enumerate(top1s):
            run = fake_run(tmp_path / "results" / folder / "runs" / workbook.seed_run_name("atm_mul_sub", seed),
                           "atm_mul_sub", top1)
            load_config(run / "config.yaml", [f"train.mixed_precision={precision}"]).to_yaml(run / "config.yaml")
    (tmp_path / "results" / "seeds_notes.md").write_text("a file, not a seeds run")
    same, fp32 = workbook.quoted_spreads(tmp_path / "results", {"atm_mul_sub": row})
    assert same.startswith("ATM(mul, sub): 81.0 / 83.0 %") and same.endswith("same recipe and data as this row")
    assert fp32.startswith("ATM(mul, sub): 70.0 / 74.0 %") and "`" + str(tmp_path / "results" / "seeds_fp32") in fp32
    assert fp32.endswith("those runs differ from this row's in train.mixed_precision")
    assert workbook.quoted_spreads(tmp_path / "nowhere", {"atm_mul_sub": row}) == []


def test_notes_say_which_precision_the_rows_trained_in(tmp_path):
    runs = [fake_run(tmp_path / key, key, 50.0) for key in ("tsn", "atm_mul_sub")]
    setup = {"model": "atm_vit_tiny_patch8_64", "frames": 8, "epochs": 4, "batch": 32, "threads": 1,
             "videos": 300, "views": 1, "sampling": "one per segment"}
    for precisions, expected in ((["bf16", "bf16"], "Precision: bf16 autocast"),
                                 (["no", "no"], "Precision: fp32"),
                                 (["bf16", "no"], "Precision differs between rows: train.mixed_precision bf16, no.")):
        for run, precision in zip(runs, precisions):
            load_config(run / "config.yaml", [f"train.mixed_precision={precision}"]).to_yaml(run / "config.yaml")
        described = workbook.describe_setup(runs)
        assert described["precisions"] == list(dict.fromkeys(precisions))
        assert expected in workbook.table_notes({**setup, "precisions": described["precisions"]})
    assert "Precision" not in workbook.table_notes(setup)  # a table without the runs' precisions says nothing
    bf16 = {**setup, "precisions": ["bf16"]}
    fp32_seeds = "ATM(mul, sub): 70.0 / 74.0 % (...); those runs differ from this row's in train.mixed_precision"
    assert "quoted below" in workbook.table_notes(bf16, spreads=[fp32_seeds])
    assert "quoted below" in workbook.table_notes(bf16, draws=[fp32_seeds])
    same_recipe = "ATM(mul, sub): 81.0 / 83.0 % (...); same recipe and data as this row"
    assert "quoted below" not in workbook.table_notes(bf16, spreads=[same_recipe])  # nothing below measures it


def test_other_data_draws_are_quoted_beside_the_row(tmp_path):
    row = fake_run(tmp_path / "results" / "runs" / "atm_mul_sub", "atm_mul_sub", 80.0)
    draws = tmp_path / "data_seeds"
    for seed, top1 in ((2, 41.5), (1, 67.25)):
        run = fake_run(draws / f"seed_{seed}" / "runs" / "atm_mul_sub", "atm_mul_sub", top1,
                       data_root=tmp_path / f"data{seed}")
        load_config(run / "config.yaml", [f"data.generate.seed={seed}"]).to_yaml(run / "config.yaml")
    (draws / "seed_x").mkdir()  # not a draw: ignored
    sentences = workbook.data_seed_results(draws, {"atm_mul_sub": row, "tsn": row})
    assert len(sentences) == 1  # no tsn run on another draw
    assert sentences[0].startswith("ATM(mul, sub): 67.2 % on data seed 1, 41.5 % on data seed 2 "
                                   "(this row: 80.0 % on data seed 0")
    assert sentences[0].endswith("; same recipe")  # data.root and data.generate are what a draw changes
    other = draws / "seed_1" / "runs" / "atm_mul_sub"
    load_config(other / "config.yaml", ["optim.epochs=9"]).to_yaml(other / "config.yaml")
    assert workbook.data_seed_results(draws, {"atm_mul_sub": row})[0].endswith(
        "; on data seed 1 the recipe differs from this row's in optim.epochs")  # seed 2 is the row's recipe
    assert workbook.data_seed_results(tmp_path / "nowhere", {"atm_mul_sub": row}) == []
    setup = {"model": "atm_vit_tiny_patch8_64", "frames": 8, "epochs": 4, "batch": 32, "threads": 1,
             "videos": 300, "views": 1, "sampling": "one per segment", "data_seed": 0}
    assert "No other draw of the benchmark has been measured" in workbook.table_notes(setup)
    quoted = workbook.table_notes(setup, draws=sentences)
    assert "6 time-reversal pairs, drawn with data seed 0)" in quoted
    assert "the draws whose validation clips chose it): ATM(mul, sub): 67.2 % on data seed 1" in quoted


def test_export_copies_artefacts_and_class_names_without_checkpoints(tmp_path):
    data = tmp_path / "data"
    run = fake_run(tmp_path / "run", "tsn", 50.0, data_root=data)
    with pytest.raises(workbook.MissingMetrics, match="eval/predictions.csv, eval/confusion.png"):
        workbook.export_run(run, tmp_path / "out")
    (run / "eval" / "predictions.csv").write_text("index,label,pred,correct\n")
    (run / "eval" / "confusion.png").write_bytes(b"png")
    (run / "checkpoints" / "best").mkdir(parents=True)
    (run / "checkpoints" / "best" / "model.safetensors").write_bytes(b"weights")
    with pytest.raises(workbook.MissingMetrics, match=f"label file {data / 'labels.csv'} does not exist"):
        workbook.export_run(run, tmp_path / "out")
    data.mkdir()
    (data / "labels.csv").write_text("id,name\n0,left\n1,right\n")
    out = workbook.export_run(run, tmp_path / "out")
    copied = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert copied == sorted([*workbook.RUN_FILES, "labels.csv"])
    assert workbook.run_classes(out) == ["left", "right"]  # readable without the data folder
    with pytest.raises(workbook.MissingMetrics, match="checkpoints/best has no meta.json"):
        workbook.export_checkpoint(run, tmp_path / "ckpt")
    (run / "checkpoints" / "best" / "meta.json").write_text("{}")
    (run / "checkpoints" / "best" / "ema.safetensors").write_bytes(b"ema")
    ckpt = workbook.export_checkpoint(run, tmp_path / "ckpt")  # a best/ written before cards
    assert sorted(p.name for p in ckpt.iterdir()) == ["card.json", "meta.json", "model.safetensors", "recipe.yaml"]
    card = json.loads((ckpt / "card.json").read_text())
    assert card["classes"] == ["left", "right"] and card["model"] == load_config(run / "config.yaml").model.name
    assert card["measured"] == {"test_top1": 50.0, "test_videos": 300, "test_views": 1}
    assert load_config(ckpt / "recipe.yaml").to_dict() == load_config(run / "config.yaml").to_dict()


def test_seed_table_reports_mean_and_spread(tmp_path):
    runs = {"tsn": [fake_run(tmp_path / "tsn", "tsn", 48.0), fake_run(tmp_path / "tsn_1", "tsn", 52.0),
                    fake_run(tmp_path / "tsn_2", "tsn", 53.0)],
            "atm_sub": [fake_run(tmp_path / "sub", "atm_sub", 90.0)]}
    table = workbook.build_seed_table(runs)
    assert table.variant.tolist() == ["tsn", "atm_sub"] and table.seeds.tolist() == [3, 1]
    assert table.top1[0] == 51.0 and table.top1[0] == pytest.approx(np.mean([48.0, 52.0, 53.0]))
    assert table.top1_sd[0] == round(float(np.std([48.0, 52.0, 53.0], ddof=1)), 2)
    assert table.top1_seeds[0] == "48.0 / 52.0 / 53.0" and np.isnan(table.top1_sd[1])
    text = workbook.markdown_table(table)
    assert "| TSN | tsn | - | 51.0 ± 2.6 (48.0 / 52.0 / 53.0) |" in text
    assert "| ATM(sub) | tokent1d | sub | 90.0 |" in text
    assert workbook.seed_run_name("tsn", 0) == "tsn" and workbook.seed_run_name("tsn", 2) == "tsn_seed2"


def test_pair_report_counts_reversed_twins():
    classes = ["a", "a_rev", "b", "b_rev"]
    predictions = pd.DataFrame({"label": [0, 0, 1, 1, 2, 3], "pred": [0, 1, 0, 1, 2, 0]})
    predictions["correct"] = (predictions.label == predictions.pred).astype(int)
    pairs = workbook.pair_report(predictions, classes)
    assert pairs.taken_for_reversed_twin.tolist() == [50.0, 0.0]
    assert pairs.in_pair.tolist() == [100.0, 50.0]
    per_class = workbook.per_class_accuracy(predictions, classes)
    assert per_class.accuracy.tolist() == [50.0, 50.0, 100.0, 0.0]
    assert per_class.most_confused_with.tolist() == ["a_rev", "a", "-", "a"]


def test_variant_recipes_train_what_their_names_say():
    for v in workbook.VARIANTS:
        cfg = workbook.variant_config(v.key, work_dir="w")
        prefix, name = (v.key.split("_", 1) if v.key.split("_")[0] in ("resnet", "textures") else ("", v.key))
        named_ops = tuple(name.split("_")[1:]) if name.startswith("atm_") else ()
        assert cfg.model.atm.ops == v.ops == named_ops, v.recipe
        cnn_atm = "tsn" if prefix == "resnet" else "tokent1d"
        assert cfg.model.temporal == v.temporal == (cnn_atm if named_ops else name), v.recipe
        assert ("resnet" in cfg.model.name) == (prefix == "resnet"), v.recipe
        assert v.track == ("textures" if prefix == "textures" else "shapes"), v.recipe
        assert cfg.train.output_dir == f"w/{v.key}"
    assert [v.label for v in workbook.VARIANTS] == [
        "TSN", "TSM", "TokenShift", "TokenT1D", "ATM(add)", "ATM(sub)", "ATM(mul)", "ATM(div)", "ATM(mul, sub)",
        "TSN-ResNet", "ATM(mul, sub)-ResNet", "TSN", "TokenT1D", "ATM(sub)", "ATM(mul, sub)"]
    assert workbook.by_track(workbook.VARIANT_KEYS) == {
        "shapes": list(workbook.VARIANT_KEYS[:11]), "textures": list(workbook.VARIANT_KEYS[11:])}
    textures = workbook.variant_config("textures_atm_sub", work_dir="w", data_root="elsewhere/bench")
    assert textures.data.root == "elsewhere/bench_textures" and textures.data.generate["track"] == "textures"
    assert workbook.variant_config("atm_sub", data_root="elsewhere/bench").data.root == "elsewhere/bench"
    quick = workbook.variant_config("tsn", quick=True)
    assert quick.optim.epochs == 1 and quick.data.root.endswith("_quick")
    assert quick.data.generate["train_per_class"] == workbook.QUICK_DATA["train_per_class"]
    with pytest.raises(KeyError, match="unknown variant 'atm_xor'"):
        workbook.variant_config("atm_xor")


def test_variant_reads_its_module_and_ops_from_its_recipe(tmp_path, monkeypatch):
    (tmp_path / "pyproject.toml").write_text("")
    (tmp_path / "params").mkdir()
    (tmp_path / "params" / "synthetic_base.yaml").write_text((ROOT / "params" / "synthetic_base.yaml").read_text())
    (tmp_path / "params" / "synthetic_atm_mul.yaml").write_text(
        "base: synthetic_base.yaml\nmodel:\n  temporal: tsm\n  atm:\n    ops: [div, add]\n")
    monkeypatch.chdir(tmp_path)
    v = workbook.variant("atm_mul")
    assert (v.temporal, v.ops, v.label) == ("tsm", ("div", "add"), "ATM(div, add)")
    cfg = workbook.variant_config("atm_mul", work_dir="w")
    assert (cfg.model.temporal, cfg.model.atm.ops) == ("tsm", ("div", "add"))


def failing_notebook(path: Path) -> Path:
    nb = new_notebook(metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}})
    params = new_code_cell("x = 1")
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, new_code_cell("print('before', x)"), new_code_cell("y = 2\nraise ValueError(f'boom {x}')"),
                new_code_cell("print('after')")]
    nbformat.write(nb, path)
    return path


def test_failed_notebook_is_named_and_kept_partly_executed(tmp_path):
    source = failing_notebook(tmp_path / "broken.ipynb")
    failure = jobs.execute(source, tmp_path / "out" / "broken.ipynb", {"x": 7}, cwd=tmp_path, log_output=False)
    assert failure is not None
    assert (failure.cell, failure.cells, failure.source) == (3, 4, "y = 2")
    assert failure.error == "ValueError: boom 7"
    report = str(failure)
    assert "broken.ipynb at cell 3 of 4" in report and str(tmp_path / "out" / "broken.ipynb") in report
    executed = nbformat.read(tmp_path / "out" / "broken.ipynb", as_version=4)
    outputs = {c.source: c.outputs for c in executed.cells if c.cell_type == "code"}
    assert outputs["print('before', x)"][0]["text"] == "before 7\n"
    assert outputs["print('after')"] == []  # execution stopped at the failing cell


def test_the_kernel_is_stopped_once_the_last_cell_ends(tmp_path):
    """The kernel is not left to tear its interpreter down (seconds with torch and timm loaded):
    its exit handlers never run, while everything its cells wrote is there."""
    nb = new_notebook(metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}})
    params = new_code_cell("x = 1")
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, new_code_cell("import atexit, pathlib\n"
                                      "pathlib.Path('in_cell.txt').write_text(str(x))\n"
                                      "atexit.register(pathlib.Path('at_exit.txt').write_text, 'exit')\n"
                                      "print('done', x)")]
    nbformat.write(nb, tmp_path / "exits.ipynb")
    out = tmp_path / "out" / "exits.ipynb"
    assert jobs.execute(tmp_path / "exits.ipynb", out, {"x": 3}, cwd=tmp_path, log_output=False) is None
    assert (tmp_path / "in_cell.txt").read_text() == "3"
    assert nbformat.read(out, as_version=4).cells[-1].outputs[0]["text"] == "done 3\n"
    time.sleep(1)  # a kernel still tearing down would write its file meanwhile
    assert not (tmp_path / "at_exit.txt").exists()


def test_training_runs_side_by_side_share_the_cores():
    assert reproduce.side_by_side(cores=2) == (2, 1)  # one single-threaded run per core
    assert reproduce.side_by_side(cores=16) == (16, 1)
    assert reproduce.side_by_side(cores=1) == (1, 1)
    assert reproduce.side_by_side(runs=2, cores=2) == (2, 1)
    assert reproduce.side_by_side(runs=3, cores=16) == (3, 5)
    assert reproduce.side_by_side(runs=4, cores=2) == (4, 1)
    jobs = reproduce.training_jobs(["tsn"], {"quick": True}, seeds=2, threads=3)
    assert [j.parameters["overrides"] for j in jobs] == [["train.seed=0", "train.threads=3"],
                                                        ["train.seed=1", "train.threads=3"]]


def test_report_notebooks_that_run_models_take_the_runners_threads():
    import papermill as pm

    jobs = {job.name: job for job in reproduce.report_jobs(["tsn", "atm_mul_sub"], {"quick": True}, threads=1)}
    assert [name for name, job in jobs.items() if job.parameters.get("overrides")] == [
        "evaluate_tsn", "evaluate_atm_mul_sub", "visualize_arithmetic"]
    assert all(jobs[name].parameters["overrides"] == ["train.threads=1"] for name in
               ("evaluate_tsn", "evaluate_atm_mul_sub", "visualize_arithmetic"))
    for job in jobs.values():  # papermill would inject a parameter the notebook does not declare unnoticed
        declared = pm.inspect_notebook(str(ROOT / "notebooks" / f"{job.notebook}.ipynb"))
        assert set(job.parameters) <= set(declared), (job.name, set(job.parameters) - set(declared))
    assert reproduce.report_jobs(["tsn"], {})[1].parameters["overrides"] == []  # no threads given: the recipe's


def test_the_longest_runs_start_first():
    keys = ["tsn", "atm_sub", "atm_mul", "resnet_tsn", "textures_tsn", "textures_atm_mul_sub"]
    jobs = reproduce.training_jobs(keys, {}) + reproduce.report_jobs(["tsn"], {})
    epochs = {track: workbook.variant_config(key).optim.epochs for track, key in
              (("shapes", "tsn"), ("textures", "textures_tsn"))}
    costs = {j.parameters.get("variant") if j.notebook == "train" else j.name: reproduce.training_cost(j)
             for j in jobs}
    assert costs["atm_mul"] == epochs["shapes"] * reproduce.MUL_COST and costs["tsn"] == epochs["shapes"]
    assert costs["textures_tsn"] == epochs["textures"] and costs["ablation"] == 0.0
    order = [j.parameters.get("variant") if j.notebook == "train" else j.name
             for j in reproduce.longest_first(jobs)]
    assert order == sorted(order, key=lambda name: -costs[name])  # by cost, longest first
    assert order[0] == "textures_atm_mul_sub"
    # equal costs keep the given order: the shapes runs without mul, then the report notebooks
    assert [name for name in order if costs[name] == epochs["shapes"]] == ["tsn", "atm_sub", "resnet_tsn"]
    assert order[-len(jobs) + len(keys):] == [j.name for j in jobs[len(keys):]]


def test_side_by_side_failures_come_back_in_job_order(tmp_path):
    """The mul run is submitted first, but each outcome is reported against its own job; each
    kernel has its share of the cores."""
    nb = new_notebook(metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}})
    params = new_code_cell("variant = ''\nname = ''")
    params.metadata["tags"] = ["parameters"]
    threads = new_code_cell("import torch\nopen(f'{name}.threads', 'w').write(str(torch.get_num_threads()))")
    nb.cells = [params, threads, new_code_cell("if variant == 'tsn':\n    raise RuntimeError(f'refused {name}')")]
    (tmp_path / "notebooks").mkdir()
    nbformat.write(nb, tmp_path / "notebooks" / "train.ipynb")
    jobs = reproduce.training_jobs(["tsn", "atm_mul"], {})
    assert [j.parameters["variant"] for j in reproduce.longest_first(jobs)] == ["atm_mul", "tsn"]
    timings = {}
    refused, done = reproduce.run_jobs(jobs, tmp_path / "results", tmp_path, timings, parallel=2)
    assert done is None
    assert refused is not None and refused.error == "RuntimeError: refused tsn"
    assert refused.output == tmp_path / "results" / "runs" / "train_tsn.ipynb"
    assert set(timings) == {"train_tsn", "train_atm_mul"}
    shared = reproduce.side_by_side(2)[1]
    assert [(tmp_path / f"{name}.threads").read_text() for name in ("tsn", "atm_mul")] == [str(shared)] * 2


def test_kernel_runs_this_interpreter():
    import sys

    assert jobs.check_kernel() == sys.executable


# ---------------------------------------------------------------- the quick main job

@pytest.fixture(scope="module")
def quick_job(tmp_path_factory):
    """``python -m atm_core.reproduce --quick`` on three variants of both tracks, two trainings
    side by side, into temporary folders."""
    tmp = tmp_path_factory.mktemp("quick")
    cwd = os.getcwd()
    try:
        code = reproduce.main([*QUICK_ARGS, "--jobs", "2", "--results", str(tmp / "results"), "--work",
                               str(tmp / "work"), "--data", str(tmp / "data")])
    finally:
        os.chdir(cwd)
    return tmp, code


QUICK_ARGS = ("--quick", "--only", "tsn", "atm_mul_sub", "textures_tsn")


@pytest.mark.slow
def test_quick_job_executes_every_notebook(quick_job):
    tmp, code = quick_job
    results = tmp / "results"
    assert code == 0
    executed = sorted(p.name for p in (results / "runs").glob("*.ipynb"))
    assert executed == ["ablation.ipynb", "evaluate_atm_mul_sub.ipynb", "evaluate_tsn.ipynb", "results.ipynb",
                        "train_atm_mul_sub.ipynb", "train_textures_tsn.ipynb", "train_tsn.ipynb",
                        "visualize_arithmetic.ipynb"]
    # each track's benchmark in a folder of its own, the run on the texture track reading its own
    assert json.loads((tmp / "data_textures" / "benchmark.json").read_text())["track"] == "textures"
    assert json.loads((tmp / "data" / "benchmark.json").read_text())["track"] == "shapes"
    run_cfg = load_config(results / "runs" / "textures_tsn" / "config.yaml")
    assert run_cfg.data.root == str(tmp / "data_textures") and run_cfg.train.threads == 1
    for name in executed:  # reports that show without running: outputs kept, figures as PNG
        nb = nbformat.read(results / "runs" / name, as_version=4)
        code = [c for c in nb.cells if c.cell_type == "code"]
        assert [c.metadata.papermill.status for c in code] == ["completed"] * len(code), name
        assert nb.metadata.papermill.parameters["quick"] is True
        kinds = {kind for c in code for o in c.outputs for kind in o.get("data", {})}
        assert "application/vnd.jupyter.widget-view+json" not in kinds, name
        assert "image/png" in kinds and "image/svg+xml" not in kinds, name
    size = sum(p.stat().st_size for p in (results / "runs").glob("*.ipynb"))
    assert size < 8e6, f"executed notebooks take {size / 1e6:.1f} MB"
    for key in ("tsn", "atm_mul_sub"):  # weights only, small enough to commit, named like the recipe
        ckpt = results / "checkpoints" / f"synthetic_{key}"
        assert sorted(p.name for p in ckpt.iterdir()) == ["card.json", "meta.json", "model.safetensors",
                                                          "recipe.yaml"]
        card = json.loads((ckpt / "card.json").read_text())
        assert card["measured"]["test_top1"] == json.loads(
            (results / "runs" / key / "eval" / "summary.json").read_text())["top1"]
        assert (ckpt / "model.safetensors").stat().st_size < 3e6


@pytest.mark.slow
def test_quick_job_tables_and_figures(quick_job):
    tmp, _ = quick_job
    results = tmp / "results"
    table = pd.read_csv(results / "tables" / "ablation.csv")
    assert table.variant.tolist() == ["tsn", "atm_mul_sub", "textures_tsn"]
    assert table.track.tolist() == ["shapes", "shapes", "textures"]
    for row in table.itertuples():  # the table holds exactly what the runs measured
        summary = json.loads((results / "runs" / row.variant / "eval" / "summary.json").read_text())
        assert row.top1 == round(summary["top1"], 2) and row.top5 == round(summary["top5"], 2)
    assert "Quick mode" in (results / "tables" / "ablation.md").read_text()
    figures = {str(p.relative_to(results / "figures")) for p in (results / "figures").rglob("*.png")}
    assert {"ablation_top1.png", "ablation_top1_textures.png", "training_curves.png", "confusion_matrices.png",
            "feature_maps/atm_mul_sub_mul_cue.png", "feature_maps/atm_mul_sub_mul_patches.png",
            "feature_maps/atm_mul_sub_sub_cue.png", "feature_maps/atm_mul_sub_residuals.png",
            "knockout_atm_mul_sub.png"} <= figures  # what each ATM part carries (evaluate.ipynb)
    drops = pd.read_csv(results / "tables" / "knockout_atm_mul_sub.csv", index_col=0)
    assert drops.index.tolist() == [*SYNTHETIC_CLASSES, "all"]
    assert drops.columns.tolist() == ["mul", "mul t-1", "mul t+0", "mul t+1", "sub", "sub t-1", "sub t+0", "sub t+1"]
    assert (results / "model_card.md").is_file()
    assert not (tmp / "results" / "runs" / "tsn" / "checkpoints").exists()
    assert "held-out test videos" in (results / "tables" / "ablation.md").read_text()
    assert table.test_videos.tolist() == [12, 12, 12]  # quick data: one test clip per class


def committed_copy(results: Path, dest: Path) -> Path:
    """The project as a fresh clone holds it once the main job's results are committed: the
    files git tracks (no data/, no runs/), with ``results`` in place of today's results/."""
    import shutil
    import subprocess

    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            capture_output=True, text=True, check=True).stdout.splitlines()
    for name in listed:
        if not name.startswith("results/") and (ROOT / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, dest / name)
    shutil.copytree(results, dest / "results")
    return dest


def execute_in(copy: Path, notebook: str, parameters: dict) -> nbformat.NotebookNode:
    """Execute a notebook of ``copy`` with ``copy`` as the working directory and its atm_core."""
    out = copy / "executed" / f"{notebook}.ipynb"
    old = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = str(copy)
    try:
        failure = jobs.execute(copy / "notebooks" / f"{notebook}.ipynb", out, parameters, cwd=copy,
                                    log_output=False)
    finally:
        os.environ.pop("PYTHONPATH") if old is None else os.environ.__setitem__("PYTHONPATH", old)
    assert failure is None, str(failure)
    return nbformat.read(out, as_version=4)


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.slow
def test_reports_run_in_a_fresh_clone_without_training(quick_job, tmp_path):
    tmp, _ = quick_job
    copy = committed_copy(tmp / "results", tmp_path / "clone")
    before = snapshot(copy / "results")
    nb = execute_in(copy, "results", {"variants": ["tsn", "atm_mul_sub"], "quick": True})
    images = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if "image/png" in o.get("data", {})]
    assert len(images) >= 4  # ablation plot, training curves, confusion matrices, feature maps
    text = json.dumps([c.outputs for c in nb.cells if c.cell_type == "code"])
    assert "held-out test videos" in text and "ATM(mul, sub)" in text
    assert not (copy / "data").exists() and not (copy / "runs").exists()  # committed files only

    nb = execute_in(copy, "evaluate", {"variant": "atm_mul_sub", "quick": True, "data_root": str(tmp / "data")})
    text = json.dumps([c.outputs for c in nb.cells if c.cell_type == "code"])
    assert "test_views" in text and "results/checkpoints/synthetic_atm_mul_sub" in text
    assert "single_view" not in text  # quick mode tests one view: the clips are scored once
    assert "taken_for_reversed_twin" in text and "taken_for_mirror" in text
    assert not list((copy / "runs").rglob("checkpoints"))  # nothing was trained
    assert snapshot(copy / "results") == before  # nor any committed result overwritten


@pytest.mark.slow
def test_runner_carries_on_after_a_refused_run(quick_job, tmp_path):
    tmp, _ = quick_job
    work = tmp / "work"
    broken = work / "tsm"
    broken.mkdir(exist_ok=True)
    (broken / "config.yaml").write_text((work / "tsn" / "config.yaml").read_text())
    shutil.copytree(tmp / "results", tmp_path / "results")  # rebuilt in place
    recorded = json.loads((tmp / "results" / "runs" / "timings.json").read_text())
    cwd = os.getcwd()
    try:
        code = reproduce.main(["--quick", "--skip-training", "--only", "tsn", "tsm", "--results",
                               str(tmp_path / "results"), "--work", str(work), "--data", str(tmp / "data")])
    finally:
        os.chdir(cwd)
    assert code == 1
    table = pd.read_csv(tmp_path / "results" / "tables" / "ablation.csv")
    assert table.variant.tolist() == ["tsn"]  # the refused run is left out, the rest goes on
    assert (tmp_path / "results" / "runs" / "results.ipynb").is_file()
    # the rebuild keeps the training reports and the job's times, and records its own
    assert (tmp_path / "results" / "runs" / "train_tsn.ipynb").read_bytes() == \
        (tmp / "results" / "runs" / "train_tsn.ipynb").read_bytes()
    timings = json.loads((tmp_path / "results" / "runs" / "timings.json").read_text())
    assert {k: timings[k] for k in ("total", "train_tsn", "data_shapes")} == \
        {k: recorded[k] for k in ("total", "train_tsn", "data_shapes")}
    assert timings["rebuild"] > 0 and "rebuild" not in recorded


@pytest.mark.slow
def test_data_seed_trains_on_another_draw_and_writes_its_table_only(quick_job, tmp_path):
    tmp, _ = quick_job
    results = tmp_path / "results"
    cwd = os.getcwd()
    try:
        code = reproduce.main(["--quick", "--data-seed", "1", "--only", "tsn", "--jobs", "1", "--results",
                               str(results), "--work", str(tmp_path / "work"), "--data", str(tmp_path / "data")])
    finally:
        os.chdir(cwd)
    assert code == 0
    assert json.loads((tmp_path / "data" / "benchmark.json").read_text())["seed"] == 1
    first = (tmp / "data" / "train.txt").read_text().split()[0]  # the same file name, another clip
    assert (tmp_path / "data" / first).read_bytes() != (tmp / "data" / first).read_bytes()
    assert load_config(results / "runs" / "tsn" / "config.yaml").data.generate["seed"] == 1
    assert sorted(p.name for p in (results / "runs").glob("*.ipynb")) == ["ablation.ipynb", "train_tsn.ipynb"]
    assert not (results / "checkpoints").exists() and not (results / "model_card.md").exists()
    assert "pairs, drawn with data seed 1)" in (results / "tables" / "ablation.md").read_text()
    (tmp_path / "draws").mkdir()
    results.rename(tmp_path / "draws" / "seed_1")
    sentence, = workbook.data_seed_results(tmp_path / "draws", {"tsn": tmp / "results" / "runs" / "tsn"})
    top1 = json.loads((tmp_path / "draws" / "seed_1" / "runs" / "tsn" / "eval" / "summary.json").read_text())["top1"]
    assert sentence.startswith(f"TSN: {top1:.1f} % on data seed 1 (this row: ") and sentence.endswith("; same recipe")


@pytest.mark.slow
def test_changed_recipe_runs_write_their_table_only_and_need_their_own_folder(quick_job, tmp_path, capsys):
    tmp, _ = quick_job
    with pytest.raises(SystemExit):
        reproduce.main(["--quick", "--set", "train.mixed_precision=no"])
    assert "--set changes the recipes: write their results elsewhere" in capsys.readouterr().err
    results = tmp_path / "seeds_fp32"
    cwd = os.getcwd()
    try:
        code = reproduce.main(["--quick", "--seeds", "2", "--only", "tsn", "--jobs", "1", "--table-only",
                               "--set", "train.mixed_precision=no", "loss.label_smoothing=0.2", "--results", str(results),
                               "--work", str(tmp_path / "work"), "--data", str(tmp / "data")])
    finally:
        os.chdir(cwd)
    assert code == 0
    for name in ("tsn", "tsn_seed1"):
        cfg = load_config(results / "runs" / name / "config.yaml")
        assert cfg.train.mixed_precision == "no" and cfg.loss.label_smoothing == 0.2
    assert sorted(p.name for p in (results / "runs").glob("*.ipynb")) == [
        "ablation.ipynb", "train_tsn.ipynb", "train_tsn_seed1.ipynb"]
    assert not (results / "checkpoints").exists() and not (results / "model_card.md").exists()
    assert "over 2 training seeds" in (results / "tables" / "ablation.md").read_text()


def test_readme_table_is_replaced_between_markers(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{reproduce.README_START}\nold table\n{reproduce.README_END}\noutro\n")
    table = tmp_path / "ablation.md"
    table.write_text("# Title\n\nnotes here\n\n| a |\n|---|\n| 1 |\n")
    assert reproduce.update_readme(readme, table, minutes=27.4)
    text = readme.read_text()
    assert text.startswith("intro\n") and text.endswith("outro\n")
    assert "old table" not in text and "# Title" not in text
    assert "notes here\n\n| a |\n|---|\n| 1 |" in text and "in 27 min" in text
    readme.write_text("no markers\n")
    assert not reproduce.update_readme(readme, table, minutes=1.0)
    assert readme.read_text() == "no markers\n"


@pytest.mark.slow
def test_quick_job_through_submitit_gives_the_local_runners_table(quick_job, tmp_path):
    """The same quick main job with every training a process of its own started by submitit's
    local executor (the path ``--executor slurm`` takes): the same table, up to the timings."""
    tmp, _ = quick_job
    cwd = os.getcwd()
    try:
        code = reproduce.main([*QUICK_ARGS, "--executor", "submitit-local", "--cpus-per-run", "1", "--results",
                               str(tmp_path / "results"), "--work", str(tmp_path / "work"), "--data", str(tmp / "data")])
    finally:
        os.chdir(cwd)
    assert code == 0
    local, cluster = (pd.read_csv(r / "tables" / "ablation.csv") for r in (tmp / "results", tmp_path / "results"))
    timings = ["train_min", "run_min"]
    pd.testing.assert_frame_equal(cluster.drop(columns=timings), local.drop(columns=timings))
    assert len(list((tmp_path / "work" / "submitit").glob("*_log.out"))) == 3  # one job per training
    assert (tmp_path / "results" / "figures" / "knockout_atm_mul_sub.png").is_file()
