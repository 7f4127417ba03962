"""Decoding image files into fixed-size ``uint8`` batches, in parallel threads.

Pillow releases the GIL while decoding and resizing, so threads overlap with each other and with the
inference engine without the start-up and copy cost of worker processes.
"""

from __future__ import annotations

import os
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from transferkit.modalities.image.images import ImageRefused, load_rgb
from transferkit.modalities.image.preprocessing import Preprocessing


@dataclass
class DecodedBatch:
    indices: list[int]  # positions (in the input list) of the images that decoded
    images: np.ndarray  # uint8 [n, size, size, 3]
    failed: list[tuple[int, str]] = field(default_factory=list)  # (position, reason)


def decode_one(path: str | Path, preprocessing: Preprocessing) -> np.ndarray:
    return preprocessing.resize_and_crop(load_rgb(path, draft_size=preprocessing.resize_size))


def _safe_decode(path: str | Path, preprocessing: Preprocessing) -> np.ndarray | str:
    try:
        return decode_one(path, preprocessing)
    except ImageRefused as exc:  # our own reason, whole: it says what to do
        return f"refused: {exc}"
    except Exception as exc:  # noqa: BLE001 - any decoding failure means "unreadable file"
        return f"{type(exc).__name__}: {str(exc).strip()[:120]}"


def default_workers() -> int:
    return max(1, min(8, os.cpu_count() or 1))


def decode_batches(paths: Sequence[str | Path], preprocessing: Preprocessing, batch_size: int = 64,
                   workers: int | None = None) -> Iterator[DecodedBatch]:
    """Yield decoded batches in input order; the next batch decodes while the caller uses this one."""
    size = preprocessing.input_size
    starts = list(range(0, len(paths), batch_size))
    with ThreadPoolExecutor(max_workers=workers or default_workers()) as pool:
        def submit(start: int) -> list[Future]:
            return [pool.submit(_safe_decode, p, preprocessing) for p in paths[start:start + batch_size]]

        pending = submit(starts[0]) if starts else []
        for i, start in enumerate(starts):
            current = pending
            pending = submit(starts[i + 1]) if i + 1 < len(starts) else []
            images = np.empty((len(current), size, size, 3), dtype=np.uint8)
            indices, failed = [], []
            for offset, future in enumerate(current):
                result = future.result()
                if isinstance(result, str):
                    failed.append((start + offset, result))
                else:
                    images[len(indices)] = result
                    indices.append(start + offset)
            yield DecodedBatch(indices, images[: len(indices)], failed)
