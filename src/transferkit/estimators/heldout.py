"""A run's validation data, read again from its config: an export's parity check and the HTML report look at
the model on the data it was validated on (or on labelled data the user names)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from transferkit.errors import DataError, arg
from transferkit.modalities.base import Split

# a TransferClassifier: not imported, as estimators.core imports this module
Classifier = Any


def heldout_split(clf: Classifier, data: Any = None) -> tuple[Split, str]:
    """(items with labels indexed by the run's classes, where they come from).

    Without ``data``: the run's validation split, as its config reads it (a fraction of train is split off
    with the same seed), else its test split. ``data``: a labelled folder or file of the run's modality."""
    names = [str(c) for c in clf.classes_]
    config = clf.config
    if data is not None:
        if not Path(data).exists():
            raise DataError(f"{data}: not found; pass labelled data ({clf.modality.data_hint})")
        split, _ = clf.modality.read_labelled(str(data), None, names, config)
        return split, str(data)
    source = config.data
    if not source or not Path(source).exists():
        where = f"its training data {source} is not on this machine" if source else "it was trained on data in memory"
        raise DataError(f"run of {config.backbone}: {where}, so its validation split cannot be read again; pass "
                        f"{arg('data', api='data=')} with labelled data ({clf.modality.data_hint})")
    dataset = clf.read_data(source, None, config.val_data, config)
    if [str(c) for c in dataset.classes] != names:
        raise DataError(f"{source}: its classes are now {', '.join(dataset.classes)}, not the run's "
                        f"({', '.join(names)}); pass {arg('data', api='data=')} with labelled data of the run's "
                        "classes")
    if len(dataset.val):
        return dataset.val, f"validation split ({dataset.val_source})"
    if len(dataset.test):
        return dataset.test, f"test split ({config.test_data})"
    raise DataError(f"{source}: the run has no validation or test data to check it on; pass "
                    f"{arg('data', api='data=')} with labelled data ({clf.modality.data_hint})")


def capped(split: Split, limit: int) -> Split:
    """At most ``limit`` items, spread evenly over the split (so every part of a sorted split is seen)."""
    if len(split) <= limit:
        return split
    return split.take(sorted(set(np.linspace(0, len(split) - 1, limit).round().astype(int).tolist())))
