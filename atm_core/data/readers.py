"""Frame sources: video files (decord, torchcodec or PyAV) and JPEG frame folders.

Every source answers ``len(source)`` and ``source.read(indices) -> (N, H, W, 3) uint8 RGB``
for 0-based frame indices, whatever the stored format (grayscale, RGBA or CMYK JPEGs,
any pixel format of a video stream).
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import av
import numpy as np
from av.video.reformatter import VideoReformatter
from PIL import Image

from .errors import DataError

try:
    import decord
except ImportError:  # decord has no wheels for some platforms (e.g. aarch64, macOS arm64)
    decord = None
else:
    # its FFmpeg would print every decoding problem to stderr; they reach the user as DataError
    decord.logging.set_level(decord.logging.QUIET)

log = logging.getLogger(__name__)
READERS = ("auto", "decord", "torchcodec", "pyav")
TORCHCODEC_HINT = ("pip install 'atm_core[torchcodec]' (or conda env create -f environment.yml); "
                   "torchcodec also needs FFmpeg's shared libraries libavcodec, libavformat, "
                   "libavutil, libswscale (FFmpeg 4 to 9: apt install ffmpeg, "
                   "conda install ffmpeg, brew install ffmpeg)")
_announced: set[str] = set()


def _log_once(key: str, message: str, level: int = logging.INFO) -> None:
    if key not in _announced:
        _announced.add(key)
        log.log(level, message)


def _first_line(error: Exception) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


@contextmanager
def _stderr_silenced() -> Iterator[None]:
    """File descriptor 2 to /dev/null for the body: decord prints its own error line from C++
    when a file does not open, which the DataError raised for it already says."""
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def _check_indices(path: Path, indices: Sequence[int], length: int) -> list[int]:
    indices = [int(i) for i in indices]
    bad = [i for i in indices if not 0 <= i < length]
    if bad:
        raise DataError(f"{path}: frame indices {bad} out of range for {length} frames")
    return indices


class _FrameSource:
    """What every source shares: a known, non-zero number of frames, and index checks."""

    path: Path
    _length: int

    def _set_length(self, length: int, kind: str = "video") -> None:
        if length <= 0:
            raise DataError(f"{self.path}: {kind} has no frames")
        self._length = length

    def __len__(self) -> int:
        return self._length

    def _indices(self, indices: Sequence[int]) -> list[int]:
        return _check_indices(self.path, indices, self._length)


class DecordVideo(_FrameSource):
    """A video file read with decord; only the requested frames are decoded (``get_batch``)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if decord is None:
            raise DataError(f"{self.path}: decord is not installed")
        try:
            with _stderr_silenced():
                self._reader = decord.VideoReader(str(self.path), num_threads=1)
        except Exception as e:  # decord raises its own DECORDError / RuntimeError types
            raise DataError(f"{self.path}: corrupt or unsupported video, decord cannot open it "
                            f"({e})") from e
        self._set_length(len(self._reader))

    def read(self, indices: Sequence[int]) -> np.ndarray:
        indices = self._indices(indices)
        try:
            frames = self._reader.get_batch(indices).asnumpy()
        except Exception as e:
            raise DataError(f"{self.path}: decord cannot decode frames {indices} ({e})") from e
        if frames.shape[0] != len(indices):
            raise DataError(f"{self.path}: decord returned {frames.shape[0]} of {len(indices)} "
                            "frames")
        return frames


@functools.cache
def load_torchcodec() -> tuple[Any, str | None]:
    """``(torchcodec.decoders.VideoDecoder, None)``, or ``(None, why it cannot be used)``.

    Imported on first use: importing torchcodec loads FFmpeg's shared libraries, which may be
    missing even where the wheel is installed.
    """
    try:
        from torchcodec.decoders import VideoDecoder
    except ModuleNotFoundError:
        return None, f"torchcodec is not installed: {TORCHCODEC_HINT}"
    except (ImportError, OSError, RuntimeError) as e:  # the FFmpeg libraries did not load
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        return None, f"torchcodec cannot load FFmpeg ({first}): {TORCHCODEC_HINT}"
    return VideoDecoder, None


class TorchCodecVideo(_FrameSource):
    """A video file read with torchcodec; only the requested frames are decoded
    (``get_frames_at``). The frame count is exact: the packets are scanned when the file opens
    (``seek_mode="exact"``), since .webm stores no count and estimates from the duration can be
    a frame short."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        decoder_cls, problem = load_torchcodec()
        if decoder_cls is None:
            raise DataError(f"{self.path}: {problem}")
        try:
            self._decoder = decoder_cls(str(self.path), seek_mode="exact", num_ffmpeg_threads=1,
                                        dimension_order="NHWC")
        except (RuntimeError, ValueError) as e:
            raise DataError(f"{self.path}: corrupt or unsupported video, torchcodec cannot open "
                            f"it ({_first_line(e)})") from e
        self._set_length(len(self._decoder))

    def read(self, indices: Sequence[int]) -> np.ndarray:
        indices = self._indices(indices)
        try:
            frames = self._decoder.get_frames_at(indices).data.numpy()
        except (RuntimeError, IndexError) as e:
            raise DataError(f"{self.path}: torchcodec cannot decode frames {indices} "
                            f"({_first_line(e)})") from e
        return frames


def rgb24_converter() -> Callable[[av.VideoFrame], av.VideoFrame]:
    """A conversion of decoded frames to rgb24 that owns its swscale context and scales on the
    calling thread. ``frame.to_ndarray(format=...)`` would use the context PyAV (from 18.1.1) keeps
    per thread for the life of the process, with slice threads of its own: a process forked
    afterwards (a DataLoader worker, accelerate's notebook launcher) inherits that context without
    its threads, and its first conversion waits for them forever."""
    return functools.partial(VideoReformatter().reformat, format="rgb24", threads=1)


class PyAVVideo(_FrameSource):
    """A video file read with PyAV: frames are decoded in order up to the last one requested."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.is_file():
            raise DataError(f"{self.path}: video file not found")
        try:
            with av.open(str(self.path)) as container:
                if not container.streams.video:
                    raise DataError(f"{self.path}: video has no frames (no video stream)")
                stream = container.streams.video[0]
                # Containers such as .webm do not store a frame count: count the packets instead.
                length = stream.frames or sum(1 for p in container.demux(stream) if p.size)
        except av.EOFError as e:
            raise DataError(f"{self.path}: video has no frames (file ends in the header)") from e
        except av.FFmpegError as e:
            raise DataError(f"{self.path}: corrupt or unsupported video, cannot open it "
                            f"({e})") from e
        self._set_length(length)

    def read(self, indices: Sequence[int]) -> np.ndarray:
        indices = self._indices(indices)
        decoded, count, error = self._decode(set(indices), max(indices))
        if error is not None:
            raise DataError(f"{self.path}: corrupt or truncated video, decoding failed after "
                            f"{count} of {self._length} frames ({error})")
        if count <= max(indices):
            raise DataError(
                f"{self.path}: truncated video, decoded {count} frames but the container "
                f"declares {self._length} and frame {max(indices)} was requested"
            )
        return np.stack([decoded[i] for i in indices])

    def _decode(self, wanted: set[int], last: int) -> tuple[dict[int, np.ndarray], int, str | None]:
        """Frames ``wanted`` of the first ``last + 1``, how many were decoded, and FFmpeg's error.

        The error comes back as text, not raised: an exception would keep this frame, and with it
        the decoder and its FFmpeg threads, alive for as long as the exception is kept. A process
        forked meanwhile (a DataLoader worker) inherits the decoder without its threads, and
        freeing it there waits for them forever.
        """
        decoded: dict[int, np.ndarray] = {}
        count = 0
        to_rgb = rgb24_converter()
        try:
            with av.open(str(self.path)) as container:
                stream = container.streams.video[0]
                stream.thread_type = "AUTO"
                for frame in container.decode(stream):
                    if count in wanted:
                        decoded[count] = to_rgb(frame).to_ndarray()
                    count += 1
                    if count > last:
                        break
        except av.FFmpegError as e:
            return decoded, count, str(e)
        return decoded, count, None


class FrameFolder(_FrameSource):
    """A folder of image files named by ``template.format(start + index)``."""

    def __init__(self, path: str | Path, template: str, start: int = 1, length: int | None = None):
        self.path = Path(path)
        self.template, self.start = template, start
        if not self.path.is_dir():
            raise DataError(f"{self.path}: frame folder not found")
        if length is None:
            suffix = Path(template.format(start)).suffix
            length = sum(1 for p in self.path.iterdir() if p.suffix == suffix)
        self._set_length(length, "frame folder")

    def _load(self, index: int) -> np.ndarray:
        file = self.path / self.template.format(self.start + index)
        if not file.is_file():
            raise DataError(f"{file}: missing frame {index} of {self._length}")
        try:
            with Image.open(file) as image:
                return np.asarray(image.convert("RGB"))
        except (OSError, SyntaxError, ValueError) as e:
            raise DataError(f"{file}: unreadable image ({e})") from e

    def read(self, indices: Sequence[int]) -> np.ndarray:
        indices = self._indices(indices)
        loaded = {i: self._load(i) for i in dict.fromkeys(indices)}
        shapes = {a.shape for a in loaded.values()}
        if len(shapes) > 1:
            raise DataError(f"{self.path}: frames have different sizes {sorted(shapes)}")
        return np.stack([loaded[i] for i in indices])


Video = DecordVideo | TorchCodecVideo | PyAVVideo
_VIDEO_CLASSES = {"decord": DecordVideo, "torchcodec": TorchCodecVideo, "pyav": PyAVVideo}


def _auto_readers() -> Iterator[str]:
    """The readers ``auto`` tries before PyAV, in order: decord (what the published results
    used), then torchcodec, skipping those that are not installed or cannot load. torchcodec is
    loaded only when decord is missing or fails on a file: loading it loads FFmpeg's libraries,
    which a process reading its videos with decord never needs."""
    if decord is not None:
        yield "decord"
    if load_torchcodec()[0] is not None:
        yield "torchcodec"


def open_video(path: str | Path, reader: str = "auto") -> Video:
    """Open a video file with ``reader``; ``"auto"`` tries decord, torchcodec and PyAV in this
    order and takes the first that opens the file (logged once)."""
    if reader not in READERS:
        raise ValueError(f"reader must be one of {READERS}, got {reader!r}")
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: video file not found")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: empty video file (0 bytes)")
    if reader != "auto":
        return _VIDEO_CLASSES[reader](path)
    tried = []
    for name in _auto_readers():
        tried.append(name)
        try:
            video = _VIDEO_CLASSES[name](path)
        except DataError as e:
            _log_once(f"fallback-{name}", f"{name} cannot open {path} ({e}); trying the next "
                      "reader for such files")
            continue
        _log_once(name, f"reading videos with {name}")
        return video
    missing = [n for n in ("decord", "torchcodec") if n not in tried]
    why = f" ({', '.join(missing)} not available)" if missing and not tried else ""
    _log_once("pyav", f"reading videos with PyAV{why}")
    return PyAVVideo(path)


def read_clip(video: Video | FrameFolder, indices: Sequence[int],
              reader: str = "auto") -> np.ndarray:
    """Read frames; with ``reader="auto"`` a decord or torchcodec decode failure is retried
    with PyAV before it is reported."""
    try:
        return video.read(indices)
    except DataError as e:
        if reader != "auto" or isinstance(video, (PyAVVideo, FrameFolder)):
            raise
        _log_once("fallback-read", f"{e}; retrying with PyAV (logged once)")
        try:
            return PyAVVideo(video.path).read(indices)
        except DataError as pyav_error:
            name = "decord" if isinstance(video, DecordVideo) else "torchcodec"
            raise DataError(f"{video.path}: corrupt or truncated video: {name} opened it but "
                            f"could not decode the frames, PyAV could not read it either "
                            f"({pyav_error})") from e


def open_source(path: str | Path, *, reader: str = "auto", frame_template: str = "{:05d}.jpg",
                frame_start: int = 1, num_frames: int | None = None):
    """A frame folder if ``path`` is a directory, otherwise a video file."""
    path = Path(path)
    if path.is_dir():
        _log_once("frames", f"reading frame folders ({frame_template}, first index {frame_start})")
        return FrameFolder(path, frame_template, frame_start, num_frames)
    return open_video(path, reader)
