"""A run as one torch module: its inputs (uint8 images, or token ids and mask) -> class probabilities."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

if TYPE_CHECKING:
    from transferkit.estimators.core import TransferClassifier


class ExportedClassifier(nn.Module):
    """The feature network (normalisation + backbone, or encoder + pooling) and the head, with a softmax."""

    def __init__(self, features: nn.Module, weight: np.ndarray, bias: np.ndarray) -> None:
        super().__init__()
        self.features = features
        self.head = nn.Linear(weight.shape[1], weight.shape[0])
        with torch.no_grad():
            self.head.weight.copy_(torch.from_numpy(np.asarray(weight, dtype=np.float32)))
            self.head.bias.copy_(torch.from_numpy(np.asarray(bias, dtype=np.float32)))

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.head(self.features(*inputs)).float(), dim=-1)


def whole_model(clf: "TransferClassifier") -> ExportedClassifier:
    """The run's own torch model, rebuilt from its ``model.safetensors`` (``features.*`` + ``head.*``; adapters
    were merged into the backbone when it was saved)."""
    return ExportedClassifier(clf.feature_net(), clf.head_.weight, clf.head_.bias).eval()
