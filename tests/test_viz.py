"""Feature-map capture and figures (atm_core.viz): values against direct computations, figure sizes
and content for every op."""
import numpy as np
import pytest
import torch

from atm_core import ATM
from atm_core.ops import OP_NAMES, mul, pair_frames
from atm_core.viz import (
    capture_atm,
    cue_norms,
    displacement_colours,
    displacement_field,
    feature_map_figures,
    figure_to_rgb,
    motion_gain,
    plot_ablation,
    plot_block,
    plot_confusions,
    plot_cue,
    plot_displacement,
    plot_residuals,
    plot_similarity_patches,
    plot_training_curves,
    residual_norms,
    run_capture,
    save_figure,
    strongest_points,
)

T, C, H = 4, 8, 8


def moving_features(shift=(0, 1), frames=T, size=H, channels=C):
    """(T, C, size, size) features: a random texture whose frame t is frame 0 rolled by t*shift."""
    g = torch.Generator().manual_seed(1)
    base = torch.rand(channels, size, size, generator=g) + 0.1
    return torch.stack([torch.roll(base, (t * shift[0], t * shift[1]), dims=(1, 2)) for t in range(frames)])


def random_atm(ops, impl="auto"):
    atm = ATM(C, T, ops=ops, impl=impl).eval()
    for block in atm:  # the output projection starts at zero; make the branch visible
        torch.nn.init.normal_(block.proj.weight, std=0.2)
    return atm


def rgb_frames(frames=T, size=32):
    return np.random.default_rng(0).random((frames, size, size, 3))


def check_image(fig, min_colours=20):
    image = figure_to_rgb(fig)
    width, height = fig.get_size_inches() * fig.dpi
    assert image.shape == (round(height), round(width), 3)
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


def test_strongest_points_prefer_moving_content():
    volume = torch.zeros(1, T, 5, 81, H, H)
    volume[:, :, :, 40] = 0.5
    volume[0, 1, 3, 41, 5, 6] = 0.9  # frame 1, offset +1: position (5, 6) moved right
    cap = run_and_pick(random_atm(("mul",)))
    cap.cue = volume
    assert strongest_points(cap, frame=1, offset=1, count=1) == [(5, 6)]


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
    assert len(fig.axes) >= T * 5  # offsets x frames, plus colour bar / legend


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
    np.testing.assert_allclose(shown, cap.cue[0, 1, 3, :, 2, 3].reshape(9, 9).numpy())


def test_residual_figure_and_ratio_labels():
    caps = capture_all(random_atm(("mul", "sub")))
    fig = plot_residuals(rgb_frames(), caps)
    check_image(fig)
    labels = [ax.get_ylabel() for ax in fig.axes if ax.get_ylabel().startswith("block")]
    assert labels[0].startswith("block 1 (mul)") and labels[1].startswith("block 2 (sub)")


def test_feature_map_figures_saves_every_figure(tmp_path):
    atm = random_atm(("mul", "sub"))
    clip = torch.rand(T, 3, 32, 32)

    class FrameEncoder(torch.nn.Module):  # (B, T, 3, H, W) clip -> ATM on an 8x8 map
        def __init__(self):
            super().__init__()
            self.embed, self.atm = torch.nn.Conv2d(3, C, 4, stride=4), atm

        def forward(self, clips):
            return self.atm(self.embed(clips.flatten(0, 1)))

    figs = feature_map_figures(FrameEncoder(), clip, (0.5,) * 3, (0.25,) * 3, tmp_path, prefix="m_")
    assert set(figs) == {"mul_cue", "mul_patches", "sub_cue", "residuals"}
    for name, fig in figs.items():
        saved = tmp_path / f"m_{name}.png"
        assert saved.is_file() and saved.stat().st_size > 10_000
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


def test_save_figure_writes_png(tmp_path):
    fig = plot_ablation(["x"], [50.0])
    path = save_figure(fig, tmp_path / "sub" / "bars.png", dpi=50)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
