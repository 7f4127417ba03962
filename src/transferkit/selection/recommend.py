"""The backbone to use and the strategy to try first, with the reasons, from a ranking's scores.

The backbone is the one with the best cross-validated probe accuracy (the score that measures the thing a
probe will do); backbones within one standard error of it count as tied, and LogME breaks the tie. The
strategy follows from how many labelled items each class has and from a hint of the domain gap: when the
pretrained model's own classifier is far less sure of the data than a probe on its features is accurate
(``probe accuracy - source confidence``), the images are classifiable but unlike its source classes, and
training the backbone tends to pay; when it is sure of them, frozen features already fit.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Sequence

import numpy as np

FEW_PER_CLASS = 20  # below this, training the backbone mostly overfits: probe first
MANY_PER_CLASS = 100  # from this on there is enough to fine-tune from the probe's head (gradual)
PLENTY_PER_CLASS = 500  # with a large gap and this many, train everything from the start (finetune)
# Probe accuracy - source confidence above this reads as a large domain gap. Measured (bench/rank.py, Lite2
# @224): hymenoptera +0.13 (ants and bees are ImageNet classes; gradual 0.954 against the probe's 0.948 in
# bench/finetune.py), CIFAR-10 at 32 px upsampled +0.38 (gradual 0.745 against 0.701 in
# bench/cifar_strategies.py). Two data sets place the line, no more: it is a hint, and the reason says so.
LARGE_GAP = 0.25
WEAK_PROBE = 0.8  # without a source classifier, a probe below this is the only sign of a distant domain
SATURATED = 0.98  # a probe this accurate leaves little for fine-tuning to add


@dataclass
class Candidate:
    """What the recommendation reads of one ranked backbone."""

    label: str  # the backbone as the table names it ("efficientnet_lite0 @160")
    probe_accuracy: float
    logme: float
    n: int  # items scored
    source_confidence: float | None = None  # None: no source classifier (text encoders)


@dataclass
class Recommendation:
    index: int  # of the chosen candidate
    backbone: str
    strategy: str
    reason: str
    domain_gap: float | None  # probe accuracy - source confidence, when there is a source classifier

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def choose_backbone(candidates: Sequence[Candidate]) -> tuple[int, str]:
    """(index, why): the best probe accuracy, ties within one standard error broken by LogME."""
    accuracy = np.array([c.probe_accuracy for c in candidates])
    best = int(accuracy.argmax())
    error = float(np.sqrt(max(accuracy[best] * (1 - accuracy[best]), 1e-12) / max(candidates[best].n, 1)))
    tied = [i for i in range(len(candidates)) if accuracy[i] >= accuracy[best] - error]
    chosen = max(tied, key=lambda i: (candidates[i].logme, accuracy[i]))
    probe = f"cross-validated probe accuracy {accuracy[chosen]:.3f}"
    if len(candidates) == 1:
        return chosen, f"{probe} (the only backbone ranked)"
    if len(tied) == 1:
        return chosen, f"the best {probe}"
    others = ", ".join(candidates[i].label for i in tied if i != chosen)
    return chosen, (f"{probe}, within one standard error ({error:.3f}) of {others}, and the highest LogME "
                    "among them")


def choose_strategy(per_class: int, probe_accuracy: float, gap: float | None) -> tuple[str, str]:
    """(strategy, why) from the labelled items per class (the smallest class) and the domain-gap hint."""
    labels = f"{per_class} labelled item(s) in the smallest class"
    if gap is None:
        large = probe_accuracy < WEAK_PROBE
        hint = (f"no source classifier to gauge the domain gap, and a probe at {probe_accuracy:.3f} "
                f"({'weak' if large else 'fair'})")
    else:
        large = gap > LARGE_GAP
        hint = (f"domain gap hint {gap:+.2f} (probe accuracy minus the source classifier's confidence): "
                f"{'large' if large else 'small'}")
    if probe_accuracy >= SATURATED:
        return "linear-probe", f"the probe is already at {probe_accuracy:.3f}, little left to gain; {labels}; {hint}"
    if per_class < FEW_PER_CLASS:
        then = ", then gradual if it falls short" if large else ""
        return "linear-probe", f"{labels}, too few to train the backbone without overfitting{then}; {hint}"
    if per_class >= PLENTY_PER_CLASS and large:
        return "finetune", f"{labels}, enough to move the whole backbone to the new domain; {hint}"
    if per_class >= MANY_PER_CLASS or large:
        why = "enough to fine-tune" if per_class >= MANY_PER_CLASS else "frozen features may fall short"
        return "gradual", f"{labels}, {why}, starting from the probe's head; {hint}"
    return "linear-probe", f"{labels}; {hint}: frozen features fit, try gradual next"


def recommend(candidates: Sequence[Candidate], per_class: int) -> Recommendation:
    index, why_backbone = choose_backbone(candidates)
    chosen = candidates[index]
    gap = None if chosen.source_confidence is None else chosen.probe_accuracy - chosen.source_confidence
    strategy, why_strategy = choose_strategy(per_class, chosen.probe_accuracy, gap)
    reason = f"{chosen.label}: {why_backbone}. {strategy}: {why_strategy}."
    return Recommendation(index, chosen.label, strategy, reason, None if gap is None else round(gap, 4))
