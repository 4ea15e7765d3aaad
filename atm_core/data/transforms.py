"""Clip transforms: every random spatial decision is drawn once per clip and applied to all of its
frames, so that motion between frames is left intact.

Pipeline (training): scale -> crop (random-resized / multi-scale / random / centre) resized to
the input size -> horizontal flip (with an optional label swap) -> RandAugment (same ops and
magnitudes on every frame) -> grayscale -> float, normalised. Evaluation: scale -> 1, 3, 5 or 10
fixed crops ("views"). Clips travel as uint8 tensors (T, 3, H, W) until normalisation.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torchvision.transforms.v2.functional as TF
from PIL import Image
from timm.data.auto_augment import rand_augment_transform

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
# Something-Something classes whose meaning mirrors under a horizontal flip: 86/87 "Pulling
# something from left to right / right to left", 93/94 "Pushing something from left to right /
# right to left", 166/167 "Turning the camera left / right while filming something".
SS_FLIP_LABELS = {86: 87, 87: 86, 93: 94, 94: 93, 166: 167, 167: 166}
CROPS = ("rrc", "multiscale", "random", "center")

Scale = int | tuple[int, int]
Box = tuple[float, float, float, float]  # top, left, height, width in scaled-frame pixels


def scaled_size(height: int, width: int, scale: Scale) -> tuple[int, int]:
    """Frame size after scaling: an int sets the short side, a pair (h, w) the exact size."""
    if isinstance(scale, int):
        if height <= width:
            return scale, max(1, round(width * scale / height))
        return max(1, round(height * scale / width)), scale
    return int(scale[0]), int(scale[1])


def _place(height: int, width: int, h: int, w: int, rng: np.random.Generator) -> Box:
    """An h x w box at a uniformly random integer position inside the frame."""
    return float(rng.integers(0, height - h + 1)), float(rng.integers(0, width - w + 1)), h, w


def random_resized_box(height: int, width: int, rng: np.random.Generator,
                       area: tuple[float, float] = (0.08, 1.0),
                       ratio: tuple[float, float] = (3 / 4, 4 / 3)) -> Box:
    """Inception-style box: random area fraction and log-uniform aspect ratio (10 tries, then
    the largest centred box with the ratio clamped)."""
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = height * width * rng.uniform(*area)
        aspect = math.exp(rng.uniform(*log_ratio))
        w = round(math.sqrt(target * aspect))
        h = round(math.sqrt(target / aspect))
        if 0 < w <= width and 0 < h <= height:
            return _place(height, width, h, w, rng)
    aspect = width / height
    if aspect < ratio[0]:
        w, h = width, round(width / ratio[0])
    elif aspect > ratio[1]:
        w, h = round(height * ratio[1]), height
    else:
        w, h = width, height
    return (height - h) / 2, (width - w) / 2, h, w


def multiscale_box(height: int, width: int, size: int, rng: np.random.Generator,
                   scales: Sequence[float] = (1, 0.875, 0.75, 0.66), max_distort: int = 1) -> Box:
    """TSN multi-scale crop: height and width each a fraction of the short side, fractions at
    most ``max_distort`` steps apart, at a random position."""
    base = min(height, width)
    sizes = [size if abs(base * s - size) < 3 else int(base * s) for s in scales]
    pairs = [(h, w) for i, h in enumerate(sizes) for j, w in enumerate(sizes)
             if abs(i - j) <= max_distort]
    h, w = pairs[rng.integers(len(pairs))]
    return _place(height, width, h, w, rng)


def _check_fits(height: int, width: int, size: int) -> None:
    if size > height or size > width:
        raise ValueError(f"crop {size} does not fit in the scaled frame {height}x{width}; "
                         "raise the scale or lower the input size")


def random_box(height: int, width: int, size: int, rng: np.random.Generator) -> Box:
    _check_fits(height, width, size)
    return _place(height, width, size, size, rng)


def view_boxes(height: int, width: int, size: int, num_crops: int) -> list[tuple[Box, bool]]:
    """Test views as (box, flipped): 1 centre; 3 start/centre/end along the long side
    (left/centre/right for landscape frames); 5 four corners + centre; 10 those 5 and their
    mirror images."""
    _check_fits(height, width, size)
    dy, dx = height - size, width - size
    centre = (dy / 2, dx / 2, size, size)
    if num_crops == 1:
        boxes = [centre]
    elif num_crops == 3:
        if width >= height:
            boxes = [(dy / 2, 0, size, size), centre, (dy / 2, dx, size, size)]
        else:
            boxes = [(0, dx / 2, size, size), centre, (dy, dx / 2, size, size)]
    elif num_crops in (5, 10):
        boxes = [(0, 0, size, size), (0, dx, size, size), (dy, 0, size, size),
                 (dy, dx, size, size), centre]
    else:
        raise ValueError(f"test_num_crop must be 1, 3, 5 or 10, got {num_crops}")
    views = [(box, False) for box in boxes]
    if num_crops == 10:
        views += [(box, True) for box in boxes]
    return views


def crop_resize(clip: torch.Tensor, box: Box, scaled: tuple[int, int], size: int) -> torch.Tensor:
    """Crop ``box`` (given on the frame scaled to ``scaled``) out of the original frames and
    resize it to ``size``: one interpolation, identical for all frames."""
    height, width = clip.shape[-2:]
    fy, fx = height / scaled[0], width / scaled[1]
    top, left = round(box[0] * fy), round(box[1] * fx)
    h = max(1, min(round(box[2] * fy), height - top))
    w = max(1, min(round(box[3] * fx), width - left))
    return TF.resized_crop(clip, top, left, h, w, [size, size], antialias=True)


def normalize(clip: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """uint8 (..., 3, H, W) -> float32, (x / 255 - mean) / std."""
    mean_t = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)
    return (clip.float() / 255 - mean_t) / std_t


def to_tensor(frames: np.ndarray) -> torch.Tensor:
    """(T, H, W, 3) uint8 array -> (T, 3, H, W) uint8 tensor."""
    return torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2)


class ClipRandAugment:
    """timm's RandAugment with the same ops and magnitudes on every frame of a clip.

    timm draws its choices from Python's and NumPy's global generators; this seeds both from the
    clip's seed before every frame (so each frame replays the same draws) and restores the
    callers' generator states afterwards.
    """

    def __init__(self, config: str, input_size: int, mean: Sequence[float] = CLIP_MEAN):
        hparams = {"translate_const": int(input_size * 0.45),
                   "img_mean": tuple(min(255, round(255 * m)) for m in mean)}
        self.config = config
        self.op = rand_augment_transform(config, hparams)

    def __call__(self, clip: torch.Tensor, seed: int) -> torch.Tensor:
        py_state, np_state = random.getstate(), np.random.get_state()
        out = []
        try:
            for frame in clip.permute(0, 2, 3, 1).numpy():
                random.seed(seed)
                np.random.seed(seed % 2**32)
                out.append(np.asarray(self.op(Image.fromarray(frame))))
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)
        return to_tensor(np.stack(out))


@dataclass
class TrainTransform:
    """Random training augmentation of one clip. ``__call__(frames, label, rng)`` returns the
    normalised clip (T, 3, S, S) float32 and the label (swapped by ``flip_labels`` when flipped)."""

    input_size: int
    scale: Scale
    crop: str = "rrc"
    crop_area: tuple[float, float] = (0.08, 1.0)
    flip: bool = False
    flip_labels: Mapping[int, int] | None = None
    randaugment: str | None = None
    grayscale_p: float = 0.0
    mean: Sequence[float] = CLIP_MEAN
    std: Sequence[float] = CLIP_STD
    flip_p: float = 0.5
    _randaugment: ClipRandAugment | None = field(init=False, repr=False, default=None)

    def __post_init__(self):
        if self.crop not in CROPS:
            raise ValueError(f"crop must be one of {CROPS}, got {self.crop!r}")
        if self.randaugment:
            self._randaugment = ClipRandAugment(self.randaugment, self.input_size, self.mean)

    def box(self, height: int, width: int, rng: np.random.Generator) -> Box:
        size = self.input_size
        if self.crop == "rrc":
            return random_resized_box(height, width, rng, self.crop_area)
        if self.crop == "multiscale":
            return multiscale_box(height, width, size, rng)
        if self.crop == "random":
            return random_box(height, width, size, rng)
        return view_boxes(height, width, size, 1)[0][0]

    def __call__(self, frames: np.ndarray, label: int,
                 rng: np.random.Generator) -> tuple[torch.Tensor, int]:
        clip = to_tensor(frames)
        scaled = scaled_size(*clip.shape[-2:], self.scale)
        clip = crop_resize(clip, self.box(*scaled, rng), scaled, self.input_size)
        if self.flip and rng.random() < self.flip_p:
            clip = clip.flip(-1)
            label = (self.flip_labels or {}).get(label, label)
        if self._randaugment is not None:
            clip = self._randaugment(clip, int(rng.integers(2**63 - 1)))
        if self.grayscale_p > 0 and rng.random() < self.grayscale_p:
            clip = TF.rgb_to_grayscale(clip, num_output_channels=3)
        return normalize(clip, self.mean, self.std), label


@dataclass
class ViewTransform:
    """Deterministic evaluation views: ``__call__(frames)`` returns (num_crops, T, 3, S, S)."""

    input_size: int
    scale: Scale
    num_crops: int = 1
    mean: Sequence[float] = CLIP_MEAN
    std: Sequence[float] = CLIP_STD

    def __call__(self, frames: np.ndarray) -> torch.Tensor:
        clip = to_tensor(frames)
        scaled = scaled_size(*clip.shape[-2:], self.scale)
        views = []
        for box, flipped in view_boxes(*scaled, self.input_size, self.num_crops):
            view = crop_resize(clip, box, scaled, self.input_size)
            views.append(view.flip(-1) if flipped else view)
        return normalize(torch.stack(views), self.mean, self.std)
