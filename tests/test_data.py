"""Data pipeline: readers, list files, sampling, clip transforms, views, presets, mixup."""

import logging
import random
from fractions import Fraction

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from atm_core.data import (
    SS_FLIP_LABELS,
    DataError,
    TrainTransform,
    VideoMixup,
    ViewTransform,
    build_dataset,
    generate_benchmark,
    open_source,
    read_labels,
    read_list,
    readers,
    render_clip,
    sample_indices,
)
from atm_core.data.readers import FrameFolder, PyAVVideo, open_video
from atm_core.data.synthetic import write_frames, write_mp4
from atm_core.data.transforms import ClipRandAugment

RA = "rand-m7-n4-mstd0.5-inc1"


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    """A tiny built-in benchmark (64 px, 2 train / 1 val clip per class) with frame folders."""
    root = tmp_path_factory.mktemp("bench")
    generate_benchmark(root, seed=0, train_per_class=2, val_per_class=1, size=64, frames=True)
    return root


def _pattern(height, width):
    """uint8 frame whose red channel encodes x and green channel encodes y."""
    y, x = np.mgrid[0:height, 0:width]
    return np.stack([x * 6, y * 8, np.full_like(x, 100)], -1).astype(np.uint8)


# ---------------------------------------------------------------- readers

@pytest.mark.parametrize("gop", [1, 8])
def test_decord_and_pyav_return_the_same_frames(tmp_path, gop):
    pytest.importorskip("decord")
    clip = render_clip("clockwise", np.random.default_rng(1), size=64, num_frames=24)
    path = tmp_path / "clip.mp4"
    write_mp4(path, clip, gop=gop)
    indices = [0, 23, 5, 5, 12, 1, 17]
    a = readers.DecordVideo(path).read(indices).astype(int)
    b = PyAVVideo(path).read(indices).astype(int)
    assert a.shape == b.shape == (7, 64, 64, 3)
    assert np.abs(a - b).mean() <= 2
    # ... and they are the requested frames: each is closest to its own source frame
    for frames in (a, b):
        distance = np.abs(frames[:, None] - clip[None].astype(int)).mean(axis=(2, 3, 4))
        assert distance.argmin(1).tolist() == indices


def test_auto_reader_uses_decord_else_pyav_and_says_so_once(tmp_path, monkeypatch, caplog):
    path = tmp_path / "clip.mp4"
    write_mp4(path, render_clip("left", np.random.default_rng(0), size=32, num_frames=6))
    caplog.set_level(logging.INFO, logger="atm_core.data.readers")
    if readers.decord is not None:
        monkeypatch.setattr(readers, "_announced", set())
        assert isinstance(open_video(path), readers.DecordVideo)
        assert isinstance(open_video(path), readers.DecordVideo)
        assert sum("with decord" in r.message for r in caplog.records) == 1
    monkeypatch.setattr(readers, "decord", None)
    monkeypatch.setattr(readers, "load_torchcodec", lambda: (None, "not installed"))
    monkeypatch.setattr(readers, "_announced", set())
    assert isinstance(open_video(path), PyAVVideo)
    assert isinstance(open_video(path, "auto"), PyAVVideo)
    assert sum("with PyAV" in r.message for r in caplog.records) == 1


def test_pyav_counts_frames_of_a_container_without_a_frame_count(tmp_path):
    import av

    frames = render_clip("up", np.random.default_rng(0), size=32, num_frames=10)
    path = tmp_path / "clip.webm"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libvpx-vp9", rate=10)
        stream.height, stream.width, stream.pix_fmt = 32, 32, "yuv420p"
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    with av.open(str(path)) as container:
        assert container.streams.video[0].frames == 0  # webm stores no count
    video = PyAVVideo(path)
    assert len(video) == 10
    assert video.read([9, 0]).shape == (2, 32, 32, 3)


def test_frame_folders_give_rgb_uint8_whatever_the_image_mode(tmp_path):
    y, x = np.mgrid[0:16, 0:24]
    rgb = np.stack([x * 10, y * 15, 250 - x * 5], -1).astype(np.uint8)  # smooth: JPEG keeps it
    jpgs, pngs = tmp_path / "jpg", tmp_path / "png"
    jpgs.mkdir()
    pngs.mkdir()
    image = Image.fromarray(rgb)
    image.convert("L").save(jpgs / "00001.jpg")
    image.convert("CMYK").save(jpgs / "00002.jpg", quality=100)
    image.save(jpgs / "00003.jpg", quality=100)
    image.convert("RGBA").save(pngs / "img_00001.png")
    image.convert("P").save(pngs / "img_00002.png")
    out = open_source(jpgs, frame_template="{:05d}.jpg").read([0, 1, 2])
    assert out.dtype == np.uint8 and out.shape == (3, 16, 24, 3)
    assert (out[0, ..., 0] == out[0, ..., 1]).all() and (out[0, ..., 1] == out[0, ..., 2]).all()
    assert np.abs(out[1].astype(int) - rgb).mean() < 4  # CMYK came back as the same colours
    assert np.abs(out[2].astype(int) - rgb).mean() < 4
    folder = open_source(pngs, frame_template="img_{:05d}.png")
    assert isinstance(folder, FrameFolder) and len(folder) == 2  # counted from the folder
    out = folder.read([0, 1])
    assert out.shape == (2, 16, 24, 3)
    assert np.array_equal(out[0], rgb)  # RGBA: alpha dropped, colours exact


# ---------------------------------------------------------------- lists

def test_list_files_in_both_reference_formats(tmp_path):
    lst = tmp_path / "list.txt"
    lst.write_text("# comment\nsome dir/clip 1 24 3\n\nvideos/a.webm 5 1\n  12345 46 0  \n")
    records, skipped = read_list(lst, num_classes=6)
    assert skipped == 0
    assert [(r.path, r.num_frames, r.label) for r in records] == [
        ("some dir/clip 1", 24, 3), ("videos/a.webm", 5, 1), ("12345", 46, 0)]
    assert [r.source for r in records] == [f"{lst}:2", f"{lst}:4", f"{lst}:5"]
    short = tmp_path / "short.txt"
    short.write_text("some dir/a clip.webm 3\nvideos/a.webm 5\n")
    records, _ = read_list(short, num_classes=6, fields=2)
    assert [(r.path, r.num_frames, r.label) for r in records] == [
        ("some dir/a clip.webm", None, 3), ("videos/a.webm", None, 5)]
    labels = tmp_path / "labels.csv"
    labels.write_text('id,name\n1,"Pushing something, then more"\n0,Holding something\n')
    assert read_labels(labels) == ["Holding something", "Pushing something, then more"]


@pytest.mark.parametrize("num_classes", [12, 30])
def test_a_line_missing_its_label_is_refused_not_read_with_the_frame_count_as_label(
        tmp_path, num_classes):
    lst = tmp_path / "list.txt"
    lst.write_text("videos/a/x.mp4 24 3\nvideos/b/x.mp4 24\n")
    with pytest.raises(DataError, match=r"list.txt:2: expected 3 fields 'path num_frames label', "
                                        r"got 2 in 'videos/b/x.mp4 24'"):
        read_list(lst, num_classes=num_classes)
    lst.write_text("videos/a/x.mp4 3\nvideos/b/x.mp4 24 3\n")  # a 3-field line in a 2-field list
    with pytest.raises(DataError, match=r"list.txt:2: expected 2 fields 'path label', got a line "
                                        r"of 3 'path num_frames label'"):
        read_list(lst, num_classes=num_classes, fields=2)


# ---------------------------------------------------------------- sampling

@pytest.mark.parametrize(("n", "t"),
                         [(24, 8), (100, 8), (37, 8), (8, 8), (5, 8), (1, 4), (301, 16)])
def test_tsn_training_indices_follow_the_segment_formula(n, t):
    rng = np.random.default_rng(0)
    seen = set()
    for _ in range(300):
        indices = sample_indices(n, t, "train", rng)
        assert len(indices) == t
        for i, j in enumerate(indices):
            low = i * n // t
            high = max((i + 1) * n // t, low + 1)
            assert low <= j < high
        seen.update(indices.tolist())
    assert seen == set(range(n))  # every frame is reachable, short videos repeat frames


def test_tsn_training_indices_are_uniform_within_segments():
    rng = np.random.default_rng(1)
    draws = np.stack([sample_indices(24, 8, "train", rng) for _ in range(3000)])
    counts = np.bincount(draws.ravel(), minlength=24)
    assert np.all(np.abs(counts - 1000) < 120)


@pytest.mark.parametrize(("n", "t", "k"),
                         [(24, 8, 1), (24, 8, 2), (37, 8, 3), (5, 8, 2), (300, 16, 4)])
def test_tsn_test_indices_follow_the_formula(n, t, k):
    for clip in range(k):
        expected = [int((i + Fraction(2 * clip + 1, 2 * k)) * n / t) for i in range(t)]
        assert sample_indices(n, t, "test", clip=clip, num_clips=k).tolist() == expected


def test_centre_sampling_of_24_frames_is_symmetric_under_reversal():
    indices = sample_indices(24, 8, "test")
    assert sorted((23 - indices).tolist()) == sorted(indices.tolist())


def test_dense_sampling():
    rng = np.random.default_rng(0)
    starts = set()
    for _ in range(200):
        indices = sample_indices(100, 8, "dense_train", rng, stride=4)
        assert np.all(np.diff(indices) == 4)
        assert 0 <= indices[0] and indices[-1] < 100
        starts.add(int(indices[0]))
    assert min(starts) == 0 and max(starts) == 100 - 29
    clips = [sample_indices(100, 8, "dense_test", clip=c, num_clips=3, stride=4) for c in range(3)]
    assert clips[0][0] == 0 and clips[-1][-1] == 99 and clips[1][0] == (100 - 29) // 2
    # shorter than the window: centre segments, i.e. repeated/uniform frames in order
    assert sample_indices(20, 8, "dense_train", rng, stride=4).tolist() == \
        sample_indices(20, 8, "test").tolist()


def test_sampling_is_a_pure_function_of_its_arguments():
    a = sample_indices(50, 8, "train", np.random.default_rng(7))
    b = sample_indices(50, 8, "train", np.random.default_rng(7))
    assert np.array_equal(a, b)
    with pytest.raises(ValueError, match="needs an rng"):
        sample_indices(50, 8, "train")


# ---------------------------------------------------------------- transforms

@pytest.mark.parametrize("crop", ["rrc", "multiscale", "random", "center"])
def test_one_spatial_decision_per_clip(crop):
    frame = np.asarray(Image.fromarray(_pattern(60, 80)).resize((100, 75)))
    clip = np.repeat(frame[None], 5, axis=0)
    transform = TrainTransform(48, 56, crop=crop, flip=True, randaugment=RA, grayscale_p=0.5)
    outputs = []
    for seed in range(6):
        out, _ = transform(clip, 0, np.random.default_rng(seed))
        assert out.shape == (5, 3, 48, 48) and out.dtype == torch.float32
        assert all(torch.equal(out[0], f) for f in out[1:])
        outputs.append(out[0])
    assert any(not torch.equal(outputs[0], o) for o in outputs[1:])


def test_randaugment_is_identical_across_frames_and_differs_between_clips():
    rng = np.random.default_rng(0)
    frames = torch.from_numpy(rng.integers(0, 256, (3, 3, 40, 40), dtype=np.uint8))
    frames[:, :, 10:30, 5:20] = 200  # structure for the geometric ops
    augment = ClipRandAugment(RA, 40)
    state = random.getstate(), np.random.get_state()[1].copy()
    together = augment(frames, seed=123)
    assert random.getstate() == state[0] and np.array_equal(np.random.get_state()[1], state[1])
    for k in range(3):  # each frame alone, same clip seed: same ops, same magnitudes
        assert torch.equal(augment(frames[k:k + 1], seed=123)[0], together[k])
    others = [augment(frames, seed=s) for s in range(8)]
    assert sum(not torch.equal(together, o) for o in others) >= 7


def test_flip_swaps_exactly_the_mapped_ss_labels():
    frames = np.random.default_rng(0).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    rng = np.random.default_rng(0)
    flip = TrainTransform(32, (32, 32), crop="center", flip=True, flip_labels=SS_FLIP_LABELS,
                          flip_p=1.0)
    plain = TrainTransform(32, (32, 32), crop="center")
    changed = {}
    for label in range(174):
        clip, new = flip(frames, label, rng)
        if new != label:
            changed[label] = new
    assert changed == {86: 87, 87: 86, 93: 94, 94: 93, 166: 167, 167: 166}
    assert torch.equal(clip, plain(frames, 173, rng)[0].flip(-1))
    never = TrainTransform(32, (32, 32), crop="center", flip=True, flip_labels=SS_FLIP_LABELS,
                           flip_p=0.0)
    assert never(frames, 86, rng)[1] == 86


def _view_origins(views):
    """(top, left, flipped) of each view of a _pattern frame normalised with mean 0, std 1/255."""
    origins = []
    for view in views:
        first = view[0]
        flipped = bool(first[0, 0, 0] > first[0, 0, -1])
        column = -1 if flipped else 0
        origins.append((round(float(first[1, 0, column]) / 8),
                        round(float(first[0, 0, column]) / 6),
                        flipped))
    return origins


@pytest.mark.parametrize(("num_crops", "expected"), [
    (1, [(5, 10, False)]),
    (3, [(5, 0, False), (5, 10, False), (5, 20, False)]),
    (5, [(0, 0, False), (0, 20, False), (10, 0, False), (10, 20, False), (5, 10, False)]),
    (10, [(0, 0, False), (0, 20, False), (10, 0, False), (10, 20, False), (5, 10, False),
          (0, 0, True), (0, 20, True), (10, 0, True), (10, 20, True), (5, 10, True)]),
])
def test_test_views_count_and_positions(num_crops, expected):
    frames = np.repeat(_pattern(30, 40)[None], 2, axis=0)
    transform = ViewTransform(20, (30, 40), num_crops, mean=(0, 0, 0), std=(1 / 255,) * 3)
    views = transform(frames)
    assert views.shape == (num_crops, 2, 3, 20, 20)
    assert _view_origins(views) == expected


def test_three_views_of_a_portrait_frame_run_top_to_bottom():
    frames = _pattern(40, 30)[None]
    views = ViewTransform(20, (40, 30), 3, mean=(0, 0, 0), std=(1 / 255,) * 3)(frames)
    assert _view_origins(views) == [(0, 5, False), (10, 5, False), (20, 5, False)]


def test_test_items_hold_clips_times_crops_views_clip_major(bench):
    ds = build_dataset("synthetic", "test", bench, test_num_segment=2, test_num_crop=3)
    views, label, index = ds[5]
    assert views.shape == (6, 8, 3, 64, 64) and ds.num_views == 6 and index == 5
    assert label == ds.records[5].label
    source = open_source(bench / ds.records[5].path)
    transform = ViewTransform(64, 72, 3)
    for clip in range(2):
        frames = source.read(sample_indices(len(source), 8, "test", clip=clip, num_clips=2))
        assert torch.equal(views[3 * clip:3 * clip + 3], transform(frames))


# ---------------------------------------------------------------- datasets

def test_repeated_augmentation_and_its_collate(bench):
    ds = build_dataset("synthetic", "train", bench, num_sample=3)
    clips, labels = ds[0]
    assert clips.shape == (3, 8, 3, 64, 64) and labels.shape == (3,)
    assert set(labels.tolist()) <= {0, 1}  # moving_left, or moving_right when mirrored
    assert not torch.equal(clips[0], clips[1])
    x, y = next(iter(DataLoader(ds, batch_size=2, collate_fn=ds.collate_fn)))
    assert x.shape == (6, 8, 3, 64, 64) and y.shape == (6,)


def _write_list(path, lines):
    path.write_text("".join(f"{line}\n" for line in lines))
    return path.name


def test_every_preset_serves_train_val_and_test_items(bench):
    train = (bench / "train.txt").read_text().split("\n")[:-1]
    frame_lines = (bench / "train_frames.txt").read_text().split("\n")[:-1]
    # SS-V2 style list without frame counts; Kinetics-style frame folders img_00001.jpg
    ssv2_lines = [f"{ln.split()[0]} {ln.split()[2]}" for ln in train]
    ssv2_list = _write_list(bench / "ssv2.txt", ssv2_lines)
    k400_lines = []
    for line in frame_lines[:4]:
        path, count, label = line.split()
        folder = bench / "k400" / path
        frames = open_source(bench / path).read(range(int(count)))
        write_frames(folder, frames, template="img_{:05d}.jpg")
        k400_lines.append(f"k400/{path} {count} {label}")
    k400_list = _write_list(bench / "k400.txt", k400_lines)
    small = {"input_size": 48, "num_classes": 12}
    cases = [
        ("ssv1", "train_frames.txt", {**small, "scale": (56, 70)}, 6),
        ("ssv2", ssv2_list, {**small, "scale": (56, 70), "list_fields": 2}, 6),
        ("k400", k400_list, {**small, "scale": 56, "sampling": "dense", "dense_stride": 2}, 12),
        ("synthetic", None, {}, 1),
        ("custom", "train.txt", {"input_size": 48, "scale": 56}, 1),
    ]
    for name, list_file, options, views in cases:
        size = options.get("input_size", 64)
        ds = build_dataset(name, "train", bench, list_file, num_frames=4, **options)
        x = ds[1][0]
        x = x[0] if x.ndim == 5 else x  # repeated augmentation in the SS / K400 recipes
        assert x.shape == (4, 3, size, size) and torch.isfinite(x).all(), name
        clip, label = build_dataset(name, "val", bench, list_file, num_frames=4, **options)[1]
        assert clip.shape == (4, 3, size, size) and label == ds.records[1].label, name
        test = build_dataset(name, "test", bench, list_file, num_frames=4, **options)
        assert test[1][0].shape == (views, 4, 3, size, size) and test.num_views == views, name
        assert ds.classes[0] == "moving_left", name


def test_cached_frames_give_the_same_items_and_are_not_decoded_again(bench, monkeypatch):
    for split in ("train", "val"):
        plain = build_dataset("synthetic", split, bench)
        cached = build_dataset("synthetic", split, bench, cache_frames=True)
        for index in (0, 3, 0, 3):  # second reads come from the cache
            torch.manual_seed(index)
            expected = plain[index]
            torch.manual_seed(index)
            item = cached[index]
            assert torch.equal(item[0], expected[0]) and item[1] == expected[1]
        assert sorted(cached._frames) == [0, 3] and not plain._frames
        assert cached._frames[0].shape == (24, 64, 64, 3)  # every frame of the video, decoded once

        def no_decoding(record):
            raise AssertionError(f"{record.path} decoded again")

        monkeypatch.setattr(cached, "_open", no_decoding)
        cached[3]
        with pytest.raises(AssertionError, match="decoded again"):
            cached[1]


def test_unknown_preset_option_suggests_the_closest_field(bench):
    with pytest.raises(TypeError, match="did you mean 'test_num_crop'"):
        build_dataset("synthetic", "val", bench, test_num_crops=3)
    with pytest.raises(ValueError, match="unknown dataset 'ssv3'"):
        build_dataset("ssv3", "val", bench)


def test_ten_crop_views_are_refused_for_flip_swapped_classes(bench):
    with pytest.raises(ValueError, match="10-crop"):
        build_dataset("synthetic", "test", bench, test_num_crop=10)


# ---------------------------------------------------------------- mixup

def test_cutmix_pastes_the_same_box_into_every_frame():
    clips = torch.arange(4, dtype=torch.float32).view(4, 1, 1, 1, 1).repeat(1, 3, 2, 16, 16)
    mix = VideoMixup(mixup_alpha=0.0, cutmix_alpha=1.0, label_smoothing=0.0, num_classes=4)
    torch.manual_seed(0)
    np.random.seed(0)
    out, target = mix(clips.clone(), torch.arange(4))
    assert out.shape == (4, 3, 2, 16, 16)
    pasted = out[0] != 0  # clip 0 receives clip 3's pixels inside the box
    assert all(torch.equal(pasted[0, 0], pasted[t, c]) for t in range(3) for c in range(2))
    area = pasted[0, 0].float().mean()
    assert 0 < area < 1
    assert torch.allclose(target[0], torch.tensor([1 - area, 0, 0, area]))


def test_mixup_weights_whole_clips_like_their_targets():
    clips = torch.arange(4, dtype=torch.float32).view(4, 1, 1, 1, 1).repeat(1, 3, 2, 8, 8)
    mix = VideoMixup(mixup_alpha=0.8, cutmix_alpha=0.0, label_smoothing=0.0, num_classes=4)
    np.random.seed(1)
    out, target = mix(clips.clone(), torch.arange(4))
    lam = float(target[0, 0])
    assert torch.allclose(out[0], torch.full_like(out[0], 3 * (1 - lam)))
    with pytest.raises(ValueError, match="even batch"):
        mix(clips[:3].clone(), torch.arange(3))
