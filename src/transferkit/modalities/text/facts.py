"""What text data settles for ``auto`` before anything is trained: ``--max-length`` from a sample of the
texts' token lengths."""

from __future__ import annotations

from typing import Any

import numpy as np

from transferkit.config import TOKENS_RANGE, RunConfig
from transferkit.modalities.base import Decide, LabelledData, Spec

TEXT_SAMPLE = 2000  # texts tokenized for their lengths
MAX_TOKENS = 256  # longer texts are truncated: a step at 512 tokens costs 4x one at 256


def text_facts(spec: Spec, dataset: LabelledData, config: RunConfig, decide: Decide) -> dict[str, Any]:
    load = getattr(spec, "load_tokenizer", None)
    if load is None:
        return {}
    rng = np.random.default_rng(config.seed)
    items = dataset.train.items
    picked = [items[i] for i in rng.choice(len(items), min(TEXT_SAMPLE, len(items)), replace=False)]
    lengths = np.array([len(ids) for ids in load().encode(picked, TOKENS_RANGE[1])])
    p99 = int(np.percentile(lengths, 99))
    # the next power of two over 99% of the texts: padding and attention cost follow the longest text of a batch
    length = int(min(MAX_TOKENS, max(32, 1 << max(0, p99 - 1).bit_length())))
    decide("max_length", length, f"99% of texts have <= {p99} tokens")
    return {"tokens_median": int(np.median(lengths)), "tokens_p99": p99}
