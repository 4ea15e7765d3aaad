"""CPU kernels of the ATM block, selected by ``ATMBlock(impl=...)``.

``cpu_fast_branch(block, x)`` computes what :meth:`atm_core.atm.ATMBlock.branch` computes, with the
block's own weights, to float rounding (float64 tests in ``tests/test_kernels.py``), as fewer and
larger matrix products: the correlation of a whole clip (``correlation``), the similarity encoder
as banded row convolutions (``encoder``), eval-mode BatchNorm folded into the convs (``folding``),
and the element-wise ops combined after the transfer's first conv (``block``). They are built and
measured for CPUs (``benchmarks/atm_block.py``); on other devices the plain path runs.
"""
from .block import cpu_fast_branch
from .correlation import clip_correlation
from .encoder import encode_patches

__all__ = ["clip_correlation", "cpu_fast_branch", "encode_patches"]
