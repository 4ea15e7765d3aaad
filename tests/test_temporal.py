import pytest
import torch

from atm_core.temporal import TSM, TokenShift, TokenT1D, shift_frames


def expected_shift(clips: torch.Tensor, fold: int) -> torch.Tensor:
    """Loop form of the shift on (B, T, C): channels [0,fold) read t+1, [fold,2fold) read t-1."""
    out = torch.zeros_like(clips)
    B, T, C = clips.shape
    for t in range(T):
        for c in range(C):
            if c < fold:
                out[:, t, c] = clips[:, t + 1, c] if t + 1 < T else 0
            elif c < 2 * fold:
                out[:, t, c] = clips[:, t - 1, c] if t >= 1 else 0
            else:
                out[:, t, c] = clips[:, t, c]
    return out


def tokens(batch=2, frames=4, length=5, channels=16):
    return torch.arange(batch * frames * length * channels, dtype=torch.float32).reshape(
        batch * frames, length, channels
    )


def test_shift_frames_on_cnn_maps_channel_dim_1():
    x = torch.randn(2 * 4, 16, 3, 3)
    out = shift_frames(x, num_frames=4, fold_div=8)
    per_pixel = x.reshape(2, 4, 16, 9).permute(0, 3, 1, 2).reshape(18, 4, 16)
    expected = expected_shift(per_pixel, fold=2).reshape(2, 9, 4, 16).permute(0, 2, 3, 1)
    assert torch.equal(out, expected.reshape(x.shape))


def test_tsm_shifts_patch_tokens_and_leaves_class_token():
    x = tokens()
    out = TSM(num_frames=4, fold_div=8)(x)
    assert torch.equal(out[:, 0], x[:, 0])
    for p in range(1, 5):
        expected = expected_shift(x[:, p].reshape(2, 4, 16), fold=2).reshape(8, 16)
        assert torch.equal(out[:, p], expected)


def test_tokenshift_shifts_class_token_only():
    x = tokens()
    out = TokenShift(num_frames=4)(x)
    assert torch.equal(out[:, 1:], x[:, 1:])
    assert torch.equal(out[:, 0], expected_shift(x[:, 0].reshape(2, 4, 16), fold=4).reshape(8, 16))


def test_t1d_starts_as_tokenshift_then_learns():
    x = torch.randn(2 * 4, 5, 16)
    t1d = TokenT1D(16, num_frames=4)
    assert sum(p.numel() for p in t1d.parameters()) == 3 * 16
    assert torch.equal(t1d(x), TokenShift(num_frames=4)(x))
    with torch.no_grad():
        t1d.conv.weight.add_(0.1)
    out = t1d(x)
    assert torch.equal(out[:, 1:], x[:, 1:])
    assert not torch.allclose(out[:, 0], TokenShift(num_frames=4)(x)[:, 0])


@pytest.mark.parametrize("module", [TSM(4), TokenShift(4), TokenT1D(16, 4)])
def test_batch_must_hold_whole_clips(module):
    with pytest.raises(ValueError, match="not divisible by num_frames=4"):
        module(torch.zeros(6, 5, 16))
