"""Image files -> backbone features, through the feature cache and the fastest available engine."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np

from transferkit.features.cache import FeatureStore, file_key
from transferkit.features.engines import plan_engine
from transferkit.features.quantize import Calibration, digest, spread
from transferkit.modalities.image.pipeline import decode_batches
from transferkit.modalities.image.preprocessing import Preprocessing
from transferkit.progress import progress

if TYPE_CHECKING:
    from torch import nn

    from transferkit.modalities.image.backbones import BackboneSpec


@dataclass
class FeatureSource:
    """A frozen feature network as the extractor sees it: its identity, input, and how to build it."""

    fingerprint: str
    preprocessing: Preprocessing
    build_net: Callable[[], "nn.Module"]  # uint8 NHWC -> features; called only if no cached engine fits
    label: str = ""

    @classmethod
    def from_spec(cls, spec: "BackboneSpec") -> "FeatureSource":
        def build() -> "nn.Module":
            from transferkit.modalities.image.model import FeatureNet

            return FeatureNet(spec.build(), spec.preprocessing).eval()

        return cls(spec.fingerprint, spec.preprocessing, build, spec.name)


def cache_keys(paths: Sequence[str]) -> list[str | None]:
    """The cache key of each file, or None for a file that cannot be keyed: it is extracted, not cached."""
    keys: list[str | None] = []
    for path in paths:
        try:
            keys.append(file_key(path))
        except OSError:  # gone or unreadable since it was listed: decoding it reports why
            keys.append(None)
    return keys


def calibration_sample(paths: Sequence[str], preprocessing: Preprocessing, workers: int | None) -> Calibration:
    """A sample of ``paths`` to calibrate an int8 engine on, decoded exactly as extraction decodes (once, when
    first asked for); identified by the files' keys, so other images make another engine."""
    sample = spread(paths)
    decoded: list[np.ndarray] = []

    def batches() -> list[np.ndarray]:
        if not decoded:
            decoded.extend(b.images for b in decode_batches(sample, preprocessing, 16, workers) if len(b.indices))
        return decoded

    return Calibration(digest(*(key or path for key, path in zip(cache_keys(sample), sample))), batches, len(sample))


@dataclass
class FeatureResult:
    features: np.ndarray  # float32 [n_ok, d], rows in input order of the files that decoded
    ok: np.ndarray  # bool [n]: which input files have a row
    failed: list[tuple[str, str]] = field(default_factory=list)  # (path, reason), in input order
    cached: int = 0
    extracted: int = 0
    seconds: float = 0.0
    engine: str = "cache"  # the engine that extracted the missing rows ("cache": none were missing)
    export_seconds: float = 0.0  # a one-off ONNX export included in ``seconds``


def extract_features(source: FeatureSource, paths: Sequence[str | Path], *, engine: str = "auto",
                     batch_size: int = 64, workers: int | None = None, use_cache: bool = True,
                     cache_dir: str | Path | None = None, cache_dtype: str = "float32",
                     show_progress: bool = True, calibrate_on: Sequence[str] | None = None) -> FeatureResult:
    """Features for ``paths``; only files the cache does not hold (new or changed) go through the network. An int8
    engine not yet built is calibrated on ``calibrate_on`` (the training images), never on ``paths`` themselves:
    without training images (predicting, scoring a test split) there is no int8 engine to build, and fp32 serves."""
    start = time.perf_counter()
    paths = [str(p) for p in paths]
    keys = cache_keys(paths) if use_cache else [None] * len(paths)
    calibration = None if calibrate_on is None else \
        lambda: calibration_sample([str(p) for p in calibrate_on], source.preprocessing, workers)
    plan = plan_engine(source.fingerprint, source.preprocessing.input_size, source.build_net, engine, cache_dir,
                       source.label, calibration)
    meta = plan.meta or {"backbone": source.label, "input_size": source.preprocessing.input_size}
    store = FeatureStore.open(plan.features_fingerprint, cache_dir, cache_dtype, meta) if use_cache else None

    def cached(i: int) -> bool:
        return store is not None and keys[i] is not None and keys[i] in store

    missing = [i for i in range(len(paths)) if not cached(i)]
    new_rows: dict[int, np.ndarray] = {}
    failed: list[tuple[str, str]] = []
    engine_name, export_seconds = "cache", 0.0
    if missing:
        run = plan.open()
        engine_name, export_seconds = run.name, run.export_seconds
        with progress(len(missing), f"features ({source.label}, {run.name})", show_progress) as advance:
            todo = [paths[i] for i in missing]
            for batch in decode_batches(todo, source.preprocessing, batch_size, workers):
                failed.extend((todo[j], reason) for j, reason in batch.failed)
                if len(batch.indices):
                    for j, row in zip(batch.indices, run(batch.images)):
                        new_rows[missing[j]] = row
                advance(len(batch.indices) + len(batch.failed))
        if store is not None:
            order = [i for i in sorted(new_rows) if keys[i] is not None]
            store.put([keys[i] for i in order], np.stack([new_rows[i] for i in order]) if order else np.zeros((0, 0)))
    ok = np.array([i in new_rows or cached(i) for i in range(len(paths))], dtype=bool)
    rows = []
    cached_positions = [i for i in range(len(paths)) if ok[i] and i not in new_rows]
    cached_rows = dict(zip(cached_positions, store.get([keys[i] for i in cached_positions]))) if cached_positions else {}
    for i in np.flatnonzero(ok):
        rows.append(new_rows[i] if i in new_rows else cached_rows[i])
    features = np.stack(rows).astype(np.float32, copy=False) if rows else np.zeros((0, 0), dtype=np.float32)
    return FeatureResult(features, ok, failed, len(cached_positions), len(new_rows), time.perf_counter() - start,
                         engine_name, export_seconds)
