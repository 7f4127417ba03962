"""What the loop draws batches from, and the epoch-seeded order that makes resume exact."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import numpy as np
import torch

from transferkit.config import FINETUNE_DEFAULTS


class EpochSampler(torch.utils.data.Sampler):
    """A shuffled (or class-balanced, with replacement) order that depends only on ``(seed, epoch)``."""

    def __init__(self, labels: list[int], seed: int, balanced: bool = False) -> None:
        self.labels, self.seed, self.balanced, self.epoch = np.asarray(labels), seed, balanced, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.labels)

    def __iter__(self):
        generator = torch.Generator().manual_seed(epoch_seed(self.seed, self.epoch))
        if self.balanced:
            counts = np.bincount(self.labels)
            weights = torch.as_tensor(1.0 / counts[self.labels], dtype=torch.float64)
            order = torch.multinomial(weights, len(self.labels), replacement=True, generator=generator)
        else:
            order = torch.randperm(len(self.labels), generator=generator)
        return iter(order.tolist())


@dataclass
class TrainData:
    """What the loop draws training batches from: ``(inputs, labels)`` pairs, inputs a tensor or a dict of them.

    ``sampler`` orders one epoch from ``(seed, epoch)``; ``batch_sampler`` (optional) groups that order into
    batches (text: similar lengths together); ``collate`` stacks or pads a batch.
    """

    dataset: torch.utils.data.Dataset
    sampler: EpochSampler
    labels: list[int]
    # the data's fine-tuning defaults (its Modality.defaults.training): epochs, batch size, LR, ...
    defaults: Mapping[str, Any] = field(default_factory=lambda: FINETUNE_DEFAULTS)
    collate: Callable | None = None
    batch_sampler: torch.utils.data.Sampler | None = None
    workers: int = 0
    # (inputs, labels) -> (inputs, soft targets) on whole batches (images' mixup/cutmix); None: plain labels
    batch_transform: Callable | None = None
    # a second stream without labels (domain adaptation, pseudo-labels): batches carry its inputs too
    unlabelled: "TrainData | None" = None
    # the same inputs every epoch (no augmentation): frozen forwards may be cached by sample index
    deterministic: bool = False
    # the training items themselves (paths, texts), for terms that look samples up by index (a teacher)
    items: list = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.labels)


def loader_workers() -> int:
    """Decoding processes beside training: half the cores, at most 4 (on 2 cores a second worker only
    takes CPU from the training step: 12.1 s vs 8.4 s an epoch, hymenoptera, batch 32)."""
    return min(4, max(1, (torch.get_num_threads() or 2) // 2))


def epoch_seed(seed: int, epoch: int) -> int:
    """One number per (run seed, epoch): sampler order, augmentation and the global RNGs all derive from it."""
    return seed * 100_003 + epoch


def seed_epoch(seed: int, epoch: int) -> None:
    value = epoch_seed(seed, epoch)
    random.seed(value)
    np.random.seed(value % (2**32))
    torch.manual_seed(value)


