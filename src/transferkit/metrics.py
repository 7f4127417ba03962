"""Classification metrics: accuracy, macro-F1, per-class report, confusion matrix, calibration (ECE), and
which items were right."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from typing import Any, Sequence

import numpy as np


def expected_calibration_error(proba: np.ndarray, labels: np.ndarray, bins: int = 15) -> float:
    confidence = proba.max(axis=1)
    correct = proba.argmax(axis=1) == labels
    edges = np.linspace(0.0, 1.0, bins + 1)
    ece = 0.0
    for low, high in zip(edges[:-1], edges[1:]):
        in_bin = (confidence > low) & (confidence <= high)
        if in_bin.any():
            ece += in_bin.mean() * abs(correct[in_bin].mean() - confidence[in_bin].mean())
    return float(ece)


def classification_metrics(labels: np.ndarray, proba: np.ndarray, classes: list[str]) -> dict[str, Any]:
    """One JSON-ready dict: top-level ``accuracy`` and ``macro_f1``, ``per_class`` entries, ``confusion_matrix``.

    Computed from the confusion matrix in numpy (same definitions as scikit-learn's, zero_division=0): importing
    ``sklearn.metrics`` alone costs a second of start-up on every command.
    """
    labels = np.asarray(labels, dtype=np.int64)
    predicted = proba.argmax(axis=1)
    k = len(classes)
    matrix = np.bincount(labels * k + predicted, minlength=k * k).reshape(k, k)
    true_positive = np.diag(matrix).astype(np.float64)
    support, predicted_count = matrix.sum(axis=1), matrix.sum(axis=0)
    precision = np.divide(true_positive, predicted_count, out=np.zeros(k), where=predicted_count > 0)
    recall = np.divide(true_positive, support, out=np.zeros(k), where=support > 0)
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros(k), where=precision + recall > 0)
    present = support > 0
    nll = -np.log(np.clip(proba[np.arange(len(labels)), labels], 1e-12, None)).mean() if len(labels) else 0.0
    return {
        "n": int(len(labels)),
        "accuracy": float((predicted == labels).mean()) if len(labels) else 0.0,
        "macro_f1": float(f1[present].mean()) if present.any() else 0.0,
        "log_loss": float(nll),
        "ece": expected_calibration_error(proba, labels) if len(labels) else 0.0,
        "per_class": {
            str(name): {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]),
                   "support": int(support[i])}
            for i, name in enumerate(classes)
        },
        "confusion_matrix": matrix.tolist(),
        # per item in the split's order, "1" right and "0" wrong: compare's paired verdict between runs needs
        # it, and one character per item keeps metrics.json small
        "correct": correct_string(predicted == labels),
    }


def correct_string(correct: np.ndarray) -> str:
    """``[True, False, True]`` -> ``"101"``."""
    return (np.asarray(correct, dtype=np.uint8) + ord("0")).tobytes().decode("ascii")


SCORED_SPLITS = ("test", "val")  # a run is compared item by item on its test split, else its validation split


def scored_split(metrics: dict[str, Any]) -> str | None:
    """The split a run is compared on item by item: its test split, else its validation split."""
    return next((name for name in SCORED_SPLITS if isinstance(metrics.get(name), dict)), None)


def items_digest(items: Sequence[str], labels: Sequence[int]) -> str:
    """Which items, with which labels, in which order: equal digests mean two runs' ``correct`` strings line up."""
    text = json.dumps([list(items), [int(label) for label in labels]])  # ASCII: a non-UTF-8 name hashes too
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


def record_scored_items(metrics: dict[str, Any], splits: Any, skipped: list[dict[str, Any]]) -> None:
    """Add ``items`` (:func:`items_digest`) to the metrics of the scored split: ``splits``' split of that name
    (``.items``, ``.labels``) less the ``skipped`` items fit could not read. Left out, so that no verdict pairs
    the run, when what is left does not match what was scored (count, labels per class)."""
    name = scored_split(metrics)
    if name is None:
        return
    split = getattr(splits, name)
    failed = {row.get("item") for row in skipped if isinstance(row, dict)}
    kept = [(item, label) for item, label in zip(split.items, split.labels) if item not in failed]
    scored, support = metrics[name], Counter(label for _, label in kept)
    expected = [row.get("support") for row in (scored.get("per_class") or {}).values()]
    if len(kept) == scored.get("n") and [support[i] for i in range(len(expected))] == expected:
        scored["items"] = items_digest([item for item, _ in kept], [label for _, label in kept])
