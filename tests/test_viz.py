"""Feature-map capture and figures (atm_core.viz), the workbook's loaders and run-summary plots:
values against direct computations, figure sizes and content for every op."""
import itertools
from pathlib import Path

import numpy as np
import pytest
import torch

from atm_core import ATM
from atm_core.data import DataError
from atm_core.data.synthetic import CLASSES, write_class_video, write_mp4
from atm_core.atm import ATMOptions
from atm_core.engine import load_config
from atm_core.ops import OP_NAMES, mul, pair_frames
from atm_core.viz import (
    atm_blocks,
    capture_atm,
    cue_norms,
    displacement_colours,
    displacement_field,
    feature_map_figures,
    figure_to_rgb,
    motion_gain,
    moving_points,
    plot_block,
    plot_cue,
    plot_displacement,
    plot_residuals,
    plot_similarity_patches,
    residual_norms,
    run_capture,
    save_figure,
    save_figures,
    similarity_patch,
)
from atm_core.workbook import (
    clip_classes,
    load_clip,
    load_model,
    plot_ablation,
    plot_confusions,
    plot_training_curves,
)

T, C, H = 4, 8, 8
SYNTHETIC = "params/synthetic_atm_mul_sub.yaml"


def with_visible_branches(model, std=0.05):
    for _, block in atm_blocks(model):  # the output projection starts at zero
        torch.nn.init.normal_(block.proj.weight, std=std)
    return model


@pytest.fixture(scope="module")
def synthetic_cfg(tmp_path_factory):
    return load_config(SYNTHETIC, [f"data.root={tmp_path_factory.mktemp('no_data')}",
                                   "data.num_frames=4"])


@pytest.fixture(scope="module")
def tiny_video_model(synthetic_cfg):
    torch.manual_seed(0)
    return with_visible_branches(load_model(synthetic_cfg, checkpoint=None))


def moving_features(shift=(0, 1), frames=T, size=H, channels=C):
    """(T, C, size, size) features: a random texture whose frame t is frame 0 rolled by t*shift."""
    g = torch.Generator().manual_seed(1)
    base = torch.rand(channels, size, size, generator=g) + 0.1
    return torch.stack([torch.roll(base, (t * shift[0], t * shift[1]), dims=(1, 2)) for t in range(frames)])


def random_atm(ops, impl="auto"):
    atm = ATM(C, T, ATMOptions(ops=ops, impl=impl)).eval()
    for block in atm:  # the output projection starts at zero; make the branch visible
        torch.nn.init.normal_(block.proj.weight, std=0.2)
    return atm


def rgb_frames(frames=T, size=32):
    return np.random.default_rng(0).random((frames, size, size, 3))


def check_image(fig, min_colours=20):
    image = figure_to_rgb(fig)
    width, height = fig.get_size_inches() * fig.dpi
    assert image.shape[2] == 3 and abs(image.shape[0] - height) < 1 and abs(image.shape[1] - width) < 1
    assert image.dtype == np.uint8
    assert image.std() > 10
    assert len(np.unique(image.reshape(-1, 3), axis=0)) >= min_colours
    return image


def hooks_left(atm):
    return [m for block in atm for m in block.modules() if m._forward_hooks or m._forward_pre_hooks]


@pytest.mark.parametrize("impl", ["plain", "cpu_fast"])
def test_capture_records_every_block_and_removes_its_hooks(impl):
    atm = random_atm(("mul", "sub"), impl)
    x = moving_features()
    with capture_atm(atm) as caps:
        out = atm(x)
        atm(x)  # a second pass replaces, not appends
    assert [c.op for c in caps] == ["mul", "sub"]
    assert [c.index for c in caps] == [0, 1]
    mul_cap, sub_cap = caps
    assert mul_cap.cue.shape == (1, T, 5, 81, H, H)
    assert sub_cap.cue.shape == (1, T, 5, 64, H, H)
    assert torch.equal(mul_cap.input, x)
    # the second block's input is the first block's output: ReLU(x + branch)
    torch.testing.assert_close(sub_cap.input, torch.relu(x + mul_cap.branch))
    torch.testing.assert_close(out, torch.relu(sub_cap.input + sub_cap.branch))
    # the cues are the plain ops of each block's reduced input
    with torch.no_grad():
        for block, cap in zip(atm, caps):
            expected = block.cue(block.reduce(cap.input))
            torch.testing.assert_close(cap.cue, expected, rtol=1e-5, atol=1e-5)
    assert not hooks_left(atm)


def test_capture_gives_the_same_cues_and_branches_on_both_impls_and_keeps_running_stats():
    plain = random_atm(("mul", "div"), "plain").train().double()
    fast = random_atm(("mul", "div"), "cpu_fast").train().double()
    fast.load_state_dict(plain.state_dict())
    x = moving_features().double()
    captures = []
    for atm in (plain, fast):
        with capture_atm(atm) as caps:
            atm(x)
        captures.append(caps)
    for a, b in zip(*captures):
        torch.testing.assert_close(a.cue, b.cue, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(a.branch, b.branch, rtol=1e-10, atol=1e-10)
    # one train-mode pass each: the capture's own cue computation updates no running average
    for block in (*plain, *fast):
        assert all(int(m.num_batches_tracked) == 1 for m in block.modules()
                   if isinstance(m, torch.nn.BatchNorm2d))
    for (name, a), b in zip(plain.named_buffers(), fast.buffers()):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10, msg=name)


def test_capture_removes_its_hooks_after_an_error():
    atm = random_atm(("add",))
    with pytest.raises(ValueError, match="not divisible"), capture_atm(atm):
        atm(torch.rand(T + 1, C, H, H))
    assert not hooks_left(atm)


def test_capture_rejects_a_model_without_atm():
    with pytest.raises(ValueError, match="no ATM block"), capture_atm(torch.nn.Conv2d(3, 3, 1)):
        pass


def test_run_capture_needs_one_clip_and_keeps_training_mode():
    atm = random_atm(("sub",)).train()
    with pytest.raises(ValueError, match=r"one clip \(T, 3, H, W\)"):
        run_capture(atm, torch.rand(1, T, C, H, H))


def test_cue_norms_match_the_channel_norm():
    cue = torch.randn(2, T, 5, 6, 3, 3)
    norms = cue_norms(cue, clip_index=1)
    assert norms.shape == (T, 5, 3, 3)
    np.testing.assert_allclose(norms[2, 4, 1, 0], torch.sqrt((cue[1, 2, 4, :, 1, 0] ** 2).sum()).item(), rtol=1e-5)


def test_residual_norms_pick_the_frames_of_one_clip():
    branch = torch.randn(2 * T, C, H, H)
    norms = residual_norms(branch, T, clip_index=1)
    assert norms.shape == (T, H, H)
    np.testing.assert_allclose(norms[0], branch[T].norm(dim=0).numpy(), rtol=1e-5)


@pytest.mark.parametrize("shift", [(0, 1), (1, 0), (-1, 2)])
def test_displacement_field_finds_the_motion(shift):
    x = moving_features(shift, size=16)
    volume = mul(*pair_frames(x, T, 5), 9)  # (1, T, 5, 81, h, w)
    dy, dx, peak = displacement_field(volume)
    assert dy.shape == (T, 5, 16, 16)
    # away from the borders (where the roll wraps), content of frame t sits at +shift in t+1
    inner = (slice(4, -4), slice(4, -4))
    for k, offset in enumerate(range(-2, 3)):
        for t in range(T):
            if not 0 <= t + offset < T:
                assert (dy[t, k] == 0).all() and (dx[t, k] == 0).all()  # zero neighbour: no motion
                continue
            assert (dy[t, k][inner] == offset * shift[0]).all()
            assert (dx[t, k][inner] == offset * shift[1]).all()
            np.testing.assert_allclose(peak[t, k][inner], 1.0, atol=1e-4)  # identical content


def test_displacement_field_reads_flat_patches_as_still_and_gain_as_margin():
    volume = torch.zeros(1, 1, 1, 81, 2, 2)
    volume[0, 0, 0, :, 0, 0] = 0.5  # flat: every displacement equally good
    volume[0, 0, 0, 40, 0, 1] = 0.2
    volume[0, 0, 0, 0, 0, 1] = 0.7  # (-4, -4) beats no motion by 0.5
    dy, dx, _ = displacement_field(volume)
    assert (dy[0, 0, 0, 0], dx[0, 0, 0, 0]) == (0, 0)
    assert (dy[0, 0, 0, 1], dx[0, 0, 0, 1]) == (-4, -4)
    np.testing.assert_allclose(motion_gain(volume)[0, 0, 0], [0.0, 0.5], atol=1e-6)
    with pytest.raises(ValueError, match="not W\\*W"):
        displacement_field(torch.zeros(1, 1, 1, 80, 2, 2))


def test_displacement_colours():
    dy = np.array([0, 0, -4, 0])
    dx = np.array([0, 4, 0, -4])
    rgb = displacement_colours(dy, dx, np.array([0.5, 1.0, 1.0, 2.0]), radius=4)
    np.testing.assert_allclose(rgb[0], [0.5, 0.5, 0.5])  # no motion: grey at the peak's brightness
    assert rgb[1].argmax() == 0 and rgb[1, 0] == 1.0  # right: red hue
    assert not np.allclose(rgb[2], rgb[3])  # up and left differ
    assert rgb.max() <= 1.0  # brightness clipped


def test_moving_points_prefer_moving_content_off_the_border():
    volume = torch.zeros(1, T, 5, 81, H, H)
    volume[:, :, :, 40] = 0.5
    volume[0, 1, 3, 41, 5, 6] = 0.9  # frame 1, offset +1: position (5, 6) moved right
    volume[0, 1, 3, 41, 0, 3] = 1.0  # a stronger match on the top border
    cap = run_and_pick(random_atm(("mul",)))
    cap.cue, cap.input = volume, torch.ones_like(cap.input)  # no input change anywhere
    assert moving_points(cap, frame=1, offset=1, count=1) == [(5, 6)]
    assert moving_points(cap, frame=1, offset=1, count=1, margin=0) == [(0, 3)]
    points = moving_points(cap, frame=1, offset=1, count=3)
    assert len(set(points)) == 3 and all(1 <= y < H - 1 and 1 <= x < H - 1 for y, x in points)
    with pytest.raises(ValueError, match="frame 3 \\+ offset \\+1 is outside the clip's 4 frames"):
        moving_points(cap, frame=3, offset=1)


def square_clip(frames=T, size=64, side=16, step=4, top=24, left=8):
    """(T, 3, size, size): a yellow square moving right by ``step`` px a frame on a static texture."""
    g = torch.Generator().manual_seed(0)
    clip = (torch.rand(3, size, size, generator=g) * 0.5).repeat(frames, 1, 1, 1)
    for t in range(frames):
        x0 = left + step * t
        clip[t, :, top:top + side, x0:x0 + side] = torch.tensor([1.0, 0.8, 0.0])[:, None, None]
    return clip


def square_cells(t, cell, size=64, side=16, step=4, top=24, left=8, halo=1):
    """Feature cells (y, x) of ``cell`` px the square of :func:`square_clip` covers in frame ``t``,
    grown by ``halo`` cells (the model's stem and attention see a little past each patch)."""
    x0 = left + step * t
    return {(y, x) for y in range(top // cell - halo, (top + side - 1) // cell + 1 + halo)
            for x in range(x0 // cell - halo, (x0 + side - 1) // cell + 1 + halo)}


def test_moving_points_land_on_a_moving_square(tiny_video_model):
    caps = run_capture(tiny_video_model, square_clip())
    mul_cap = caps[0]
    points = moving_points(mul_cap, frame=1, offset=1)
    on_square = square_cells(1, 8) | square_cells(2, 8)
    assert len(points) == 3 and set(points) <= on_square, points


def test_similarity_patch_marks_cells_outside_the_map_as_nan():
    cap = run_and_pick(random_atm(("mul",)))
    volume = cap.cue[0, 1, 3].numpy()  # frame 1, offset +1: (81, H, H)
    corner = similarity_patch(cap, 1, 1, 0, 0)
    expected = volume[:, 0, 0].reshape(9, 9)
    assert np.isnan(corner[:4]).all() and np.isnan(corner[:, :4]).all()  # displaced above / left of the map
    np.testing.assert_allclose(corner[4:, 4:], expected[4:, 4:])
    inner = similarity_patch(cap, 1, 1, 4, 4)  # 4 + r = 8 is one past the last row / column
    assert np.isnan(inner[8]).all() and np.isnan(inner[:, 8]).all() and not np.isnan(inner[:8, :8]).any()
    fig = plot_similarity_patches(rgb_frames(), cap, frame=1, offset=1, points=[(0, 0)])
    shown = next(ax for ax in fig.axes if ax.get_title().startswith("point")).images[0].get_array()
    np.testing.assert_array_equal(np.ma.getmaskarray(shown), np.isnan(corner))
    check_image(fig)


def capture_all(atm):
    with torch.no_grad(), capture_atm(atm) as caps:
        atm(moving_features())
    return caps


def run_and_pick(atm):
    return capture_all(atm)[0]


@pytest.mark.parametrize("op", OP_NAMES)
def test_cue_figure_for_every_op(op):
    cap = run_and_pick(random_atm((op,)))
    fig = plot_block(rgb_frames(), cap)
    check_image(fig)
    assert cap.op in fig._suptitle.get_text()
    # offsets -2, -1, +1, +2 x frames (offset 0 left out), plus colour bar / legend
    assert len(fig.axes) >= T * 4
    rows = [ax.get_ylabel() for ax in fig.axes if ax.get_ylabel().startswith("offset")]
    assert rows == ["offset -2", "offset -1", "offset +1", "offset +2"]
    assert "offset 0" in fig._suptitle.get_text()


def test_plot_functions_reject_the_wrong_op():
    sub_cap = run_and_pick(random_atm(("sub",)))
    mul_cap = run_and_pick(random_atm(("mul",)))
    with pytest.raises(ValueError, match="plot_displacement"):
        plot_cue(rgb_frames(), mul_cap)
    with pytest.raises(ValueError, match="needs a mul block"):
        plot_displacement(rgb_frames(), sub_cap)
    with pytest.raises(ValueError, match="needs a mul block"):
        plot_similarity_patches(rgb_frames(), sub_cap)
    with pytest.raises(ValueError, match="outside the block's context"):
        plot_similarity_patches(rgb_frames(), mul_cap, offset=3)
    with pytest.raises(ValueError, match="outside the 8x8 feature map"):
        plot_similarity_patches(rgb_frames(), mul_cap, points=[(8, 0)])


def test_similarity_patches_figure():
    cap = run_and_pick(random_atm(("mul",)))
    fig = plot_similarity_patches(rgb_frames(), cap, frame=1, offset=1, points=[(2, 3), (4, 4)])
    check_image(fig)
    patch_axes = [ax for ax in fig.axes if ax.get_title().startswith("point")]
    assert len(patch_axes) == 2
    shown = patch_axes[0].images[0].get_array()
    expected = cap.cue[0, 1, 3, :, 2, 3].reshape(9, 9).numpy()
    inside = ~np.ma.getmaskarray(shown)
    np.testing.assert_allclose(shown.data[inside], expected[inside])
    with pytest.raises(ValueError, match="frame 3 \\+ offset \\+1 is outside"):
        plot_similarity_patches(rgb_frames(), cap, frame=3, offset=1, points=[(2, 3)])


def test_residual_figure_and_ratio_labels():
    caps = capture_all(random_atm(("mul", "sub")))
    fig = plot_residuals(rgb_frames(), caps)
    check_image(fig)
    labels = [ax.get_ylabel() for ax in fig.axes if ax.get_ylabel().startswith("block")]
    assert labels[0].startswith("block 1 (mul)") and labels[1].startswith("block 2 (sub)")
    # one colour scale per row, each the maximum of its own block's branch norm
    maxima = [residual_norms(c.branch, c.num_frames).max() for c in caps]
    assert not np.isclose(*maxima, rtol=0.05)  # a shared scale would give both rows the larger one
    panels = [ax for ax in fig.axes if len(ax.images) == 2]
    for row, cap in enumerate(caps):
        expected = residual_norms(cap.branch, cap.num_frames).max()
        for ax in panels[row * T:(row + 1) * T]:
            np.testing.assert_allclose(ax.images[1].get_clim(), (0, expected), rtol=1e-6)
    assert sum(ax.get_label() == "<colorbar>" for ax in fig.axes) == len(caps)


def test_feature_map_figures_saves_every_figure(tmp_path):
    atm = random_atm(("mul", "sub"))
    clip = torch.rand(T, 3, 32, 32)

    class FrameEncoder(torch.nn.Module):  # (B, T, 3, H, W) clip -> ATM on an 8x8 map
        def __init__(self):
            super().__init__()
            self.embed, self.atm = torch.nn.Conv2d(3, C, 4, stride=4), atm

        def forward(self, clips):
            return self.atm(self.embed(clips.flatten(0, 1)))

    heading = "ATM(mul, sub) (atm_mul_sub), shapes track: clip of moving_right, predicted moving_left"
    plain = feature_map_figures(FrameEncoder(), clip, (0.5,) * 3, (0.25,) * 3)
    figs = feature_map_figures(FrameEncoder(), clip, (0.5,) * 3, (0.25,) * 3, heading=heading)
    assert set(figs) == {"mul_cue", "mul_patches", "sub_cue", "residuals"}
    assert sorted(p.name for p in save_figures(figs, tmp_path, prefix="m_")) == sorted(f"m_{n}.png" for n in figs)
    for name, fig in figs.items():
        saved = tmp_path / f"m_{name}.png"
        assert saved.is_file() and saved.stat().st_size > 10_000
        assert fig.get_suptitle() == f"{heading}\n{plain[name].get_suptitle()}"  # what and on which clip
        check_image(fig)


def test_summary_plots():
    records = [{"epoch": e, "train_loss": 2.0 - e * 0.3, "val_top1": 20.0 + 10 * e} for e in range(4)]
    check_image(plot_training_curves({"tsn": records, "atm": records[:2]}))
    cm = np.random.default_rng(0).integers(0, 5, (12, 12))
    names = [f"class {i}" for i in range(12)]
    check_image(plot_confusions({"a": cm, "b": cm.T, "c": cm, "d": cm}, names))
    with pytest.raises(ValueError, match="does not match 12 class names"):
        plot_confusions({"a": cm[:3, :3]}, names)
    check_image(plot_ablation(["TSN", "ATM(mul, sub)"], [48.0, 95.0], chance=100 / 12, order_blind=50.0))


def test_training_curves_give_every_run_its_own_colour_and_keep_the_legend_outside():
    records = [{"epoch": e, "train_loss": 2.0 - e * 0.1, "val_top1": 10.0 + 5 * e} for e in range(6)]
    for runs in (3, 15, 24):
        fig = plot_training_curves({f"run {i}": records for i in range(runs)}, title="shapes track")
        figure_to_rgb(fig)  # lays the figure out
        loss_ax, acc_ax = fig.axes
        colours = [tuple(line.get_color()) if not isinstance(line.get_color(), str) else line.get_color()
                   for line in loss_ax.lines]
        assert len(set(colours)) == runs
        assert [tuple(a.get_color()) for a in acc_ax.lines] == [tuple(c) for c in colours]
        legend = fig.legends[0].get_window_extent(fig.canvas.get_renderer())
        for ax in (loss_ax, acc_ax):
            assert not legend.overlaps(ax.get_window_extent(fig.canvas.get_renderer()))
        assert fig.get_suptitle() == "shapes track"


def test_save_figure_writes_png(tmp_path):
    fig = plot_ablation(["x"], [50.0])
    path = save_figure(fig, tmp_path / "sub" / "bars.png", dpi=50)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_ablation_legend_hides_no_bar_or_value():
    fig = plot_ablation(["TSN", "TSM", "ATM(sub)", "ATM(mul, sub)"], [48.0, 60.0, 90.3, 95.0],
                        chance=100 / 12, order_blind=50.0)
    figure_to_rgb(fig)  # lays the figure out
    renderer = fig.canvas.get_renderer()
    legend = fig.legends[0].get_window_extent(renderer)
    ax = fig.axes[0]
    values = [t for t in ax.texts if t.get_text() == "95.0"]
    assert values, "the ATM(mul, sub) bar carries its value"
    for artist in [*ax.texts, *ax.patches]:
        assert not legend.overlaps(artist.get_window_extent(renderer)), artist
    assert not legend.overlaps(ax.get_window_extent(renderer))


def test_confusion_ticks_are_readable_class_names():
    names = list(CLASSES)
    cm = np.random.default_rng(0).integers(0, 5, (12, 12))
    fig = plot_confusions({"TSN": cm}, names, cols=3)
    ax = fig.axes[0]
    figure_to_rgb(fig)
    xticks, yticks = ax.get_xticklabels(), ax.get_yticklabels()
    assert [t.get_text() for t in yticks] == [n.replace("_", " ") for n in names]
    assert min(t.get_fontsize() for t in [*xticks, *yticks]) >= 9
    assert all(t.get_rotation() == 45 for t in xticks)
    renderer = fig.canvas.get_renderer()
    boxes = [t.get_window_extent(renderer) for t in yticks]
    assert not any(a.overlaps(b) for a, b in itertools.pairwise(boxes))  # neighbours do not collide


def test_load_clip_from_a_video_and_from_a_list_entry(tmp_path, synthetic_cfg):
    video = write_class_video("shapes", "moving_right", tmp_path / "clips" / "right.mp4")
    (tmp_path / "val.txt").write_text("# comment\nclips/right.mp4 24 1\n")
    cfg = load_config(SYNTHETIC, [f"data.root={tmp_path}", "data.num_frames=4"])
    clip, label = load_clip(cfg, video=video)
    assert clip.shape == (4, 3, 64, 64) and label is None  # scale 72, centre crop 64
    listed, label = load_clip(cfg, video=("val.txt", 2))
    assert label == 1 and torch.equal(listed, clip)
    with pytest.raises(ValueError, match=r"val.txt:1: no clip on that line"):
        load_clip(cfg, video=("val.txt", 1))
    with pytest.raises(DataError, match="missing.mp4: video file not found"):
        load_clip(cfg, video=tmp_path / "missing.mp4")
    assert clip_classes(cfg) == list(CLASSES)  # no label file anywhere: the benchmark's own names
    run_dir = tmp_path / "exported_run"
    run_dir.mkdir()
    (run_dir / "labels.csv").write_text("id,name\n" + "".join(f"{i},r{i}\n" for i in range(12)))
    assert clip_classes(cfg, run_dir=run_dir)[:2] == ["r0", "r1"]  # an exported run's names
    (tmp_path / "labels.csv").write_text("id,name\n" + "".join(f"{i},c{i}\n" for i in range(12)))
    assert clip_classes(cfg, run_dir=run_dir)[:2] == ["c0", "c1"]  # the data's own label file first


@pytest.mark.parametrize("track, first, second", [("shapes", "moving_left", "moving_right"),
                                                 ("textures", "panning_left", "panning_right")])
def test_class_video_plays_the_reversed_class_backwards(tmp_path, track, first, second):
    from atm_core.data import open_video

    forward = open_video(write_class_video(track, first, tmp_path / "l.mp4", seed=3))
    backward = open_video(write_class_video(track, second, tmp_path / "r.mp4", seed=3))
    frames = forward.read(range(len(forward))).astype(float)
    reversed_frames = backward.read(range(len(backward))).astype(float)[::-1]
    assert np.abs(frames - reversed_frames).mean() < 2.0  # equal up to H.264 coding
    with pytest.raises(ValueError, match=f"unknown class 'sideways' of the {track} track"):
        write_class_video(track, "sideways", tmp_path / "x.mp4")


def test_vit_b16_at_224_gives_readable_14x14_figures(synthetic_cfg):
    cfg = load_config(SYNTHETIC, [f"data.root={synthetic_cfg.data.root}", "model.name=atm_vit_base_patch16_clip_224",
                                  "data.num_frames=2", "model.atm.ops=[mul,sub]", "data.options={input_size: 224}", "model.img_size=224",
                                  "model.atm.context=5"])
    torch.manual_seed(0)
    model = with_visible_branches(load_model(cfg, checkpoint=None), std=0.01)
    clip = square_clip(frames=2, size=224, side=64, step=16, top=80, left=64)
    caps = run_capture(model, clip)  # one forward
    assert [c.op for c in caps] == ["mul", "sub"] and caps[0].cue.shape == (1, 2, 5, 81, 14, 14)
    points = moving_points(caps[0], frame=0, offset=1)
    on_square = square_cells(0, 16, 224, 64, 16, 80, 64) | square_cells(1, 16, 224, 64, 16, 80, 64)
    assert set(points) <= on_square, points
    frames = clip.permute(0, 2, 3, 1).numpy()
    figures = {"mul_cue": plot_block(frames, caps[0]), "sub_cue": plot_block(frames, caps[1]),
               "mul_patches": plot_similarity_patches(frames, caps[0], frame=0, offset=1),
               "residuals": plot_residuals(frames, caps)}
    for name, fig in figures.items():
        check_image(fig)
        grids = [im.get_array().shape[:2] for ax in fig.axes for im in ax.images[1:2]]
        if name != "mul_patches":
            assert grids and all(g == (14, 14) for g in grids), (name, grids)
    # panels grow with the grid: a 14x14 cell is drawn at least as large as on the tiny model's 8x8 map
    tiny = plot_block(rgb_frames(), run_and_pick(random_atm(("sub",))))
    per_cell = lambda fig, cells: fig.axes[0].get_position().width * fig.get_figwidth() / cells
    assert per_cell(figures["sub_cue"], 14) >= 0.7 * per_cell(tiny, 8)


def test_notebook_runs_on_a_checkpoint_and_a_video(tmp_path, tiny_video_model):
    import nbformat
    import papermill
    from safetensors.torch import save_file

    save_file(tiny_video_model.state_dict(), str(tmp_path / "model.safetensors"))
    video = tmp_path / "square.mp4"
    frames = (square_clip(frames=12, size=96, side=24, step=4).permute(0, 2, 3, 1).numpy() * 255).astype(np.uint8)
    write_mp4(video, frames)
    root = Path(__file__).resolve().parents[1]
    out = tmp_path / "executed.ipynb"
    papermill.execute_notebook(
        str(root / "notebooks" / "visualize_arithmetic.ipynb"), str(out), cwd=str(root), progress_bar=False,
        parameters={"recipe": SYNTHETIC, "checkpoint": str(tmp_path / "model.safetensors"), "video": str(video),
                    "overrides": ["data.num_frames=4"],
                    "work_dir": str(tmp_path / "work"), "results_dir": str(tmp_path / "results"),
                    "save_figures": True})
    saved = sorted(p.name for p in (tmp_path / "work" / "feature_maps").glob("*.png"))
    assert saved == ["mul_cue.png", "mul_patches.png", "residuals.png", "sub_cue.png"]
    images = [o for c in nbformat.read(out, as_version=4).cells if c.cell_type == "code"
              for o in c.outputs if "image/png" in o.get("data", {})]
    assert len(images) == 5  # the frames and the four figures
    assert not (tmp_path / "results").exists()  # a recipe's figures stay out of results/


def test_feature_map_report_titles_every_figure_with_model_track_truth_and_prediction(tmp_path, synthetic_cfg):
    from atm_core.workbook import benchmark_clip, feature_map_report

    cfg = load_config(SYNTHETIC, [f"data.root={tmp_path}", "data.num_frames=4"])
    video, truth = benchmark_clip(cfg, clip_class={"shapes": "moving_right", "textures": "zooming_in"}, seed=1,
                                  folder=tmp_path / "clips")
    assert truth == "moving_right" and video.name == "shapes_moving_right_1.mp4"
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "labels.csv").write_text("id,name\n" + "".join(f"{i},{n}\n" for i, n in enumerate(CLASSES)))
    torch.manual_seed(0)
    heading, frames, figures = feature_map_report(cfg, name="atm_mul_sub", checkpoint=None, video=video,
                                                  truth=truth, run_dir=run_dir)
    prefix = "ATM(mul, sub) [atm_mul_sub], shapes track: clip of moving_right, predicted "
    assert heading.startswith(prefix) and heading[len(prefix):] in CLASSES
    assert frames.get_suptitle().startswith(heading)
    assert set(figures) == {"mul_cue", "mul_patches", "sub_cue", "residuals"}
    assert all(fig.get_suptitle().startswith(heading + "\n") for fig in figures.values())
    with pytest.raises(ValueError, match="clip_class names no class for the shapes track"):
        benchmark_clip(cfg, clip_class={"textures": "zooming_in"}, seed=1, folder=tmp_path)


def test_feature_map_captions_match_each_file_to_its_variant(tmp_path):
    from atm_core.workbook import feature_map_captions

    names = ["atm_mul_sub_mul_cue", "atm_mul_sub_mul_patches", "atm_mul_sub_residuals", "atm_mul_mul_cue",
             "textures_atm_sub_sub_cue", "atm_mul_stray_notes"]
    for name in names:
        (tmp_path / f"{name}.png").write_bytes(b"png")
    captions = feature_map_captions(tmp_path, {"atm_mul": "ATM(mul)", "atm_mul_sub": "ATM(mul, sub)",
                                               "textures_atm_sub": "ATM(sub) (real textures)"})
    assert [(p.stem, c) for p, c in captions] == [
        ("atm_mul_mul_cue", "ATM(mul): the cue of its mul block per offset and frame"),
        ("atm_mul_sub_mul_cue", "ATM(mul, sub): the cue of its mul block per offset and frame"),
        ("atm_mul_sub_mul_patches", "ATM(mul, sub): raw similarity patches of its mul block at points on the moving content"),
        ("atm_mul_sub_residuals", "ATM(mul, sub): what each ATM block adds back to the features"),
        ("textures_atm_sub_sub_cue", "ATM(sub) (real textures): the cue of its sub block per offset and frame"),
    ]
