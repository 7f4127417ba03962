"""``transferkit audit`` from Python: :func:`audit` reads the data as ``train`` does, takes every item's features
through the cache, and runs the checks; the result is a JSON-ready dict that the page and the CLI show."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable

import numpy as np

from transferkit.audit.checks import ItemIssue, balance, image_checks, text_checks
from transferkit.audit.copies import near_copies
from transferkit.audit.duplicates import (NEAR_SIMILARITY, NO_PAIRS, DuplicatePair, exact_pairs, file_digest, scan,
                                         text_key)
from transferkit.audit.items import SPLITS, AuditItems, read_items
from transferkit.audit.kinds import EXCLUSION_KINDS
from transferkit.audit.labels import LabelIssue, find_label_issues, out_of_fold_proba
from transferkit.audit.outliers import NEIGHBOURS, find_outliers, isolation
from transferkit.config import RunConfig
from transferkit.features.ranks import across_ranks
from transferkit.modalities.base import Modality
from transferkit.progress import log
from transferkit.selection.candidates import Backbone, featurize, modality_of
from transferkit.strategies import parse_strategy


def timed(seconds: dict[str, float], name: str, work: Callable[[], Any]) -> Any:
    start = time.perf_counter()
    result = work()
    seconds[name] = round(time.perf_counter() - start, 3)
    return result


def audit(data: Any, **settings: Any) -> dict[str, Any]:
    """Audit labelled ``data`` (an image folder or a text table; ``settings`` are RunConfig fields: backbone,
    image_size, val_data, test_data, engine, cache_dir, ...). Nothing in the data is modified."""
    start, seconds = time.perf_counter(), {}
    modality = modality_of(data)
    settings.setdefault("backbone", modality.default_backbone)
    config = RunConfig(data=str(Path(data).resolve()), **settings)
    config = config.replace(**{name: str(Path(value).resolve()) for name in ("val_data", "test_data")
                               if (value := getattr(config, name))})
    config.validate()
    items = timed(seconds, "read", lambda: read_items(modality, config.data, config))
    return audit_items(modality, items, config, seconds, start)


def audit_items(modality: Modality, items: AuditItems, config: RunConfig, seconds: dict[str, float] | None = None,
                start: float | None = None) -> dict[str, Any]:
    """The audit of items already read (``audit`` reads them from a folder or table; a bench plants its own)."""
    start, seconds = start or time.perf_counter(), seconds if seconds is not None else {}
    spec = modality.resolve(config, parse_strategy(config.strategy))
    counts = ", ".join(f"{split} {int((items.splits == split).sum())}" for split in SPLITS)
    log(f"audit: {len(items)} items ({counts}), {len(items.classes)} classes, features of {config.backbone}")
    with across_ranks():  # under a launch, every rank audits the same items: they share the extraction
        featurized = timed(seconds, "features", lambda: featurize(modality, Backbone(config.backbone, None, config,
                                                                                      spec), items.items))
    unreadable = [ItemIssue(int(i), "unreadable", why) for i, (_, why) in
                  zip(np.flatnonzero(~featurized.ok), featurized.failed)]
    rows = np.flatnonzero(featurized.ok)  # item index of each feature row
    features, labels = featurized.features, items.labels[rows]
    # The item checks (decoding every image: Python and PIL) run beside the probe's folds (NumPy, which lets go of
    # the GIL, one BLAS thread): on 2 cores the two overlap
    with ThreadPoolExecutor(1) as pool:
        checked = pool.submit(lambda: timed(seconds, "checks", lambda: (image_checks if items.lines is None
                                                                         else text_checks)(items)))
        keys = pool.submit(content_keys, items)
        proba = timed(seconds, "out_of_fold", lambda: out_of_fold_proba(
            features, labels, len(items.classes), not featurized.normalized, config.seed))
        issues, doubtful = timed(seconds, "label_issues", lambda: find_label_issues(labels, proba))
        checks, sizes, thumbnails = checked.result()
        keys = keys.result()
    exact = timed(seconds, "exact_duplicates", lambda: exact_pairs(keys))

    def same(i: int, j: int) -> bool:  # exact copies are listed once, as exact pairs
        return keys[i] is not None and keys[i] == keys[j]

    neighbours = timed(seconds, "neighbours", lambda: scan(
        features, NEIGHBOURS, threshold=NEAR_SIMILARITY if thumbnails is None else NO_PAIRS,
        skip=lambda i, j: same(rows[i], rows[j])))
    if thumbnails is None:  # texts: near copies are near-parallel features
        near = [DuplicatePair(int(rows[p.first]), int(rows[p.second]), p.similarity, False)
                for p in neighbours.pairs]
    else:  # images: candidates by features and layout, verified on their pixels
        near = timed(seconds, "copies", lambda: near_copies(thumbnails, item_neighbours(rows, neighbours.index,
                                                                                          len(items)), same))
    outliers = timed(seconds, "outliers", lambda: find_outliers(isolation(neighbours.similarity), features, labels))
    checked = {c.index for c in checks if c.kind == "unreadable"}
    unreadable = [c for c in unreadable if c.index not in checked]  # an image neither could open: listed once
    result = {
        "data": str(config.data), "modality": modality.name, "backbone": config.backbone, "classes": items.classes,
        "items": len(items), "splits": {s: int((items.splits == s).sum()) for s in SPLITS},
        "features": {k: featurized.stats.get(k) for k in ("cached", "extracted", "seconds", "engine")},
        "label_issues": [label_record(items, rows, issue) for issue in issues],
        "doubtful_labels": [label_record(items, rows, issue) for issue in doubtful],
        "duplicates": [pair_record(items, pair) for pair in exact + near],
        "near_pairs_total": neighbours.total_pairs if thumbnails is None else len(near),
        "outliers": [{"item": items.where(int(rows[o.index])), "split": str(items.splits[rows[o.index]]),
                      "label": items.classes[int(labels[o.index])], "score": o.score, "scope": o.scope,
                      "index": int(rows[o.index])} for o in outliers],
        "item_issues": [{"item": items.where(c.index), "split": str(items.splits[c.index]), "kind": c.kind,
                         "detail": c.detail, "index": c.index} for c in checks + unreadable],
        "balance": balance(items), "sizes": sizes,
    }
    result["exclusions"] = exclusions(result)
    result["texts"] = flagged_texts(items, result)
    result["seconds"] = {**seconds, "total": round(time.perf_counter() - start, 3)}
    log(f"audit: {len(result['label_issues'])} label issue(s), {len(result['duplicates'])} duplicate pair(s), "
        f"{len(result['outliers'])} outlier(s), {len(result['item_issues'])} item issue(s) in "
        f"{result['seconds']['total']:.1f} s")
    return result


def label_record(items: AuditItems, rows: np.ndarray, issue: LabelIssue) -> dict[str, Any]:
    index = int(rows[issue.index])
    return {"item": items.where(index), "split": str(items.splits[index]), "given": items.classes[issue.given],
            "suggested": items.classes[issue.suggested], "quality": issue.quality, "index": index}


def item_neighbours(rows: np.ndarray, index: np.ndarray, n_items: int) -> np.ndarray:
    """[n_items, k] each item's nearest others by features, as item indices (itself where it has no features)."""
    out = np.repeat(np.arange(n_items)[:, None], index.shape[1], axis=1)
    out[rows] = rows[index]
    return out


def flagged_texts(items: AuditItems, result: dict[str, Any]) -> dict[str, str]:
    """The texts of the flagged text rows by name, for the page (images show from their files)."""
    if items.lines is None:
        return {}
    indices = {r["index"] for key in ("label_issues", "doubtful_labels", "outliers", "item_issues")
               for r in result[key]}
    indices |= {i for pair in result["duplicates"] for i in pair["index"]}
    return {items.where(i): items.items[i] for i in sorted(indices)}


def content_keys(items: AuditItems) -> list[str | None]:
    """What makes two items exact copies: an image file's bytes, a text's words (case and spacing aside)."""
    if items.lines is None:
        return [file_digest(path) for path in items.items]
    return [text_key(text) for text in items.items]


def pair_record(items: AuditItems, pair: DuplicatePair) -> dict[str, Any]:
    first, second = pair.first, pair.second
    splits = (str(items.splits[first]), str(items.splits[second]))
    conflicting = bool(items.labels[first] != items.labels[second])
    kind = "leak" if splits[0] != splits[1] else "conflicting labels" if conflicting else "duplicate"
    return {"kind": kind, "exact": pair.exact, "similarity": pair.similarity, "splits": list(splits),
            "items": [items.where(first), items.where(second)],
            "labels": [items.classes[int(items.labels[first])], items.classes[int(items.labels[second])]],
            "index": [first, second]}


def exclusions(result: dict[str, Any]) -> list[dict[str, str]]:
    """Every training and validation item worth leaving out, with its kind (EXCLUSION_KINDS) and why, once per
    kind: flagged and doubtful labels, both copies of a conflicting pair, the later copy of a duplicate, the earlier
    split's copy of a leak (train's beside val or test, val's beside test), blank, unreadable and empty items. Outliers
    are listed for a look, never excluded (rare is not wrong)."""
    named: dict[tuple[str, str], str] = {}

    def add(item: str, split: str, kind: str, why: str) -> None:
        if split != "test":
            named.setdefault((item, kind), why)

    for issue in result["label_issues"]:
        add(issue["item"], issue["split"], "label", f"label issue: given {issue['given']}, looks like "
                                                    f"{issue['suggested']}")
    for issue in result["doubtful_labels"]:
        add(issue["item"], issue["split"], "doubtful", f"doubtful label: given {issue['given']}, the probe gives it "
                                                       f"{issue['quality']:.3f}, more likely {issue['suggested']}")
    for pair in result["duplicates"]:
        (a, b), (sa, sb) = pair["items"], pair["splits"]
        if pair["kind"] == "leak":  # the copy in the split that trains (or validates) goes, the later one stays
            (early, split), (_, later) = sorted([(a, sa), (b, sb)], key=lambda copy: SPLITS.index(copy[1]))
            add(early, split, "leak", f"leak: a copy is in {later}")
        elif pair["kind"] == "conflicting labels":
            add(a, sa, "conflicting", "a copy has another label")
            add(b, sb, "conflicting", "a copy has another label")
        else:
            add(b, sb, "duplicate", f"copy of {a}")
    for issue in result["item_issues"]:
        if issue["kind"] in EXCLUSION_KINDS:
            add(issue["item"], issue["split"], issue["kind"], issue["kind"])
    return [{"item": item, "kind": kind, "why": why} for (item, kind), why in named.items()]
