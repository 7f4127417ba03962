"""Outliers: items unlike the rest of the set, or of their own class, by their nearest neighbours in feature
space; and the cheap checks that need no features (blank, tiny or stretched images; empty, very long texts).

An item's score is one minus its mean centred cosine to its nearest neighbours; it is flagged when that score
stands far out from the others' (a robust z-score: distance from the median in units of the median absolute
deviation), so the rule adapts to each backbone's and each set's own spread.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from transferkit.audit.duplicates import NO_PAIRS, scan

NEIGHBOURS = 10
ROBUST_Z = 5.0  # median + 5 scaled MADs: about 1 item in 1,000 of a normal spread is flagged by chance
MAX_SHARE = 0.02  # at most this share of the items is flagged as outliers (the most isolated first)


@dataclass
class Outlier:
    index: int
    score: float  # 1 - mean centred cosine to the nearest neighbours
    scope: str  # "set" (unlike every other item) | "class" (unlike the items of its own label)


def isolation(similarity: np.ndarray) -> np.ndarray:
    return 1.0 - similarity.mean(axis=1)


def far_out(scores: np.ndarray) -> np.ndarray:
    """Indices whose score stands above median + ROBUST_Z scaled MADs, most isolated first (capped)."""
    median = float(np.median(scores))
    spread = 1.4826 * float(np.median(np.abs(scores - median))) + 1e-9
    flagged = np.flatnonzero((scores - median) / spread > ROBUST_Z)
    flagged = flagged[np.argsort(-scores[flagged])]
    return flagged[:max(1, int(MAX_SHARE * len(scores)))] if len(flagged) else flagged


def class_isolation(features: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Each item's isolation among the items of its own label (NaN in a class too small to tell)."""
    scores = np.full(len(labels), np.nan)
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        if len(members) > NEIGHBOURS:
            scores[members] = isolation(scan(features[members], NEIGHBOURS, threshold=NO_PAIRS).similarity)
    return scores


def find_outliers(set_isolation: np.ndarray, features: np.ndarray, labels: np.ndarray) -> list[Outlier]:
    """Set outliers, then class outliers that are not set outliers too."""
    found = [Outlier(int(i), round(float(set_isolation[i]), 6), "set") for i in far_out(set_isolation)]
    within = class_isolation(features, labels)
    known = {o.index for o in found}
    for label in np.unique(labels):
        members = np.flatnonzero((labels == label) & ~np.isnan(within))
        if len(members) > NEIGHBOURS:
            found += [Outlier(int(members[i]), round(float(within[members[i]]), 6), "class")
                      for i in far_out(within[members]) if int(members[i]) not in known]
    return found
