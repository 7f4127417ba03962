"""Image files -> backbone features, through the feature cache and the fastest available engine."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np

from transferkit.features.cache import FeatureStore, file_key
from transferkit.features.engines import Engine, LazyEngine, open_engine, plan_engine
from transferkit.features.quantize import Calibration, digest, spread
from transferkit.features.ranks import SINGLE, extraction_ranks
from transferkit.modalities.image.pipeline import decode_batches
from transferkit.modalities.image.preprocessing import Preprocessing
from transferkit.progress import progress

if TYPE_CHECKING:
    from torch import nn

    from transferkit.modalities.image.backbones import BackboneSpec

# Rows extracted are written to the cache in shards of at most this many (a copy of that size, not of all of them).
SHARD_ROWS = 4096


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

    def open(self, engine: str = "auto", cache_dir: str | Path | None = None) -> Engine:
        """Its engine named ``engine`` (see config.ENGINES), from the cache in ``cache_dir`` or exported there."""
        return open_engine(self.fingerprint, self.preprocessing.input_size, self.build_net, engine, cache_dir,
                           self.label)


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
    without training images (predicting, scoring a test split) there is no int8 engine to build, and fp32 serves.
    Under a launch, inside ``across_ranks()``, the missing files are split across the ranks (features/ranks.py)."""
    start = time.perf_counter()
    paths = [str(p) for p in paths]
    keys = cache_keys(paths) if use_cache else [None] * len(paths)
    calibration = None if calibrate_on is None else \
        lambda: calibration_sample([str(p) for p in calibrate_on], source.preprocessing, workers)
    ranks = extraction_ranks() if use_cache else SINGLE  # the ranks' rows meet in the cache: none, no split
    with ranks.first():  # rank 0 exports (or builds) a missing engine once; the others then find it cached
        plan = plan_engine(source.fingerprint, source.preprocessing.input_size, source.build_net, engine, cache_dir,
                           source.label, calibration)
        store = FeatureStore.open(plan.features_fingerprint, cache_dir, cache_dtype, plan.meta) if use_cache else None
        held = np.array([store is not None and key is not None and key in store for key in keys], dtype=bool)
        run = LazyEngine(plan, opened=not ranks.rank and not held.all())
    rows = FeatureRows(len(paths))
    cached = np.flatnonzero(held)
    read_cached(store, keys, cached, rows)
    missing = np.flatnonzero(~held).tolist()
    job = Extraction(source, paths, run, ShardWriter(store, keys, rows), batch_size, workers,
                     show_progress and not ranks.rank)
    mine = ranks.share(missing)
    failed = job.extract(mine)
    if ranks.world > 1:
        ranks.barrier()  # every rank's shards are in the cache
        store.refresh()
        theirs = sorted(set(missing) - set(mine))
        read_cached(store, keys, [i for i in theirs if keys[i] is not None and keys[i] in store], rows)
        # still missing: unreadable files (decoded again, for their reasons), rows another rank could not cache
        failed += job.extract([i for i in theirs if not rows.have[i]])
    extracted = int(rows.have.sum()) - len(cached)
    return FeatureResult(rows.result(), rows.have, [(paths[i], why) for i, why in sorted(failed)], len(cached),
                         extracted, time.perf_counter() - start, run.name, run.export_seconds)


def read_cached(store: FeatureStore | None, keys: Sequence[str | None], positions: Sequence[int],
                rows: "FeatureRows") -> None:
    """The cached rows of ``positions`` into ``rows``, in blocks: one block's copy beside the result."""
    for first in range(0, len(positions), SHARD_ROWS):
        block = positions[first:first + SHARD_ROWS]
        rows.fill(block, store.get([keys[i] for i in block]))


@dataclass
class Extraction:
    """Files through the engine into their rows and the cache."""

    source: FeatureSource
    paths: list[str]
    engine: LazyEngine
    writer: "ShardWriter"
    batch_size: int
    workers: int | None
    show_progress: bool

    def extract(self, todo: list[int]) -> list[tuple[int, str]]:
        """Extract the files at positions ``todo``; returns (position, reason) of those that do not decode."""
        if not todo:
            return []
        failed: list[tuple[int, str]] = []
        run, rows = self.engine(), self.writer.rows
        with progress(len(todo), f"features ({self.source.label}, {run.name})", self.show_progress) as advance:
            files = [self.paths[i] for i in todo]
            for batch in decode_batches(files, self.source.preprocessing, self.batch_size, self.workers):
                failed.extend((todo[j], reason) for j, reason in batch.failed)
                if len(batch.indices):
                    positions = [todo[j] for j in batch.indices]
                    rows.fill(positions, run(batch.images))
                    self.writer.add(positions)
                advance(len(batch.indices) + len(batch.failed))
        self.writer.flush()
        return failed


class FeatureRows:
    """Rows in input order, written where they belong as they come: one [n, d] array is the result, where a row
    per file and the stacks of them took three copies of the features at the end of a large extraction."""

    def __init__(self, n: int) -> None:
        self.array: np.ndarray | None = None
        self.have = np.zeros(n, dtype=bool)

    def fill(self, positions: Sequence[int] | np.ndarray, values: np.ndarray) -> None:
        if self.array is None:
            self.array = np.empty((len(self.have), values.shape[1]), dtype=np.float32)
        self.array[positions] = values
        self.have[positions] = True

    def result(self) -> np.ndarray:
        """float32 [rows that have a value, d]: the array itself, its rows moved up in place over failed files'."""
        if self.array is None or not self.have.any():
            return np.zeros((0, 0), dtype=np.float32)
        if self.have.all():
            return self.array
        kept = np.flatnonzero(self.have)
        for start in range(0, len(kept), SHARD_ROWS):  # row kept[j] >= j: a block's sources are not yet written over
            block = kept[start:start + SHARD_ROWS]
            self.array[start:start + len(block)] = self.array[block]
        return self.array[:len(kept)]


class ShardWriter:
    """Extracted rows into the cache in shards of ``SHARD_ROWS`` as they come (an interrupted extraction keeps
    the shards it wrote); files without a key are returned, not cached."""

    def __init__(self, store: FeatureStore | None, keys: Sequence[str | None], rows: FeatureRows) -> None:
        self.store, self.keys, self.rows = store, keys, rows
        self.pending: list[int] = []

    def add(self, positions: Sequence[int]) -> None:
        if self.store is None:
            return
        self.pending.extend(i for i in positions if self.keys[i] is not None)
        if len(self.pending) >= SHARD_ROWS:
            self.flush()

    def flush(self) -> None:
        if self.store is not None and self.pending:
            self.store.put([self.keys[i] for i in self.pending], self.rows.array[self.pending])
        self.pending = []
