"""Texts -> embeddings through the feature cache, in length-sorted, dynamically padded batches."""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator, Sequence

import numpy as np

from transferkit.features.cache import FeatureStore
from transferkit.features.engines import EnginePlan, LazyEngine
from transferkit.features.quantize import Calibration, digest, spread
from transferkit.features.ranks import SINGLE, extraction_ranks
from transferkit.modalities.text.backbone import TextBackboneSpec
from transferkit.modalities.text.encoder import plan_text_engine
from transferkit.progress import progress

if TYPE_CHECKING:
    from torch import nn

# ----------------------------------------------------------------------------------------------------------
# Embeddings through the feature cache
# ----------------------------------------------------------------------------------------------------------
@dataclass
class EmbedResult:
    features: np.ndarray  # float32 [n, d], input order
    cached: int = 0
    extracted: int = 0
    seconds: float = 0.0
    engine: str = "cache"
    export_seconds: float = 0.0  # a one-off ONNX export included in ``seconds``


def text_key(text: str, max_length: int) -> str:
    return hashlib.blake2b(f"{max_length}\x00{text}".encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()


def length_sorted_batches(lengths: Sequence[int], batch_size: int, max_tokens: int = 16384) -> list[list[int]]:
    """Indices grouped into batches of similar length (shortest first): little padding per batch."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    batches: list[list[int]] = []
    current: list[int] = []
    for i in order:
        if current and (len(current) >= batch_size or (len(current) + 1) * lengths[i] > max_tokens):
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    return batches


def pad_batch(ids: Sequence[Sequence[int]], pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    width = max(len(x) for x in ids)
    input_ids = np.full((len(ids), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(ids), width), dtype=np.int64)
    for row, seq in enumerate(ids):
        input_ids[row, :len(seq)] = seq
        mask[row, :len(seq)] = 1
    return input_ids, mask


def padded_batches(ids: Sequence[Sequence[int]], pad_id: int,
                   batch_size: int) -> Iterator[tuple[list[int], np.ndarray, np.ndarray]]:
    """(indices, input_ids, attention_mask) of tokenised texts in length-sorted batches (see above)."""
    for batch in length_sorted_batches([len(x) for x in ids], batch_size):
        yield (batch, *pad_batch([ids[i] for i in batch], pad_id))


def text_calibration(spec: TextBackboneSpec, texts: Sequence[str], max_length: int,
                     batch_size: int = 64) -> Calibration:
    """A sample of ``texts`` (the training texts) to check an int8 engine on, tokenised and padded as embedding
    does them (when first asked for); identified by the texts and max_length, as the feature cache keys them."""
    sample = spread(list(texts))
    prepared: list[dict[str, np.ndarray]] = []

    def batches() -> list[dict[str, np.ndarray]]:
        if not prepared:
            tokenizer = spec.load_tokenizer()
            encoded = tokenizer.encode(sample, max_length)
            prepared.extend({"input_ids": ids, "attention_mask": mask}
                            for _, ids, mask in padded_batches(encoded, tokenizer.pad_token_id, batch_size))
        return prepared

    return Calibration(digest(*(text_key(t, max_length) for t in sample)), batches, len(sample))


def embed_texts(spec: TextBackboneSpec, texts: Sequence[str], *, max_length: int = 128, engine: str = "auto",
                batch_size: int = 64, use_cache: bool = True, cache_dir: str | Path | None = None,
                cache_dtype: str = "float32", show_progress: bool = True,
                build_net: Callable[[], "nn.Module"] | None = None,
                calibrate_on: Sequence[str] | None = None) -> EmbedResult:
    """One embedding per text; only texts missing from the cache are tokenised and encoded.

    ``build_net`` (default ``spec.build``) makes the network when no engine for ``spec.fingerprint`` is cached.
    An int8 engine not yet built is checked against fp32 on ``calibrate_on`` (the training texts), never on
    ``texts`` themselves: without training texts (predicting, scoring) there is none to build, and fp32 serves.
    Under a launch, inside ``across_ranks()``, the missing texts are split across the ranks (features/ranks.py)."""
    start = time.perf_counter()
    keys = [text_key(t, max_length) for t in texts]
    calibration = None if calibrate_on is None else \
        lambda: text_calibration(spec, calibrate_on, max_length, batch_size)
    ranks = extraction_ranks() if use_cache else SINGLE  # the ranks' rows meet in the cache: none, no split
    with ranks.first():  # rank 0 exports (or builds) a missing engine once; the others then find it cached
        plan = plan_text_engine(spec, engine, cache_dir, build_net, calibration)
        store = FeatureStore.open(plan.features_fingerprint, cache_dir, cache_dtype, plan.meta) if use_cache else None
        unique: dict[str, int] = {}
        for i, key in enumerate(keys):
            if key not in unique and (store is None or key not in store):
                unique[key] = i
        encoder = TextEncoding(spec, plan, texts, max_length, batch_size, show_progress and not ranks.rank)
        if unique and not ranks.rank:
            encoder.engine()
    mine = ranks.share(list(unique))
    new_rows = encoder.encode({key: unique[key] for key in mine}, store)
    if ranks.world > 1:
        ranks.barrier()  # every rank's shards are in the cache
        store.refresh()
        left = {key: unique[key] for key in unique if key not in new_rows and key not in store}
        new_rows.update(encoder.encode(left, store))  # rows another rank could not cache: encoded here
    cached_keys = [k for k in dict.fromkeys(keys) if k not in new_rows]
    rows = dict(new_rows)
    if cached_keys:
        rows.update(zip(cached_keys, store.get(cached_keys)))
    features = (np.stack([rows[k] for k in keys]).astype(np.float32, copy=False) if keys
                else np.zeros((0, 0), np.float32))
    extracted = sum(key in new_rows for key in unique)
    return EmbedResult(features, len(cached_keys), extracted, time.perf_counter() - start, encoder.engine.name,
                       encoder.engine.export_seconds)


class TextEncoding:
    """Texts through the plan's engine (opened when first needed) into rows, and the cache when there is one."""

    def __init__(self, spec: TextBackboneSpec, plan: EnginePlan, texts: Sequence[str], max_length: int,
                 batch_size: int, show_progress: bool) -> None:
        self.spec, self.engine, self.texts = spec, LazyEngine(plan), texts
        self.max_length, self.batch_size, self.show_progress = max_length, batch_size, show_progress

    def encode(self, todo: dict[str, int], store: FeatureStore | None) -> dict[str, np.ndarray]:
        """key -> row for the texts at ``todo``'s positions, stored in the cache as one shard."""
        if not todo:
            return {}
        tokenizer = self.spec.load_tokenizer()
        todo_keys = list(todo)
        encoded = tokenizer.encode([self.texts[i] for i in todo.values()], self.max_length)
        run, rows = self.engine(), {}
        with progress(len(todo), f"embeddings ({self.spec.name}, {run.name})", self.show_progress) as advance:
            for batch, input_ids, mask in padded_batches(encoded, tokenizer.pad_token_id, self.batch_size):
                for j, row in zip(batch, run(input_ids, mask)):
                    rows[todo_keys[j]] = row
                advance(len(batch))
        if store is not None:
            store.put(todo_keys, np.stack([rows[k] for k in todo_keys]))
        return rows
