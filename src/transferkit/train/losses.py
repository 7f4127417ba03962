"""Loss terms: the objective is a weighted sum of named terms, each computed from the batch and the model's
outputs (pooled features and logits, timm's ``forward_features`` / ``forward_head`` split).

A term is an ``nn.Module``, so it may own modules and state (a domain discriminator, a frozen copy of the
pretrained weights, a teacher's projection): its parameters join the optimiser, and its ``state_dict`` (with
``get_extra_state`` for non-tensor state such as pseudo-labels) is checkpointed and restored on resume. The
loop logs each term's mean per epoch as ``loss_<name>``.

Cross-entropy (with label smoothing, class weights and mixup's soft targets) is always the first term;
others come by name from ``config.methods`` through :data:`~transferkit.plugins.LOSS_TERMS`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from transferkit.config import RunConfig
from transferkit.errors import TransferkitError
from transferkit.heads.probe import class_balance_weights
from transferkit.plugins import LOSS_TERMS

if TYPE_CHECKING:
    from transferkit.modalities.base import Modality
    from transferkit.train.data import TrainData
    from transferkit.train.frozen import FrozenForward


@dataclass
class Batch:
    """One training step's data. ``targets`` are soft labels when a batch transform (mixup) made them."""

    inputs: Any  # a tensor, or a dict of tensors (text)
    labels: torch.Tensor
    index: torch.Tensor  # each sample's position in the training set (stable across epochs)
    targets: torch.Tensor | None = None
    unlabelled: Any = None  # inputs of the second, unlabelled stream, when the data has one
    progress: float = 0.0  # the fraction of all training steps done before this one (ramps, schedules)

    def __len__(self) -> int:
        return len(self.labels)


@dataclass
class Outputs:
    features: torch.Tensor  # pooled backbone features, before the head
    logits: torch.Tensor
    unlabelled: "Outputs | None" = None  # the same for the batch's unlabelled stream, when it has one


@dataclass
class TaskInputs:
    """What the run knows beyond tensors, for loss terms: class names (a teacher must match them), the
    pretrained model's own classifier (LwF keeps it), the modality, and its classifier class (``ImageClassifier``,
    ...: a teacher is loaded or fitted through it, so the terms never import the estimators)."""

    classes: list[str] | None = None  # in label order
    source_head: nn.Module | None = None
    modality: "Modality | None" = None
    classifier: type | None = None


@dataclass
class TermSetup:
    """What a term may read once, before training: to size its modules or precompute targets."""

    model: nn.Module
    config: RunConfig
    data: "TrainData"
    n_classes: int
    device: torch.device
    frozen: "FrozenForward | None" = None  # the untouched pretrained backbone, served from the fast engine
    task: TaskInputs = field(default_factory=TaskInputs)


class LossTerm(nn.Module):
    """A named part of the objective. Subclasses set ``name`` and implement :meth:`forward`.

    ``target_share`` scales the target task's cross-entropy: a mixed loss ``alpha * L_term + (1 - alpha) *
    L_target`` sets ``weight = alpha`` and ``target_share = 1 - alpha`` (shares of several terms multiply)."""

    name = "term"
    target_share = 1.0

    def __init__(self, weight: float = 1.0) -> None:
        super().__init__()
        self.weight = float(weight)

    def setup(self, setup: TermSetup) -> None:
        """Called once before training (and before a resumed run restores the term's state)."""

    def start_epoch(self, epoch: int) -> None:
        """Called before each epoch's first batch, after a resumed run restored the term's state (so state
        chosen at an epoch's start and checkpointed, such as pseudo-labels, must not be chosen again)."""

    def artifacts(self) -> dict[str, nn.Module]:
        """Modules the run keeps after training (LwF's tuned source head), by name."""
        return {}

    def forward(self, batch: Batch, outputs: Outputs) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError


class CrossEntropy(LossTerm):
    """Soft-target cross-entropy: one-hot labels smoothed by ``label_smoothing``, or mixup's targets;
    ``class_weights="auto"`` weighs classes by inverse frequency."""

    name = "ce"

    def setup(self, setup: TermSetup) -> None:
        self.n_classes, self.smoothing = setup.n_classes, setup.config.label_smoothing
        weights = None
        if setup.config.class_weights == "auto":
            balance = class_balance_weights(np.asarray(setup.data.labels), setup.n_classes)
            weights = torch.as_tensor(balance, dtype=torch.float32, device=setup.device)
        self.class_weights = weights

    def forward(self, batch: Batch, outputs: Outputs) -> torch.Tensor:
        targets = batch.targets
        if targets is None:
            targets = nn.functional.one_hot(batch.labels, self.n_classes).float()
            if self.smoothing:
                targets = targets * (1 - self.smoothing) + self.smoothing / self.n_classes
        log_p = torch.log_softmax(outputs.logits.float(), dim=1)
        if self.class_weights is not None:
            log_p = log_p * self.class_weights
        return -(targets * log_p).sum(dim=1).mean()


def build_terms(config: RunConfig, extra: list[LossTerm] = ()) -> list[LossTerm]:
    """Cross-entropy, then each ``config.methods`` term by name, then ``extra``; cross-entropy's weight is the
    product of the others' ``target_share``."""
    others = [LOSS_TERMS.create(spec) for spec in config.methods] + list(extra)
    names = [term.name for term in others]
    if len(set(names + ["ce"])) != len(names) + 1:
        raise TransferkitError(f"method: each loss term may be given once (got {', '.join(names)})")
    return [CrossEntropy(float(np.prod([term.target_share for term in others])))] + others
