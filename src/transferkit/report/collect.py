"""What a report shows of a run: its files (config, metrics, per-epoch history) and the model's predictions on
its validation data, read again from its config (or on labelled data the user names)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from transferkit.errors import DataError
from transferkit.estimators import load_classifier
from transferkit.estimators.core import TransferClassifier
from transferkit.estimators.heldout import capped, heldout_split
from transferkit.runs.rundir import RunFiles, read_run

MAX_ITEMS = 2000  # validation items the report predicts (spread over the split)


@dataclass
class Heldout:
    """The run's predictions on labelled items it was validated on."""

    source: str
    items: list[str]
    labels: np.ndarray  # int [n]
    proba: np.ndarray  # float [n, classes]
    lines: list[int] | None = None  # text rows: their line in the file
    unreadable: int = 0
    own_split: bool = True  # the run's own validation (or test) split, not data the user named


@dataclass
class RunReport:
    path: Path
    files: RunFiles
    clf: TransferClassifier
    heldout: Heldout | None
    missing: str = ""  # why there are no predictions to show (data not found, ...)

    @property
    def metrics(self) -> dict[str, Any]:
        return self.files.metrics

    @property
    def history(self) -> list[dict[str, Any]]:
        history = self.metrics.get("history")
        return [r for r in history if isinstance(r, dict)] if isinstance(history, list) else []

    @property
    def classes(self) -> list[Any]:
        return list(self.clf.classes_)


def collect(run: str | Path, data: Any = None) -> RunReport:
    """A run's files and, when its validation data (or ``data``) can be read, its predictions on it."""
    files = read_run(run)
    clf = load_classifier(run)
    clf.verbose = False
    try:
        heldout = predict_heldout(clf, data)
    except DataError as exc:
        return RunReport(Path(run), files, clf, None, str(exc))
    return RunReport(Path(run), files, clf, heldout)


def predict_heldout(clf: TransferClassifier, data: Any) -> Heldout:
    split, source = heldout_split(clf, data)
    split = capped(split, MAX_ITEMS)
    result = clf.featurize(split.items)  # through the run's own engine: no export
    kept = np.flatnonzero(result.ok)
    proba = (clf.head_.predict_proba(result.features) if len(kept)
             else np.zeros((0, len(clf.classes_)), np.float32))
    labels = np.asarray(split.labels, dtype=np.int64)[kept]
    lines = None if split.lines is None else [split.lines[i] for i in kept]
    return Heldout(source, [split.items[i] for i in kept], labels, proba, lines, len(split) - len(kept),
                   own_split=data is None)
