"""Bad input: every case names the file (and list line), or with on_error="skip" is logged and
counted -- across DataLoader workers too --, a training sample replaced by a real one, an
evaluation sample left out."""

import gc
import logging
import multiprocessing
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from atm_core.data import LEFT_OUT, DataError, build_dataset, read_labels, render_clip
from atm_core.data.readers import PyAVVideo
from atm_core.data.synthetic import write_frames, write_mp4

OPTIONS = {"num_classes": 3, "input_size": 32, "scale": 32}


def _faststart_mp4(path, frames):
    """An mp4 with its index first, so that a cut-off copy still opens (and then runs short)."""
    with av.open(str(path), "w", format="mp4", options={"movflags": "faststart"}) as container:
        stream = container.add_stream("libx264", rate=12)
        stream.height, stream.width, stream.pix_fmt = 32, 32, "yuv420p"
        stream.options = {"x264-params": "keyint=6"}
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad")
    rng = np.random.default_rng(0)
    clip = render_clip("left", rng, size=32, num_frames=24)
    write_mp4(root / "good0.mp4", clip)
    write_mp4(root / "good1.mp4", clip[::-1])
    write_frames(root / "good_frames", clip)
    (root / "corrupt.mp4").write_bytes(rng.integers(0, 256, 4000, dtype=np.uint8).tobytes())
    (root / "empty.mp4").write_bytes(b"")
    _faststart_mp4(root / "full.mp4", clip)
    data = (root / "full.mp4").read_bytes()
    (root / "truncated.mp4").write_bytes(data[: len(data) * 2 // 3])  # header whole, frames cut
    with av.open(str(root / "zero.mp4"), "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=12)
        stream.height, stream.width, stream.pix_fmt = 32, 32, "yuv420p"
        container.start_encoding()
    # frames 10-12 (1-based) make up the fourth of 8 segments: every sampling touches one
    write_frames(root / "bad_jpeg", clip)
    write_frames(root / "missing_jpeg", clip)
    for number in (10, 11, 12):
        (root / "bad_jpeg" / f"{number:05d}.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a JPEG")
        (root / "missing_jpeg" / f"{number:05d}.jpg").unlink()
    return root


def _list(root, name, lines):
    (root / name).write_text("".join(f"{line}\n" for line in lines))
    return name


BAD_SAMPLES = [
    ("missing.mp4 24 1", "missing.mp4: video file not found"),
    ("corrupt.mp4 24 1", "corrupt.mp4: corrupt or unsupported video"),
    ("empty.mp4 24 1", r"empty.mp4: empty video file \(0 bytes\)"),
    ("truncated.mp4 24 1", "truncated.mp4: .*truncated video"),
    ("zero.mp4 24 1", "zero.mp4: video has no frames"),
    ("bad_jpeg 24 1", r"bad_jpeg/00011.jpg: unreadable image"),
    ("missing_jpeg 24 1", r"missing_jpeg/00011.jpg: missing frame 10 of 24"),
    ("missing_folder 24 1", "missing_folder: video file not found"),
]


@pytest.mark.parametrize(("line", "message"), BAD_SAMPLES)
def test_bad_sample_names_the_list_line_and_the_file(root, line, message):
    name = _list(root, "one.txt", ["good0.mp4 24 0", line])
    ds = build_dataset("custom", "val", root, name, **OPTIONS)
    assert ds[0][0].shape == (8, 3, 32, 32)
    with pytest.raises(DataError, match=f"one.txt:2: .*{message}"):
        ds[1]


@pytest.mark.parametrize(("line", "message"), [
    ("good0.mp4", r"list.txt:2: expected 3 fields 'path num_frames label', got 1 in 'good0.mp4'"),
    ("good0.mp4 24", r"list.txt:2: expected 3 fields 'path num_frames label', got 2"),
    ("good0.mp4 24 x", "list.txt:2: label 'x' is not an integer"),
    ("good0.mp4 x 1", "list.txt:2: num_frames 'x' is not an integer"),
    ("good0.mp4 24 3", r"list.txt:2: label 3 out of range \[0, 3\)"),
    ("good0.mp4 24 -1", r"list.txt:2: label -1 out of range"),
    ("good0.mp4 0 1", "list.txt:2: num_frames must be positive"),
])
def test_bad_list_line_names_the_file_and_line(root, line, message):
    name = _list(root, "list.txt", ["good0.mp4 24 0", line, "good1.mp4 24 1"])
    with pytest.raises(DataError, match=message):
        build_dataset("custom", "train", root, name, **OPTIONS)
    ds = build_dataset("custom", "train", root, name, on_error="skip", **OPTIONS)
    assert len(ds) == 2 and ds.num_skipped == 1


def test_missing_list_and_label_files(root):
    with pytest.raises(DataError, match="nope.txt: list file not found"):
        build_dataset("custom", "val", root, "nope.txt", **OPTIONS)
    with pytest.raises(DataError, match="labels.csv: label file not found"):
        build_dataset("custom", "val", root, "one.txt", label_file="labels.csv", **OPTIONS)


@pytest.mark.parametrize(("text", "message"), [
    ("id,name\n0,a\n0,b\n", "labels.csv:3: duplicate id 0"),
    ("id,name\n0,a\nx,b\n", "labels.csv:3: id 'x' is not an integer"),
    ("0,a\n2,c\n", r"labels.csv: ids must be 0..1, missing \[1\]"),
    ("id,name\n0\n", "labels.csv:2: expected 'id,name'"),
])
def test_bad_label_file(tmp_path, text, message):
    (tmp_path / "labels.csv").write_text(text)
    with pytest.raises(DataError, match=message):
        read_labels(tmp_path / "labels.csv")


def _mixed_list(root):
    good = ["good0.mp4 24 0", "good1.mp4 24 1", "good_frames 24 2"]
    bad = [line for line, _ in BAD_SAMPLES]
    return _list(root, "mixed.txt", [x for pair in zip(bad, good * 3) for x in pair]), len(bad)


def test_evaluation_skip_leaves_bad_videos_out_and_lists_them(root, caplog):
    name, num_bad = _mixed_list(root)
    strict = build_dataset("custom", "test", root, name, **OPTIONS)
    ds = build_dataset("custom", "test", root, name, on_error="skip", **OPTIONS)
    bad_paths = {line.split()[0] for line, _ in BAD_SAMPLES}
    caplog.set_level(logging.WARNING, logger="atm_core.data.dataset")
    for i in range(len(ds)):
        views, label, index = ds[i]
        assert index == i  # never another video in its place
        if ds.records[i].path in bad_paths:
            assert label == LEFT_OUT
        else:
            assert label == ds.records[i].label
            assert torch.equal(views, strict[i][0])
    warnings = [r for r in caplog.records if "skipping bad sample" in r.getMessage()]
    assert ds.num_skipped == len(warnings) == num_bad
    assert [p.split()[1] for p in ds.skipped_paths()] == [line.split()[0] for line, _ in BAD_SAMPLES]
    assert ds.skipped_paths()[0] == f"{root / name}:1 missing.mp4"


def test_skip_count_is_shared_with_dataloader_workers(root):
    name, num_bad = _mixed_list(root)
    counts = []
    for workers in (0, 2):
        ds = build_dataset("custom", "val", root, name, on_error="skip", **OPTIONS)
        batches = list(DataLoader(ds, batch_size=4, num_workers=workers))
        labels = torch.cat([b[1] for b in batches])
        assert len(labels) == len(ds) and int((labels == LEFT_OUT).sum()) == num_bad
        kept = torch.cat([b[0] for b in batches])[labels != LEFT_OUT]
        assert torch.isfinite(kept).all() and (kept.flatten(1).abs().sum(1) > 0).all()
        counts.append((ds.num_skipped, ds.skipped_paths()))
    assert counts[0] == counts[1] and counts[0][0] == num_bad


def test_training_split_skips_too_and_gives_up_on_hopeless_data(root):
    name, _ = _mixed_list(root)
    ds = build_dataset("custom", "train", root, name, on_error="skip", **OPTIONS)
    for i in range(len(ds)):
        clip, label = ds[i]
        assert clip.shape == (8, 3, 32, 32) and label in (0, 1, 2)
    assert ds.num_skipped >= len(BAD_SAMPLES)
    hopeless = _list(root, "hopeless.txt", [line for line, _ in BAD_SAMPLES])
    ds = build_dataset("custom", "train", root, hopeless, on_error="skip", **OPTIONS)
    with pytest.raises(DataError, match="bad samples in a row"):
        ds[0]


def test_frames_of_a_folder_with_mixed_sizes_are_refused(tmp_path):
    folder = tmp_path / "clip"
    folder.mkdir()
    Image.new("RGB", (32, 32)).save(folder / "00001.jpg")
    Image.new("RGB", (16, 32)).save(folder / "00002.jpg")
    (tmp_path / "list.txt").write_text("clip 2 0\n")
    ds = build_dataset("custom", "val", tmp_path, "list.txt", num_frames=2, **OPTIONS)
    with pytest.raises(DataError, match="list.txt:1: .*clip: frames have different sizes"):
        ds[0]


def exit_code_of_forked(target, *args, timeout: float) -> int | None:
    """Run ``target(*args)`` in a forked process; its exit code (``None``: still running at
    ``timeout`` seconds, then killed)."""
    child = multiprocessing.get_context("fork").Process(target=target, args=args)
    child.start()
    child.join(timeout=timeout)
    if child.is_alive():
        child.kill()
        return None
    return child.exitcode


def _drop_and_collect(kept: list) -> None:
    kept.clear()
    gc.collect()


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs Linux /proc")
def test_a_failed_decode_leaves_no_decoder_threads_that_a_forked_worker_would_wait_for(root):
    """A DataError kept by the caller (a log record, a retry loop) must not keep PyAV's decoder
    alive: a process forked meanwhile inherits the decoder without its FFmpeg threads, and freeing
    it there waits for them forever (the hang of a DataLoader worker)."""
    video = PyAVVideo(root / "truncated.mp4")
    kept = []
    try:
        video.read(range(len(video)))
    except DataError as e:
        kept.append(e)
    assert kept
    threads = [(p / "comm").read_text().strip() for p in Path("/proc/self/task").iterdir()]
    assert not [name for name in threads if name.startswith("av:")]
    assert exit_code_of_forked(_drop_and_collect, kept, timeout=30) == 0


def _read_into(path: Path, out: Path) -> None:
    np.save(out, PyAVVideo(path).read(range(8)))


def test_a_process_forked_after_a_read_reads_the_same_frames(root, tmp_path):
    """PyAV (from 18.1.1) keeps a multi-threaded swscale context per thread for the life of the
    process; a process forked after a conversion inherits it without its threads and its first
    conversion waits forever (DataLoader workers and accelerate's notebook launcher fork)."""
    expected = PyAVVideo(root / "good0.mp4").read(range(8))
    assert exit_code_of_forked(_read_into, root / "good0.mp4", tmp_path / "child.npy", timeout=60) == 0, \
        "the forked reader did not finish"
    np.testing.assert_array_equal(np.load(tmp_path / "child.npy"), expected)
