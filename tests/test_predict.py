"""Self-describing checkpoints and ``python -m atm_core.predict``: a tiny model trained here, its
``best/`` reopened from the path alone, videos written here classified from the command line."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from atm_core import predict, workbook
from atm_core.data import read_labels
from atm_core.data.synthetic import write_class_video
from atm_core.engine import ConfigError, builders, load_config, read_metrics, train
from atm_core.engine.checkpoint import load_weights
from atm_core.engine.described import CARD_FILE, RECIPE_FILE, load_model, read_card
from atm_core.workbook.training import find_committed

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """A one-epoch ATM(sub) run of the tiny ViT on a 24-video benchmark."""
    from atm_core.data import generate_benchmark

    tmp = tmp_path_factory.mktemp("predict")
    generate_benchmark(tmp / "bench", seed=0, train_per_class=2, val_per_class=1, size=72, num_frames=12)
    train(load_config(ROOT / "params" / "synthetic_atm_sub.yaml", [
        f"data.root={tmp / 'bench'}", f"train.output_dir={tmp / 'run'}", "data.generate=null",
        "data.num_workers=0", "data.test_list=val.txt", "optim.epochs=1", "optim.warmup_epochs=0",
        "train.batch_size=8", "train.threads=1", "eval.batch_size=12", "eval.after_train=false",
        "train.mixed_precision=no"]))  # fp32: the checks below compare with an fp32 computation
    return tmp / "run"


@pytest.fixture(scope="module")
def clips(run: Path, tmp_path_factory) -> dict[str, Path]:
    """One mp4 per class of two time-reversal pairs, written with the benchmark's generator."""
    out = tmp_path_factory.mktemp("clips")
    return {name: write_class_video("shapes", name, out / f"{name}.mp4", seed=3)
            for name in read_labels(run.parents[0] / "bench" / "labels.csv")[:4]}


def independent_probs(run: Path, clip: Path) -> torch.Tensor:
    """The softmax of the run's best weights on the clip's single test view, from the run's
    own config (not the checkpoint's files) and the visualisation's clip reader."""
    cfg = load_config(run / "config.yaml", ["eval.num_clips=1", "eval.num_crops=1"])
    model = builders.load_model(cfg)
    load_weights(model, run / "checkpoints" / "best" / "model.safetensors")
    with torch.no_grad():
        return model(workbook.load_clip(cfg, video=clip)[0][None]).softmax(-1)[0]


def test_best_checkpoint_carries_recipe_classes_and_card(run):
    best = run / "checkpoints" / "best"
    assert load_config(best / RECIPE_FILE).to_dict() == load_config(run / "config.yaml").to_dict()
    card = json.loads((best / CARD_FILE).read_text())
    classes = read_labels(run.parent / "bench" / "labels.csv")
    assert card["classes"] == classes and card["num_classes"] == 12
    assert (card["model"], card["temporal"], card["atm_ops"]) == ("atm_vit_tiny_patch8_64", "tokent1d", ["sub"])
    assert (card["num_frames"], card["input_size"]) == (8, 64)
    assert card["data"]["root"] == str(run.parent / "bench") and card["data"]["dataset"] == "synthetic"
    record = read_metrics(run)[-1]
    assert card["measured"] == {"epoch": 0, "val_top1": record["val_top1"], "val_videos": 12}


def test_load_model_needs_only_the_checkpoint_path(run, clips):
    loaded = load_model(run / "checkpoints" / "best")
    assert loaded.classes == read_labels(run.parent / "bench" / "labels.csv") and not loaded.model.training
    clip = workbook.load_clip(loaded.cfg, video=clips["moving_left"])[0]
    with torch.no_grad():
        assert torch.allclose(loaded.model(clip[None]).softmax(-1)[0],
                              independent_probs(run, clips["moving_left"]), atol=1e-5)


def test_checkpoint_without_recipe_needs_one_and_loads_with_it(run, tmp_path):
    legacy = tmp_path / "legacy"  # as written before checkpoints described themselves
    legacy.mkdir()
    for name in ("model.safetensors", "meta.json"):
        shutil.copy2(run / "checkpoints" / "best" / name, legacy / name)
    with pytest.raises(ConfigError, match=r"legacy carries no recipe \(recipe.yaml\).*--config RECIPE"):
        load_model(legacy)
    loaded = load_model(legacy / "model.safetensors", recipe=run / "config.yaml")
    assert loaded.card is None and loaded.classes == read_labels(run.parent / "bench" / "labels.csv")
    assert read_card(legacy) is None


def test_predict_cli_gives_the_models_classes_from_the_checkpoint_alone(run, clips):
    best = run / "checkpoints" / "best"
    done = subprocess.run([sys.executable, "-m", "atm_core.predict", *map(str, clips.values()),
                           "--checkpoint", str(best), "--views", "1x1", "--topk", "3", "--json"],
                          capture_output=True, text=True, cwd=ROOT, check=False)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert [p["video"] for p in result["predictions"]] == [str(c) for c in clips.values()]
    for clip, found in zip(clips.values(), result["predictions"]):
        probs = independent_probs(run, clip)
        values, labels = probs.topk(3)
        classes = read_labels(run.parent / "bench" / "labels.csv")
        assert [t["class"] for t in found["top"]] == [classes[int(i)] for i in labels]
        assert [t["probability"] for t in found["top"]] == pytest.approx(values.tolist(), abs=1e-5)
    assert result["unreadable"] == [] and result["views"] == {"clips": 1, "crops": 1}
    assert result["model"]["atm_ops"] == ["sub"] and "classes" not in result["model"]  # the card, short


def test_folders_and_lists_accepted_and_unreadable_videos_named_and_counted(run, clips, tmp_path, capsys):
    folder = tmp_path / "videos"
    folder.mkdir()
    good = shutil.copy2(clips["moving_left"], folder / "a.mp4")
    (folder / "b.mp4").write_text("not a video")
    (folder / "notes.md").write_text("ignored: not a video file")
    listed = tmp_path / "list.txt"
    listed.write_text(f"# my clips\n{clips['moving_right']} 0\n\nmissing.mp4\n")
    code = predict.main([str(folder), str(listed), "--checkpoint", str(run / "checkpoints" / "best"),
                         "--views", "1x1", "--topk", "1"])
    out = capsys.readouterr().out
    assert code == 1
    lines = out.splitlines()
    assert lines[0].startswith(f"{good}: ") and lines[1].startswith(f"{clips['moving_right']}: ")
    assert lines[2] == "2 of 4 video(s) unreadable:"
    assert lines[3].startswith(f"  {folder / 'b.mp4'}: ") and lines[4].startswith(f"  {tmp_path / 'missing.mp4'}: ")
    top = independent_probs(run, clips["moving_left"]).argmax()
    assert lines[0].split(": ")[1].rsplit(" ", 1)[0] == read_labels(run.parent / "bench" / "labels.csv")[int(top)]


def test_feature_map_figures_on_request(run, clips, tmp_path):
    result = predict.predict_videos([clips["moving_left"]], run / "checkpoints" / "best", views=(1, 1),
                                    figure_dir=tmp_path / "fig")
    written = sorted(p.name for p in (tmp_path / "fig").iterdir())
    assert written == sorted(Path(f).name for f in result.figures)
    assert "moving_left_sub_cue.png" in written and "moving_left_residuals.png" in written


@pytest.mark.parametrize("args, message", [
    (["--checkpoint", "nowhere"], "error: --checkpoint nowhere: no such file or folder"),
    (["--checkpoint", "{legacy}"], "error: checkpoint {legacy} carries no recipe (recipe.yaml)"),
    (["--checkpoint", "{best}", "--views", "2by3"], "error: --views '2by3': expected CLIPSxCROPS"),
    (["--checkpoint", "{best}", "--topk", "0"], "error: --topk 0: must be at least 1"),
])
def test_user_errors_exit_2_with_one_line(run, clips, tmp_path, capsys, args, message):
    legacy = tmp_path / "legacy"
    legacy.mkdir()
    shutil.copy2(run / "checkpoints" / "best" / "model.safetensors", legacy)
    paths = {"legacy": str(legacy), "best": str(run / "checkpoints" / "best")}
    args = [a.format(**paths) for a in args]
    assert predict.main([str(clips["moving_left"]), *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith(message.format(**paths)) and err.count("\n") == 1


def test_committed_checkpoint_classifies_clips_written_here(tmp_path, capsys):
    """The benchmark's committed ATM(mul, sub) weights name most of the 12 classes of fresh clips
    (chance is 1 in 12); a committed folder written before checkpoints described themselves
    needs its recipe named."""
    checkpoint = find_committed("atm_mul_sub", ROOT / "results")
    assert checkpoint is not None
    from atm_core.data.synthetic import CLASSES

    videos = [write_class_video("shapes", name, tmp_path / f"{i:02d}.mp4", seed=7) for i, name in enumerate(CLASSES)]
    extra = [] if read_card(checkpoint) else ["--config", str(ROOT / "params" / "synthetic_atm_mul_sub.yaml")]
    assert predict.main([str(tmp_path), "--checkpoint", str(checkpoint), "--topk", "1", "--json", *extra]) == 0
    found = [p["top"][0]["class"] for p in json.loads(capsys.readouterr().out)["predictions"]]
    assert len(found) == len(videos)
    assert sum(f == c for f, c in zip(found, CLASSES)) > len(CLASSES) / 2, found


def test_evaluate_cli_needs_only_the_checkpoint_path(run, tmp_path, capsys):
    from atm_core import evaluate as evaluate_cli
    from atm_core.engine import evaluate

    alone = evaluate_cli.main(["--checkpoint", str(run / "checkpoints" / "best"),
                               f"eval.out_dir={tmp_path / 'alone'}"])
    with_recipe = evaluate(load_config(run / "config.yaml", [f"eval.out_dir={tmp_path / 'recipe'}"]),
                           run / "checkpoints" / "best")
    assert (alone["top1"], alone["num_videos"], alone["views"]) == (with_recipe["top1"], 12, with_recipe["views"])
    assert json.loads((tmp_path / "alone" / "summary.json").read_text())["top1"] == alone["top1"]
    legacy = tmp_path / "legacy"
    legacy.mkdir()
    shutil.copy2(run / "checkpoints" / "best" / "model.safetensors", legacy)
    with pytest.raises(SystemExit) as stop:
        evaluate_cli.main(["--checkpoint", str(legacy)])
    assert stop.value.code == 2
    assert capsys.readouterr().err.startswith(f"configuration error: checkpoint {legacy} carries no recipe")


def test_evaluate_notebook_reopens_a_checkpoint_alone(run, tmp_path):
    """evaluate.ipynb with nothing but the checkpoint: evaluation, classified videos and what each
    ATM part carries, from the recipe and class names the checkpoint carries."""
    import nbformat

    from atm_core.jobs import execute

    output = tmp_path / "evaluate.ipynb"
    failure = execute(ROOT / "notebooks" / "evaluate.ipynb", output,
                      {"variant": None, "checkpoint": str(run / "checkpoints" / "best"),
                       "out_dir": str(tmp_path / "eval"), "results_dir": str(tmp_path / "results"),
                       "save_figures": True}, cwd=ROOT, log_output=False)
    assert failure is None, str(failure)
    text = json.dumps([c.outputs for c in nbformat.read(output, as_version=4).cells if c.cell_type == "code"])
    classes = read_labels(run.parent / "bench" / "labels.csv")
    assert "test_views" in text and "taken_for_reversed_twin" in text
    first = (run.parent / "bench" / "val.txt").read_text().split()[0]  # the test list is val.txt here
    assert f"{run.parent / 'bench' / first}: " in text  # classified
    assert "moving_left / moving_right" in text and "sub t-1" in text
    drops = pd.read_csv(tmp_path / "results" / "tables" / "knockout_best.csv", index_col=0)
    assert drops.columns.tolist() == ["sub", "sub t-1", "sub t+0", "sub t+1"]
    assert drops.index.tolist() == [*classes, "all"]
    assert (tmp_path / "results" / "figures" / "knockout_best.png").is_file()


def test_visualize_notebook_reopens_a_checkpoint_alone(run, tmp_path):
    """visualize_arithmetic.ipynb with nothing but the checkpoint: the recipe and class names it
    carries, a clip of its own track, the figures titled with the model's prediction among them."""
    import nbformat

    from atm_core.jobs import execute

    output = tmp_path / "visualize.ipynb"
    failure = execute(ROOT / "notebooks" / "visualize_arithmetic.ipynb", output,
                      {"checkpoint": str(run / "checkpoints" / "best"), "work_dir": str(tmp_path / "work"),
                       "results_dir": str(tmp_path / "results"), "clip_class": {"shapes": "moving_up"},
                       "save_figures": True}, cwd=ROOT, log_output=False)
    assert failure is None, str(failure)
    text = json.dumps([c.outputs for c in nbformat.read(output, as_version=4).cells if c.cell_type == "code"])
    classes = read_labels(run.parent / "bench" / "labels.csv")
    assert "| best | ATM(sub) | shapes | sub |" in text  # the run table, from the checkpoint's recipe
    assert "clip of moving_up, predicted " in text
    predicted = text.split("clip of moving_up, predicted ")[1].split("\\n")[0].split("\"")[0]
    assert predicted in classes
    assert sorted(p.name for p in (tmp_path / "work" / "feature_maps").glob("*.png")) == ["residuals.png", "sub_cue.png"]
    assert not (tmp_path / "results" / "figures").exists()  # one run's figures stay out of the results


def test_a_folder_of_frames_is_one_video(run, clips, tmp_path, capsys):
    """Frames decoded from a clip into a folder (the recipe's ``{:05d}.jpg``) classify as the clip,
    up to JPEG's loss; a folder of neither videos nor frames is a user error."""
    import av
    from PIL import Image

    frames = tmp_path / "frames" / "clip"
    frames.mkdir(parents=True)
    with av.open(str(clips["moving_up"])) as container:
        for i, frame in enumerate(container.decode(video=0), start=1):
            Image.fromarray(frame.to_ndarray(format="rgb24")).save(frames / f"{i:05d}.jpg", quality=98)
    result = predict.predict_videos([frames], run / "checkpoints" / "best", topk=12, views=(1, 1))
    assert [p.video for p in result.predictions] == [str(frames)] and not result.unreadable
    from_video = predict.predict_videos([clips["moving_up"]], run / "checkpoints" / "best", topk=12, views=(1, 1))
    assert dict(result.predictions[0].top) == pytest.approx(dict(from_video.predictions[0].top), abs=0.02)
    (tmp_path / "empty").mkdir()
    assert predict.main([str(tmp_path / "empty"), "--checkpoint", str(run / "checkpoints" / "best")]) == 2
    assert "a folder without video files" in capsys.readouterr().err
