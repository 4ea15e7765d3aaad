"""MACs of a model on one input, by fvcore's rules (one multiply-add = 1; element-wise operations
not counted), with ATM's share.

``mac_count(..., counter="fvcore")`` traces a real model on one clip with fvcore; the card uses
``counter="shapes"``, the same rules applied to the shapes of each torch call of a model built on
the meta device, so no weight is initialised and no product computed (the tests hold both equal).
Two counting choices, both stated on the card:

* fvcore skips ``aten::scaled_dot_product_attention``; a handle here counts its two
  products, ``QK^T`` and ``AV``: ``2 * N^2 * C`` per frame and block. The card shows
  totals with and without them (the reference's 139.4 G is without).
* ATM blocks are traced on their plain path (``impl="plain"``, the modules as the paper
  describes them), not on the CPU kernels, whose traced counts would include work on padding.
  The local correlation of ``mul`` is counted as its ``D * W^2`` multiply-adds per frame pair
  and position; the reference computes it as a dense ``(hw) x (hw)`` product, so the card also
  shows the block with that product's ``D * (hw)^2`` instead.

``count_macs(model, inputs)`` is the function notebooks reuse for their tables.
"""
from __future__ import annotations

import warnings
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass
from math import prod
from typing import Any, Iterator, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

with warnings.catch_warnings():  # fvcore runs torch.jit.script at import, which torch deprecates
    warnings.filterwarnings("ignore", message="`torch.jit.script` is deprecated", category=FutureWarning)
    from fvcore.nn import FlopCountAnalysis
    from fvcore.nn.jit_handles import get_shape

from .atm import ATMBlock


def _attention_macs(q: Sequence[int], k: Sequence[int], v: Sequence[int]) -> int:
    """``QK^T`` plus ``AV`` for query, key and value shapes ``(..., tokens, width)``."""
    rows = prod(q[:-1])  # batch * heads * queries
    return rows * k[-2] * q[-1] + rows * k[-2] * v[-1]


def sdpa_macs(inputs: list[Any], outputs: list[Any]) -> int:
    """fvcore handle for ``aten::scaled_dot_product_attention``: ``QK^T`` plus ``AV``."""
    return _attention_macs(*(get_shape(i) for i in inputs[:3]))


def _einsum_macs(equation: str, *operands: torch.Tensor | Sequence[torch.Tensor]) -> float:
    """fvcore's einsum convention: two batched-matmul equations exactly, any other one as half the
    FLOPs of numpy's optimal contraction path (floored)."""
    if len(operands) == 1 and isinstance(operands[0], (list, tuple)):  # einsum(eq, [a, b])
        operands = tuple(operands[0])
    equation = equation.replace(" ", "")
    letters = dict.fromkeys(c for c in equation if c.isalpha())
    equation = equation.translate({ord(c): 97 + i for i, c in enumerate(letters)})
    shapes = [list(o.shape) for o in operands]
    if equation == "abc,abd->acd":
        return prod(shapes[0]) * shapes[-1][-1]
    if equation == "abc,adc->adb":
        return prod(shapes[0]) * shapes[-1][1]
    path = np.einsum_path(equation, *(np.zeros(s) for s in shapes), optimize="optimal")[1]
    line = next(l for l in path.splitlines() if "optimized flop" in l.lower())
    return float(np.floor(float(line.split(":")[-1]) / 2))


def _conv_count(x: torch.Tensor, weight: torch.Tensor, transposed: bool, out: torch.Tensor | None = None) -> int:
    spatial = (x if transposed else out).shape[2:]
    return x.shape[0] * prod(weight.shape) * prod(spatial)


def _norm_macs(x: torch.Tensor, affine: bool) -> int:
    return prod(x.shape) * (5 if affine else 4)


def _matmul_macs(a: torch.Tensor, b: torch.Tensor, *_, **__) -> int:
    return prod(a.shape) * b.shape[-1]


def _batch_norm_macs(x, running_mean=None, running_var=None, weight=None, bias=None, training=False, *_, **__) -> int:
    if training:
        return _norm_macs(x, weight is not None)
    return prod(x.shape) * (2 if weight is not None else 1)


def _layer_norm_macs(x, normalized_shape=None, weight=None, *_, **__) -> int:
    return _norm_macs(x, weight is not None)


def _group_norm_macs(x, num_groups=None, weight=None, *_, **__) -> int:
    return _norm_macs(x, weight is not None)


def _sdpa_macs(q, k, v, *_, **__) -> int:
    return _attention_macs(q.shape, k.shape, v.shape)


# torch function -> (operator name as fvcore reports it, MACs from the call's arguments);
# convolutions need the output and are handled apart
_MAC_RULES: dict[Any, tuple[str, Any]] = {
    F.linear: ("linear", lambda x, w, *_, **__: prod(x.shape) * w.shape[0]),
    torch.einsum: ("einsum", _einsum_macs),
    **{f: ("matmul", _matmul_macs) for f in (torch.matmul, torch.Tensor.matmul, torch.Tensor.__matmul__,
                                             torch.mm, torch.Tensor.mm)},
    **{f: ("bmm", _matmul_macs) for f in (torch.bmm, torch.Tensor.bmm)},
    torch.addmm: ("addmm", lambda _bias, a, b, *_, **__: _matmul_macs(a, b)),
    F.batch_norm: ("batch_norm", _batch_norm_macs),
    F.layer_norm: ("layer_norm", _layer_norm_macs),
    F.group_norm: ("group_norm", _group_norm_macs),
    F.scaled_dot_product_attention: ("scaled_dot_product_attention", _sdpa_macs),
    F.adaptive_avg_pool2d: ("adaptive_avg_pool2d", lambda x, *_, **__: prod(x.shape)),
}
_CONVS = {F.conv1d, F.conv2d, F.conv3d}
_TRANSPOSED_CONVS = {F.conv_transpose1d, F.conv_transpose2d, F.conv_transpose3d}


class _ShapeCounter(TorchFunctionMode):
    """Counts MACs per operator with fvcore's rules from the shapes of each torch call, so the
    model can run on the meta device: no weights initialised, no arithmetic done."""

    def __init__(self) -> None:
        super().__init__()
        self.by_operator: Counter[str] = Counter()
        self.total = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if func in _CONVS or func in _TRANSPOSED_CONVS:
            name, macs = "conv", _conv_count(args[0], args[1], func in _TRANSPOSED_CONVS, out)
        elif func in _MAC_RULES:
            name, rule = _MAC_RULES[func]
            macs = rule(*args, **kwargs)
        else:
            return out
        self.by_operator[name] += macs
        self.total += macs
        return out


def _analysis(module: nn.Module, x: torch.Tensor) -> FlopCountAnalysis:
    analysis = FlopCountAnalysis(module, (x,)).set_op_handle("aten::scaled_dot_product_attention", sdpa_macs)
    return analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False).tracer_warnings("none")


@dataclass
class MacCount:
    """MACs of one forward pass. ``total`` includes attention products and ATM blocks."""

    total: int
    attention: int  # QK^T and AV of every attention call
    atm: int  # all ATM blocks
    correlation: int  # local correlation inside the ATM blocks
    dense_correlation: int  # the same correlation computed densely, as the reference does

    @property
    def without_attention(self) -> int:
        return self.total - self.attention

    @property
    def without_atm(self) -> int:
        return self.total - self.atm

    @property
    def atm_dense(self) -> int:
        """The ATM blocks with the reference's dense correlation count instead of the local one."""
        return self.atm - self.correlation + self.dense_correlation


def _as_input(inputs: torch.Tensor | Sequence[int]) -> torch.Tensor:
    if isinstance(inputs, torch.Tensor):
        return inputs
    return torch.randn(tuple(inputs), generator=torch.Generator().manual_seed(0))


@contextmanager
def _plain_blocks(model: nn.Module) -> Iterator[dict[str, ATMBlock]]:
    """Every ATM block of ``model`` (by module name) switched to its plain path, then restored."""
    blocks = {name: m for name, m in model.named_modules() if isinstance(m, ATMBlock)}
    previous = {name: block.impl for name, block in blocks.items()}
    try:
        for block in blocks.values():
            block.impl = "plain"
        yield blocks
    finally:
        for name, block in blocks.items():
            block.impl = previous[name]


def _fvcore_counts(model: nn.Module, x: torch.Tensor, names: Sequence[str]) -> tuple[float, float, dict[str, float]]:
    """Total, attention and per-module MACs (``names``) from fvcore's trace of ``model(x)``."""
    analysis = _analysis(model, x)
    by_module = analysis.by_module()
    return (analysis.total(), analysis.by_operator().get("scaled_dot_product_attention", 0),
            {name: by_module[name] for name in names})


def _shape_counts(model: nn.Module, x: torch.Tensor, names: Sequence[str]) -> tuple[float, float, dict[str, float]]:
    """The same figures as :func:`_fvcore_counts` from :class:`_ShapeCounter`, on ``model``'s device
    (the meta device: no arithmetic). A module's MACs are those counted while its forward runs."""
    modules = dict(model.named_modules())
    counter, per_module = _ShapeCounter(), dict.fromkeys(names, 0)
    started: dict[str, list[float]] = {name: [] for name in names}

    def enter(name: str):
        return lambda *_: started[name].append(counter.total)

    def leave(name: str):
        def hook(*_) -> None:
            per_module[name] += counter.total - started[name].pop()
        return hook

    handles = [h for name in names for h in (modules[name].register_forward_pre_hook(enter(name)),
                                             modules[name].register_forward_hook(leave(name)))]
    try:
        with counter:
            model(x.to(next(model.parameters()).device))
    finally:
        for handle in handles:
            handle.remove()
    return counter.total, counter.by_operator["scaled_dot_product_attention"], per_module


COUNTERS = {"fvcore": _fvcore_counts, "shapes": _shape_counts}


@torch.no_grad()
def mac_count(model: nn.Module, inputs: torch.Tensor | Sequence[int], counter: str = "fvcore") -> MacCount:
    """Count the MACs of ``model(inputs)`` in eval mode (``inputs``: a tensor or its shape).

    ``counter="fvcore"`` traces the model with fvcore; ``"shapes"`` applies fvcore's rules to the
    shapes of each torch call, which runs on a model built on the meta device (the card's way: no
    weights, no arithmetic). ATM blocks run on their plain path; the ATM and correlation figures are
    the counts of the blocks and of their ``cue`` modules. The dense figure scales each block's
    correlation from its ``W^2`` displacements to the ``hw`` positions a dense product pairs every
    position with.
    """
    x = _as_input(inputs)
    was_training = model.training
    model.eval()
    try:
        with _plain_blocks(model) as blocks:
            positions: dict[str, int] = {}

            def record(name: str):
                def hook(_module: nn.Module, args: tuple, _output: torch.Tensor) -> None:
                    positions[name] = int(args[0].shape[-2]) * int(args[0].shape[-1])
                return hook

            handles = [block.cue.register_forward_hook(record(name)) for name, block in blocks.items()]
            cues = {name: f"{name}.cue" if name else "cue" for name in blocks}
            try:
                total, attention, by_module = COUNTERS[counter](model, x, [*blocks, *cues.values()])
            finally:
                for handle in handles:
                    handle.remove()
    finally:
        model.train(was_training)
    cue = {name: by_module[cues[name]] for name in blocks}
    correlation = sum(cue.values())
    dense = sum(cue[name] * positions[name] // block.window ** 2 for name, block in blocks.items())
    return MacCount(total=total, attention=attention, atm=sum(by_module[name] for name in blocks),
                    correlation=correlation, dense_correlation=dense)


def count_macs(model: nn.Module, inputs: torch.Tensor | Sequence[int], attention: bool = True) -> int:
    """MACs of ``model(inputs)``, with or without the attention products (see :func:`mac_count`)."""
    count = mac_count(model, inputs)
    return count.total if attention else count.without_attention


# ---------------------------------------------------------------- the card
