"""What the data settles before anything is trained, read once: its modality, splits (a validation split of its
own, else a seeded stratified part of train; the test split is only counted), class balance, and the input
size (images: their own resolution; texts: their token lengths). Each derived setting says why; a setting the
user gave is kept and said so."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from transferkit.config import MAX_IMAGE_SIZE, MIN_IMAGE_SIZE, TOKENS_RANGE, RunConfig
from transferkit.modalities.base import LabelledData, Modality
from transferkit.strategies import parse_strategy

SAMPLE = 64  # image headers read for the resolution (headers only: no pixels are decoded)
TEXT_SAMPLE = 2000  # texts tokenized for their lengths
IMBALANCE = 3.0  # largest / smallest class at which classes are weighted
GRAY_SHARE = 0.8  # share of single-channel images at which the data is taken for digits or scans
MAX_TOKENS = 256  # longer texts are truncated: a step at 512 tokens costs 4x one at 256


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

    def decide(self, name: str, value: Any, why: str, given: dict[str, Any]) -> None:
        if name in given:
            self.settings[name], self.reasons[name] = given[name], "given"
        elif value is not None:
            self.settings[name], self.reasons[name] = value, why

    def to_dict(self) -> dict[str, Any]:
        return {"modality": self.modality, "classes": len(self.classes), "per_class": self.counts,
                "train": self.train, "val": self.val, "test": self.test, "val_source": self.val_source,
                "measured": self.measured,
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
                 f"largest class {ratio:.1f}x the smallest (weighted from {IMBALANCE:g}x for macro-F1)", given)
    derive_kind = DERIVERS.get(modality.name)  # a modality without one keeps its defaults
    if derive_kind is not None:
        derive_kind(facts, modality, dataset, config, given)
    return facts


def image_facts(facts: Facts, modality: Modality, dataset: LabelledData, config: RunConfig,
                given: dict[str, Any]) -> None:
    from PIL import Image

    rng = np.random.default_rng(config.seed)
    items = dataset.train.items
    picked = [items[i] for i in rng.choice(len(items), min(SAMPLE, len(items)), replace=False)]
    sides, gray = [], 0
    for path in picked:
        try:
            with Image.open(path) as image:  # the header only
                sides.append(min(image.size))
                gray += image.mode in ("1", "L", "LA", "I", "I;16", "F")
        except (OSError, ValueError):
            continue  # unreadable files are the reader's to report
    if not sides:
        return
    side = int(np.median(sides))
    facts.measured.update(median_side_px=side, grayscale_share=round(gray / len(sides), 2))
    # Twice the images' own side (at least 64): 28-32 px digits and CIFAR gain nothing from 224 px but 12x
    # the pixels per step; photos keep the backbone's own size.
    size = min(MAX_IMAGE_SIZE, max(64, MIN_IMAGE_SIZE, -(-2 * side // 32) * 32))
    if size < 224:
        facts.decide("image_size", size, f"images are {side} px (median shorter side): twice that, not 224", given)
    if gray / len(sides) >= GRAY_SHARE:
        facts.decide("augment", "affine", f"{gray}/{len(sides)} sampled images are single-channel (digits, scans): "
                                          "rotate/shift/zoom, never mirror", given)


def text_facts(facts: Facts, modality: Modality, dataset: LabelledData, config: RunConfig,
               given: dict[str, Any]) -> None:
    spec = modality.resolve(config, parse_strategy("linear-probe"))
    load = getattr(spec, "load_tokenizer", None)
    if load is None:
        return
    rng = np.random.default_rng(config.seed)
    items = dataset.train.items
    picked = [items[i] for i in rng.choice(len(items), min(TEXT_SAMPLE, len(items)), replace=False)]
    lengths = np.array([len(ids) for ids in load().encode(picked, TOKENS_RANGE[1])])
    p99 = int(np.percentile(lengths, 99))
    facts.measured.update(tokens_median=int(np.median(lengths)), tokens_p99=p99)
    # the next power of two over 99% of the texts: padding and attention cost follow the longest text of a batch
    length = int(min(MAX_TOKENS, max(32, 1 << max(0, p99 - 1).bit_length())))
    facts.decide("max_length", length, f"99% of texts have <= {p99} tokens", given)


DERIVERS = {"image": image_facts, "text": text_facts}  # what each kind of data settles, by modality name
