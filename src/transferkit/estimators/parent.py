"""Continuing a finished run on new data (``train --from RUN``): the run's network is the backbone (under its
fingerprint, so its cached features are reused), its head keeps the rows of the classes it knows and grows a
row per new class, and the new run records its parent and is scored on the parent's validation data too, so
forgetting shows next to the new accuracy."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from transferkit.errors import DataError, arg
from transferkit.estimators.heldout import heldout_split
from transferkit.heads.probe import ProbeHead
from transferkit.progress import log
from transferkit.runs.rundir import run_format

# a TransferClassifier: not imported, as estimators.core imports this module
Classifier = Any


def load_parent(cls: type, path: str) -> Classifier:
    """The run ``--from`` names, as ``cls`` (the new data's classifier): a run of another modality says so."""
    found, wanted = run_format(path), cls.modality.run_format
    if found and found != wanted:
        raise DataError(f"{arg('init_from', path, '--from')}: the run was trained on another kind of data (its model "
                        f"has format {found!r}, not {wanted!r}); continue a run trained on {cls.modality.name} data, "
                        f"or train a new run without {arg('init_from', option='--from')}")
    return cls.load(path)


def check_data_kind(modality: Any, data: Any, instead: str) -> None:
    """Data of another modality given to a model of ``modality`` (a .csv to an image run) is named as such,
    not as a missing folder; ``instead`` says what to do rather than this."""
    if not isinstance(data, (str, Path)) or modality.accepts(data):
        return
    from transferkit.modalities import MODALITIES  # lazy: the modalities import the estimators' dependencies

    other = next((m for m in MODALITIES if m is not modality and m.accepts(data)), None)
    if other is not None:
        raise DataError(f"{data}: {other.name} data, which this model (trained on {modality.name} data) does not "
                        f"read; pass {modality.data_hint}, or {instead}")


def check_parent_classes(parent: Classifier, path: str, classes: list[Any]) -> None:
    """Before any work: the new data has every class the parent run ``path`` knows (the new model is scored on
    the parent's data, and its head keeps their rows). Classes that are renamed are new classes to it."""
    known, given = [str(c) for c in parent.classes_], [str(c) for c in classes]
    missing = [c for c in known if c not in given]
    if missing:
        raise DataError(f"{arg('init_from', path, '--from')}: the run knows class(es) {listed(missing)}, which the "
                        f"new data lacks (it has {listed(given)}); give the new data those classes too (a renamed "
                        f"class is a new one), or train a new run without {arg('init_from', option='--from')}")


def listed(names: list[str], limit: int = 5) -> str:
    return ", ".join(names[:limit]) + (f" and {len(names) - limit} more" if len(names) > limit else "")


def grown_head(parent: Classifier, classes: list[str]) -> ProbeHead:
    """The parent's head for ``classes`` (every class it knows among them: :func:`check_parent_classes`): known
    classes keep their rows; a new class starts at zero weights and the parent's mean bias (no preference until
    it trains)."""
    known = [str(c) for c in parent.classes_]
    head = parent.head_
    weight = np.zeros((len(classes), head.weight.shape[1]), np.float32)
    bias = np.full(len(classes), float(np.mean(head.bias)), np.float32)
    for row, name in enumerate(classes):
        if name in known:
            weight[row], bias[row] = head.weight[known.index(name)], head.bias[known.index(name)]
    added = [c for c in classes if c not in known]
    if added:
        log(f"head grows by {len(added)} class(es): {', '.join(added[:5])}")
    return ProbeHead(weight, bias, head.l2)


def parent_record(parent: Classifier, path: str) -> dict[str, Any]:
    return {"run": str(Path(path).resolve()), "backbone": parent.config.backbone,
            "classes": [str(c) for c in parent.classes_],
            "old_val_before": (parent.metrics_.get("val") or {}).get("accuracy")}


def score_on_parent_data(model: Classifier, parent: Classifier) -> dict[str, Any]:
    """The new model's accuracy on the parent's validation data (read again from its config), when that data
    is still there; the run says so otherwise."""
    try:
        split, source = heldout_split(parent)
    except DataError as exc:
        return {"old_val_after": None, "old_val_note": str(exc)}
    names = [str(c) for c in parent.classes_]
    report = model.evaluate(list(split.items), [names[y] for y in split.labels])
    return {"old_val_after": report["accuracy"], "old_val_source": source, "old_val_n": report["n"]}
