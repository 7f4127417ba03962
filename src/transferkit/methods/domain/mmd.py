"""DAN (Long et al. 2015): minimise the multi-kernel maximum mean discrepancy between source and target."""

from __future__ import annotations

import torch

from transferkit.methods.domain.base import DomainTerm
from transferkit.methods.domain.kernels import mk_mmd
from transferkit.train.losses import Batch, Outputs


class MultiKernelMMD(DomainTerm):
    """``--method mmd:weight=W``: the unbiased squared MK-MMD of five Gaussian kernels whose bandwidths follow
    the batch's mean distance (see :func:`~transferkit.methods.domain.kernels.mk_mmd`)."""

    name = "mmd"

    def forward(self, batch: Batch, outputs: Outputs) -> torch.Tensor:
        source, target = self.domains(outputs)
        return mk_mmd(source.features, target.features)
