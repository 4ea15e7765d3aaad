"""ATM's options, gathered once and handed down: config / keywords -> factory -> ViT / ResNet -> ATM."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Optional

from ..atm import ATM
from ..ops import check_op_names


@dataclass(frozen=True)
class ATMOptions:
    """What an ATM module is built with (its position in the backbone is the model's ``atm_after_blocks``).

    ``ops`` run in order (``()``: no ATM); ``hidden`` is the reduced width D and ``width`` the
    similarity-encoder / domain-transfer width (64 and 64 in the paper); ``context`` the temporal
    context K (5); ``residual`` ``"relu"`` (reference) or ``"identity"``; ``downsample`` the
    stride-2 reduction (ResNets); ``impl`` the kernel choice, ``"auto"`` being ATM's own default.
    """

    ops: tuple[str, ...] = ("mul", "sub")
    hidden: int = 64
    width: int = 64
    context: int = 5
    residual: str = "relu"
    downsample: bool = False
    impl: str = "auto"

    def __post_init__(self) -> None:
        object.__setattr__(self, "ops", check_op_names(self.ops))

    @classmethod
    def keyword_names(cls) -> tuple[str, ...]:
        """The ``atm_<field>`` keywords the model constructors accept, one per field."""
        return tuple(f"atm_{f.name}" for f in dataclasses.fields(cls))

    def updated(self, overrides: dict[str, Any]) -> ATMOptions:
        """These options with the ``atm_<field>`` entries of ``overrides`` that are not None."""
        changes = {key.removeprefix("atm_"): value for key, value in overrides.items() if value is not None}
        return dataclasses.replace(self, **changes)

    def build(self, channels: int, num_frames: int) -> Optional[ATM]:
        """The ATM module for a ``channels``-wide feature map, or None when ``ops`` is empty."""
        if not self.ops:
            return None
        return ATM(channels, num_frames, self.ops, hidden=self.hidden, width=self.width,
                   context=self.context, residual=self.residual, downsample=self.downsample,
                   impl=self.impl)
