"""Deep CORAL (Sun & Saenko 2016): align the second-order statistics of source and target features."""

from __future__ import annotations

import torch

from transferkit.methods.domain.base import DomainTerm
from transferkit.methods.domain.kernels import coral
from transferkit.train.losses import Batch, Outputs


class Coral(DomainTerm):
    """``--method coral:weight=W``: the squared distance between the two batches' feature means and
    covariances (see :func:`~transferkit.methods.domain.kernels.coral`)."""

    name = "coral"

    def forward(self, batch: Batch, outputs: Outputs) -> torch.Tensor:
        source, target = self.domains(outputs)
        return coral(source.features, target.features)
