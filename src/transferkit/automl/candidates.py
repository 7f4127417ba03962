"""Which backbones are worth training: every offline-available one for the modality (plus ``--backbones``),
scored with ``rank``'s transferability scores on their cached features of the training items (never test),
kept by cross-validated probe accuracy, LogME breaking ties. A backbone whose extraction would not fit the
budget's share for ranking is left out, and the record says so."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from transferkit.automl.budget import Clock
from transferkit.config import RunConfig
from transferkit.features.engines import engine_dir
from transferkit.modalities.base import LabelledData, Modality
from transferkit.progress import log
from transferkit.selection.candidates import default_backbones, featurize, resolve_backbones
from transferkit.selection.crossval import fold_count, stratified_folds
from transferkit.selection.rank import score_features

RANK_ITEMS = 1500  # items scored per backbone: enough to order backbones, a fraction of a large set's extraction
# of the budget, at most, spent extracting features to rank. Not less: on 2 CPU cores a fine-tune rarely fits a
# budget of minutes (Lite1 @240: ~1 s per image forward and backward), so the probe wins and its quality is the
# backbone's; at 0.2 a 5-minute hymenoptera run ranked Lite0 only and left 250 s unused (Lite1: cv 0.971 vs 0.943)
RANK_SHARE = 0.4
HEAVIER = 2.5  # a larger candidate's extraction, against the first one's (Lite2 @260 vs Lite0 @224)
KEEP = 2  # backbones kept for training
EXPORT_SECONDS = 40.0  # a backbone's first ONNX export, as measured here (Lite1: 42 s on 2 busy cores)


@dataclass
class Ranked:
    """One backbone as ranked: its scores, or why it was not scored; seconds per item it took to extract."""

    name: str
    scores: dict[str, float]
    seconds: float
    per_item: float | None
    kept: bool = False
    why: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"backbone": self.name, "scores": self.scores, "seconds": round(self.seconds, 2),
                "extract_seconds_per_item": None if self.per_item is None else round(self.per_item, 5),
                "kept": self.kept, "why": self.why}


def rank_subset(dataset: LabelledData, seed: int) -> tuple[list[str], np.ndarray]:
    """Train + val items (the data's own val split, or the part held out of train; never test), at most
    :data:`RANK_ITEMS`, stratified."""
    items = dataset.train.items + dataset.val.items
    labels = np.asarray(dataset.train.labels + dataset.val.labels, dtype=np.int64)
    if len(items) <= RANK_ITEMS:
        return items, labels
    rng = np.random.default_rng(seed)
    share = RANK_ITEMS / len(items)
    picked = np.concatenate([rng.permutation(np.flatnonzero(labels == c))[:max(2, round(share * (labels == c).sum()))]
                             for c in np.unique(labels)])
    picked.sort()
    return [items[i] for i in picked], labels[picked]


def rank_backbones(modality: Modality, dataset: LabelledData, config: RunConfig, extra: Sequence[str],
                   clock: Clock) -> list[Ranked]:
    """Each candidate scored in turn (the packaged default first), best first; the first :data:`KEEP` kept."""
    names = list(dict.fromkeys([config.backbone, *default_backbones(modality), *extra]))
    sizes = [config.image_size] if config.image_size else None  # the facts' input size, where they set one
    backbones = resolve_backbones(modality, config, names, sizes)  # an unknown --backbones name fails here
    items, labels = rank_subset(dataset, config.seed)
    folds = stratified_folds(labels, fold_count(labels), config.seed)
    ranked: list[Ranked] = []
    for backbone in backbones:
        known = [r.per_item for r in ranked if r.per_item]
        estimate = (max(known) * HEAVIER * len(items)) if known else 0.0
        if not (engine_dir(backbone.spec.fingerprint, config.cache_dir) / modality.engine_file(backbone.spec)).is_file():
            estimate += EXPORT_SECONDS  # its engine is exported first
        if ranked and clock.used + estimate > RANK_SHARE * clock.budget:
            ranked.append(Ranked(backbone.name, {}, 0.0, None, why=f"not ranked: extracting its features (~{estimate:.0f} s)"
                                                                    " would pass the budget's share for ranking"))
            continue
        start = time.perf_counter()
        result = featurize(modality, backbone, items, show_progress=False)
        ok_labels = labels[result.ok]
        scores, _ = score_features(result.features, ok_labels, folds[result.ok], not result.normalized, None,
                                   config.seed)
        extracted = result.stats.get("extracted") or 0
        # the rate of extraction alone: a first export of the engine is counted in "seconds" too
        busy = (result.stats.get("seconds") or 0.0) - (result.stats.get("export_seconds") or 0.0)
        per_item = max(0.0, busy) / extracted if extracted else None
        values = {k: v["value"] for k, v in scores.items() if v is not None}
        ranked.append(Ranked(backbone.name, values, time.perf_counter() - start, per_item))
        log(f"auto: ranked {backbone.name}: cross-validated probe accuracy {values['probe_accuracy']:.3f}, "
            f"LogME {values['logme']:.3f} ({time.perf_counter() - start:.1f} s)")
    scored = sorted((r for r in ranked if r.scores), key=lambda r: (-r.scores["probe_accuracy"], -r.scores["logme"]))
    for i, row in enumerate(scored):
        row.kept = i < KEEP
        row.why = "kept" if row.kept else (f"ranked {i + 1}: cross-validated probe accuracy "
                                           f"{row.scores['probe_accuracy']:.3f} < {scored[0].scores['probe_accuracy']:.3f}")
    return scored + [r for r in ranked if not r.scores]
