import copy

import pytest
import torch
import torch.nn.functional as F

from atm_core import ATM, ATMBlock
from atm_core.atm import (SimilarityEncoder, _GroupedBatchNormReLU, banded_taps, column_blocks,
                          row_conv, row_plan)


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize(
    "channels, ops, expected",
    [
        (768, ("mul",), 797_068),
        (768, ("sub",), 750_080),
        (768, ("add",), 750_080),
        (768, ("div",), 750_080),
        (768, ("mul", "sub"), 1_547_148),
        (1024, ("mul", "sub"), 1_874_828),
    ],
)
def test_parameter_counts_equal_the_reference(channels, ops, expected):
    assert n_params(ATM(channels, num_frames=8, ops=ops)) == expected


@pytest.mark.parametrize("op", ["mul", "sub"])
def test_narrow_block_parameter_count(op):
    """Every layer's count written out for C=96, D=16, width 32, K=5 (convs 3x3, BN weight+bias)."""
    C, D, width, K = 96, 16, 32, 5
    conv_bn = lambda i, o: 9 * i * o + 2 * o  # noqa: E731
    encoder = conv_bn(1, 4) + conv_bn(4, 16) + conv_bn(16, width) + conv_bn(width, width)
    expected = (conv_bn(C, D) + (encoder if op == "mul" else 0)
                + conv_bn(width if op == "mul" else D, width) + conv_bn(width, width)
                + conv_bn(K * width, width) + width * C)
    assert n_params(ATMBlock(C, 8, op, hidden=D, width=width)) == expected


# --- an independent formulation of DESIGN §2: Conv3d (1,3,3) over (N, C, T, h, w) volumes,
# explicit (b, t, o) pairing, correlation through a full (hw)x(hw) product per pair.

def bn_relu(x, bn):
    """Batch statistics in train mode, running statistics in eval mode, as BatchNorm3d would."""
    stats = (None, None) if bn.training else (bn.running_mean, bn.running_var)
    return torch.relu(F.batch_norm(x, *stats, bn.weight, bn.bias, training=bn.training, eps=bn.eps))


def conv3d_bn_relu(x, stage, padding):
    conv, bn = stage[0], stage[1]
    return bn_relu(F.conv3d(x, conv.weight.unsqueeze(2), stride=(1, *conv.stride), padding=padding), bn)


def global_correlation(a, b, window):
    n, d, h, w = a.shape
    r = window // 2
    a = a / torch.sqrt(a.pow(2).sum(1, keepdim=True) + 1e-6)
    b = b / torch.sqrt(b.pow(2).sum(1, keepdim=True) + 1e-6)
    full = torch.einsum("ndp,ndq->npq", a.flatten(2), b.flatten(2))  # (n, hw, hw)
    out = a.new_zeros(n, window, window, h, w)
    for i in range(window):
        for j in range(window):
            for y in range(h):
                for x in range(w):
                    yy, xx = y + i - r, x + j - r
                    if 0 <= yy < h and 0 <= xx < w:
                        out[:, i, j, y, x] = full[:, y * w + x, yy * w + xx]
    return out


def reference_block(block: ATMBlock, x: torch.Tensor) -> torch.Tensor:
    T, K, W = block.num_frames, block.context, block.window
    width = block.fuse[0].out_channels
    r_t = K // 2
    reduced = bn_relu(
        F.conv2d(x, block.reduce[0].weight, stride=block.reduce[0].stride, padding=1), block.reduce[1]
    )
    bt, d, h, w = reduced.shape
    B = bt // T
    clips = reduced.reshape(B, T, d, h, w)
    anchors, neighbours = [], []
    for b in range(B):
        for t in range(T):
            for o in range(-r_t, r_t + 1):
                anchors.append(clips[b, t])
                s = t + o
                neighbours.append(clips[b, s] if 0 <= s < T else torch.zeros_like(clips[b, t]))
    a, nb = torch.stack(anchors), torch.stack(neighbours)  # (B*T*K, d, h, w)
    if block.op == "mul":
        sim = global_correlation(a, nb, W).reshape(B, T, K, W, W, h, w)
        volumes = sim.permute(0, 1, 5, 6, 2, 3, 4).reshape(B * T * h * w, 1, K, W, W)
        for stage, pad in zip(block.encoder, [(0, 1, 1), (0, 1, 1), (0, 1, 1), 0]):
            volumes = conv3d_bn_relu(volumes, stage, pad)
        cue = volumes.reshape(B, T, h, w, width, K).permute(0, 5, 4, 1, 2, 3).reshape(B * K, width, T, h, w)
    else:
        elementwise = {"add": nb + a, "sub": nb - a, "div": torch.log1p(nb.abs()) - torch.log1p(a.abs())}
        cue = elementwise[block.op].reshape(B, T, K, d, h, w).permute(0, 2, 3, 1, 4, 5)
        cue = cue.reshape(B * K, d, T, h, w)
    y = conv3d_bn_relu(cue, block.transfer[0], (0, 1, 1))
    y = conv3d_bn_relu(y, block.transfer[1], (0, 1, 1))
    y = y.reshape(B, K * width, T, h, w)  # offsets regrouped into channels, offset-major
    y = conv3d_bn_relu(y, block.fuse, (0, 1, 1))
    weight = block.proj.weight.reshape(*block.proj.weight.shape[:2], 1, 1, 1)
    if block.downsample:
        y = F.conv_transpose3d(y, weight, stride=(1, 2, 2), output_padding=(0, 1, 1))
    else:
        y = F.conv3d(y, weight)
    branch = y.permute(0, 2, 1, 3, 4).reshape(x.shape)
    out = x + branch
    return torch.relu(out) if block.residual == "relu" else out


def randomise(module: torch.nn.Module) -> None:
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn_like(p) * 0.2 + (1.0 if p.dim() == 1 else 0.0))


@pytest.mark.parametrize("op", ["add", "sub", "mul", "div"])
@pytest.mark.parametrize("downsample, width, context", [(False, 64, 5), (True, 64, 5), (False, 24, 3)])
def test_block_equals_independent_conv3d_formulation(op, downsample, width, context):
    block = ATMBlock(12, num_frames=3, op=op, hidden=8, downsample=downsample, width=width,
                     context=context).double()
    randomise(block)
    x = torch.randn(2 * 3, 12, 6, 6, dtype=torch.float64)
    torch.testing.assert_close(block(x), reference_block(block, x), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("op", ["sub", "mul"])
def test_eval_mode_with_folded_batchnorm_equals_the_formulation_with_running_stats(op):
    block = ATMBlock(12, num_frames=3, op=op, hidden=8, width=24).double()
    randomise(block)
    with torch.no_grad():
        for module in block.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.normal_(0, 0.5)
                module.running_var.uniform_(0.5, 2.0)
    block.eval()
    x = torch.randn(2 * 3, 12, 6, 6, dtype=torch.float64)
    expected = reference_block(block, x)
    with torch.inference_mode():
        torch.testing.assert_close(block(x), expected, rtol=1e-9, atol=1e-9)
    block.train()
    assert not torch.allclose(block(x), expected)  # train mode normalises with batch statistics


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


def reference_encoder(encoder: SimilarityEncoder, patches: torch.Tensor) -> torch.Tensor:
    """The reference's Conv3d + BatchNorm (train mode, running averages updated) + ReLU stack."""
    v = patches.view(-1, 1, 1, 9, 9)
    for stage, pad in zip(encoder, [1, 1, 1, 0]):
        conv, bn = stage[0], stage[1]
        v = F.conv3d(v, conv.weight.unsqueeze(2), stride=(1, *conv.stride), padding=(0, pad, pad))
        v = torch.relu(F.batch_norm(v, bn.running_mean, bn.running_var, bn.weight, bn.bias,
                                    training=True, momentum=bn.momentum, eps=bn.eps))
    return v.reshape(len(patches), -1)


def test_similarity_encoder_train_mode_matches_conv3d_batchnorm_and_its_running_averages():
    encoder = SimilarityEncoder(8).double()
    randomise(encoder)
    reference = copy.deepcopy(encoder)
    x = torch.rand(300, 81, dtype=torch.float64, requires_grad=True)
    y, expected = encoder(x), reference_encoder(reference, x)
    torch.testing.assert_close(y, expected, rtol=1e-10, atol=1e-10)
    grads = torch.autograd.grad(y.square().sum(), [x, *encoder.parameters()])
    expected_grads = torch.autograd.grad(expected.square().sum(), [x, *reference.parameters()])
    for a, b in zip(grads, expected_grads):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)
    for stage, ref_stage in zip(encoder, reference):
        torch.testing.assert_close(stage[1].running_mean, ref_stage[1].running_mean, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(stage[1].running_var, ref_stage[1].running_var, rtol=1e-12, atol=1e-12)
        assert stage[1].num_batches_tracked.item() == 1


def test_similarity_encoder_float32_gradients_match_float64_on_a_large_batch():
    """Hundreds of thousands of positions per BatchNorm channel: float32 sums taken one value at a
    time drift by percents there; the encoder's stay within 1e-4 of float64."""
    torch.manual_seed(0)
    encoder = SimilarityEncoder(16)
    randomise(encoder)
    reference = copy.deepcopy(encoder).double()
    patches, upstream = torch.rand(40_000, 81), torch.randn(40_000, 16)

    def grads(model, dtype):
        x = patches.to(dtype).requires_grad_()
        return torch.autograd.grad(model(x), [x, *model.parameters()], upstream.to(dtype))

    for got, expected in zip(grads(encoder, torch.float32), grads(reference, torch.float64)):
        error = (got.double() - expected).abs().max() / expected.abs().max()
        assert error < 1e-4, error


def test_grouped_batch_norm_relu_gradients_and_float32_statistics_with_a_large_mean():
    weight = torch.tensor([1.5, -0.5, 2.0], dtype=torch.float64, requires_grad=True)
    bias = torch.tensor([0.1, 0.3, -0.2], dtype=torch.float64, requires_grad=True)
    x = torch.randn(40, 4 * 3, dtype=torch.float64, requires_grad=True)  # 4 groups of 3 channels
    assert torch.autograd.gradcheck(lambda *a: _GroupedBatchNormReLU.apply(*a, 4, 1e-5)[0], (x, weight, bias))
    # float32 statistics of values far from zero (mean 1000, std 1) stay exact to float rounding
    big = torch.randn(200_000, 4 * 3, dtype=torch.float64) + 1000
    y32, mean32, var32 = _GroupedBatchNormReLU.apply(big.float(), weight.float(), bias.float(), 4, 1e-5)
    per_channel = big.view(-1, 4, 3).permute(2, 0, 1).reshape(3, -1)
    torch.testing.assert_close(mean32.double(), per_channel.mean(1), rtol=0, atol=1e-4)
    torch.testing.assert_close(var32.double(), per_channel.var(1, correction=0), rtol=1e-4, atol=0)
    y64 = _GroupedBatchNormReLU.apply(big, weight.detach(), bias.detach(), 4, 1e-5)[0]
    torch.testing.assert_close(y32.double(), y64, rtol=1e-3, atol=1e-3)


def test_identity_residual_is_exact_identity_at_init_and_relu_clips():
    x = torch.randn(2 * 4, 16, 5, 5)
    assert torch.equal(ATM(16, 4, ("mul", "sub", "add", "div"), residual="identity")(x), x)
    assert torch.equal(ATM(16, 4, ("sub",), residual="relu")(x), torch.relu(x))


def test_blocks_compose_in_order():
    atm = ATM(8, 2, ("mul", "sub"), hidden=4, residual="identity")
    randomise(atm)
    x = torch.randn(4, 8, 4, 4)
    torch.testing.assert_close(atm(x), atm[1](atm[0](x)))
    assert [b.op for b in atm] == ["mul", "sub"]


def test_backward_reaches_every_parameter():
    atm = ATM(16, 4, ("mul", "sub", "add", "div"), hidden=8, residual="identity")
    for block in atm:
        torch.nn.init.normal_(block.proj.weight, std=0.1)  # zero-init would zero upstream gradients
    x = torch.randn(2 * 4, 16, 6, 6, requires_grad=True)
    atm(x).square().sum().backward()
    for name, p in atm.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_zero_initialised_projection_still_gets_gradient():
    atm = ATM(16, 4, ("mul",), hidden=8, residual="identity")
    atm(torch.randn(8, 16, 6, 6)).sum().backward()
    assert atm[0].proj.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_autocast_with_large_activations_stays_finite(dtype):
    atm = ATM(16, 4, ("mul", "sub", "add", "div"), hidden=8)
    for block in atm:
        torch.nn.init.normal_(block.proj.weight, std=0.1)
    x = torch.randn(8, 16, 6, 6) * 1e4
    with torch.autocast("cpu", dtype=dtype):
        y = atm(x)
    assert torch.isfinite(y).all()


def test_capture_keeps_cue_and_branch():
    block = ATMBlock(16, 4, "mul", hidden=8)
    block(torch.randn(8, 16, 6, 6))
    assert block.last_cue is None
    block.capture = True
    block(torch.randn(8, 16, 6, 6))
    assert block.last_cue.shape == (2, 4, 5, 81, 6, 6)
    assert block.last_branch.shape == (8, 16, 6, 6)


def test_clear_errors():
    with pytest.raises(ValueError, match="unknown ATM op 'mod'"):
        ATM(8, 4, ("mul", "mod"))
    with pytest.raises(ValueError, match="non-empty sequence"):
        ATM(8, 4, ())
    with pytest.raises(ValueError, match="non-empty sequence"):
        ATM(8, 4, "mul")
    with pytest.raises(ValueError, match="context must be a positive odd number of frames, got 4"):
        ATM(8, 4, ("sub",), context=4)
    with pytest.raises(ValueError, match="unknown residual 'gelu'"):
        ATM(8, 4, ("sub",), residual="gelu")
    with pytest.raises(ValueError, match="not divisible by num_frames=4"):
        ATM(8, 4, ("sub",))(torch.zeros(6, 8, 4, 4))
    with pytest.raises(ValueError, match="even feature map"):
        ATM(8, 2, ("sub",), downsample=True)(torch.zeros(4, 8, 7, 7))
