"""Rank backbones on labelled data before training: every score on each backbone's cached features, with the
seconds each took, and a recommendation (``transferkit rank``; :func:`rank` from Python)."""

from __future__ import annotations

import time
from collections import Counter
from typing import Any, Callable, Sequence

import numpy as np
from threadpoolctl import threadpool_limits

from transferkit.config import RunConfig
from transferkit.features.ranks import across_ranks
from transferkit.progress import log
from transferkit.selection.candidates import (Backbone, LabelledItems, SourceHead, check_counts, default_backbones,
                                              featurize, modality_of, read_items, resolve_backbones, source_head)
from transferkit.selection.crossval import MAX_FOLDS, fold_count, knn_accuracy, probe_accuracy, stratified_folds
from transferkit.selection.evidence import logme
from transferkit.selection.hscore import h_score
from transferkit.selection.recommend import Candidate, recommend
from transferkit.selection.source import leep, nce, source_confidence, source_probabilities

# name, what the table calls it, decimals it shows; "higher is better" holds for every one
SCORES = (("logme", "LogME", 4), ("h_score", "H-score", 4), ("nce", "NCE", 4), ("leep", "LEEP", 4),
          ("knn_accuracy", "kNN acc", 3), ("probe_accuracy", "probe acc", 3))


def timed(compute: Callable[[], float]) -> dict[str, float]:
    start = time.perf_counter()
    value = compute()
    return {"value": round(float(value), 6), "seconds": round(time.perf_counter() - start, 3)}


def score_features(features: np.ndarray, labels: np.ndarray, folds: np.ndarray, standardize: bool,
                   head: SourceHead | None, seed: int = 0) -> tuple[dict[str, dict[str, float] | None], dict[str, Any]]:
    """({score: {"value", "seconds"} or None where it does not apply}, what the source classifier says)."""
    # One BLAS thread: these decompositions and products are small to medium (n x 1280), and on this project's
    # 2-core machine, busy with other jobs, threaded BLAS made all six scores 10-20x slower (1,000 x 1,280:
    # 103 s against 5.7 s; 244 x 1,280: 9.9 s against 0.5 s).
    with threadpool_limits(1, user_api="blas"):
        return all_scores(features, labels, folds, standardize, head, seed)


def all_scores(features: np.ndarray, labels: np.ndarray, folds: np.ndarray, standardize: bool,
               head: SourceHead | None, seed: int) -> tuple[dict[str, dict[str, float] | None], dict[str, Any]]:
    scores: dict[str, dict[str, float] | None] = {
        "logme": timed(lambda: logme(features, labels)),
        "h_score": timed(lambda: h_score(features, labels)),
        "nce": None, "leep": None,
    }
    source: dict[str, Any] = {"classes": None, "confidence": None, "seconds": None}
    if head is not None:
        start = time.perf_counter()
        proba = source_probabilities(features, *head)
        source = {"classes": int(proba.shape[1]), "confidence": round(source_confidence(proba), 6),
                  "seconds": round(time.perf_counter() - start, 3)}
        scores["nce"] = timed(lambda: nce(proba.argmax(axis=1), labels))
        scores["leep"] = timed(lambda: leep(proba, labels))
    scores["knn_accuracy"] = timed(lambda: knn_accuracy(features, labels, folds))
    scores["probe_accuracy"] = timed(lambda: probe_accuracy(features, labels, folds, standardize, seed))
    return scores, source


def rank_one(modality: Any, backbone: Backbone, data: LabelledItems, n_folds: int) -> dict[str, Any]:
    """One backbone's row: features (through the cache), its source classifier, every score. Under a launch
    every rank ranks the same backbones on the same items, so the extraction is split across them
    (features/ranks.py); only rank 0 prints the answer (cli/rank.py)."""
    with across_ranks():
        result = featurize(modality, backbone, data.items)
    labels = data.labels[result.ok]
    check_counts(data.classes, labels, backbone.config.data)
    folds = stratified_folds(labels, n_folds, backbone.config.seed)
    start = time.perf_counter()
    head = source_head(modality, backbone, result.features.shape[1])
    head_seconds = time.perf_counter() - start
    scores, source = score_features(result.features, labels, folds, not result.normalized, head, backbone.config.seed)
    if source["seconds"] is not None:
        source["seconds"] = round(source["seconds"] + head_seconds, 3)
    stats = {key: result.stats.get(key) for key in ("cached", "extracted", "seconds", "engine", "export_seconds")}
    row = {"backbone": backbone.name, "image_size": backbone.image_size, "label": backbone.label,
           "fingerprint": backbone.spec.fingerprint, "n": int(len(labels)),
           "num_features": int(result.features.shape[1]), "features": stats, "source_head": source, "scores": scores}
    shown = ", ".join(f"{name} {s['value']:.4g}" for name, s in scores.items() if s is not None)
    log(f"rank: {backbone.label}: {shown}")
    return row


def rank(data: Any, backbones: Sequence[str] | None = None, image_sizes: Sequence[int] | None = None,
         folds: int = MAX_FOLDS, **settings: Any) -> dict[str, Any]:
    """Score each backbone (at each of ``image_sizes``, else its own) on the labelled ``data`` and recommend one
    with a strategy. ``settings`` are :class:`~transferkit.config.RunConfig` fields (``engine``, ``cache_dir``,
    ``seed``, ``text_column``, ...). Returns a JSON-ready dict: ``rows`` (one per backbone and size: scores
    with their seconds, feature statistics), ``recommendation``, counts and timings."""
    start = time.perf_counter()
    modality = modality_of(data)
    base = RunConfig(data=str(data), **settings)
    base.validate()
    names = list(backbones) if backbones else default_backbones(modality)
    candidates = resolve_backbones(modality, base, names, list(image_sizes) if image_sizes else None)
    items = read_items(modality, data, base)
    check_counts(items.classes, items.labels, data)
    counts = Counter(items.labels.tolist())
    n_folds = fold_count(items.labels, folds)
    log(f"rank: {len(items.items)} labelled items ({items.source}), {len(items.classes)} classes, {n_folds}-fold "
        f"cross-validation, {len(candidates)} backbone(s)")
    rows = [rank_one(modality, backbone, items, n_folds) for backbone in candidates]
    per_class = min(counts.values())
    choice = recommend([Candidate(row["label"], row["scores"]["probe_accuracy"]["value"],
                                  row["scores"]["logme"]["value"], row["n"], row["source_head"]["confidence"])
                        for row in rows], per_class)
    for i, row in enumerate(rows):
        row["recommended"] = i == choice.index
    return {"data": str(data), "modality": modality.name, "items": len(items.items), "items_from": items.source,
            "classes": len(items.classes), "per_class": {items.classes[c]: n for c, n in sorted(counts.items())},
            "folds": n_folds, "rows": rows,
            "recommendation": {**choice.to_dict(), "name": rows[choice.index]["backbone"],
                               "image_size": rows[choice.index]["image_size"]},
            "seconds": round(time.perf_counter() - start, 3)}
