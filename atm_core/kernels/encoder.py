"""The similarity encoder as row convolutions of banded matrices: the CPU kernel of ``mul``'s encoder.

The plain encoder runs ``N`` tiny images through four Conv2d layers (1 to 64 channels, 9x9 to 1x1
pixels); on a CPU such convs starve the kernels, and their backward runs far below their forward.
Here the patches are laid out ``(rows, patches, columns * channels)``: the convolution along a row
is a banded matrix (``banded_taps``) and the one across rows a sum over the kernel's rows, so each
layer is a few matrix products of ``N`` rows, forward and backward (``_RowConv``). Every row of a
patch is one contiguous row of a ``(rows * patches, columns * channels)`` matrix: BatchNorm and
ReLU run on that matrix (``batch_norm_relu``), a channel's statistics gathered over its columns in
cascade sums (``nn.BatchNorm2d`` on ``(positions, 4 or 16 channels)`` vectorises poorly and sums
hundreds of thousands of float32 values one by one). Layers whose output column reads enough
features multiply only the dense block of each output column (``column_blocks``) instead of the
whole band. ``encode_patches`` gives the plain encoder's results to float rounding, with the same
weights, batch statistics and running averages.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from .folding import conv_parameters

MIN_BLOCK_DEPTH = 48  # per-column blocks once each output column reads this many features


def banded_taps(weight: torch.Tensor, width: int, stride: int, padding: int) -> torch.Tensor:
    """``weight`` ``(O, I, k, k)`` as ``k`` banded matrices ``(k, width*I, w_out*O)``, one per
    kernel row, over rows whose columns are folded into the features (feature = column *
    channels + c): the convolution along a row becomes a matrix product.

    ``x[r] @ taps[i]`` for a row ``r`` of maps laid out ``(items, width*I)`` is the contribution of
    kernel row ``i`` to the output row that reads input row ``r`` through it, laid out the same way.
    """
    out_ch, in_ch, k, _ = weight.shape
    out_width = (width + 2 * padding - k) // stride + 1
    column = torch.arange(width, device=weight.device)
    tap = column.view(1, -1) - stride * torch.arange(out_width, device=weight.device).view(-1, 1)
    tap = tap + padding  # (out_width, width): which kernel column joins output and input columns
    banded = weight[..., tap.clamp(0, k - 1)] * ((tap >= 0) & (tap < k))  # (O, I, k, w_out, width)
    return banded.permute(2, 4, 1, 3, 0).reshape(k, width * in_ch, out_width * out_ch)


def _statistics(sums: torch.Tensor, squares: torch.Tensor, shift: torch.Tensor, groups: int,
                count: int, eps: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-channel mean, biased variance and ``1 / std`` from the column sums of ``x - shift``
    and of its squares (``groups`` column groups of one channel set, ``count`` values each)."""
    offset = sums.view(groups, -1).sum(0) / count
    var = (squares.view(groups, -1).sum(0) / count - offset.square()).clamp_min(0)
    mean = shift + offset
    return mean, var, torch.rsqrt(var + eps)


def _saved(ctx, groups: int, x, y, weight, mean, var, invstd) -> tuple[torch.Tensor, ...]:
    """Keep what the backward pass needs; the forward's outputs ``(y, mean, var)``."""
    ctx.groups = groups
    ctx.save_for_backward(x, y, weight, mean, invstd)
    ctx.mark_non_differentiable(mean, var)
    return y, mean, var


class _GroupedBatchNormReLU(torch.autograd.Function):
    """Training-mode ``ReLU(BatchNorm(x))`` on ``x`` ``(rows, groups * C)``: column ``g * C + c``
    is normalised with the batch statistics of channel ``c`` over every row and group.

    Statistics are per-column sums (fast, cascade-summed reductions over the rows) of the data
    shifted by one sample per channel, so that large means do not cancel digits; they are
    accumulated in at least float32. Returns ``(y, mean, var)``, the last two (biased variance)
    for the running averages.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, groups: int, eps: float):
        wide = x.to(torch.promote_types(x.dtype, torch.float32))
        channels = x.shape[1] // groups
        shift = wide[0].view(groups, channels).mean(0)
        shifted = wide - shift.repeat(groups)
        sums = shifted.sum(0)
        squares = shifted.square_().sum(0)
        mean, var, invstd = _statistics(sums, squares, shift, groups, x.shape[0] * groups, eps)
        scale = weight * invstd
        y = torch.addcmul((bias - mean * scale).repeat(groups), wide, scale.repeat(groups)).relu_()
        return _saved(ctx, groups, x, y.to(x.dtype), weight, mean, var, invstd)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_y, _mean, _var):
        x, y, weight, mean, invstd = ctx.saved_tensors
        groups = ctx.groups
        count = x.shape[0] * groups
        grad = torch.ops.aten.threshold_backward(grad_y, y, 0).to(mean.dtype)
        wide = x.to(mean.dtype)
        grad_bias = grad.sum(0).view(groups, -1).sum(0)
        grad_weight = invstd * ((grad * wide).sum(0).view(groups, -1).sum(0) - mean * grad_bias)
        # dx = a * grad + b * x + c per channel: the BatchNorm backward with the sums above
        a = weight * invstd
        b = -a * invstd * grad_weight / count
        c = -a * grad_bias / count - b * mean
        grad_x = torch.addcmul(c.repeat(groups), grad, a.repeat(groups)).addcmul_(wide, b.repeat(groups))
        return grad_x.to(x.dtype), grad_weight, grad_bias, None, None


BLOCK_ELEMENTS = 1 << 16  # rows per block of ``_BlockedBatchNormReLU``: 256 KB of float32


def row_blocks(x: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """``x`` ``(rows, features)`` split into blocks of rows that fit a core's cache together."""
    return x.split(max(1, BLOCK_ELEMENTS // x.shape[1]))


class _BlockedBatchNormReLU(torch.autograd.Function):
    """``_GroupedBatchNormReLU`` computed a block of rows at a time (``row_blocks``): every
    element-wise step on a block runs while the block is in the cache, so each pass over the
    whole matrix reads it once and nothing of its size is allocated but the output. On the tiny
    models' encoder (matrices of tens of megabytes) the unblocked passes each read and write main
    memory and page-fault their fresh temporaries in.

    Forward: one pass for the shifted column sums, one for ``y``. Backward: one pass for
    ``sum(g)`` and ``sum(g * (x - mean))`` (``g`` the gradient through the ReLU, recomputed from
    ``y``), one for ``grad_x``. Sums are accumulated per block in at least float32.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, groups: int, eps: float):
        wide = torch.promote_types(x.dtype, torch.float32)
        channels = x.shape[1] // groups
        count = x.shape[0] * groups
        shift = x[0].to(wide).view(groups, channels).mean(0).repeat(groups)
        sums, squares = x.new_zeros(x.shape[1], dtype=wide), x.new_zeros(x.shape[1], dtype=wide)
        for block in row_blocks(x):
            centred = block.to(wide) - shift
            sums += centred.sum(0)
            squares += centred.square_().sum(0)
        mean, var, invstd = _statistics(sums, squares, shift[:channels], groups, count, eps)
        scale = (weight * invstd).repeat(groups)
        shifted_bias = (bias - mean * weight * invstd).repeat(groups)
        y = torch.empty_like(x)
        for block, out in zip(row_blocks(x), row_blocks(y)):
            out.copy_(torch.addcmul(shifted_bias, block.to(wide), scale).relu_())
        return _saved(ctx, groups, x, y, weight, mean, var, invstd)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_y, _mean, _var):
        x, y, weight, mean, invstd = ctx.saved_tensors
        groups, wide = ctx.groups, mean.dtype
        count = x.shape[0] * groups
        column_mean = mean.repeat(groups)
        blocks = list(zip(row_blocks(grad_y.contiguous()), row_blocks(y), row_blocks(x)))
        grad_sum, grad_dot = torch.zeros_like(column_mean), torch.zeros_like(column_mean)
        for grad_block, y_block, x_block in blocks:
            g = torch.ops.aten.threshold_backward(grad_block, y_block, 0).to(wide)
            grad_sum += g.sum(0)
            grad_dot += (x_block.to(wide) - column_mean).mul_(g).sum(0)
        grad_bias = grad_sum.view(groups, -1).sum(0)
        grad_weight = invstd * grad_dot.view(groups, -1).sum(0)
        # dx = a * g + b * x + c per channel: the BatchNorm backward with the sums above
        a = weight * invstd
        b = -a * invstd * grad_weight / count
        c = (-a * grad_bias / count - b * mean).repeat(groups)
        a, b = a.repeat(groups), b.repeat(groups)
        grad_x = torch.empty_like(x)
        for (grad_block, y_block, x_block), out in zip(blocks, row_blocks(grad_x)):
            g = torch.ops.aten.threshold_backward(grad_block, y_block, 0).to(wide)
            out.copy_(torch.addcmul(c, g, a).addcmul_(x_block.to(wide), b))
        return grad_x, grad_weight, grad_bias, None, None


def batch_norm_relu(x: torch.Tensor, norm: nn.BatchNorm2d, groups: int, blocked: bool = True) -> torch.Tensor:
    """``norm`` (train mode) then ReLU on ``x`` ``(rows, groups * channels)``, channel
    ``c`` repeated in each of the ``groups`` column groups; updates ``norm``'s running averages as
    ``nn.BatchNorm2d`` does. ``blocked`` picks ``_BlockedBatchNormReLU``, else the unblocked
    ``_GroupedBatchNormReLU`` (the kernel of ``impl="cpu_fast"``)."""
    function = _BlockedBatchNormReLU if blocked else _GroupedBatchNormReLU
    y, mean, var = function.apply(x, norm.weight, norm.bias, groups, norm.eps)
    if norm.track_running_stats:
        with torch.no_grad():
            norm.num_batches_tracked.add_(1)
            momentum = 1.0 / float(norm.num_batches_tracked) if norm.momentum is None else norm.momentum
            count = x.shape[0] * groups
            norm.running_mean.lerp_(mean.to(norm.running_mean.dtype), momentum)
            unbiased = var * count / max(count - 1, 1)
            norm.running_var.lerp_(unbiased.to(norm.running_var.dtype), momentum)
    return y


def row_plan(rows: int, kernel: int, stride: int, padding: int) -> list[tuple[int, slice, slice]]:
    """For a convolution along ``rows`` input rows: ``(tap, output rows, input rows)`` for each
    kernel row ``tap``, output row ``o`` reading input row ``stride * o + tap - padding``; rows in
    the zero padding are left out. The centre tap (``tap == padding``) comes first: it reaches
    every output row."""
    out_rows = (rows + 2 * padding - kernel) // stride + 1
    plan = []
    for tap in sorted(range(kernel), key=lambda k: k != padding):
        first = max(0, -((tap - padding) // stride))
        last = min(out_rows, (rows - 1 - tap + padding) // stride + 1)
        if first < last:
            begin = stride * first + tap - padding
            plan.append((tap, slice(first, last), slice(begin, begin + stride * (last - first), stride)))
    if not plan or plan[0][1] != slice(0, out_rows):
        raise ValueError(f"padding={padding} leaves output rows without a centre tap")
    return plan


def column_blocks(taps: torch.Tensor, width: int, in_ch: int, out_ch: int, stride: int,
                  padding: int, per_column: bool) -> list[tuple[slice, slice]]:
    """``(input features, output features)`` of the blocks of ``banded_taps`` to multiply: the
    whole band, or with ``per_column`` one dense block per output column, over the ``k`` input
    columns it reads (the band's zeros left out: fewer MACs, narrower products)."""
    kernel, _, out_features = taps.shape
    if not per_column:
        return [(slice(None), slice(None))]
    blocks = []
    for column in range(out_features // out_ch):
        first = max(0, stride * column - padding)
        last = min(width, stride * column - padding + kernel)
        blocks.append((slice(first * in_ch, last * in_ch), slice(column * out_ch, (column + 1) * out_ch)))
    return blocks


def _row_products(out: torch.Tensor, a: torch.Tensor, b: torch.Tensor, accumulate: bool) -> None:
    """``out[n] (+)= a[n] @ b`` for the row blocks ``n`` of ``(n, M, K)`` ``a``: one matrix
    product when the blocks are contiguous, else one per block (a stride-2 slice of rows, a block
    of columns)."""
    if a.is_contiguous() and out.is_contiguous():
        a, out = a.reshape(1, -1, a.shape[-1]), out.view(1, -1, out.shape[-1])
    for out_rows, a_rows in zip(out, a):
        out_rows.addmm_(a_rows, b) if accumulate else torch.mm(a_rows, b, out=out_rows)


class _RowConv(torch.autograd.Function):
    """A convolution along the rows of ``x`` ``(rows, items, features)`` as matrix products:
    ``y[o] = bias + sum over taps i of x[stride * o + i - padding] @ taps[i]``, ``taps``
    ``(kernel, features, out_features)``, rows outside ``x`` being zeros; only the ``blocks``
    of ``taps`` (``column_blocks``) are multiplied, the rest being zeros.

    Forward and backward are each a few GEMMs of ``items`` rows. The first product into each
    output row writes it, the later ones add to it, and so into each input-gradient row where the
    blocks do not overlap, so nothing is zero-filled that need not be.
    """

    @staticmethod
    def forward(ctx, x, taps, bias, stride: int, padding: int, blocks: list[tuple[slice, slice]]):
        plan = row_plan(x.shape[0], taps.shape[0], stride, padding)
        y = x.new_empty(plan[0][1].stop, x.shape[1], taps.shape[2])
        for in_f, out_f in blocks:
            for index, (tap, out_rows, in_rows) in enumerate(plan):
                _row_products(y[out_rows, :, out_f], x[in_rows, :, in_f], taps[tap, in_f, out_f],
                              accumulate=index > 0)
        if bias is not None:
            y += bias
        ctx.plan, ctx.blocks, ctx.has_bias = plan, blocks, bias is not None
        ctx.save_for_backward(x, taps)
        return y

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_y):
        x, taps = ctx.saved_tensors
        plan, blocks = ctx.plan, ctx.blocks
        overlapping = len(blocks) > 1  # neighbouring output columns read shared input columns
        grad_x = grad_taps = grad_bias = None
        if ctx.needs_input_grad[0]:
            grad_x = torch.zeros_like(x) if overlapping else torch.empty_like(x)
            written = [overlapping] * x.shape[0]
            for in_f, out_f in blocks:
                for tap, out_rows, in_rows in plan:
                    weight = taps[tap, in_f, out_f].t()
                    rows = range(x.shape[0])[in_rows]
                    if len({written[r] for r in rows}) == 1:
                        _row_products(grad_x[in_rows, :, in_f], grad_y[out_rows, :, out_f], weight,
                                      written[rows[0]])
                    else:
                        for r, o in zip(rows, range(grad_y.shape[0])[out_rows]):
                            _row_products(grad_x[r : r + 1, :, in_f], grad_y[o : o + 1, :, out_f],
                                          weight, written[r])
                    for r in rows:
                        written[r] = True
            for r in (r for r, done in enumerate(written) if not done):
                grad_x[r].zero_()
        if ctx.needs_input_grad[1]:
            grad_taps = torch.zeros_like(taps) if overlapping else torch.empty_like(taps)
            for in_f, out_f in blocks:
                for tap, out_rows, in_rows in plan:
                    pairs = zip(x[in_rows, :, in_f], grad_y[out_rows, :, out_f])
                    for index, (x_row, grad_row) in enumerate(pairs):
                        _row_products(grad_taps[tap : tap + 1, in_f, out_f], x_row.t()[None],
                                      grad_row, index > 0)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_bias = grad_y.sum((0, 1))
        return grad_x, grad_taps, grad_bias, None, None, None


def row_conv(x: torch.Tensor, taps: torch.Tensor, bias: torch.Tensor | None, stride: int,
             padding: int, blocks: list[tuple[slice, slice]]) -> torch.Tensor:
    """``_RowConv`` over the ``blocks`` of ``taps``, in the dtype autocast gives convolutions (as
    ``F.conv2d`` would run)."""
    device = x.device.type
    if torch.is_autocast_enabled(device):
        dtype = torch.get_autocast_dtype(device)
        x, taps = x.to(dtype), taps.to(dtype)
        bias = None if bias is None else bias.to(dtype)
    with torch.autocast(device, enabled=False):
        return _RowConv.apply(x, taps, bias, stride, padding, blocks)


def encode_patches(encoder: nn.Sequential, patches: torch.Tensor, blocked: bool = True) -> torch.Tensor:
    """``encoder`` (Conv2d-BatchNorm-ReLU layers, 3x3 kernels) on flat square patches ``(N, W*W)``
    -> ``(N, channels)``, the same as ``encoder(patches.view(N, 1, W, W)).flatten(1)``. ``blocked``
    as for ``batch_norm_relu``."""
    count, area = patches.shape
    width = math.isqrt(area)
    x = patches.view(count, width, width).transpose(0, 1).contiguous()  # (rows, patches, columns)
    for layer in encoder:
        conv = layer[0]
        stride, padding = conv.stride[0], conv.padding[0]
        weight, bias = conv_parameters(layer)
        taps = banded_taps(weight, width, stride, padding)
        depth = conv.in_channels * conv.kernel_size[1]  # features one output column reads
        blocks = column_blocks(taps, width, conv.in_channels, conv.out_channels, stride, padding,
                               per_column=depth >= MIN_BLOCK_DEPTH)
        width = taps.shape[2] // conv.out_channels
        if bias is not None:  # BatchNorm folded into the conv; feature = (column, channel)
            x = row_conv(x, taps, bias.repeat(width), stride, padding, blocks).relu_()
        else:
            x = row_conv(x, taps, None, stride, padding, blocks)
            x = batch_norm_relu(x.view(-1, x.shape[-1]), layer[1], width, blocked).view(x.shape)
    return x.reshape(count, -1)
