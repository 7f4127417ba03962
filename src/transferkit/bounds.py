"""What values a number, flag or word a user (or a file) gives may take: declared once beside the option or
field it belongs to, read and checked by :meth:`Bound.read` where the value is parsed, before any work.

Every numeric bound is finite: ``nan`` and ``inf`` are refused wherever a bound applies, and so are sizes large
enough to exhaust memory (``lora:r=100000``), so the message names the option, the value and the range.
This module is dependency-free: the CLI and the plug-in registries check values without importing torch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

from transferkit.errors import TransferkitError, shown

MAX_TEXT = 1000  # a word option (a regex, a teacher's folder) longer than this is not one


@dataclass(frozen=True)
class Bound:
    """The type (int, float, bool or str) and, for numbers, the closed or open range of one setting."""

    kind: type
    low: float | None = None
    high: float | None = None
    open_low: bool = False  # the low end itself is excluded: (0, 1]
    open_high: bool = False
    required: bool = False  # a plug-in option without a default
    why: str = ""  # what the range comes from, said after it in messages

    def __call__(self, value: Any) -> bool:
        """Whether ``value`` (already of the right type) lies in range: RunConfig's ``valid`` hook."""
        try:
            self.typed(value)
        except ValueError:
            return False
        return True

    def describe(self) -> str:
        """``an integer in [1, 1024]``, ``a number in (0, 10]``, ``true or false``, ``a text``."""
        if self.kind is bool:
            return "true or false"
        if self.kind is str:
            return f"a text of at most {MAX_TEXT} characters"
        noun = "an integer" if self.kind is int else "a number"
        left, right = "(" if self.open_low else "[", ")" if self.open_high else "]"
        return f"{noun} in {left}{fmt(self.low)}, {fmt(self.high)}{right}" + (f" ({self.why})" if self.why else "")

    def read(self, name: str, value: Any, what: str = "") -> Any:
        """``value`` (text as typed, or a value of any type from a file) as this bound's type, or a one-line
        :class:`TransferkitError`: ``{what}{name}={value}: expected {range}``."""
        try:
            return self.typed(parse(self.kind, value) if isinstance(value, str) else value)
        except ValueError:
            raise TransferkitError(f"{what}{name}={shown(value, quote=False)}: expected {self.describe()}") from None

    def typed(self, value: Any) -> Any:
        """``value`` checked against the type and range (ValueError when it is outside)."""
        if self.kind is bool or isinstance(value, bool):
            if self.kind is not bool or not isinstance(value, bool):
                raise ValueError(value)
            return value
        if self.kind is str:
            if not isinstance(value, str) or len(value) > MAX_TEXT:
                raise ValueError(value)
            return value
        if not isinstance(value, (int, float)) or (self.kind is int and not isinstance(value, int)):
            raise ValueError(value)
        if (isinstance(value, float) and not math.isfinite(value)) or not self.holds(value):
            raise ValueError(value)
        return self.kind(value)

    def holds(self, value: float) -> bool:
        low_ok = self.low is None or (value > self.low if self.open_low else value >= self.low)
        high_ok = self.high is None or (value < self.high if self.open_high else value <= self.high)
        return low_ok and high_ok


def parse(kind: type, text: str) -> Any:
    """Text as typed on a command line or in a spec, as ``kind`` (ValueError when it does not read as one)."""
    text = text.strip()
    if kind is str:
        return text
    if kind is bool:
        if text.lower() not in ("true", "false"):
            raise ValueError(text)
        return text.lower() == "true"
    return int(text) if kind is int else float(text)


def fmt(value: float | None) -> str:
    if value is None:
        return "inf"
    return f"{value:g}" if isinstance(value, float) else str(value)


def Int(low: int, high: int, required: bool = False) -> Bound:  # noqa: N802 - reads as a type in declarations
    """An integer in [low, high]."""
    return Bound(int, low, high, required=required)


def Real(low: float, high: float, open_low: bool = False, open_high: bool = False,  # noqa: N802
         required: bool = False) -> Bound:
    """A finite number in [low, high] (an end marked open is excluded)."""
    return Bound(float, low, high, open_low, open_high, required=required)


FLAG = Bound(bool)
TEXT = Bound(str)
REQUIRED_TEXT = Bound(str, required=True)


def option_check(bound: Bound, option: str) -> Callable[[Any], Any]:
    """A Typer/click callback: the option's value checked by ``bound`` as the command line is parsed (None,
    an option left unset, passes)."""
    def check(value: Any) -> Any:
        return value if value is None else bound.read(option, value)
    return check
