"""The CPU kernels (atm_core.kernels) against the plain path, in float64: the correlation, the
encoder's row convolutions and BatchNorm, and whole blocks (outputs, gradients, running statistics)
with the same state dict loaded both ways."""
import copy
import dataclasses

import pytest
import torch
import torch.nn.functional as F

from atm_core import ATMBlock
from atm_core.atm import ATMOptions, SimilarityEncoder
from atm_core.kernels import clip_correlation, encode_patches
from atm_core.kernels import encoder as encoder_kernels
from atm_core.kernels.encoder import (
    _BlockedBatchNormReLU,
    _GroupedBatchNormReLU,
    banded_taps,
    column_blocks,
    row_conv,
    row_plan,
)
from atm_core.ops import OPS, Op, mul, pair_frames, register_op


def randomise(module: torch.nn.Module) -> None:
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn_like(p) * 0.2 + (1.0 if p.dim() == 1 else 0.0))


@pytest.mark.parametrize("context, window, side", [(5, 9, 6), (3, 3, 5), (5, 9, 11)])
@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_clip_correlation_equals_mul_on_paired_frames_with_gradients(context, window, side, layout):
    frames = 4
    x = torch.randn(2 * frames, 6, side, side + 1, dtype=torch.float64)
    x = x.contiguous(memory_format=layout).requires_grad_()
    got = clip_correlation(x, frames, context, window)
    expected = mul(*pair_frames(x, frames, context), window)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)
    upstream = torch.randn(expected.shape, dtype=torch.float64)
    (grad,) = torch.autograd.grad(got, x, upstream)
    (expected_grad,) = torch.autograd.grad(expected, x, upstream)
    torch.testing.assert_close(grad, expected_grad, rtol=1e-10, atol=1e-10)


def running_stats(block: torch.nn.Module) -> list[torch.Tensor]:
    return [b for name, b in block.named_buffers() if "running" in name or "num_batches" in name]


@pytest.mark.parametrize("op", ["add", "sub", "mul", "div"])
@pytest.mark.parametrize("downsample, context", [(False, 5), (True, 5), (False, 3)])
@pytest.mark.parametrize("build, load", [("cpu_fast", "plain"), ("plain", "cpu_fast"),
                                         ("cpu_fused", "plain"), ("plain", "cpu_fused")])
def test_cpu_fast_block_equals_plain_block(op, downsample, context, build, load):
    assert_impls_agree(op, ATMOptions(hidden=8, width=16, context=context, downsample=downsample), build, load)


@pytest.fixture
def op_without_fast_form():
    """A throw-away op registered for one test: |b - a|, which has no separable form."""
    op = register_op(Op("absdiff", lambda a, b: (b - a).abs(), "absolute difference: |x[t+o] - x[t]|"))
    yield op
    del OPS[op.name]


@pytest.mark.parametrize("build, load", [("cpu_fast", "plain"), ("plain", "cpu_fast")])
def test_an_op_without_a_fast_form_falls_back_to_its_plain_cue(op_without_fast_form, build, load):
    assert op_without_fast_form.separable is None and not op_without_fast_form.volume
    assert_impls_agree("absdiff", ATMOptions(hidden=8, width=16, context=3), build, load)


def assert_impls_agree(op: str, options: ATMOptions, build: str, load: str) -> None:
    """A block built with one impl and its state dict loaded into one built with the other: train
    step (output, input and parameter gradients, BatchNorm running statistics), then eval mode."""
    ours = ATMBlock(12, 3, op, dataclasses.replace(options, impl=build)).double()
    randomise(ours)
    other = ATMBlock(12, 3, op, dataclasses.replace(options, impl=load)).double()
    other.load_state_dict(ours.state_dict())
    x = torch.randn(2 * 3, 12, 6, 6, dtype=torch.float64)
    upstream = torch.randn(x.shape, dtype=torch.float64)
    results = []
    for block in (ours, other):
        xi = x.clone().requires_grad_()
        y = block(xi)
        grads = torch.autograd.grad(y, [xi, *block.parameters()], upstream)
        results.append((y, grads, running_stats(block)))
    (y, grads, stats), (y_other, grads_other, stats_other) = results
    torch.testing.assert_close(y, y_other, rtol=1e-10, atol=1e-10)
    for a, b in zip(grads, grads_other):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)
    for a, b in zip(stats, stats_other):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    ours.eval(), other.eval()
    with torch.no_grad():
        torch.testing.assert_close(ours(x), other(x), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("per_column", [False, True])
# (6, 2, 1): an input row first read by a later tap; (4, 2, 0): an input row no tap reads
@pytest.mark.parametrize("rows, stride, padding",
                         [(9, 1, 1), (9, 2, 1), (5, 2, 1), (3, 1, 0), (6, 2, 1), (4, 2, 0)])
def test_row_conv_equals_conv2d_with_gradients(rows, stride, padding, per_column):
    """Banded taps + row products (the whole band or per-column blocks) = conv2d on (items,
    channels, rows, columns) maps, and so do the gradients of the input, the weight and the bias
    (float64, random weights)."""
    items, in_ch, out_ch, columns = 7, 3, 5, 6
    maps = torch.randn(items, in_ch, rows, columns, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(out_ch, in_ch, 3, 3, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(out_ch, dtype=torch.float64, requires_grad=True)
    expected = F.conv2d(maps, weight, bias, stride=stride, padding=padding)
    x = maps.permute(2, 0, 3, 1).reshape(rows, items, columns * in_ch)  # (rows, items, columns*ch)
    taps = banded_taps(weight, columns, stride, padding)
    out_columns = taps.shape[2] // out_ch
    blocks = column_blocks(taps, columns, in_ch, out_ch, stride, padding, per_column)
    assert len(blocks) == (out_columns if per_column else 1)
    y = row_conv(x, taps, bias.repeat(out_columns), stride, padding, blocks)
    got = y.view(-1, items, out_columns, out_ch).permute(1, 3, 0, 2)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)
    upstream = torch.randn(expected.shape, dtype=torch.float64)
    grads = torch.autograd.grad(got, [maps, weight, bias], upstream)
    expected_grads = torch.autograd.grad(expected, [maps, weight, bias], upstream)
    for a, b in zip(grads, expected_grads):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


def test_row_plan_reads_each_input_row_through_the_right_tap():
    # 5 rows, stride 2, padding 1: output rows 0..2 read rows 2o-1, 2o, 2o+1; row -1 and 5 are padding
    assert row_plan(5, 3, 2, 1) == [(1, slice(0, 3), slice(0, 6, 2)), (0, slice(1, 3), slice(1, 5, 2)),
                                    (2, slice(0, 2), slice(1, 5, 2))]
    assert row_plan(3, 3, 1, 0) == [(0, slice(0, 1), slice(0, 1, 1)), (1, slice(0, 1), slice(1, 2, 1)),
                                    (2, slice(0, 1), slice(2, 3, 1))]
    with pytest.raises(ValueError, match="padding=2"):
        row_plan(5, 3, 1, 2)


@pytest.mark.parametrize("blocked", [False, True])
def test_encode_patches_train_mode_equals_the_plain_encoder_and_its_running_averages(blocked, monkeypatch):
    monkeypatch.setattr(encoder_kernels, "BLOCK_ELEMENTS", 1000)  # several row blocks per layer
    encoder = SimilarityEncoder(8).double()
    randomise(encoder)
    reference = copy.deepcopy(encoder)
    x = torch.rand(300, 81, dtype=torch.float64, requires_grad=True)
    y, expected = encode_patches(encoder, x, blocked), reference(x.view(-1, 1, 9, 9)).flatten(1)
    torch.testing.assert_close(y, expected, rtol=1e-10, atol=1e-10)
    grads = torch.autograd.grad(y.square().sum(), [x, *encoder.parameters()])
    expected_grads = torch.autograd.grad(expected.square().sum(), [x, *reference.parameters()])
    for a, b in zip(grads, expected_grads):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)
    for stage, ref_stage in zip(encoder, reference):
        torch.testing.assert_close(stage[1].running_mean, ref_stage[1].running_mean, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(stage[1].running_var, ref_stage[1].running_var, rtol=1e-12, atol=1e-12)
        assert stage[1].num_batches_tracked.item() == 1


@pytest.mark.parametrize("blocked", [False, True])
def test_encode_patches_float32_gradients_match_float64_on_a_large_batch(blocked):
    """Hundreds of thousands of positions per BatchNorm channel: float32 sums taken one value at a
    time drift by percents there; the kernel's stay within 1e-4 of its float64 results."""
    torch.manual_seed(0)
    encoder = SimilarityEncoder(16)
    randomise(encoder)
    reference = copy.deepcopy(encoder).double()
    patches, upstream = torch.rand(40_000, 81), torch.randn(40_000, 16)

    def grads(model, dtype):
        x = patches.to(dtype).requires_grad_()
        return torch.autograd.grad(encode_patches(model, x, blocked), [x, *model.parameters()],
                                   upstream.to(dtype))

    for got, expected in zip(grads(encoder, torch.float32), grads(reference, torch.float64)):
        error = (got.double() - expected).abs().max() / expected.abs().max()
        assert error < 1e-4, error


NORM_FUNCTIONS = [_GroupedBatchNormReLU, _BlockedBatchNormReLU]


@pytest.mark.parametrize("function", NORM_FUNCTIONS)
def test_grouped_batch_norm_relu_equals_batch_norm_over_the_groups(function, monkeypatch):
    """Column ``g * C + c`` normalised with channel ``c``'s statistics over all rows and groups:
    ``F.batch_norm`` (train mode) on the rows and groups as one batch, then ReLU; the output, the
    gradients of the input, weight and bias, and the statistics (float64, several row blocks)."""
    monkeypatch.setattr(encoder_kernels, "BLOCK_ELEMENTS", 50)
    groups, channels = 5, 4
    weight = torch.randn(channels, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(channels, dtype=torch.float64, requires_grad=True)
    x = (torch.randn(37, groups * channels, dtype=torch.float64) * 3 + 2).requires_grad_()
    y, mean, var = function.apply(x, weight, bias, groups, 1e-5)
    as_batch = x.view(-1, channels)  # (rows * groups, channels)
    expected = F.batch_norm(as_batch, None, None, weight, bias, training=True, eps=1e-5).relu().view(x.shape)
    torch.testing.assert_close(y, expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(mean, as_batch.mean(0), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(var, as_batch.var(0, correction=0), rtol=1e-12, atol=1e-12)
    upstream = torch.randn(x.shape, dtype=torch.float64)
    grads = torch.autograd.grad(y, [x, weight, bias], upstream)
    for a, b in zip(grads, torch.autograd.grad(expected, [x, weight, bias], upstream)):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("function", NORM_FUNCTIONS)
def test_grouped_batch_norm_relu_gradients_and_float32_statistics_with_a_large_mean(function):
    weight = torch.tensor([1.5, -0.5, 2.0], dtype=torch.float64, requires_grad=True)
    bias = torch.tensor([0.1, 0.3, -0.2], dtype=torch.float64, requires_grad=True)
    x = torch.randn(40, 4 * 3, dtype=torch.float64, requires_grad=True)  # 4 groups of 3 channels
    assert torch.autograd.gradcheck(lambda *a: function.apply(*a, 4, 1e-5)[0], (x, weight, bias))
    # float32 statistics of values far from zero (mean 1000, std 1) stay exact to float rounding
    big = torch.randn(200_000, 4 * 3, dtype=torch.float64) + 1000
    y32, mean32, var32 = function.apply(big.float(), weight.float(), bias.float(), 4, 1e-5)
    per_channel = big.view(-1, 4, 3).permute(2, 0, 1).reshape(3, -1)
    torch.testing.assert_close(mean32.double(), per_channel.mean(1), rtol=0, atol=1e-4)
    torch.testing.assert_close(var32.double(), per_channel.var(1, correction=0), rtol=1e-4, atol=0)
    y64 = function.apply(big, weight.detach(), bias.detach(), 4, 1e-5)[0]
    torch.testing.assert_close(y32.double(), y64, rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("impl, blocked", [("auto", True), ("cpu_fused", True), ("cpu_fast", False)])
def test_impl_picks_the_encoder_batch_norm_kernel(impl, blocked, monkeypatch):
    """``auto`` on the CPU and ``cpu_fused`` run the blocked BatchNorm-ReLU in the encoder,
    ``cpu_fast`` (the committed path the benchmark compares against) the unblocked one."""
    used = []
    for function in NORM_FUNCTIONS:
        monkeypatch.setattr(function, "apply", lambda *a, _f=function, _apply=function.apply: (
            used.append(_f), _apply(*a))[1])
    block = ATMBlock(12, 3, "mul", ATMOptions(hidden=8, width=16, context=3, impl=impl))
    block(torch.randn(2 * 3, 12, 5, 5)).sum().backward()
    assert used and set(used) == {_BlockedBatchNormReLU if blocked else _GroupedBatchNormReLU}
