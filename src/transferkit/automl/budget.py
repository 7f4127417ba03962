"""The time budget: ``15m``, ``90s``, ``1h30m`` or plain seconds, bounded, and the clock that spends it."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field

from transferkit.errors import TransferkitError, arg

MIN_SECONDS, MAX_SECONDS = 10, 7 * 24 * 3600  # under 10 s nothing but the data listing fits; a week is plenty
UNITS = {"s": 1, "m": 60, "h": 3600}
PART = re.compile(r"(\d+(?:\.\d+)?)([smh])")


def parse_budget(text: str | float | int) -> float:
    """Seconds in ``text``; a value that is not a duration, or outside [10 s, 7 days], is one-line error."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        seconds = float(text)
    else:
        value = str(text).strip().lower().replace(" ", "")
        if re.fullmatch(r"\d+(?:\.\d+)?", value):
            seconds = float(value)
        elif re.fullmatch(r"(?:\d+(?:\.\d+)?[smh])+", value):
            seconds = sum(float(n) * UNITS[u] for n, u in PART.findall(value))
        else:
            raise TransferkitError(f"{arg('budget', str(text))}: not a duration; write "
                                   "it as 90s, 15m, 1h30m or seconds (e.g. 600)")
    if not MIN_SECONDS <= seconds <= MAX_SECONDS:
        raise TransferkitError(f"{arg('budget', str(text))}: expected a duration between "
                               f"{MIN_SECONDS}s and {MAX_SECONDS // 86400} days")
    return seconds


@dataclass
class Clock:
    """The budget being spent: started when ``auto`` starts, so reading the data and ranking count too."""

    budget: float
    start: float = field(default_factory=time.perf_counter)

    @property
    def used(self) -> float:
        return time.perf_counter() - self.start

    @property
    def left(self) -> float:
        return self.budget - self.used

    @property
    def deadline_epoch(self) -> float:
        """The budget's end as a wall-clock timestamp (what a training callback in a config can carry)."""
        return time.time() + self.left
