"""Images given in memory (PIL images or numpy arrays), as scikit-learn users pass them to ``predict``.

They go through the same preprocessing and engine as files, but not through the feature cache, which is
keyed by file (path, size, modification time): an array has no such identity.
"""

from __future__ import annotations

import time
from typing import Any, Sequence

import numpy as np
from PIL import Image

from transferkit.errors import DataError
from transferkit.modalities.base import Featurized
from transferkit.modalities.image.features import FeatureSource
from transferkit.modalities.image.images import check_image_size, to_rgb


def is_in_memory(item: Any) -> bool:
    return isinstance(item, (Image.Image, np.ndarray))


def as_items(inputs: Any) -> list[Any]:
    """One item per image: a 4-d array (N, H, W, C) is a batch of N images."""
    if isinstance(inputs, np.ndarray):
        return list(inputs) if inputs.ndim == 4 else [inputs]
    return [inputs] if isinstance(inputs, Image.Image) else list(inputs)


def to_image(item: Any, position: int) -> Image.Image:
    """A PIL image in RGB; arrays are HxW or HxWxC, uint8 or floats in [0, 1]."""
    if isinstance(item, Image.Image):
        image = item
    else:
        array = np.asarray(item)
        if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (1, 3, 4)):
            raise DataError(f"image {position}: an array of shape {array.shape}; expected HxW or HxWxC (C = 1, 3 "
                            "or 4)")
        if array.dtype != np.uint8:
            array = np.clip(np.nan_to_num(array.astype(np.float32)) * 255.0, 0, 255).astype(np.uint8)
        image = Image.fromarray(array[..., 0] if array.ndim == 3 and array.shape[2] == 1 else array)
    try:
        check_image_size(*image.size)
    except ValueError as exc:
        raise DataError(f"image {position}: {exc}") from None
    return to_rgb(image)


def featurize_images(source: FeatureSource, items: Sequence[Any], engine: str, batch_size: int,
                     cache_dir: str | None) -> Featurized:
    start = time.perf_counter()
    run = source.open(engine, cache_dir)
    rows = []
    for first in range(0, len(items), batch_size):
        batch = [source.preprocessing.resize_and_crop(to_image(item, first + i))
                 for i, item in enumerate(items[first:first + batch_size])]
        rows.append(run(np.stack(batch)))
    features = np.concatenate(rows).astype(np.float32, copy=False) if rows else np.zeros((0, 0), np.float32)
    stats = {"cached": 0, "extracted": len(items), "seconds": round(time.perf_counter() - start, 3), "engine": run.name}
    return Featurized(features, np.ones(len(items), dtype=bool), [], stats)
