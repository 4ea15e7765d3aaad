"""The built-in benchmark: layout, reproducibility, the reversal-pair property, class semantics."""

import concurrent.futures
import json
import re

import numpy as np
import pytest
import torch

from atm_core.data import SYNTHETIC_CLASSES, build_dataset, read_labels, read_list, render_clip
from atm_core.data.readers import FrameFolder, PyAVVideo
from atm_core.data.synthetic import writer
from atm_core.data.synthetic import FLIP_LABELS, MOTIONS, Difficulty, generate_benchmark, main

EASY = Difficulty(distractors=(0, 0), noise=(0.0, 0.0), texture=(0.0, 0.0), backgrounds=("flat",))


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic")
    generate_benchmark(root, seed=3, train_per_class=2, val_per_class=2, size=64)
    return root


def _decode(root, record):
    return PyAVVideo(root / record.path).read(range(record.num_frames))


def test_cli_writes_videos_frames_lists_and_labels(tmp_path):
    main(["--out", str(tmp_path), "--seed", "1", "--train-per-class", "1", "--val-per-class", "1",
          "--size", "32", "--num-frames", "16", "--frames"])
    assert read_labels(tmp_path / "labels.csv") == list(SYNTHETIC_CLASSES)
    for split in ("train", "val"):
        lines = (tmp_path / f"{split}.txt").read_text().splitlines()
        assert len(lines) == 12
        for line in lines:
            assert re.fullmatch(rf"videos/{split}/\d\d_[a-z_]+_\d{{4}}\.mp4 16 \d+", line)
        records, _ = read_list(tmp_path / f"{split}.txt", 12)
        assert sorted(r.label for r in records) == list(range(12))
        frame_records, _ = read_list(tmp_path / f"{split}_frames.txt", 12)
        for video, folder in zip(records, frame_records):
            assert video.label == folder.label
            frames = FrameFolder(tmp_path / folder.path, "{:05d}.jpg").read(range(16))
            decoded = _decode(tmp_path, video)
            assert decoded.shape == frames.shape == (16, 32, 32, 3)
            # two lossy codings (JPEG, H.264) of the same noisy 32 px frames
            assert np.abs(frames.astype(int) - decoded).mean(axis=(1, 2, 3)).max() < 10


def _files(root):
    return {p.relative_to(root): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_same_bytes_other_seed_other_clips(tmp_path):
    files = _files
    kwargs = {"train_per_class": 1, "val_per_class": 1, "size": 32, "num_frames": 8, "frames": True}
    generate_benchmark(tmp_path / "a", seed=5, **kwargs)
    generate_benchmark(tmp_path / "b", seed=5, **kwargs)
    generate_benchmark(tmp_path / "c", seed=6, **kwargs)
    a, b, c = files(tmp_path / "a"), files(tmp_path / "b"), files(tmp_path / "c")
    assert a == b
    videos = [name for name in a if name.suffix == ".mp4"]
    assert len(videos) == 24 and all(a[name] != c[name] for name in videos)


@pytest.mark.parametrize("track", ["shapes", "textures"])
def test_worker_processes_write_the_same_bytes(tmp_path, monkeypatch, track):
    kwargs = {"track": track, "train_per_class": 2, "val_per_class": 1, "test_per_class": 1, "size": 32,
              "num_frames": 8, "frames": True}
    generate_benchmark(tmp_path / "one", seed=2, **kwargs)
    monkeypatch.setattr(writer, "MIN_CLIPS_PER_WORKER", 1)  # else so few clips stay in-process
    spawned = []
    real_pool = concurrent.futures.ProcessPoolExecutor
    monkeypatch.setattr(concurrent.futures, "ProcessPoolExecutor",
                        lambda *a, **k: spawned.append(a) or real_pool(*a, **k))
    generate_benchmark(tmp_path / "two", seed=2, **kwargs, workers=2)
    assert spawned == [(2,)]
    one, two = _files(tmp_path / "one"), _files(tmp_path / "two")
    assert len([name for name in one if name.suffix == ".mp4"]) == 48
    assert one == two


def test_second_class_of_each_pair_is_the_first_played_backwards(bench):
    for split in ("train", "val"):
        records, _ = read_list(bench / f"{split}.txt", 12)
        by_label = {}
        for r in records:
            by_label.setdefault(r.label, []).append(r)
        for pair in range(6):
            forward = np.stack([_decode(bench, r) for r in by_label[2 * pair]]).astype(float)
            backward = np.stack([_decode(bench, r) for r in by_label[2 * pair + 1]]).astype(float)
            # exactly reversed after H.264 (intra-only coding keeps the pair property)
            assert np.array_equal(backward, forward[:, ::-1])
            # same frame statistics: mean and std of per-frame pixel means
            means_f, means_b = forward.mean(axis=(2, 3, 4)), backward.mean(axis=(2, 3, 4))
            assert np.isclose(means_f.mean(), means_b.mean())
            assert np.isclose(means_f.std(), means_b.std())
            # opposite temporal differences: the net change frame_{t+1} - frame_t is negated
            diff_f = np.diff(forward, axis=1).mean(axis=(0, 1))
            diff_b = np.diff(backward, axis=1).mean(axis=(0, 1))
            assert np.abs(diff_f).max() > 1
            assert np.allclose(diff_b, -diff_f)


def test_order_blind_features_cannot_tell_a_pair_apart(bench):
    ds = build_dataset("synthetic", "val", bench)
    by_key = {(r.label, r.path[-8:]): i for i, r in enumerate(ds.records)}
    for pair in range(6):
        a, _ = ds[by_key[(2 * pair, "0000.mp4")]]
        b, _ = ds[by_key[(2 * pair + 1, "0000.mp4")]]
        assert not torch.equal(a, b)  # the clips differ in order ...
        assert torch.allclose(a.mean(0), b.mean(0), atol=1e-5)  # ... but not in their set of frames


def _features(clip):
    """Per-frame foreground features of an EASY clip (flat background): centroid x, y, mass,
    principal-axis angle (unwrapped, image coordinates) and spread."""
    frames = clip.astype(float)
    background = np.median(frames.reshape(len(frames), -1, 3), axis=1)
    weight = np.abs(frames - background[:, None, None]).sum(-1)
    y, x = np.mgrid[0:clip.shape[1], 0:clip.shape[2]]
    mass = weight.sum((1, 2))
    norm = np.maximum(mass, 1e-9)  # an appearing object is absent from the first frames
    cx = (weight * x).sum((1, 2)) / norm
    cy = (weight * y).sum((1, 2)) / norm
    dx, dy = x - cx[:, None, None], y - cy[:, None, None]
    mxx, myy, mxy = ((weight * m).sum((1, 2)) / norm for m in (dx * dx, dy * dy, dx * dy))
    angle = np.unwrap(np.arctan2(2 * mxy, mxx - myy)) / 2
    return {"x": cx, "y": cy, "mass": mass, "angle": angle, "spread": np.sqrt(mxx + myy)}


# The sign of the mean temporal difference of one feature identifies each forward class.
SIGNATURE = {"left": ("x", -1), "up": ("y", -1), "approach": ("mass", 1),
             "clockwise": ("angle", 1), "appear": ("mass", 1), "converge": ("spread", -1)}


@pytest.mark.parametrize("motion", MOTIONS)
def test_classes_move_as_named_and_reversal_flips_the_temporal_statistic(motion):
    feature, sign = SIGNATURE[motion]
    for seed in range(4):
        clip = render_clip(motion, np.random.default_rng(seed), size=64, num_frames=24,
                           difficulty=EASY)
        forward = np.diff(_features(clip)[feature]).mean()
        backward = np.diff(_features(clip[::-1])[feature]).mean()
        assert np.sign(forward) == sign and np.sign(backward) == -sign


@pytest.mark.parametrize("pair", range(6))
def test_mirror_changes_exactly_the_flip_swapped_classes(pair):
    motion = MOTIONS[pair]
    feature, sign = SIGNATURE[motion]
    clip = render_clip(motion, np.random.default_rng(pair), size=64, num_frames=24, difficulty=EASY)
    mirrored = np.diff(_features(clip[:, :, ::-1])[feature]).mean()
    swapped = FLIP_LABELS.get(2 * pair, 2 * pair) != 2 * pair
    assert np.sign(mirrored) == (-sign if swapped else sign)
    assert FLIP_LABELS.get(2 * pair + 1, 2 * pair + 1) == (2 * pair if swapped else 2 * pair + 1)


@pytest.mark.parametrize("polarity", ["bright", "any"])
def test_polarity_decides_whether_objects_are_brighter_than_the_background(polarity):
    difficulty = Difficulty(distractors=(0, 0), noise=(0.0, 0.0), texture=(0.0, 0.0),
                            backgrounds=("flat",), polarity=polarity)
    signs = []
    for seed in range(12):
        clip = render_clip("left", np.random.default_rng(seed), size=64, num_frames=24,
                           difficulty=difficulty).astype(float)
        background = np.median(clip.reshape(-1, 3), axis=0)  # the object covers < 10 % of pixels
        object_pixels = np.abs(clip - background).sum(-1) > 100
        signs.append(np.sign(clip[object_pixels].mean() - background.mean()))
    assert set(signs) == ({1.0} if polarity == "bright" else {1.0, -1.0})


def test_unknown_polarity_is_named():
    with pytest.raises(ValueError, match="polarity must be one of .* got 'dark'"):
        render_clip("left", np.random.default_rng(0), size=32, difficulty=Difficulty(polarity="dark"))


def test_a_benchmark_generated_otherwise_is_named_and_replaced_only_on_request(tmp_path):
    from atm_core.data.synthetic import ensure_benchmark
    from atm_core.engine.builders import prepare_dataset
    from atm_core.engine.config import ConfigError, load_config

    root = tmp_path / "bench"
    small = {"train_per_class": 1, "val_per_class": 1, "size": 32, "num_frames": 8}
    assert ensure_benchmark(root, {**small, "seed": 1}, create=True)
    spec = json.loads((root / "benchmark.json").read_text())
    assert spec["seed"] == 1 and spec["difficulty"]["polarity"] == "bright"
    assert not ensure_benchmark(root, {**small, "seed": 1})  # the same settings: kept as it is
    with pytest.raises(ValueError, match=r"other settings: difficulty\.polarity, seed; delete the folder"):
        ensure_benchmark(root, {**small, "seed": 2, "difficulty": {"polarity": "any"}})
    assert ensure_benchmark(root, {**small, "seed": 2}, replace=True)
    assert json.loads((root / "benchmark.json").read_text())["seed"] == 2
    (root / "benchmark.json").unlink()
    cfg = load_config(None, ["data.dataset=synthetic", f"data.root={root}",
                             f"data.generate={json.dumps({**small, 'seed': 2})}"])
    with pytest.raises(ConfigError, match="key 'data.generate': the benchmark in .* has no benchmark.json"):
        prepare_dataset(cfg)
    with pytest.raises(ValueError, match=r"difficulty has unknown field\(s\) \['polarty'\]"):
        ensure_benchmark(root, {**small, "difficulty": {"polarty": "any"}})


def test_cli_defaults_are_the_writer_defaults(tmp_path, monkeypatch):
    import functools
    import inspect

    from atm_core.data.synthetic import cli

    seen = {}

    @functools.wraps(writer.generate_benchmark)  # the CLI reads the defaults from the signature
    def fake(out, seed, **kwargs):
        seen.update(out=out, seed=seed, **kwargs)
        return {"train": 0, "val": 0, "test": 0, "out": out, "seconds": 0}

    monkeypatch.setattr(cli, "generate_benchmark", fake)
    main(["--out", str(tmp_path)])
    defaults = inspect.signature(writer.generate_benchmark).parameters
    compared = [name for name in seen if name not in ("out", "workers")]
    assert {"seed", "track", "train_per_class", "val_per_class", "test_per_class", "size", "num_frames",
            "frames"} <= set(compared)
    assert {name: seen[name] for name in compared} == {name: defaults[name].default for name in compared}


@pytest.mark.parametrize("track", ["shapes", "textures"])
def test_pair_clips_make_the_second_class_the_first_played_backwards(track):
    from atm_core.data.synthetic import benchmark_track, class_clip, pair_clips

    (first, clip), (second, backwards) = pair_clips(track, 2, np.random.default_rng(7), size=32, num_frames=6)
    assert (first, second) == (4, 5)
    np.testing.assert_array_equal(backwards, clip[::-1])
    classes = benchmark_track(track).classes
    np.testing.assert_array_equal(class_clip(track, classes[5], seed=7, size=32, num_frames=6)[::-1],
                                  class_clip(track, classes[4], seed=7, size=32, num_frames=6))
    with pytest.raises(ValueError, match=f"track '{track}' has pairs 0..5, got 6"):
        pair_clips(track, 6, np.random.default_rng(0))
