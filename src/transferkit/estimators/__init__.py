"""Estimators: one :class:`TransferClassifier` core and a class per modality (``ImageClassifier``,
``TextClassifier``); which one fits some data, or loads a run, is asked of the modalities in turn."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from transferkit.errors import DataError, RunDirError
from transferkit.estimators.core import TransferClassifier, classifier_class
from transferkit.estimators.image import ImageClassifier
from transferkit.estimators.text import TextClassifier
from transferkit.modalities import MODALITIES
from transferkit.runs.rundir import read_run, run_format

__all__ = ["ImageClassifier", "TextClassifier", "TransferClassifier", "classifier_class", "classifier_for_data",
           "load_classifier"]


def classifier_for_data(data: Any) -> type[TransferClassifier]:
    """The classifier class for training data: the first modality that accepts it."""
    for modality in MODALITIES:
        if modality.accepts(data):
            return classifier_class(modality)
    what = str(data) if isinstance(data, (str, Path)) else repr(data)[:80]
    found = "not data transferkit reads"
    if isinstance(data, (str, Path)) and not Path(data).exists():
        found = "not found"
    elif isinstance(data, (str, Path)) and not (Path(data).is_file() or Path(data).is_dir()):
        found = "not a regular file (a device, pipe or socket)"
    raise DataError(f"{what}: {found}; pass {' or '.join(m.data_hint for m in MODALITIES)}")


def load_classifier(path: str | Path, cache_dir: str | Path | None = None) -> TransferClassifier:
    """A saved run, as the classifier of the modality whose format it is (features cached in ``cache_dir``, else
    the default cache)."""
    found = run_format(path)
    for modality in MODALITIES:
        if found == modality.run_format:
            return classifier_class(modality).load(path, cache_dir)
    read_run(path)  # a missing or incomplete run folder says so
    raise RunDirError(f"{path}: model.safetensors has format {found or 'none'!r}, which no modality reads "
                      f"({', '.join(m.run_format for m in MODALITIES)})")
