"""decord, torchcodec and PyAV read the same frames at the same indices (H.264 .mp4, VP9 .webm),
and torchcodec's absence is named with what to install while ``auto`` falls back."""
from __future__ import annotations

import logging
import sys

import numpy as np
import pytest
from official_layouts import clip_frames, write_video

from atm_core.data import DataError, readers
from atm_core.data.readers import PyAVVideo, TorchCodecVideo, open_video

INDICES = [0, 3, 4, 11, 7]  # unordered, with a backward jump: each reader must seek correctly
needs_decord = pytest.mark.skipif(readers.decord is None, reason="decord is not installed")
needs_torchcodec = pytest.mark.skipif(readers.load_torchcodec()[0] is None,
                                      reason=str(readers.load_torchcodec()[1]))


@pytest.fixture(scope="module", params=[("libx264", "mp4"), ("libvpx-vp9", "webm")],
                ids=["h264-mp4", "vp9-webm"])
def video(request, tmp_path_factory):
    codec, suffix = request.param
    frames = clip_frames(1, (240, 320), 12)
    path = write_video(tmp_path_factory.mktemp(suffix) / f"clip.{suffix}", frames, codec)
    return path, frames


@needs_decord
@needs_torchcodec
def test_three_readers_return_the_same_frames(video):
    path, source = video
    decoded = {name: cls(path).read(INDICES).astype(int)
               for name, cls in [("decord", readers.DecordVideo), ("torchcodec", TorchCodecVideo),
                                 ("pyav", PyAVVideo)]}
    for name, frames in decoded.items():
        assert frames.shape == (len(INDICES), 240, 320, 3), name
        assert np.abs(frames - decoded["pyav"]).mean() <= 2, name
        # ... and they are the requested frames: each is closest to its own source frame
        distance = np.abs(frames[:, None] - source[None].astype(int)).mean(axis=(2, 3, 4))
        assert distance.argmin(1).tolist() == INDICES, name
    assert len(TorchCodecVideo(path)) == len(PyAVVideo(path)) == 12


@needs_torchcodec
def test_torchcodec_names_a_broken_file(tmp_path):
    path = tmp_path / "broken.webm"
    path.write_text("not a video")
    with pytest.raises(DataError, match=rf"{path}: corrupt or unsupported video, torchcodec"):
        TorchCodecVideo(path)
    with pytest.raises(DataError, match=r"frame indices \[12\] out of range for 12 frames"):
        TorchCodecVideo(write_video(tmp_path / "ok.mp4", clip_frames(0, (32, 64), 12),
                                    "libx264")).read([12])


def test_missing_torchcodec_is_named_and_auto_falls_back(tmp_path, monkeypatch, caplog):
    path = write_video(tmp_path / "clip.mp4", clip_frames(0, (32, 64), 6), "libx264")
    problem = "torchcodec cannot load FFmpeg (libavutil.so.59: cannot open shared object file)"
    monkeypatch.setattr(readers, "load_torchcodec", lambda: (None, problem))
    monkeypatch.setattr(readers, "decord", None)
    monkeypatch.setattr(readers, "_announced", set())
    with pytest.raises(DataError, match=rf"{path}: torchcodec cannot load FFmpeg"):
        open_video(path, "torchcodec")
    caplog.set_level(logging.INFO, logger="atm_core.data.readers")
    assert isinstance(open_video(path, "auto"), PyAVVideo)
    assert any("PyAV (decord, torchcodec not available)" in r.message for r in caplog.records)


def test_an_uninstalled_torchcodec_is_reported_with_the_extra_and_the_ffmpeg_libraries(
        monkeypatch):
    monkeypatch.setitem(sys.modules, "torchcodec.decoders", None)  # import now fails
    decoder, problem = readers.load_torchcodec.__wrapped__()
    assert decoder is None
    assert problem.startswith("torchcodec is not installed: pip install 'atm_core[torchcodec]'")
    assert "libavcodec" in problem and "apt install ffmpeg" in problem


@needs_torchcodec
def test_auto_uses_torchcodec_where_decord_is_missing(video, monkeypatch):
    monkeypatch.setattr(readers, "decord", None)
    assert isinstance(open_video(video[0], "auto"), TorchCodecVideo)


@needs_decord
def test_auto_loads_torchcodec_only_when_decord_cannot_open_a_file(tmp_path, monkeypatch):
    """Loading torchcodec loads FFmpeg's libraries: a process that reads with decord skips it."""
    loads = []

    def load():
        loads.append(1)
        return None, "not installed"

    monkeypatch.setattr(readers, "load_torchcodec", load)
    monkeypatch.setattr(readers, "_announced", set())
    good = write_video(tmp_path / "clip.mp4", clip_frames(0, (32, 64), 6), "libx264")
    assert isinstance(open_video(good, "auto"), readers.DecordVideo)
    assert loads == []
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video at all" * 64)
    with pytest.raises(DataError, match=rf"{bad}: corrupt or unsupported video"):
        open_video(bad, "auto")  # decord fails, torchcodec is looked for, PyAV fails last
    assert loads == [1]
