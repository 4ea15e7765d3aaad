"""The real-texture track of the built-in benchmark: photographs, motion semantics, reversal pairs."""

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from atm_core.data import read_labels, read_list
from atm_core.data.readers import PyAVVideo
from atm_core.data.synthetic import benchmark_spec, ensure_benchmark, generate_benchmark
from atm_core.data.synthetic.textures import (
    CLASSES,
    FLIP_LABELS,
    MOTIONS,
    PHOTOS,
    TextureDifficulty,
    photo,
    render_texture_clip,
)
from atm_core.engine import load_config
from atm_core.engine.builders import build_model, dataset_options

ROOT = Path(__file__).resolve().parents[1]
# no shake, noise or flicker, and no periodic (bricks) or flat (sky) texture that makes a shift ambiguous
CLEAN = TextureDifficulty(shake=0.0, read_noise=(0.0, 0.0), shot_noise=(0.0, 0.0), flicker=0.0,
                          photos=("astronaut", "coffee", "chelsea", "immunohistochemistry"))


def _shift(a: np.ndarray, b: np.ndarray) -> tuple[int, int]:
    """Integer (dx, dy) that moves image ``a`` onto ``b``, by phase correlation of the grey images."""
    fa, fb = (np.fft.fft2(x.mean(-1) - x.mean()) for x in (a.astype(float), b.astype(float)))
    cross = fb * np.conj(fa)
    peak = np.unravel_index(np.argmax(np.abs(np.fft.ifft2(cross / (np.abs(cross) + 1e-9)))), a.shape[:2])
    dy, dx = ((p + s // 2) % s - s // 2 for p, s in zip(peak, a.shape[:2]))
    return int(dx), int(dy)


def test_every_photograph_ships_offline_as_rgb():
    for name in PHOTOS:
        image = photo(name)
        assert image.shape[0] == 3 and min(image.shape[1:]) == 256, name
        assert 0 <= float(image.min()) and float(image.max()) <= 255.5, name
        assert float(image.std()) > 10, f"{name} has no texture"
    with pytest.raises(ValueError, match="unknown photograph 'lena'"):
        photo("lena")


@pytest.mark.parametrize("motion, axis, sign", [("pan_left", 0, 1), ("pan_up", 1, 1)])
def test_a_camera_pan_moves_the_scene_the_other_way(motion, axis, sign):
    # the view moving left shows the scene moving right on screen, frame after frame
    for seed in range(3):
        clip = render_texture_clip(motion, np.random.default_rng(seed), size=64, num_frames=12, difficulty=CLEAN)
        steps = [_shift(clip[i], clip[i + 1]) for i in range(len(clip) - 1)]
        along = np.array([s[axis] for s in steps])
        across = np.array([s[1 - axis] for s in steps])
        # never a step the wrong way, a net travel of a good part of the frame, little across it
        # (the camera is held up to 0.1 rad off level)
        assert (sign * along >= 0).all() and sign * along.sum() > 20, (seed, steps)
        assert np.abs(across.sum()) <= 0.2 * np.abs(along.sum()), (seed, steps)


def test_zoom_in_magnifies_and_the_roll_turns_clockwise():
    rng = np.random.default_rng(0)
    clip = render_texture_clip("zoom_in", rng, size=64, num_frames=12, difficulty=CLEAN).astype(float)
    # zooming in: the last frame matches the first frame's centre blown up, not the other way round
    first, last = torch.from_numpy(clip[0]).permute(2, 0, 1)[None], torch.from_numpy(clip[-1]).permute(2, 0, 1)[None]

    def blown_up(image: torch.Tensor) -> torch.Tensor:
        centre = image[..., 20:44, 20:44]
        return torch.nn.functional.interpolate(centre, size=(64, 64), mode="bilinear", align_corners=False)

    assert (blown_up(first) - last).abs().mean() < (blown_up(last) - first).abs().mean()
    clip = render_texture_clip("roll_clockwise", np.random.default_rng(1), size=64, num_frames=12,
                               difficulty=replace(CLEAN, roll_deg=(30.0, 30.0)))
    frame0, frame1 = (torch.from_numpy(clip[i].astype(np.float32)).permute(2, 0, 1)[None] for i in (0, -1))

    def rotated(image: torch.Tensor, degrees: float) -> torch.Tensor:  # positive: clockwise on screen
        a = np.deg2rad(degrees)
        theta = torch.tensor([[[np.cos(a), np.sin(a), 0.0], [-np.sin(a), np.cos(a), 0.0]]], dtype=torch.float32)
        grid = torch.nn.functional.affine_grid(theta, list(image.shape), align_corners=False)
        return torch.nn.functional.grid_sample(image, grid, align_corners=False)[..., 16:48, 16:48]

    inner = frame1[..., 16:48, 16:48]
    assert (rotated(frame0, 30) - inner).abs().mean() < (rotated(frame0, -30) - inner).abs().mean()


def test_the_object_travels_left_and_the_cover_grows():
    size = 64
    clip = render_texture_clip("object_left", np.random.default_rng(2), size=size, num_frames=12,
                               difficulty=CLEAN).astype(float)
    background = np.median(clip, axis=0)  # the still scene, where the object is not for long
    centres = []
    for frame in clip[[0, -1]]:
        moved = np.abs(frame - background).mean(-1) > 20
        columns = np.nonzero(moved.any(0))[0]
        centres.append(columns.mean())
    assert centres[1] < centres[0] - 0.2 * size
    clip = render_texture_clip("cover", np.random.default_rng(3), size=size, num_frames=12,
                               difficulty=CLEAN).astype(float)
    changed = [(np.abs(frame - clip[0]).mean(-1) > 10).mean() for frame in clip]
    assert changed[0] == 0 and changed[-1] > 0.6 and np.all(np.diff(changed) >= -0.02)


def test_texture_benchmark_pairs_are_exact_reversals_after_h264(tmp_path):
    summary = generate_benchmark(tmp_path, seed=1, track="textures", train_per_class=1, val_per_class=1,
                                 size=48, num_frames=9)
    assert summary["track"] == "textures" and summary["classes"] == 12
    assert read_labels(tmp_path / "labels.csv") == list(CLASSES)
    assert json.loads((tmp_path / "benchmark.json").read_text())["difficulty"]["qp"] == 28
    records, _ = read_list(tmp_path / "train.txt", 12)
    by_label = {r.label: r for r in records}
    for pair in range(len(MOTIONS)):
        forward, backward = (PyAVVideo(tmp_path / by_label[2 * pair + i].path).read(range(9)) for i in (0, 1))
        assert np.array_equal(backward, forward[::-1])  # intra-only coding keeps the pair property
        assert not np.array_equal(forward, forward[::-1])


def test_track_settings_are_checked_and_flip_labels_follow_the_track(tmp_path):
    with pytest.raises(ValueError, match="unknown field\\(s\\) \\['radius'\\] for track 'textures'"):
        ensure_benchmark(tmp_path / "b", {"track": "textures", "difficulty": {"radius": [0.1, 0.2]}}, create=True)
    with pytest.raises(ValueError, match="unknown benchmark track 'clouds'"):
        benchmark_spec(track="clouds")
    assert benchmark_spec(track="textures")["difficulty"] == json.loads(json.dumps(TextureDifficulty().__dict__))
    # every flip-sensitive pair swaps both ways, and only the mirror-changed classes move
    assert all(FLIP_LABELS[FLIP_LABELS[k]] == k for k in FLIP_LABELS)
    assert {CLASSES[k] for k in FLIP_LABELS} == {"panning_left", "panning_right", "rolling_clockwise",
                                                 "rolling_anticlockwise", "object_moving_left",
                                                 "object_moving_right"}
    cfg = load_config(ROOT / "params/synthetic_textures_atm_mul_sub.yaml")
    assert dataset_options(cfg, "train")["flip_labels"] == FLIP_LABELS
    shapes = load_config(ROOT / "params/synthetic_atm_mul_sub.yaml")
    assert dataset_options(shapes, "train")["flip_labels"] != FLIP_LABELS


def _tokens_before_atm(recipe: str, frames: torch.Tensor) -> torch.Tensor:
    """The patch tokens the recipe's model hands ATM, ``(frames, rows, columns, channels)``."""
    cfg = load_config(ROOT / "params" / recipe)
    model = build_model(cfg, num_classes=12, img_size=64).eval()
    with torch.no_grad():
        tokens, _ = model.embed(frames)
    side = model.grid[0]
    return tokens[:, model.backbone.num_prefix_tokens:].reshape(len(frames), side, side, -1)


def test_texture_recipe_gives_atm_tokens_that_move_with_the_image():
    # Without a position embedding the tokens ATM compares are the conv stem's alone, so a scene
    # moved by one token (8 px) gives the same tokens one place over: the similarity volume then
    # peaks where the content went. With the shapes recipe's embedding they differ.
    torch.manual_seed(0)
    frame = torch.randn(1, 3, 64, 64)
    frames = torch.cat([frame, torch.roll(frame, shifts=8, dims=-1)])
    inner, shifted = slice(2, 6), slice(3, 7)  # tokens whose receptive field stays clear of the padding
    textures = _tokens_before_atm("synthetic_textures_atm_mul_sub.yaml", frames)
    torch.testing.assert_close(textures[1, inner, shifted], textures[0, inner, inner])
    shapes = _tokens_before_atm("synthetic_atm_mul_sub.yaml", frames)
    assert (shapes[1, inner, shifted] - shapes[0, inner, inner]).abs().max() > 1e-3
