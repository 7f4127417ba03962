"""DANN (Ganin et al. 2016): a domain discriminator behind a gradient-reversal layer; the features learn to
make the domains indistinguishable while the discriminator learns to tell them apart."""

from __future__ import annotations

import torch

from transferkit.methods.domain.base import DomainTerm
from transferkit.methods.domain.discriminator import DomainDiscriminator, domain_loss
from transferkit.methods.domain.grl import ramp, reverse_gradient
from transferkit.train.losses import Batch, Outputs, TermSetup


class DANN(DomainTerm):
    """``--method dann:weight=W,hidden=H,gamma=G``: the discriminator (``hidden`` wide) is the term's own module,
    trained and checkpointed with the run; the reversal coefficient ramps from 0 to 1 over training
    (``2 / (1 + exp(-gamma p)) - 1``, p the share of training done, exact on resume)."""

    name = "dann"

    def __init__(self, weight: float = 1.0, hidden: int = 1024, gamma: float = 10.0) -> None:
        super().__init__(weight)
        self.hidden, self.gamma = int(hidden), float(gamma)

    def setup(self, setup: TermSetup) -> None:
        super().setup(setup)
        self.discriminator = self.place(DomainDiscriminator(self.width, self.hidden))

    def forward(self, batch: Batch, outputs: Outputs) -> torch.Tensor:
        source, target = self.domains(outputs)
        features = torch.cat([source.features, target.features]).float()
        logits = self.discriminator(reverse_gradient(features, ramp(batch.progress, self.gamma)))
        return domain_loss(logits, len(source.features))
