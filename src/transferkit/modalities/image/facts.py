"""What image data settles for ``auto`` before anything is trained, from a sample of the images' headers (no
pixels are decoded): the input size from their own resolution, and ``--augment affine`` for digits and scans."""

from __future__ import annotations

from typing import Any

import numpy as np

from transferkit.config import MAX_IMAGE_SIZE, MIN_IMAGE_SIZE, RunConfig
from transferkit.modalities.base import Decide, LabelledData

SAMPLE = 64  # image headers read for the resolution (headers only: no pixels are decoded)
GRAY_SHARE = 0.8  # share of single-channel images at which the data is taken for digits or scans
# BiT-HyperRule (Kolesnikov et al., 2020) trains images under 96 px at 128 px crops. Measured on CIFAR-10 (10k,
# Lite1 gradual): 128 px reached val 0.831 after one full epoch, 64 px 0.821 after nine; so a fine-tune takes
# the larger sizes when the budget affords them (auto's plan measures the step there and chooses)
SMALL_SIDE = 96
LARGER_SIZES = (96, 128)


def image_facts(dataset: LabelledData, config: RunConfig, decide: Decide) -> dict[str, Any]:
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
        return {}
    side = int(np.median(sides))
    # Twice the images' own side (at least 64): 28-32 px digits and CIFAR gain nothing from 224 px but 12x
    # the pixels per step; photos keep the backbone's own size.
    size = min(MAX_IMAGE_SIZE, max(64, MIN_IMAGE_SIZE, -(-2 * side // 32) * 32))
    if size < 224:
        larger = tuple(s for s in LARGER_SIZES if s > size) if side < SMALL_SIDE else ()
        decide("image_size", size, f"images are {side} px (median shorter side): twice that, not 224", larger)
    if gray / len(sides) >= GRAY_SHARE:
        decide("augment", "affine", f"{gray}/{len(sides)} sampled images are single-channel (digits, scans): "
                                    "rotate/shift/zoom, never mirror")
    return {"median_side_px": side, "grayscale_share": round(gray / len(sides), 2)}
