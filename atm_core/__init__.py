"""ATM workbook: the Arithmetic Temporal Module (Wu et al., ICCV 2023) and its video models."""
from .atm import ATM, ATMBlock
from .ops import OP_NAMES

__all__ = ["ATM", "ATMBlock", "OP_NAMES"]
