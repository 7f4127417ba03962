"""Continuing a finished run on new data (``train --from RUN``): the run's network is the backbone (under its
fingerprint, so its cached features are reused), its head keeps the rows of the classes it knows and grows a
row per new class, and the new run records its parent and is scored on the parent's validation data too, so
forgetting shows next to the new accuracy."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from transferkit.errors import DataError
from transferkit.estimators.heldout import heldout_split
from transferkit.heads.probe import ProbeHead
from transferkit.progress import log

# a TransferClassifier: not imported, as estimators.core imports this module
Classifier = Any


def grown_head(parent: Classifier, classes: list[str]) -> ProbeHead:
    """The parent's head for ``classes``: known classes keep their rows; a new class starts at zero weights and
    the parent's mean bias (no preference until it trains)."""
    known = [str(c) for c in parent.classes_]
    missing = [c for c in known if c not in classes]
    if missing:
        raise DataError(f"the new data has no images/rows of class(es) {', '.join(missing[:5])} that run "
                        f"{parent.config.data or ''} knows; include some, or train a new run without --from")
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
