"""How sure a score is: the spread of a metric over seeds, and whether one configuration beats another on the
same items by more than the noise. numpy and scipy only (``compare`` reads runs without torch).

- :func:`t_interval`: mean, sample standard deviation and the Student-t 95% interval of the mean over seeds
  (n - 1 degrees of freedom): with 3 seeds the interval is mean +- 4.30 * std / sqrt(3), wide on purpose.
- :func:`paired_bootstrap`: the gain of B over A on the same items, each item's correctness averaged over the
  seeds of each side, with a percentile interval from resampling the items (10,000 resamples, fixed RNG seed,
  so the same runs always give the same verdict). Resampling items captures test-set noise; averaging seeds
  first keeps seed noise in each item's score.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Sequence

import numpy as np
from scipy.special import stdtrit  # Student t's quantile; scipy.stats would cost compare ~0.4 s more to import

LEVEL = 0.95
RESAMPLES = 10_000
RNG_SEED = 0  # fixed: a verdict must not change from one `compare` to the next
CHUNK_CELLS = 4_000_000  # resamples x items drawn at a time: bounded memory for large test sets


@dataclass
class Spread:
    """One metric over seeds: its mean, sample std (None for one seed) and the t-interval of the mean."""

    n: int
    mean: float
    std: float | None
    low: float | None
    high: float | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def t_interval(values: Sequence[float], level: float = LEVEL) -> Spread:
    """Mean, standard deviation (ddof=1) and the two-sided Student-t interval of the mean at ``level``."""
    data = np.asarray(values, dtype=np.float64)
    if data.ndim != 1 or not len(data):
        raise ValueError("t_interval needs a non-empty list of numbers")
    mean = float(data.mean())
    if len(data) < 2:  # one value has no spread
        return Spread(1, mean, None, None, None)
    std = float(data.std(ddof=1))
    half = float(stdtrit(len(data) - 1, (1 + level) / 2)) * std / np.sqrt(len(data))
    return Spread(len(data), mean, std, mean - half, mean + half)


@dataclass
class Verdict:
    """The gain of B over A in points (percentage points of accuracy) and its bootstrap interval."""

    items: int
    gain: float
    low: float
    high: float
    resamples: int
    rng_seed: int

    @property
    def outside_noise(self) -> bool:
        """The interval excludes zero: the gain (or loss) is larger than resampling the items explains."""
        return self.low > 0 or self.high < 0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "outside_noise": self.outside_noise}

    def sentence(self) -> str:
        """``gain +1.8 points, 95% interval [+0.6, +3.0]: outside noise``."""
        noise = "outside noise" if self.outside_noise else "within noise"
        return f"gain {self.gain:+.1f} points, 95% interval [{self.low:+.1f}, {self.high:+.1f}]: {noise}"


def paired_bootstrap(correct_a: np.ndarray, correct_b: np.ndarray, resamples: int = RESAMPLES,
                     rng_seed: int = RNG_SEED, level: float = LEVEL) -> Verdict:
    """``correct_a`` [seeds_a, items] and ``correct_b`` [seeds_b, items]: 1 where a seed's model got the item
    right (the same items, in the same order, on both sides). The gain is B's accuracy minus A's, in points."""
    a, b = np.atleast_2d(np.asarray(correct_a, np.float64)), np.atleast_2d(np.asarray(correct_b, np.float64))
    if a.shape[1] != b.shape[1] or not a.shape[1]:
        raise ValueError(f"paired_bootstrap needs the same items on both sides (got {a.shape[1]} and {b.shape[1]})")
    diff = b.mean(axis=0) - a.mean(axis=0)  # per item: averaged over each side's seeds
    n = len(diff)
    rng = np.random.default_rng(rng_seed)
    means, chunk = np.empty(resamples), max(1, CHUNK_CELLS // n)
    for start in range(0, resamples, chunk):
        size = min(chunk, resamples - start)
        means[start:start + size] = diff[rng.integers(0, n, size=(size, n))].mean(axis=1)
    low, high = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return Verdict(n, 100 * float(diff.mean()), 100 * float(low), 100 * float(high), resamples, rng_seed)
