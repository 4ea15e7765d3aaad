"""Which frames of a video make a clip: a pure function of (video_length, clip_length, mode, rng).

With ``N = video_length`` and ``T = clip_length``:
TSN segments: the video's ``N`` frames are cut into ``T`` equal segments, segment ``i`` being
frames ``[floor(i*N/T), floor((i+1)*N/T))``.
  * ``"train"``: one uniformly random frame from each segment.
  * ``"test"``: clip ``k`` of ``K`` takes frame ``floor((i + (k + 0.5)/K) * N / T)`` of segment
    ``i`` -- the centre for ``K = 1``, evenly spread offsets otherwise.
Dense (Kinetics style): ``T`` frames ``stride`` apart inside a window of ``(T-1)*stride + 1``.
  * ``"dense_train"``: the window starts at a uniformly random frame.
  * ``"dense_test"``: the ``K`` windows are spread evenly from the first to the last frame.
Videos shorter than the clip repeat frames: a segment narrower than one frame yields its start,
and a video shorter than the dense window falls back to centre segments.
"""

from __future__ import annotations

import numpy as np

MODES = ("train", "test", "dense_train", "dense_test")


def sample_indices(video_length: int, clip_length: int, mode: str,
                   rng: np.random.Generator | None = None, *, clip: int = 0, num_clips: int = 1,
                   stride: int = 8) -> np.ndarray:
    """0-based frame indices (int64, ``clip_length`` of them, non-decreasing) of one clip of a
    video of ``video_length`` frames."""
    if video_length < 1 or clip_length < 1:
        raise ValueError(f"need video_length >= 1 and clip_length >= 1, got {video_length}, "
                         f"{clip_length}")
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if not 0 <= clip < num_clips:
        raise ValueError(f"clip must be in [0, {num_clips}), got {clip}")
    if mode.endswith("train") and rng is None:
        raise ValueError(f"mode {mode!r} needs an rng")
    i = np.arange(clip_length)
    if mode.startswith("dense"):
        window = (clip_length - 1) * stride + 1
        if window <= video_length:
            room = video_length - window
            if mode == "dense_train":
                start = int(rng.integers(0, room + 1))
            else:
                start = (room * clip) // (num_clips - 1) if num_clips > 1 else room // 2
            return start + i * stride
        mode, clip, num_clips = "test", 0, 1
    if mode == "train":
        start = (i * video_length) // clip_length
        end = np.maximum(((i + 1) * video_length) // clip_length, start + 1)
        return rng.integers(start, end)
    # floor((i + (clip + 0.5) / num_clips) * video_length / clip_length) in exact integer arithmetic
    return ((2 * i * num_clips + 2 * clip + 1) * video_length) // (2 * num_clips * clip_length)
