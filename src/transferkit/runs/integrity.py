"""What every run folder's common files must hold, and whether they agree with each other.

classes.json, metrics.json and the model's metadata are checked field by field (runs/schema.py); the head must
have one output per class, as many inputs as the metadata says. A run's *content fingerprint* names its cached
engines and features: it is computed from the files that decide the features (the network's tensors, the
preprocessing, the metadata, the modality's own files such as a tokenizer or the run's engine), never taken
from a claim inside a file, so that a tampered copy of a run gets a cache of its own and cannot change what the
untouched run reads from the shared cache.
"""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path
from typing import Any

from transferkit.digests import file_digest
from transferkit.metrics import SCORED_SPLITS
from transferkit.runs.schema import Check, check_object, damaged, is_number, number, optional, text

MAX_CLASSES = 100_000
LABEL_TYPES = (str, int, float, bool)  # class names as saved: strings, or the user's own int labels
MAX_LABEL = 1000  # characters of a class name
MAX_META = 4096  # characters of one model metadata value
HEAD_ONLY_META = ("num_classes",)  # metadata that says nothing about the features (runs on one backbone share them)
SCORES: dict[str, Check] = {"n": number(0, 1e12, integer=True), "accuracy": optional(number(0, 1)),
                            "macro_f1": optional(number(0, 1)), "log_loss": optional(number(0, 1e9)),
                            "ece": optional(number(0, 1)), "correct": text(1 << 26), "items": text(200)}
NUMBERS = ("train_seconds", "export_seconds", "trainable_parameters", "epochs_run", "best_epoch")


def check_classes(path: Path, classes: Any) -> list[Any]:
    if not isinstance(classes, list) or not classes:
        raise damaged(path, "", "expected a non-empty list of class names")
    if len(classes) > MAX_CLASSES:
        raise damaged(path, "", f"lists {len(classes)} classes, more than {MAX_CLASSES}")
    bad = next((c for c in classes if not isinstance(c, LABEL_TYPES) or (isinstance(c, str) and len(c) > MAX_LABEL)
                or (isinstance(c, float) and not is_number(c))), None)
    if bad is not None:
        raise damaged(path, "class", f"{str(bad)[:80]!r} is not a class name (a string of at most {MAX_LABEL} "
                                     "characters, or a number)")
    if len(set(classes)) < len(classes):
        raise damaged(path, "", "lists a class twice (expected distinct class names)")
    return classes


def check_metrics(path: Path, metrics: Any, n_classes: int) -> dict[str, Any]:
    """The fields commands read (report, compare, serve, load): scores, confusion matrices, history."""
    schema = {"probe": lambda v: None if isinstance(v, dict) else "an object",
              **{key: optional(number(0, 1e15)) for key in NUMBERS},
              "history": lambda v: None if isinstance(v, list) and all(isinstance(r, dict) for r in v)
              else "a list of objects"}
    check_object(path, metrics, schema, optional_keys=tuple(schema), extra=True)
    if "probe" in metrics:
        check_object(path, metrics["probe"], {"l2": optional(number(0, 1e12))}, ("l2",), extra=True)
    for row in metrics.get("history", []):
        check_object(path, row, {"epoch": number(0, 1e9, integer=True)}, ("epoch",), extra=True)
        if not all(v is None or isinstance(v, (str, bool)) or is_number(v) for v in row.values()):
            raise damaged(path, "history", "holds a value that is not a number or a word")
    for split in (*SCORED_SPLITS, "target"):
        if split in metrics:
            check_scores(path, split, metrics[split], n_classes)
    return metrics


def check_scores(path: Path, split: str, scores: Any, n_classes: int) -> None:
    if not isinstance(scores, dict):
        raise damaged(path, split, "is not an object of scores")
    check_object(path, scores, SCORES, tuple(SCORES), extra=True)
    matrix = scores.get("confusion_matrix")
    square = isinstance(matrix, list) and len(matrix) == n_classes and all(
        isinstance(row, list) and len(row) == n_classes and all(number(0, 1e12, integer=True)(v) is None for v in row)
        for row in matrix)
    if "confusion_matrix" in scores and not square:
        raise damaged(path, f"{split}.confusion_matrix", f"is not {n_classes} rows of {n_classes} counts (one per "
                                                         "class in classes.json)")
    per_class = scores.get("per_class")
    if per_class is not None and not (isinstance(per_class, dict) and all(
            isinstance(v, dict) and all(x is None or is_number(x) for x in v.values()) for v in per_class.values())):
        raise damaged(path, f"{split}.per_class", "is not an object of per-class scores")


def check_model_meta(path: Path, meta: dict[str, str], head: list[int], n_classes: int) -> dict[str, str]:
    """The model's metadata: short strings, and the class and feature counts the head has."""
    long = next((k for k, v in meta.items() if len(k) > 200 or len(v) > MAX_META), None)
    if long is not None:
        raise damaged(path, f"metadata {long[:80]!r}", f"is longer than {MAX_META} characters")
    for key, expected in (("num_classes", n_classes), ("num_features", head[1])):
        if key in meta and meta[key] != str(expected):
            raise damaged(path, f"metadata {key}", f"is {meta[key][:40]!r} but the head has {expected} "
                                                   f"{'outputs' if key == 'num_classes' else 'inputs'}")
    return meta


def agree(path: Path, what: str, found: Any, expected: Any, other: str) -> None:
    """Two files of one run say the same thing, or the run is refused."""
    if found != expected:
        raise damaged(path, what, f"is {str(found)[:80]} but {other} says {str(expected)[:80]}; the run's files "
                                  "disagree (copied from different runs, or edited)")


def content_fingerprint(model: Path, meta: dict[str, str], preprocessing: dict[str, Any],
                        files: tuple[Path, ...] = ()) -> str:
    """The identity of a run's feature network, from what decides its features: the model's ``features.*``
    tensors (names, dtypes, shapes and bytes), its metadata (the head's aside), the preprocessing, and ``files``
    (a tokenizer, an encoder config, the run's own engine; folders by every file in them)."""
    digest = hashlib.blake2b(digest_size=12)
    digest.update(b"run-content-1|")
    digest.update(json.dumps({k: v for k, v in sorted(meta.items()) if k not in HEAD_ONLY_META}).encode())
    digest.update(json.dumps(preprocessing, sort_keys=True).encode())
    feature_bytes(model, digest)
    for entry in files:
        for file in sorted(entry.rglob("*")) if entry.is_dir() else [entry] if entry.exists() else []:
            if file.is_file():
                digest.update(f"|{file.relative_to(entry.parent)}|{file_digest(file)}".encode())
    return digest.hexdigest()


def feature_bytes(model: Path, digest: Any) -> None:
    """Feed ``digest`` the ``features.*`` tensors of a safetensors file, read in blocks from its header's offsets
    (the head and the metadata aside, so probes on one backbone share a fingerprint)."""
    with open(model, "rb") as handle:
        (size,) = struct.unpack("<Q", handle.read(8))
        header = json.loads(handle.read(size))  # read_run has opened the file with safetensors: it parses
        base = 8 + size
        for name in sorted(k for k in header if k.startswith("features.")):
            entry = header[name]
            start, end = entry["data_offsets"]
            digest.update(f"|{name}|{entry['dtype']}|{entry['shape']}|".encode())
            handle.seek(base + start)
            left = end - start
            while left > 0:
                block = handle.read(min(left, 1 << 20))
                if not block:
                    break
                digest.update(block)
                left -= len(block)
