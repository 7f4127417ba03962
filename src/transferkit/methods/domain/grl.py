"""Gradient reversal (Ganin & Lempitsky 2015): the identity going forward, the gradient times ``-coeff`` going
back, so a feature extractor learns to *fool* the domain discriminator that sits after it."""

from __future__ import annotations

import math

import torch


class ReverseGradient(torch.autograd.Function):
    @staticmethod
    def forward(ctx, inputs: torch.Tensor, coeff: float) -> torch.Tensor:  # type: ignore[override]
        ctx.coeff = coeff
        return inputs.view_as(inputs)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # type: ignore[override]
        return grad.neg() * ctx.coeff, None


def reverse_gradient(inputs: torch.Tensor, coeff: float = 1.0) -> torch.Tensor:
    """``inputs`` unchanged; the gradient flowing back through it is multiplied by ``-coeff``."""
    return ReverseGradient.apply(inputs, float(coeff))


def ramp(progress: float, gamma: float = 10.0) -> float:
    """DANN's schedule for the reversal coefficient, ``2 / (1 + exp(-gamma p)) - 1``: 0 at the start of
    training (the discriminator's early, noisy gradients do not reach the features), near 1 at the end."""
    return 2.0 / (1.0 + math.exp(-gamma * min(max(progress, 0.0), 1.0))) - 1.0
