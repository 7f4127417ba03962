"""Learning without Forgetting (Li & Hoiem 2016), the mixed loss ``alpha * L_source + (1 - alpha) * L_target``.

The model keeps the source task's classifier (ImageNet's 1000 classes for the packaged Lite weights) next to
the new head. ``L_source`` holds the source head's predictions on the target's training images, at a
temperature, close to those of the original model; the original model's are read through the frozen
engine (cached by image when the inputs do not change between epochs), so they cost one fast forward at most.
The tuned source head is kept with the run (``source_head.*``) and reported on as source retention.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from transferkit.errors import TrainingError
from transferkit.methods.soft_targets import softened_kl
from transferkit.train.losses import Batch, LossTerm, Outputs, TermSetup


class LearningWithoutForgetting(LossTerm):
    name = "lwf"

    def __init__(self, alpha: float = 0.5, temperature: float = 2.0) -> None:
        super().__init__(weight=float(alpha))  # the options' ranges: plugins.py, checked when parsed
        self.target_share = 1.0 - float(alpha)
        self.temperature = float(temperature)
        self.frozen = None
        self.reference: list[nn.Module] = []  # the original feature network, when there is no frozen engine

    def setup(self, setup: TermSetup) -> None:
        if setup.task.source_head is None:
            raise TrainingError(f"method lwf: backbone '{setup.config.backbone}' has no source classifier to keep "
                                "(random init, or weights without one); use l2sp to stay near the pretrained weights")
        self.head = copy.deepcopy(setup.task.source_head).requires_grad_(True).to(setup.device)
        original = setup.task.source_head
        self.register_buffer("original_weight", original.weight.detach().clone().to(setup.device), persistent=False)
        self.register_buffer("original_bias", original.bias.detach().clone().to(setup.device), persistent=False)
        self.frozen = setup.frozen
        if self.frozen is None:
            self.reference = [copy.deepcopy(setup.model.features).eval().requires_grad_(False)]

    @torch.no_grad()
    def original_logits(self, batch: Batch, device: torch.device) -> torch.Tensor:
        if self.frozen is not None:
            features = self.frozen(batch.inputs, batch.index, device)
        else:
            features = self.reference[0].to(device)(batch.inputs)
        return nn.functional.linear(features.float(), self.original_weight, self.original_bias)

    def forward(self, batch: Batch, outputs: Outputs) -> torch.Tensor:
        targets = self.original_logits(batch, outputs.features.device)
        return softened_kl(self.head(outputs.features.float()), targets, self.temperature)

    def artifacts(self) -> dict[str, nn.Module]:
        return {"source_head": self.head}
