"""A target domain's images for unsupervised domain adaptation: the unlabelled stream the loop trains on and,
when the folder has one sub-folder per class, labels that only score the run (never train or select).

A target folder is either flat (images, no labels) or ``<class>/<images>`` with the source's class names."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from transferkit.config import RunConfig
from transferkit.errors import DataError, not_found
from transferkit.modalities.base import Split
from transferkit.modalities.image.folders import is_tool_folder, labelled_split, list_image_inputs
from transferkit.modalities.image.images import is_image_file
from transferkit.modalities.image.preprocessing import Preprocessing
from transferkit.modalities.image.training import TrainImages, train_transform
from transferkit.train.data import EpochSampler, TrainData, loader_workers

NO_LABEL = -1  # what the target stream's dataset returns as a label: one-hot encoding it fails loudly
TARGET_SEED_OFFSET = 7919  # the target stream's order and augmentation differ from the source's


@dataclass
class TargetImages:
    """A target folder as read: its images, and their labels by the model's classes when it has class folders."""

    folder: str
    items: list[str]
    labels: list[int] | None = None  # indexes into the model's classes; None for a flat (unlabelled) folder
    skipped: list[dict[str, Any]] = field(default_factory=list)

    @property
    def labelled(self) -> bool:
        return self.labels is not None

    def scored(self) -> Split:
        """The labelled split that scores a run (refused for a flat folder)."""
        if self.labels is None:
            raise DataError(f"{self.folder}: the target images have no labels (a flat folder), so nothing can be "
                            "scored on them; give a folder with one sub-folder per class")
        return Split(list(self.items), list(self.labels))

    def describe(self) -> str:
        kind = "labelled (labels score the run only)" if self.labelled else "unlabelled"
        return f"target {len(self.items)} images, {kind}"


def check_target_folder(folder: str | Path) -> Path:
    path = Path(folder)
    if not path.is_dir():
        raise DataError(f"{folder}: {not_found(folder, 'target folder')}; pass a folder of images (unlabelled) or "
                        "with one sub-folder per class")
    return path


def read_target(folder: str | Path, classes: list[str]) -> TargetImages:
    """Flat images, or ``<class>/`` folders named like the source's ``classes``; one line on anything else."""
    path = check_target_folder(folder)
    entries = [entry for entry in sorted(path.iterdir()) if not is_tool_folder(entry.name)]
    folders = [entry for entry in entries if entry.is_dir()]
    loose = [entry for entry in entries if entry.is_file() and is_image_file(entry)]
    if folders and loose:
        raise DataError(f"{folder}: holds both images ({loose[0].name}) and sub-folders ({folders[0].name}); a target "
                        "folder is either flat images (unlabelled) or one sub-folder per class")
    if folders:
        split, skipped = labelled_split(path, classes)
        return TargetImages(str(folder), list(split.items), list(split.labels), skipped)
    return TargetImages(str(folder), list_image_inputs([path]))


def target_train_data(items: list[str], preprocessing: Preprocessing, config: RunConfig) -> TrainData:
    """The unlabelled stream: the target images through the training transform, in a seeded order of their
    own. Its labels are all :data:`NO_LABEL`, whatever the folder says, so nothing can train on them."""
    if not items:
        raise DataError("the target folder has no images to adapt to")
    labels = [NO_LABEL] * len(items)
    seed = config.seed + TARGET_SEED_OFFSET
    workers = config.workers if config.workers is not None else loader_workers()
    dataset = TrainImages(Split(list(items), labels), train_transform(preprocessing, config.augment),
                          preprocessing.resize_size, seed)
    return TrainData(dataset, EpochSampler(labels, seed), labels, workers=workers,
                     deterministic=config.augment == "none")
