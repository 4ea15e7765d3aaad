"""The ``mul`` cue of a whole clip as small matrix products: the CPU kernel of the correlation.

``clip_correlation(x, T, K, W)`` equals ``ops.mul(*ops.pair_frames(x, T, K), W)`` to float
rounding, forward and backward, with the same O(h*w*(W² + D)) memory and fewer, larger
products: on a CPU the plain path's one ``einsum`` per displacement is bound by memory traffic.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..ops import check_context, check_frames, check_window, l2_normalize


def clip_correlation(x: torch.Tensor, num_frames: int, context: int, window: int) -> torch.Tensor:
    """``mul(*pair_frames(x, num_frames, context), window)``, computed as small matrix products.

    For one displacement row ``i`` and one anchor position, the dot products between the
    anchor's ``T`` frames and the ``W`` neighbours of that row in all ``T + K - 1`` time-padded
    frames form one ``(T, D) @ (D, W*(T+K-1))`` product; the ``K`` frame offsets are a band of
    it. The neighbour windows are overlapping strided views of one zero-padded copy of the
    normalised map, so memory stays O(h*w*(W² + D)) and no ``(hw) x (hw)`` matrix or per-offset
    copy is made. The backward pass uses the same products (see ``_ClipCorrelation``).
    Returns ``(B, T, K, W*W, h, w)``, a view of a ``(B, T, K, h, w, W*W)`` tensor.
    """
    check_window(window)
    check_context(context)
    batch = check_frames(x.shape[0], num_frames)
    _, dim, height, width = x.shape
    radius, time_radius = window // 2, context // 2
    unit = l2_normalize(x.permute(0, 2, 3, 1), dim=-1)  # (B*T, h, w, D)
    grid = unit.reshape(batch, num_frames, height, width, dim).permute(0, 2, 3, 1, 4)
    grid = F.pad(grid, (0, 0, time_radius, time_radius, radius, radius, radius, radius))
    geometry = _Geometry(num_frames, context, window, height, width)
    return _ClipCorrelation.apply(grid.contiguous().flatten(1, 2), geometry).permute(0, 1, 2, 5, 3, 4)


class _Geometry:
    """Index arithmetic of ``clip_correlation`` on the flat padded grid ``(B, P, T', D)``.

    Grid position ``p = Y * wp + X`` holds map position ``(Y - r, X - r)``; frame ``s`` holds
    frame ``s - K//2``; everything outside the map or the clip is zero. Anchor ``q`` (``q = y *
    wp + x``, ``x >= w`` are padding and dropped) sits at grid position ``q + r * wp + r``; its
    row-``i`` neighbours start at grid position ``q + i * wp``.
    """

    def __init__(self, num_frames: int, context: int, window: int, height: int, width: int):
        self.frames, self.context, self.window = num_frames, context, window
        self.height, self.width = height, width
        self.radius, self.time_radius = window // 2, context // 2
        self.frames_padded = num_frames + 2 * self.time_radius
        self.padded_width = width + 2 * self.radius
        self.count = (height - 1) * self.padded_width + width
        self.row = window * self.frames_padded  # columns of one product: (j, s)

    def windows(self, grid: torch.Tensor, begin: int, count: int) -> torch.Tensor:
        """``(count, D, W*T')`` overlapping views: row ``q`` holds positions ``begin+q+j``, all frames."""
        rows = grid[begin : begin + count + self.window - 1]
        return rows.unfold(0, self.window, 1).permute(0, 2, 3, 1).flatten(2)

    def band(self, products: torch.Tensor) -> torch.Tensor:
        """The ``(T, K, h, w, W)`` entries of ``(count, T, W*T')`` products that are pairs.

        ``products[q, t, j*T' + s]`` pairs anchor frame ``t`` with padded frame ``s = t + k``.
        """
        t, wp, row = self.frames, self.padded_width, self.row
        return products.as_strided(
            (t, self.context, self.height, self.width, self.window),
            (row + 1, 1, wp * t * row, t * row, self.frames_padded),
            products.storage_offset(),
        )

    def reverse_band(self, coefficients: torch.Tensor) -> torch.Tensor:
        """The ``(T, K, h, w, W)`` entries of ``(count + W - 1, T', W*T')`` neighbour coefficients.

        Entry ``[p, s, j'*T' + t']`` weighs anchor ``(p - (W-1-j'), frame t')`` in the gradient of
        neighbour ``(p, s)`` of displacement column ``j = W-1-j'``.
        """
        t, wp, row, tp = self.frames, self.padded_width, self.row, self.frames_padded
        per_position = tp * row
        return coefficients.as_strided(
            (t, self.context, self.height, self.width, self.window),
            (row + 1, row, wp * per_position, per_position, per_position - tp),
            coefficients.storage_offset() + (self.window - 1) * tp + self.time_radius,
        )


class _ClipCorrelation(torch.autograd.Function):
    """Forward and backward of ``clip_correlation`` on the flat padded grid of unit vectors.

    Forward, per clip and displacement row ``i``: ``products = anchors @ windows`` and the pair
    band of it. Backward needs the gradient of anchors and of neighbours. For anchors it is
    ``dproducts @ windows^T``. For a neighbour, the anchors that saw it at displacement ``(i, j)``
    are again ``W`` consecutive grid positions, so its gradient is one more product of the same
    shape with the band scattered the other way round, rather than a sum over overlapping
    windows.
    """

    @staticmethod
    def forward(ctx, grid: torch.Tensor, geo: _Geometry) -> torch.Tensor:
        ctx.geo = geo
        ctx.save_for_backward(grid)
        r, wp, tr, w = geo.radius, geo.padded_width, geo.time_radius, geo.window
        start = r * wp + r
        out = grid.new_empty(grid.shape[0], geo.frames, geo.context, geo.height, geo.width, w * w)
        for b, clip in enumerate(grid):
            anchors = clip[start : start + geo.count, tr : tr + geo.frames]
            for i in range(w):
                products = torch.bmm(anchors, geo.windows(clip, i * wp, geo.count))
                out[b, ..., i * w : (i + 1) * w] = geo.band(products)
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out: torch.Tensor) -> tuple[torch.Tensor, None]:
        (grid,) = ctx.saved_tensors
        geo = ctx.geo
        r, wp, tr, w, count = geo.radius, geo.padded_width, geo.time_radius, geo.window, geo.count
        start = r * wp + r
        grad_grid = torch.zeros_like(grid)
        grad_products = grid.new_zeros(count, geo.frames, geo.row)
        coefficients = grid.new_zeros(count + w - 1, geo.frames_padded, geo.row)
        for b, clip in enumerate(grid):
            anchors = clip[start : start + count, tr : tr + geo.frames]
            anchor_windows = geo.windows(clip, r * wp - r, count + w - 1).transpose(1, 2)
            grad_anchors = torch.zeros_like(anchors)
            for i in range(w):
                grads = grad_out[b, ..., i * w : (i + 1) * w]
                geo.band(grad_products).copy_(grads)
                windows = geo.windows(clip, i * wp, count).transpose(1, 2)
                grad_anchors.baddbmm_(grad_products, windows)
                geo.reverse_band(coefficients).copy_(grads)
                grad_grid[b, i * wp : i * wp + count + w - 1] += torch.bmm(coefficients, anchor_windows)
            grad_grid[b, start : start + count, tr : tr + geo.frames] += grad_anchors
        return grad_grid, None
