"""Transfer strategies by name. The linear probe trains only a head on frozen features."""

from __future__ import annotations

from dataclasses import dataclass

from .errors import TransferkitError

STRATEGY_NAMES = ("linear-probe",)


@dataclass(frozen=True)
class Strategy:
    name: str
    frozen_backbone: bool


def parse_strategy(text: str) -> Strategy:
    if text == "linear-probe":
        return Strategy("linear-probe", frozen_backbone=True)
    raise TransferkitError(f"strategy '{text}' is not known; choose one of: {', '.join(STRATEGY_NAMES)}")
