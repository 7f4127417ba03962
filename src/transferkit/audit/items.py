"""What an audit reads: every labelled item of the data, train, val and test alike, with the split it sits in.

Items are read exactly as ``transferkit train`` reads them (the modality's reader, the same options), so what an
audit flags is what training would see; an exclusions file written from it names items as training names them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from transferkit.config import RunConfig
from transferkit.errors import DataError
from transferkit.exclusions import item_name
from transferkit.modalities.base import LabelledData, Modality, Split

SPLITS = ("train", "val", "test")


@dataclass
class AuditItems:
    """Every item with its integer label, its split and, for text rows, its line in the file it came from."""

    classes: list[str]
    items: list[str]
    labels: np.ndarray  # int64 [n]
    splits: np.ndarray  # str [n]: "train" | "val" | "test"
    lines: list[int] | None  # text rows: 1-based line in their file; images: None
    files: dict[str, str]  # split -> the file or folder it was read from

    def __len__(self) -> int:
        return len(self.items)

    def where(self, index: int) -> str:
        """How the item is named to the user and in an exclusions file: an image's path, a text row's file:line."""
        line = None if self.lines is None else self.lines[index]
        return item_name(self.items[index], line, self.files[str(self.splits[index])])

    def subset(self, keep: np.ndarray) -> "AuditItems":
        index = np.flatnonzero(keep)
        lines = None if self.lines is None else [self.lines[i] for i in index]
        return AuditItems(self.classes, [self.items[i] for i in index], self.labels[index], self.splits[index],
                          lines, self.files)


def read_items(modality: Modality, data: Any, config: RunConfig) -> AuditItems:
    """Train (and its own val/ or --val-data) and test (test/ or --test-data); nothing is split off train."""
    dataset: LabelledData = modality.read_training(data, None, config.val_data, config.replace(val_fraction=0.0))
    if config.test_data:
        dataset.test, _ = modality.read_labelled(config.test_data, None, dataset.classes, config)
    parts: list[tuple[str, Split]] = [("train", dataset.train), ("val", dataset.val), ("test", dataset.test)]
    items = [item for _, split in parts for item in split.items]
    if not items:
        raise DataError(f"{data}: no labelled items to audit")
    texts = dataset.train.lines is not None
    lines = [line for _, split in parts for line in (split.lines or [0] * len(split))] if texts else None
    files = {"train": str(data), "val": str(config.val_data or data), "test": str(config.test_data or data)}
    return AuditItems(list(dataset.classes), items,
                      np.asarray([y for _, split in parts for y in split.labels], dtype=np.int64),
                      np.asarray([name for name, split in parts for _ in split.items]), lines, files)
