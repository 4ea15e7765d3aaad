"""python -m atm_core.data.prepare on the official layouts, its bad-input report, resuming,
frame extraction, and the training preflight built on the same probing engine."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from official_layouts import SSV2_CLASSES, clip_frames, make_k400, make_ssv1, make_ssv2, write_video
from PIL import Image

from atm_core.data import DataError, build_dataset, generate_benchmark, read_labels, read_list
from atm_core.data import probe as probe_module
from atm_core.data.preflight import preflight
from atm_core.data.prepare import main, prepare

PARAMS = Path(__file__).resolve().parents[1] / "params"


def run(*args: str) -> int:
    return main([*args, "--no-progress", "--workers", "1"])


def lines(path) -> list[str]:
    return path.read_text().splitlines()


@pytest.fixture(scope="module")
def ssv2(tmp_path_factory):
    return make_ssv2(tmp_path_factory.mktemp("ssv2"), {"train": 6, "val": 3}, size=(48, 64),
                     num_frames=10)


def test_ssv2_official_files_become_lists_with_frame_counts(ssv2, capsys):
    out = ssv2 / "lists"
    assert run("ssv2", "--annotations", str(ssv2 / "annotations"), "--videos",
               str(ssv2 / "videos"), "--out", str(out)) == 0
    assert read_labels(out / "labels.csv") == SSV2_CLASSES
    # the class is the template without brackets; ids in annotation order
    train = json.loads((ssv2 / "annotations" / "something-something-v2-train.json").read_text())
    expected = [f"../videos/{item['id']}.webm 10 "
                f"{SSV2_CLASSES.index(item['template'].replace('[', '').replace(']', ''))}"
                for item in train]
    assert lines(out / "train.txt") == expected
    assert len(lines(out / "val.txt")) == 3
    assert "listed train 6 of 6, val 3 of 3; problems: none" in capsys.readouterr().out
    dataset = build_dataset("ssv2", "val", out, num_frames=4, num_classes=4, input_size=32)
    clip, label = dataset[0]
    assert clip.shape == (4, 3, 32, 32) and label == 0


def test_ssv1_frame_folders_and_reference_lists(tmp_path):
    src = make_ssv1(tmp_path / "src", {"train": 4, "val": 2}, size=(40, 52), num_frames=7)
    out = src / "root"
    assert run("ssv1", "--annotations", str(src / "annotations"), "--videos",
               str(src / "frames"), "--out", str(out)) == 0
    assert lines(out / "train.txt") == [f"../frames/{i} 7 {(i - 1) % 4}" for i in range(1, 5)]
    # the reference's shipped lists (<id> <num_frames> <label>) and labels CSV, as they are
    (tmp_path / "train_rgb.txt").write_text("1 7 0\n2 7 1\n")
    (tmp_path / "val_rgb.txt").write_text("5 7 0\n")
    (tmp_path / "sth_labels.csv").write_text(
        "id,name\n" + "".join(f"{i},{n}\n" for i, n in enumerate(SSV2_CLASSES)))
    ref = src / "ref"
    assert run("ssv1", "--reference-lists", str(tmp_path / "train_rgb.txt"),
               str(tmp_path / "val_rgb.txt"), "--labels", str(tmp_path / "sth_labels.csv"),
               "--videos", str(src / "frames"), "--out", str(ref)) == 0
    assert lines(ref / "train.txt") == ["../frames/1 7 0", "../frames/2 7 1"]
    records, _ = read_list(ref / "val.txt", 4)
    assert records[0].num_frames == 7


def test_k400_csv_with_frame_extraction_resized(tmp_path):
    src = make_k400(tmp_path / "src", {"train": 4, "val": 2}, size=(48, 64), num_frames=9)
    out, frames = tmp_path / "root", tmp_path / "frames"
    assert run("k400", "--annotations", str(src / "annotations"), "--videos", str(src / "videos"),
               "--out", str(out), "--extract-frames", str(frames), "--short-side", "24",
               "--quality", "80") == 0
    assert read_labels(out / "labels.csv") == ["abseiling", "air drumming", "archery", "bowling"]
    first = lines(out / "train.txt")[0]
    assert first == "../frames/yt000000000_000000_000010 9 0"
    folder = frames / "yt000000000_000000_000010"
    assert sorted(p.name for p in folder.iterdir()) == [f"img_{i:05d}.jpg" for i in range(1, 10)]
    with Image.open(folder / "img_00001.jpg") as image:
        assert image.size == (32, 24)
    # the extracted frames are the video's frames, downscaled
    source = clip_frames(0, (48, 64), 9)[4].astype(float)
    small = np.asarray(Image.fromarray(source.astype(np.uint8)).resize((32, 24), Image.BILINEAR))
    with Image.open(folder / "img_00005.jpg") as image:
        assert np.abs(np.asarray(image).astype(float) - small).mean() < 12
    dataset = build_dataset("k400", "val", out, num_frames=3, num_classes=4, input_size=16, scale=20)
    assert dataset[1][0].shape == (3, 3, 16, 16)


def test_bad_input_is_reported_with_file_and_entry_and_exit_status(tmp_path, capsys):
    src = make_ssv2(tmp_path / "src", {"train": 6, "val": 2}, size=(32, 64), num_frames=6)
    ann, videos = src / "annotations", src / "videos"
    train_file = ann / "something-something-v2-train.json"
    items = json.loads(train_file.read_text())
    items[1]["template"] = "Spinning [something] so it continues spinning"  # not in labels
    items.append(dict(items[0]))  # duplicate id
    train_file.write_text(json.dumps(items))
    validation = (ann / "something-something-v2-validation.json").read_text()
    (ann / "something-something-v2-validation.json").write_text('[{"id": "1006",\n "label": }]')
    (videos / f"{items[2]['id']}.webm").unlink()  # missing
    (videos / f"{items[3]['id']}.webm").write_bytes(b"")  # empty
    (videos / f"{items[4]['id']}.webm").write_text("not a video")
    good = (videos / f"{items[5]['id']}.webm").read_bytes()
    (videos / f"{items[5]['id']}.webm").write_bytes(good[: len(good) // 3])  # truncated
    out = src / "root"
    args = ["ssv2", "--annotations", str(ann), "--videos", str(videos), "--out", str(out)]
    assert run(*args) == 1
    report = lines(out / "prepare_report.txt")
    assert "lists NOT written" in report[0] and not (out / "train.txt").exists()
    problems = report[1:]
    assert len(problems) == 7, problems
    expect = [f"{ann / 'something-something-v2-validation.json'}:2: invalid JSON",
              f"{train_file}: entry 1 (id {items[1]['id']}): class 'Spinning something so it "
              "continues spinning' is not in the labels file",
              f"{train_file}: entry 6 (id {items[0]['id']}): duplicate id '{items[0]['id']}' "
              f"(first at {train_file}: entry 0",
              f"{train_file}: entry 2 (id {items[2]['id']}): {videos / items[2]['id']}.webm: "
              "video file not found",
              f"{train_file}: entry 3 (id {items[3]['id']}): {videos / items[3]['id']}.webm: "
              "empty video file",
              f"{train_file}: entry 4 (id {items[4]['id']}): {videos / items[4]['id']}.webm: "
              "corrupt or unsupported video",
              f"{train_file}: entry 5 (id {items[5]['id']}): {videos / items[5]['id']}.webm: "
              "corrupt"]
    for prefix in expect:
        assert sum(p.startswith(prefix) for p in problems) == 1, (prefix, problems)
    assert run(*args, "--skip-bad") == 1  # the validation file is unreadable: no val split to write
    summary = capsys.readouterr().out.splitlines()[-1]
    assert ("listed train 1 of 5, val 0 of 0; problems: 3 annotation, 1 empty, 1 missing, "
            "2 unreadable; lists NOT written: no usable entry left in split(s) val") in summary
    assert not (out / "train.txt").exists() and not (out / "val.txt").exists()
    (ann / "something-something-v2-validation.json").write_text(validation)
    assert run(*args, "--skip-bad") == 0
    summary = capsys.readouterr().out.splitlines()[-1]
    assert ("listed train 1 of 5, val 2 of 2; problems: 2 annotation, 1 empty, 1 missing, "
            "2 unreadable; lists written without the bad entries") in summary
    assert lines(out / "train.txt") == [f"../videos/{items[0]['id']}.webm 6 0"]


def test_frame_folder_with_a_gap_is_named(tmp_path):
    src = make_ssv1(tmp_path / "src", {"train": 2, "val": 1}, size=(24, 32), num_frames=5)
    (src / "frames" / "2" / "00003.jpg").unlink()
    outcome = prepare("ssv1", tmp_path / "root", src / "frames", annotations=src / "annotations",
                      workers=1, progress=False, skip_bad=True)
    assert [str(p) for p in outcome.problems] == [
        f"{src / 'annotations' / 'something-something-v1-train.csv'}:2: {src / 'frames' / '2'}: "
        "gap in the frames, 00003.jpg is missing (4 .jpg files, 1 of the first 4 names absent)"]
    assert outcome.counts == {"train": (1, 2), "val": (1, 1)}


def test_rerun_probes_only_what_is_new_or_changed(ssv2, tmp_path, monkeypatch):
    videos = tmp_path / "videos"
    shutil.copytree(ssv2 / "videos", videos)
    probed: list[str] = []
    real = probe_module.probe_source
    monkeypatch.setattr(probe_module, "probe_source",
                        lambda path, settings: probed.append(path) or real(path, settings))
    out = tmp_path / "root"
    kwargs = dict(annotations=ssv2 / "annotations", workers=1, progress=False)
    prepare("ssv2", out, videos, **kwargs)
    assert len(probed) == 9
    first = (out / "train.txt").read_text()
    # an interruption leaves a cut line at the end of the cache; one video is re-encoded
    with (out / ".prepare-cache.jsonl").open("a") as f:
        f.write('{"path": "10')
    changed = sorted(videos.iterdir())[0]
    write_video(changed, clip_frames(0, (48, 64), 8), "libvpx-vp9")
    probed.clear()
    prepare("ssv2", out, videos, **kwargs)
    assert probed == [changed.name]
    assert (out / "train.txt").read_text() == first.replace(f"{changed.name} 10 ",
                                                            f"{changed.name} 8 ")


def test_parallel_probes_match_serial_ones(ssv2, monkeypatch):
    settings = probe_module.ProbeSettings(str(ssv2 / "videos"))
    paths = sorted(p.name for p in (ssv2 / "videos").iterdir()) + ["absent.webm"]
    serial = probe_module.probe_all(paths, settings, workers=1, progress=False)
    monkeypatch.setattr(probe_module, "SERIAL_BELOW", 0)
    parallel = probe_module.probe_all(paths, settings, workers=2, progress=False)
    assert parallel == serial
    assert serial["absent.webm"].error.endswith("absent.webm: video file not found")
    assert {p.frames for k, p in serial.items() if k != "absent.webm"} == {10}


def test_preflight_lists_problems_with_list_file_and_line_then_stops_or_skips(ssv2, tmp_path):
    root, videos = tmp_path / "root", tmp_path / "videos"
    shutil.copytree(ssv2 / "videos", videos)
    prepare("ssv2", root, videos, annotations=ssv2 / "annotations", workers=1, progress=False)
    listed = lines(root / "train.txt")
    name = listed[2].split()[0]
    (root / name).write_text("garbage")  # line 3: not a video
    path, _, label = listed[4].split()
    listed[4] = f"{path} 25 {label}"  # line 5: the list promises more frames than there are
    (root / "train.txt").write_text("\n".join(listed) + "\n")

    def datasets():
        return [build_dataset("ssv2", split, root, num_frames=2, num_classes=4, input_size=16,
                              on_error=on_error) for split in ("train", "val")]

    on_error = "raise"
    with pytest.raises(DataError) as info:
        preflight(datasets(), "raise", tmp_path / "run", progress=False, workers=1)
    message = str(info.value)
    assert "preflight: 9 videos checked" in message and "2 problem(s)" in message
    assert f"{root / 'train.txt'}:3: {root / name}: corrupt or unsupported video" in message
    assert f"{root / 'train.txt'}:5: {root / path}: the list says 25 frames, found 10" in message
    assert len(lines(tmp_path / "run" / "preflight_report.txt")) == 3
    on_error = "skip"
    train, val = datasets()
    assert preflight([train, val], "skip", tmp_path / "run", progress=False, workers=1) == 2
    assert len(train) == 6 and train.num_skipped == 2 and len(val) == 3 and val.num_skipped == 0
    assert [p.split()[0].rsplit(":", 1)[-1] for p in train.skipped_paths()] == ["3", "5"]
    with pytest.raises(DataError, match=r"train\.txt:3: .*left out as unreadable"):
        train._frames_of(2, None)


def test_training_stops_at_the_preflight_before_any_step(tmp_path):
    from atm_core.engine.config import load_config
    from atm_core.engine.trainer import train

    root = tmp_path / "bench"
    generate_benchmark(root, seed=0, train_per_class=1, val_per_class=1, size=32)
    listed = lines(root / "train.txt")
    (root / listed[5].split()[0]).write_bytes(b"\x00" * 100)  # train.txt:6 is not a video
    base = [f"data.root={root}", "data.generate=null", "data.num_workers=0", "train.batch_size=4",
            "optim.epochs=1", "optim.warmup_epochs=0", "eval.after_train=false", "train.progress=false",
            "train.threads=1", "data.preflight=true"]
    cfg = load_config(PARAMS / "synthetic_tsn.yaml", [*base, f"train.output_dir={tmp_path / 'a'}"])
    with pytest.raises(DataError, match=rf"(?s)preflight: 24 videos checked.*1 problem.*"
                                        rf"{root / 'train.txt'}:6: "):
        train(cfg)
    assert not (tmp_path / "a" / "metrics.jsonl").exists()
    cfg = load_config(PARAMS / "synthetic_tsn.yaml",
                      [*base, f"train.output_dir={tmp_path / 'b'}", "data.on_error=skip"])
    train(cfg)
    assert lines(tmp_path / "b" / "preflight_report.txt")[1].startswith(f"{root / 'train.txt'}:6: ")
