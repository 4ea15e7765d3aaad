"""Capture of what each ATM block computes in a forward pass: its input, cue and branch, by hooks."""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..atm import ATMBlock


@dataclass
class BlockCapture:
    """What one :class:`ATMBlock` saw and produced in the last forward pass."""

    name: str  # module path inside the model
    index: int  # position among the model's ATM blocks, 0-based
    op: str
    num_frames: int
    context: int
    window: int
    input: torch.Tensor  # (B*T, C, H, W)
    cue: torch.Tensor  # (B, T, K, D', h, w); D' = W*W for mul
    branch: torch.Tensor  # (B*T, C, H, W), what the block adds to its input

    @property
    def title(self) -> str:
        return f"ATM block {self.index + 1} ({self.op}, {self.name})"

    @property
    def offsets(self) -> list[int]:
        radius = self.context // 2
        return list(range(-radius, radius + 1))


def atm_blocks(model: nn.Module) -> list[tuple[str, ATMBlock]]:
    """All ATM blocks of ``model`` in forward order, with their module paths."""
    return [(name, m) for name, m in model.named_modules() if isinstance(m, ATMBlock)]


def plain_cue(block: ATMBlock, x: torch.Tensor) -> torch.Tensor:
    """``block``'s cue of its input ``x`` on the plain path, leaving its running statistics alone
    (in train mode the reduce layer normalises with batch statistics, as the block did)."""
    conv, norm = block.reduce[0], block.reduce[1]
    stats = (None, None) if norm.training else (norm.running_mean, norm.running_var)
    reduced = F.relu(F.batch_norm(conv(x), *stats, norm.weight, norm.bias, norm.training, 0.0, norm.eps))
    return block.cue(reduced)


@contextmanager
def capture_atm(model: nn.Module) -> Iterator[list[BlockCapture]]:
    """Record every ATM block's input, cue and branch by forward hooks during forward passes inside.

    Yields a list filled by the forward passes (one entry per block, the last pass wins). Hooks sit
    on the block (its input), on ``block.cue`` (the cue: for ``mul`` the similarity volume) and on
    ``block.proj`` (the branch); they are removed on exit. The ``cpu_fast`` kernels never
    materialise the cue (the element-wise ops are combined after the transfer's first conv, the
    correlation runs inside the kernels), so ``block.cue`` does not run there: the capture then
    computes the cue from the hooked input with the plain op (:func:`plain_cue`), which equals what
    the kernels compute to float rounding.
    """
    blocks = atm_blocks(model)
    if not blocks:
        raise ValueError(f"{type(model).__name__} has no ATM block (model.atm is None?): "
                         "nothing to visualise; use a model built with ATM ops (model.atm.ops)")
    captured: list[BlockCapture] = []
    order = {name: i for i, (name, _) in enumerate(blocks)}

    def hooks_for(name: str, block: ATMBlock) -> list:
        seen: dict[str, torch.Tensor] = {}

        def on_input(_block: nn.Module, args: tuple) -> None:
            seen.clear()
            seen["input"] = args[0].detach()

        def on_cue(_module: nn.Module, _args: tuple, cue: torch.Tensor) -> None:
            seen["cue"] = cue.detach()

        def on_branch(_module: nn.Module, _args: tuple, branch: torch.Tensor) -> None:
            seen["branch"] = branch.detach()

        def on_output(_block: nn.Module, _args: tuple, _output: torch.Tensor) -> None:
            if "cue" not in seen:
                with torch.no_grad():
                    seen["cue"] = plain_cue(block, seen["input"])
            record = BlockCapture(name, order[name], block.op, block.num_frames, block.context,
                                  block.window, seen["input"], seen["cue"], seen["branch"])
            captured[:] = sorted([c for c in captured if c.name != name] + [record],
                                 key=lambda c: order[c.name])

        return [block.register_forward_pre_hook(on_input), block.cue.register_forward_hook(on_cue),
                block.proj.register_forward_hook(on_branch), block.register_forward_hook(on_output)]

    handles = []
    try:
        for name, block in blocks:
            handles += hooks_for(name, block)
        yield captured
    finally:
        for handle in handles:
            handle.remove()


@torch.no_grad()
def run_capture(model: nn.Module, clip: torch.Tensor) -> list[BlockCapture]:
    """Run ``model`` in eval mode on one clip ``(T, 3, H, W)`` and return every block's capture."""
    if clip.dim() != 4:
        raise ValueError(f"expected one clip (T, 3, H, W), got shape {tuple(clip.shape)}")
    was_training = model.training
    model.eval()
    try:
        with capture_atm(model) as captures:
            model(clip[None])
    finally:
        model.train(was_training)
    return list(captures)
