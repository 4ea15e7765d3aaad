"""The four arithmetic operations of ATM and the temporal pairing they act on.

Every function here is a pure tensor function: no parameters, no device or dtype
assumptions. Anchors and neighbours are broadcastable views, so pairing a clip's
frames with their K temporal neighbours never copies the feature map K times
before an operation needs it.

Shapes: ``x`` is ``(B*T, D, h, w)`` with the frames of a clip contiguous;
``pair_frames`` returns ``anchor`` ``(B, T, 1, D, h, w)`` and ``neighbour``
``(B, T, K, D, h, w)``; an operation returns its cue ``(B, T, K, D', h, w)``, pairs
ordered ``(b, t, o)`` with the offset fastest.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
import torch.nn.functional as F

OP_NAMES = ("add", "sub", "mul", "div")
NORM_EPS = 1e-6


def channels_last(x: torch.Tensor) -> bool:
    """True when a 4-d map is stored channels-last (and not also plainly contiguous)."""
    return x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()


def check_frames(num_items: int, num_frames: int) -> int:
    """Number of clips in a batch of ``num_items`` frames, or a clear error."""
    if num_frames < 1 or num_items % num_frames:
        raise ValueError(
            f"a batch of {num_items} frames is not divisible by num_frames={num_frames}; "
            "inputs must be (B*T, ...) with the T frames of each clip contiguous"
        )
    return num_items // num_frames


def check_context(context: int) -> int:
    """``context`` (K, the frames each frame is paired with, itself included), or a clear error."""
    if context < 1 or context % 2 == 0:
        raise ValueError(f"context must be a positive odd number of frames, got {context}")
    return context


def pair_frames(x: torch.Tensor, num_frames: int, context: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Pair every frame ``t`` with its neighbours ``t + o``, ``o`` in ``[-(K//2), K//2]``.

    Returns ``(anchor, neighbour)``: ``anchor`` is ``x`` viewed as ``(B, T, 1, D, h, w)``,
    ``neighbour`` a strided view ``(B, T, K, D, h, w)`` over ``x`` zero-padded in time,
    so neighbours outside the clip are zeros. Only the time padding is copied, and it keeps
    the memory layout of ``x`` (channels-last stays channels-last), so the ops' outputs do too.
    """
    check_context(context)
    batch = check_frames(x.shape[0], num_frames)
    radius = context // 2
    # pad in x's physical order: (B*T, h, w, D) for channels-last maps, (B*T, D, h, w) otherwise
    order = (0, 2, 3, 1) if channels_last(x) else (0, 1, 2, 3)
    restore = [order.index(i) + 1 for i in range(1, 4)]  # where D, h, w sit in (B, T, ...)
    physical = x.permute(order)
    clips = physical.reshape(batch, num_frames, *physical.shape[1:])
    padded = F.pad(clips, (0, 0, 0, 0, 0, 0, radius, radius))
    neighbour = padded.unfold(1, context, 1).permute(0, 1, 5, *restore)
    return clips.permute(0, 1, *restore).unsqueeze(2), neighbour


def add(anchor: torch.Tensor, neighbour: torch.Tensor) -> torch.Tensor:
    return neighbour + anchor


def sub(anchor: torch.Tensor, neighbour: torch.Tensor) -> torch.Tensor:
    return neighbour - anchor


def log_magnitude(x: torch.Tensor) -> torch.Tensor:
    return torch.log1p(x.abs())


def div(anchor: torch.Tensor, neighbour: torch.Tensor) -> torch.Tensor:
    """Division in log space, ``log1p|b| - log1p|a|``: a plain ``b / a`` does not train."""
    return sub(log_magnitude(anchor), log_magnitude(neighbour))


def l2_normalize(x: torch.Tensor, dim: int = -3) -> torch.Tensor:
    """``v / sqrt(sum(v^2) + 1e-6)`` over ``dim``, in at least float32 (fp16 squares overflow)."""
    wide = x.to(torch.promote_types(x.dtype, torch.float32))
    norm = torch.sqrt(wide.square().sum(dim, keepdim=True) + NORM_EPS)
    return (wide / norm).to(x.dtype)


def local_correlation(anchor: torch.Tensor, neighbour: torch.Tensor, window: int) -> torch.Tensor:
    """Dot products between ``anchor`` and ``neighbour`` displaced inside a ``window``².

    ``S[..., i*W + j, y, x] = <anchor[..., :, y, x], neighbour[..., :, y + i - r, x + j - r]>``
    with ``r = W // 2``, zero where the displaced position leaves the map. Inputs are
    ``(..., D, h, w)`` and broadcast against each other; the output is
    ``(..., W*W, h, w)``. Memory is O(h*w*W²): one displacement at a time, never an
    ``(hw) x (hw)`` matrix.
    """
    if window < 1 or window % 2 == 0:
        raise ValueError(f"window must be a positive odd size, got {window}")
    radius = window // 2
    height, width = neighbour.shape[-2:]
    padded = F.pad(neighbour, (radius, radius, radius, radius))
    slices = [
        (anchor * padded[..., i : i + height, j : j + width]).sum(-3)
        for i in range(window)
        for j in range(window)
    ]
    return torch.stack(slices, dim=-3)


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
    if window < 1 or window % 2 == 0:
        raise ValueError(f"window must be a positive odd size, got {window}")
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


def mul(anchor: torch.Tensor, neighbour: torch.Tensor, window: int = 9) -> torch.Tensor:
    """Multiplication as local cosine correlation: a ``W x W`` similarity volume per position."""
    return local_correlation(l2_normalize(anchor), l2_normalize(neighbour), window)


OPS: dict[str, Callable[..., torch.Tensor]] = {"add": add, "sub": sub, "mul": mul, "div": div}

# The element-wise ops as ``combine(frame_map(a), frame_map(b))`` with ``combine`` linear and
# ``frame_map`` per frame (zero at zero, so time padding stays zero): a linear map of the cue
# (the first conv of ATM's domain transfer) can then run on the T frames instead of the T*K pairs.
SEPARABLE_OPS: dict[str, tuple[Callable[[torch.Tensor], torch.Tensor] | None, Callable[..., torch.Tensor]]] = {
    "add": (None, add),
    "sub": (None, sub),
    "div": (log_magnitude, sub),
}


def get_op(name: str) -> Callable[..., torch.Tensor]:
    if name not in OPS:
        raise ValueError(f"unknown ATM op {name!r}; choose from {', '.join(OP_NAMES)}")
    return OPS[name]


def check_op_names(names: Iterable[str]) -> tuple[str, ...]:
    """``names`` as a tuple of op names, or a ValueError naming the unknown one and the valid ones
    (a TypeError for a single string, which would read as one op per letter)."""
    if isinstance(names, str):
        raise TypeError(f"ATM ops must be a sequence of op names, got the string {names!r}")
    names = tuple(names)
    for name in names:
        if name not in OP_NAMES:
            raise ValueError(f"unknown ATM op {name!r}; choose from {', '.join(OP_NAMES)}")
    return names
