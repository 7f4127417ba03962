"""CDAN+E (Long et al. 2018): the discriminator sees features *conditioned on the predictions* (their outer
product, the multilinear map), so it aligns class-conditional distributions, not only the marginals; with
entropy conditioning, confident examples count more."""

from __future__ import annotations

import math

import torch

from transferkit.methods.domain.base import DomainTerm
from transferkit.methods.domain.discriminator import DomainDiscriminator, domain_loss
from transferkit.methods.domain.grl import ramp, reverse_gradient
from transferkit.train.losses import Batch, Outputs, TermSetup

MAX_MULTILINEAR = 4096  # wider outer products are replaced by the randomized map (as the CDAN paper does)


class CDAN(DomainTerm):
    """``--method cdan:weight=W,entropy=true,hidden=H,gamma=G,random_dim=D``.

    The map is ``f (x) g`` (features times softmax predictions, ``width * classes`` wide), or above
    :data:`MAX_MULTILINEAR` the randomized ``(R_f f) * (R_g g) / sqrt(D)`` with fixed random matrices kept as
    buffers (checkpointed with the run). Predictions enter detached: the classifier is not pushed to fool the
    discriminator, the features are (through the gradient-reversal layer, ramped as in DANN)."""

    name = "cdan"

    def __init__(self, weight: float = 1.0, entropy: bool = True, hidden: int = 1024, gamma: float = 10.0,
                 random_dim: int = 1024) -> None:
        super().__init__(weight)
        self.entropy, self.hidden, self.gamma, self.random_dim = bool(entropy), int(hidden), float(gamma), int(random_dim)

    def setup(self, setup: TermSetup) -> None:
        super().setup(setup)
        self.randomized = self.width * self.n_classes > MAX_MULTILINEAR
        if self.randomized:
            self.register_buffer("random_f", torch.randn(self.width, self.random_dim, device=self.device))
            self.register_buffer("random_g", torch.randn(self.n_classes, self.random_dim, device=self.device))
        width = self.random_dim if self.randomized else self.width * self.n_classes
        self.discriminator = self.place(DomainDiscriminator(width, self.hidden))

    def multilinear(self, features: torch.Tensor, predictions: torch.Tensor) -> torch.Tensor:
        if self.randomized:
            return (features @ self.random_f) * (predictions @ self.random_g) / math.sqrt(self.random_dim)
        return torch.einsum("nc,nf->ncf", predictions, features).flatten(1)

    def forward(self, batch: Batch, outputs: Outputs) -> torch.Tensor:
        source, target = self.domains(outputs)
        features = torch.cat([source.features, target.features]).float()
        predictions = torch.softmax(torch.cat([source.logits, target.logits]).float(), dim=1).detach()
        joint = reverse_gradient(self.multilinear(features, predictions), ramp(batch.progress, self.gamma))
        weight = None
        if self.entropy:  # 1 + exp(-H): certain predictions weigh up to twice as much; mean weight 1
            entropy = -(predictions * torch.log(predictions.clamp(min=1e-8))).sum(dim=1)
            weight = 1.0 + torch.exp(-entropy)
            weight = weight / weight.mean()
        return domain_loss(self.discriminator(joint), len(source.features), weight)
