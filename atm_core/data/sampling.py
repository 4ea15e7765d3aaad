"""Which frames of a video make a clip: a pure function of (num_frames, T, mode, rng).

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


def sample_indices(num_frames: int, T: int, mode: str, rng: np.random.Generator | None = None,
                   *, clip: int = 0, num_clips: int = 1, stride: int = 8) -> np.ndarray:
    """0-based frame indices (int64, length ``T``, non-decreasing) for one clip."""
    if num_frames < 1 or T < 1:
        raise ValueError(f"need num_frames >= 1 and T >= 1, got {num_frames}, {T}")
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if not 0 <= clip < num_clips:
        raise ValueError(f"clip must be in [0, {num_clips}), got {clip}")
    if mode.endswith("train") and rng is None:
        raise ValueError(f"mode {mode!r} needs an rng")
    i = np.arange(T)
    if mode.startswith("dense"):
        window = (T - 1) * stride + 1
        if window <= num_frames:
            room = num_frames - window
            if mode == "dense_train":
                start = int(rng.integers(0, room + 1))
            else:
                start = (room * clip) // (num_clips - 1) if num_clips > 1 else room // 2
            return start + i * stride
        mode, clip, num_clips = "test", 0, 1
    if mode == "train":
        start = (i * num_frames) // T
        end = np.maximum(((i + 1) * num_frames) // T, start + 1)
        return rng.integers(start, end)
    # floor((i + (clip + 0.5) / num_clips) * num_frames / T) in exact integer arithmetic
    return ((2 * i * num_clips + 2 * clip + 1) * num_frames) // (2 * num_clips * T)
