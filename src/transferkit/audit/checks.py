"""The checks that need no features: per-class counts, image sizes and text lengths (with what they imply), and
items that are blank, tiny, stretched, empty or very long."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np

from transferkit.audit.copies import THUMB
from transferkit.audit.items import SPLITS, AuditItems

TINY = 16  # px: an image side below this carries little a 224 px backbone can use
STRETCHED = 8.0  # aspect ratio past which a centre crop keeps a small part of the image
BLANK_STD = 2.0  # grey levels: an image this flat is blank (one colour)
LONG_WORDS = 10  # a text this many times the median length (and over 100 words) is very long
IMBALANCE = 3.0  # largest / smallest training class: past it, say how to weigh classes


@dataclass
class ItemIssue:
    index: int
    kind: str  # blank | tiny | stretched | unreadable | empty | very long
    detail: str


def image_facts(path: str) -> tuple[int, int, np.ndarray | None]:
    """(width, height, the grey THUMB x THUMB thumbnail; None when it cannot be decoded)."""
    from PIL import Image

    with Image.open(path) as image:
        width, height = image.size
        image.draft("RGB", (2 * THUMB, 2 * THUMB))  # JPEG decodes at up to 1/8 scale: neither use needs detail
        try:
            return width, height, np.asarray(image.convert("L").resize((THUMB, THUMB), Image.BOX), dtype=np.uint8)
        except (OSError, ValueError, Image.DecompressionBombError):
            return width, height, None


def image_checks(data: AuditItems) -> tuple[list[ItemIssue], dict[str, Any], np.ndarray]:
    """Item issues, sizes, and every image's grey thumbnail [n, THUMB, THUMB] (blank where unreadable), which the
    copy check compares: each image is decoded once."""
    from PIL import Image

    issues, sides = [], []
    thumbnails = np.zeros((len(data), THUMB, THUMB), dtype=np.uint8)
    for index, path in enumerate(data.items):
        try:
            width, height, thumbnail = image_facts(path)
        except (OSError, ValueError, Image.DecompressionBombError) as exc:
            issues.append(ItemIssue(index, "unreadable", str(exc).splitlines()[0][:200]))
            continue
        sides.append((width, height))
        spread = None if thumbnail is None else float(thumbnail.std())
        if thumbnail is not None:
            thumbnails[index] = thumbnail
        if min(width, height) < TINY:
            issues.append(ItemIssue(index, "tiny", f"{width}x{height} px"))
        if max(width, height) / max(1, min(width, height)) > STRETCHED:
            issues.append(ItemIssue(index, "stretched", f"{width}x{height} px"))
        if spread is not None and spread < BLANK_STD:
            issues.append(ItemIssue(index, "blank", f"grey-level spread {spread:.1f}"))
    widths, heights = (np.asarray([s[i] for s in sides] or [0]) for i in (0, 1))
    size = {"median_width": int(np.median(widths)), "median_height": int(np.median(heights)),
            "min_side": int(min(widths.min(), heights.min())), "max_side": int(max(widths.max(), heights.max()))}
    return issues, size, thumbnails


def text_checks(data: AuditItems) -> tuple[list[ItemIssue], dict[str, Any], None]:
    words = np.asarray([len(text.split()) for text in data.items])
    median = float(np.median(words)) if len(words) else 0.0
    issues = [ItemIssue(i, "empty", "no words") for i in np.flatnonzero(words == 0).tolist()]
    long = np.flatnonzero((words > LONG_WORDS * max(median, 1.0)) & (words > 100))
    issues += [ItemIssue(int(i), "very long", f"{words[i]} words (median {median:.0f})") for i in long]
    size = {"median_words": median, "p95_words": float(np.percentile(words, 95)) if len(words) else 0.0,
            "max_words": int(words.max()) if len(words) else 0}
    return issues, size, None


def balance(data: AuditItems) -> dict[str, Any]:
    """Items per class and split, and the training classes' imbalance with what it implies."""
    counts = {split: Counter(data.labels[data.splits == split].tolist()) for split in SPLITS}
    per_class = {name: {split: counts[split].get(c, 0) for split in SPLITS} for c, name in enumerate(data.classes)}
    train = [row["train"] for row in per_class.values()]
    ratio = max(train) / max(1, min(train)) if train else 1.0
    advice = (f"the largest training class has {ratio:.1f}x the smallest: train with --class-weights auto or "
              "--balanced-sampler" if ratio >= IMBALANCE else "classes are balanced enough for the defaults")
    return {"per_class": per_class, "imbalance": round(ratio, 3), "advice": advice}
