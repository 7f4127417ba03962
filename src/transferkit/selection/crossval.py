"""Cross-validated accuracies on frozen features: k-nearest neighbours (cosine) and the linear probe.

Both use the same stratified folds. The probe is :func:`transferkit.heads.probe.fit_probe`, the head
``transferkit train`` fits; inside each fold its L2 strength is chosen on a stratified part of that fold's
training items and the head refitted on all of them, so no held-out item ever picks a setting.
"""

from __future__ import annotations

import numpy as np

from transferkit.heads.probe import fit_probe

MAX_FOLDS = 5
KNN_K = 10  # neighbours that vote, at most (fewer when a class has fewer training items in a fold)
KNN_CHUNK = 1024  # held-out rows per similarity block: bounds the memory of a large data set


def fold_count(labels: np.ndarray, most: int = MAX_FOLDS) -> int:
    """Folds for ``labels``: ``most``, or fewer so that the smallest class has an item in each (at least 2)."""
    counts = np.bincount(np.asarray(labels, dtype=np.int64))
    return max(2, min(most, int(counts[counts > 0].min())))


def stratified_folds(labels: np.ndarray, n_folds: int, seed: int = 0) -> np.ndarray:
    """A fold number per item: each class's items, shuffled, dealt round the folds in turn (the deal goes on
    from class to class, so the folds also have about the same size)."""
    y = np.asarray(labels, dtype=np.int64)
    rng = np.random.default_rng(seed)
    order = np.concatenate([rng.permutation(np.flatnonzero(y == c)) for c in np.unique(y)])
    folds = np.empty(len(y), dtype=np.int64)
    folds[order] = np.arange(len(y)) % n_folds
    return folds


def knn_predict(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, n_classes: int,
                k: int = KNN_K) -> np.ndarray:
    """Labels of ``test_x`` by its ``k`` most cosine-similar training rows, each voting with its similarity."""
    k = max(1, min(k, len(train_y)))
    train = unit_rows(train_x)
    predicted = np.empty(len(test_x), dtype=np.int64)
    for start in range(0, len(test_x), KNN_CHUNK):
        similarity = unit_rows(test_x[start:start + KNN_CHUNK]) @ train.T
        nearest = np.argpartition(-similarity, k - 1, axis=1)[:, :k]
        votes = np.zeros((len(similarity), n_classes))
        rows = np.arange(len(similarity))[:, None]
        np.add.at(votes, (rows, train_y[nearest]), similarity[rows, nearest])
        predicted[start:start + len(similarity)] = votes.argmax(axis=1)
    return predicted


def unit_rows(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def knn_accuracy(features: np.ndarray, labels: np.ndarray, folds: np.ndarray, k: int = KNN_K) -> float:
    """Cross-validated accuracy of :func:`knn_predict`; ``k`` is capped by the smallest class of each fold's
    training items, so a few-shot class is not outvoted by the others' numbers alone."""
    y = np.asarray(labels, dtype=np.int64)
    n_classes = int(y.max()) + 1
    correct = 0
    for fold in np.unique(folds):
        test, train = folds == fold, folds != fold
        smallest = int(np.bincount(y[train], minlength=n_classes)[np.unique(y)].min())
        predicted = knn_predict(features[train], y[train], features[test], n_classes, min(k, max(1, smallest)))
        correct += int((predicted == y[test]).sum())
    return correct / len(y)


def probe_accuracy(features: np.ndarray, labels: np.ndarray, folds: np.ndarray, standardize: bool = True,
                   seed: int = 0) -> float:
    """Cross-validated accuracy of the linear probe (``standardize=False`` for normalised embeddings, as the
    probe of ``transferkit train`` does for them)."""
    y = np.asarray(labels, dtype=np.int64)
    n_classes = int(y.max()) + 1
    correct = 0
    for fold in np.unique(folds):
        test, train = folds == fold, folds != fold
        x_train, y_train = features[train], y[train]
        inner = stratified_folds(y_train, MAX_FOLDS, seed + 1 + int(fold))
        # a class with a single training item here keeps it for training
        val = (inner == 0) & (np.bincount(y_train, minlength=n_classes)[y_train] >= 2)
        head = fit_probe(x_train[~val], y_train[~val], n_classes, x_train[val], y_train[val], refit=True,
                         standardize=standardize)
        correct += int((head.predict_proba(features[test]).argmax(axis=1) == y[test]).sum())
    return correct / len(y)
