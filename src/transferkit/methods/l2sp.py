"""L2-SP (Li, Grandvalet & Davoine 2018): keep the shared weights near their pretrained starting point, not
near zero, and apply plain L2 to the new head.

    penalty = alpha / 2 * ||w_backbone - w_pretrained||^2 + beta / 2 * ||w_head||^2

Use it with ``--weight-decay 0``: weight decay pulls the same weights towards zero.
"""

from __future__ import annotations

import torch
from torch import nn

from transferkit.train.losses import Batch, LossTerm, Outputs, TermSetup


class L2SP(LossTerm):
    name = "l2sp"

    def __init__(self, alpha: float = 0.01, beta: float = 0.01, weight: float = 1.0) -> None:
        super().__init__(weight)
        self.alpha, self.beta = float(alpha), float(beta)
        self.shared: list[tuple[nn.Parameter, torch.Tensor]] = []
        self.head: list[nn.Parameter] = []

    def setup(self, setup: TermSetup) -> None:
        # The starting point is taken before a resumed run restores its weights, so it is always the pretrained
        # model's; it is not checkpointed (a plain list, not buffers): it comes from the backbone itself.
        self.shared = [(p, p.detach().clone()) for p in setup.model.backbone.parameters()]
        self.head = [p for name, p in setup.model.head.named_parameters() if name.endswith("weight")]

    def forward(self, batch: Batch, outputs: Outputs) -> torch.Tensor:
        if self.shared and self.shared[0][1].device != self.shared[0][0].device:  # the model moved to its device
            self.shared = [(p, start.to(p.device)) for p, start in self.shared]
        zero = outputs.logits.new_zeros((), dtype=torch.float32)
        drift = sum(((p.float() - start).pow(2).sum() for p, start in self.shared if p.requires_grad), zero)
        head = sum((p.float().pow(2).sum() for p in self.head), zero)
        return self.alpha / 2 * drift + self.beta / 2 * head
