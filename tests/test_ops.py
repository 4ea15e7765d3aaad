import pytest
import torch

from atm_core.ops import OP_NAMES, OPS, Op, check_op_names, local_correlation, mul, pair_frames, register_op


def neighbour_of(clips: torch.Tensor, t: int, offset: int) -> torch.Tensor:
    """Frame t+offset of every clip, or zeros outside the clip (independent of pair_frames)."""
    s = t + offset
    return clips[:, s] if 0 <= s < clips.shape[1] else torch.zeros_like(clips[:, 0])


def test_pair_frames_orders_pairs_and_zero_pads_time():
    x = torch.randn(2 * 4, 3, 5, 6)
    anchor, neighbour = pair_frames(x, num_frames=4, context=5)
    assert anchor.shape == (2, 4, 1, 3, 5, 6) and neighbour.shape == (2, 4, 5, 3, 5, 6)
    clips = x.reshape(2, 4, 3, 5, 6)
    for t in range(4):
        assert torch.equal(anchor[:, t, 0], clips[:, t])
        for k, offset in enumerate(range(-2, 3)):
            assert torch.equal(neighbour[:, t, k], neighbour_of(clips, t, offset))


@pytest.mark.parametrize(
    "name, formula",
    [
        ("add", lambda a, b: b + a),
        ("sub", lambda a, b: b - a),
        ("div", lambda a, b: torch.log(1 + b.abs()) - torch.log(1 + a.abs())),
    ],
)
def test_elementwise_ops_match_their_formulas_including_clip_ends(name, formula):
    x = torch.randn(3 * 5, 4, 3, 3, dtype=torch.float64)
    cue = OPS[name](*pair_frames(x, num_frames=5, context=5))
    clips = x.reshape(3, 5, 4, 3, 3)
    for t in range(5):
        for k, offset in enumerate(range(-2, 3)):
            expected = formula(clips[:, t], neighbour_of(clips, t, offset))
            torch.testing.assert_close(cue[:, t, k], expected)
    # the first frame's offset -2 neighbour is padding: the cue depends on the anchor only
    torch.testing.assert_close(cue[:, 0, 0], formula(clips[:, 0], torch.zeros_like(clips[:, 0])))


def direct_correlation(a: torch.Tensor, b: torch.Tensor, window: int) -> torch.Tensor:
    """S[n, i, j, y, x] by explicit loops over displacements and positions, in float64."""
    n, _, h, w = a.shape
    r = window // 2
    a = a / torch.sqrt((a * a).sum(1, keepdim=True) + 1e-6)
    b = b / torch.sqrt((b * b).sum(1, keepdim=True) + 1e-6)
    out = torch.zeros(n, window, window, h, w, dtype=a.dtype)
    for i in range(window):
        for j in range(window):
            for y in range(h):
                for x in range(w):
                    yy, xx = y + i - r, x + j - r
                    if 0 <= yy < h and 0 <= xx < w:
                        out[:, i, j, y, x] = (a[:, :, y, x] * b[:, :, yy, xx]).sum(1)
    return out


def test_mul_equals_direct_loop_over_displacements_float64():
    a = torch.randn(3, 6, 5, 7, dtype=torch.float64)
    b = torch.randn(3, 6, 5, 7, dtype=torch.float64)
    got = mul(a, b, window=9).reshape(3, 9, 9, 5, 7)
    torch.testing.assert_close(got, direct_correlation(a, b, 9), rtol=1e-12, atol=1e-12)


def test_mul_on_paired_frames_matches_direct_loop():
    x = torch.randn(2 * 3, 4, 4, 4, dtype=torch.float64)
    volume = mul(*pair_frames(x, num_frames=3, context=3), window=3)
    clips = x.reshape(2, 3, 4, 4, 4)
    for t in range(3):
        for k, offset in enumerate((-1, 0, 1)):
            expected = direct_correlation(clips[:, t], neighbour_of(clips, t, offset), 3)
            torch.testing.assert_close(volume[:, t, k].reshape(2, 3, 3, 4, 4), expected)


def test_self_correlation_peaks_at_zero_displacement():
    a = torch.randn(2, 16, 6, 6)
    volume = mul(a, a, window=9)
    assert torch.equal(volume.argmax(1), torch.full((2, 6, 6), 40))
    torch.testing.assert_close(volume[:, 40], torch.ones(2, 6, 6), atol=1e-5, rtol=0)


def test_shifted_map_is_found_at_its_displacement():
    a = torch.randn(1, 8, 12, 12)
    b = torch.roll(a, shifts=(2, -1), dims=(2, 3))  # b(y+2, x-1) = a(y, x)
    peak = mul(a, b, window=9).argmax(1)[0, 4:8, 4:8]
    assert torch.equal(peak, torch.full((4, 4), (2 + 4) * 9 + (-1 + 4)))


def test_correlation_broadcasts_anchor_over_neighbours():
    a = torch.randn(2, 1, 5, 4, 4)
    b = torch.randn(2, 3, 5, 4, 4)
    torch.testing.assert_close(
        local_correlation(a, b, 5), local_correlation(a.expand_as(b).contiguous(), b, 5)
    )


def test_check_op_names_returns_a_tuple_and_names_the_bad_name_and_the_valid_ones():
    assert check_op_names(["mul", "sub"]) == ("mul", "sub")
    assert check_op_names(()) == ()
    with pytest.raises(ValueError, match="unknown ATM op 'pow'; valid: add, sub, mul, div"):
        check_op_names(("sub", "pow"))
    with pytest.raises(ValueError, match="got the string 'mul'"):
        check_op_names("mul")
    assert set(OPS) == set(OP_NAMES)


def test_bad_sizes_are_named():
    with pytest.raises(ValueError, match="window must be a positive odd"):
        local_correlation(torch.zeros(1, 2, 3, 3), torch.zeros(1, 2, 3, 3), 4)
    with pytest.raises(ValueError, match="context must be a positive odd"):
        pair_frames(torch.zeros(4, 2, 3, 3), num_frames=4, context=4)
    with pytest.raises(ValueError, match="not divisible by num_frames=3"):
        pair_frames(torch.zeros(4, 2, 3, 3), num_frames=3, context=3)


@pytest.mark.parametrize("name", [name for name, op in OPS.items() if op.separable is not None])
def test_a_separable_form_equals_its_op(name):
    """combine(g(a), g(b)) is the op's cue, and g keeps the zero time padding zero."""
    op = OPS[name]
    anchor, neighbour = pair_frames(torch.randn(2 * 4, 3, 5, 5, dtype=torch.float64), num_frames=4, context=3)
    frame_map = op.separable.frame_map or (lambda x: x)
    torch.testing.assert_close(op.separable.combine(frame_map(anchor), frame_map(neighbour)), op(anchor, neighbour))
    assert torch.equal(frame_map(torch.zeros(3)), torch.zeros(3))


def test_op_records_and_registration():
    official = sorted((op for op in OPS.values() if op.official), key=lambda op: op.official.position)
    assert [op.name for op in official] == ["mul", "sub", "add", "div"]  # the official code's run order
    assert [op.name for op in OPS.values() if op.volume] == ["mul"]
    assert all(op.title and (op.heat or op.volume) for op in OPS.values())
    with pytest.raises(ValueError, match="an ATM op named 'sub' is already registered"):
        register_op(Op("sub", lambda a, b: b - a, "another subtraction"))
    assert OPS["sub"].title.startswith("subtraction")
