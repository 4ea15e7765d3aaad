"""ATM workbook: the Arithmetic Temporal Module (Wu et al., ICCV 2023) and its video models.

Importing the package registers the video models with timm (``atm_core.models.SPECS``).
"""
from . import models
from .atm import ATM, ATMBlock, ATMOptions
from .ops import OP_NAMES

__all__ = ["ATM", "ATMBlock", "ATMOptions", "OP_NAMES", "models"]
