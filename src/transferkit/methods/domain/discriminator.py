"""The domain discriminator DANN and CDAN play against: a small MLP that tells source from target features."""

from __future__ import annotations

import torch
from torch import nn


class DomainDiscriminator(nn.Module):
    """``in_features -> hidden -> hidden -> 1`` (a logit: source is 1, target 0), with BatchNorm and ReLU, as
    in DANN / CDAN reference implementations."""

    def __init__(self, in_features: int, hidden: int = 1024) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(in_features, hidden), nn.BatchNorm1d(hidden), nn.ReLU(),
            nn.Linear(hidden, hidden), nn.BatchNorm1d(hidden), nn.ReLU(),
            nn.Linear(hidden, 1))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.layers(features).squeeze(1)


def domain_loss(logits: torch.Tensor, n_source: int, weight: torch.Tensor | None = None) -> torch.Tensor:
    """Binary cross-entropy of the discriminator's logits for ``n_source`` source rows followed by target rows;
    each domain counts half (a short target batch weighs as much as the source batch)."""
    labels = torch.zeros_like(logits)
    labels[:n_source] = 1.0
    losses = nn.functional.binary_cross_entropy_with_logits(logits.float(), labels, reduction="none")
    if weight is not None:
        losses = losses * weight
    return 0.5 * (losses[:n_source].mean() + losses[n_source:].mean())


@torch.no_grad()
def domain_accuracy(logits: torch.Tensor, n_source: int) -> float:
    """How often the discriminator is right (0.5: it cannot tell the domains apart)."""
    correct = torch.cat([logits[:n_source] > 0, logits[n_source:] <= 0])
    return float(correct.float().mean())
