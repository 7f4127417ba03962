"""What the data settles before anything is trained, read once: its modality, splits (a validation split of its
own, else a seeded stratified part of train; the test split is only counted), class balance, and the input
size (the modality's to derive: images from their own resolution, texts from their token lengths). Each derived
setting says why; a setting the user gave is kept and said so."""

from __future__ import annotations

import functools
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from transferkit.config import RunConfig
from transferkit.modalities.base import LabelledData, Modality

IMBALANCE = 3.0  # largest / smallest class at which classes are weighted


@dataclass
class Facts:
    """What was read, and the settings it decided (RunConfig fields) with the reason for each."""

    modality: str
    classes: list[str]
    counts: dict[str, int]
    train: int
    val: int
    test: int
    val_source: str
    settings: dict[str, Any] = field(default_factory=dict)
    reasons: dict[str, str] = field(default_factory=dict)
    measured: dict[str, Any] = field(default_factory=dict)
    # what a fine-tune may take instead of a decided setting when the budget affords it (a given setting: nothing)
    larger: dict[str, tuple[Any, ...]] = field(default_factory=dict)

    def decide(self, name: str, value: Any, why: str, larger: tuple[Any, ...] = (), *,
               given: dict[str, Any]) -> None:
        if name in given:
            self.settings[name], self.reasons[name] = given[name], "given"
        elif value is not None:
            self.settings[name], self.reasons[name] = value, why
            if larger:
                self.larger[name] = tuple(larger)

    def to_dict(self) -> dict[str, Any]:
        return {"modality": self.modality, "classes": len(self.classes), "per_class": self.counts,
                "train": self.train, "val": self.val, "test": self.test, "val_source": self.val_source,
                "measured": self.measured, "larger_if_affordable": self.larger,
                "settings": {k: {"value": v, "why": self.reasons[k]} for k, v in self.settings.items()}}


def derive(modality: Modality, dataset: LabelledData, config: RunConfig, given: dict[str, Any],
           metric: str = "accuracy") -> Facts:
    """The facts of ``dataset`` (as the modality read it with ``config``); ``given``: the settings the user fixed.
    Imbalanced classes are weighted for macro-F1 (which rewards every class's recall); for accuracy, which
    rewards the large classes, the probe tries both and validation chooses (plan.py)."""
    counts = Counter(dataset.train.labels + dataset.val.labels)
    facts = Facts(modality.name, list(dataset.classes), {dataset.classes[c]: n for c, n in sorted(counts.items())},
                  len(dataset.train), len(dataset.val), len(dataset.test), dataset.val_source)
    ratio = max(counts.values()) / max(1, min(counts.values()))
    facts.measured["imbalance"] = round(ratio, 2)
    facts.measured["imbalanced"] = ratio >= IMBALANCE
    facts.decide("class_weights", "auto" if ratio >= IMBALANCE and metric == "macro_f1" else None,
                 f"largest class {ratio:.1f}x the smallest (weighted from {IMBALANCE:g}x for macro-F1)",
                 given=given)
    # what the modality's data settles
    facts.measured.update(modality.derive(dataset, config, functools.partial(facts.decide, given=given)))
    return facts
