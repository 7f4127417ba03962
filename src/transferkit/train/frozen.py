"""The frozen forward service: the untouched pretrained backbone's features for a training batch, computed by
the fast inference engine (ONNX Runtime on CPU) instead of torch's forward pass.

Head-only phases train on these features directly; loss terms may read them too (a source head's soft
targets, a teacher's features). When the training inputs do not change between epochs (no augmentation),
rows are kept by sample index and computed once.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch


class FrozenForward:
    def __init__(self, compute: Callable[[Any], np.ndarray], cache_by_index: bool = False) -> None:
        self.compute = compute  # a batch's inputs -> features (numpy, one row per sample)
        self.cache_by_index = cache_by_index
        self.rows: dict[int, np.ndarray] = {}

    def __call__(self, inputs: Any, index: torch.Tensor, device: torch.device) -> torch.Tensor:
        positions = index.tolist()
        missing = [i for i, p in enumerate(positions) if p not in self.rows] if self.cache_by_index else None
        if missing is None or missing:
            features = self.compute(inputs)
            if not self.cache_by_index:
                return torch.from_numpy(features).to(device)
            self.rows.update((positions[i], features[i]) for i in range(len(positions)))
        return torch.from_numpy(np.stack([self.rows[p] for p in positions])).to(device)

    def release(self) -> None:
        """Let the compute free what it holds (an engine session and its arena), if it can: it is only needed
        again when a loss term asks, or at the end (source retention)."""
        release = getattr(self.compute, "release", None)
        if release is not None:
            release()
