"""Classification metrics: accuracy, macro-F1, per-class report, confusion matrix, calibration (ECE)."""

from __future__ import annotations

from typing import Any

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
    }
