"""Source retention: how much of the source task a tuned model still does, measured on the target's validation
inputs as agreement (top-1) and KL divergence between the original model's source predictions and the tuned
model's (through its tuned source head when LwF trained one, else the original head on the tuned features)."""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from transferkit.modalities.base import Predictor


class SourceView(nn.Module):
    """A model's feature network with the source head on top: inputs -> source-task logits."""

    def __init__(self, features: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.features, self.head = features, head

    def forward(self, inputs: Any) -> torch.Tensor:
        return self.head(self.features(inputs))


@torch.no_grad()
def source_retention(model: nn.Module, tuned_head: nn.Module, original_head: nn.Module, inputs: Any,
                     original_features: Callable[[Any], np.ndarray], predict: Predictor) -> dict[str, float]:
    """``{"agreement", "kl"}`` of the tuned model's source predictions with the original model's on ``inputs``."""
    before = torch.from_numpy(np.asarray(original_features(inputs), dtype=np.float32))
    original = torch.softmax(original_head.cpu().float()(before), dim=1).numpy()
    tuned = predict(SourceView(model.features, tuned_head.cpu().float()), inputs, None)
    agreement = float((original.argmax(1) == tuned.argmax(1)).mean())
    eps = 1e-12
    kl = float((original * (np.log(original + eps) - np.log(tuned + eps))).sum(1).mean())
    return {"agreement": round(agreement, 4), "kl": round(kl, 4), "n": int(len(original))}
