"""Soft targets at a temperature (Hinton et al. 2015), shared by LwF and distillation."""

from __future__ import annotations

import torch


def softened_kl(student_logits: torch.Tensor, teacher_log_p: torch.Tensor, temperature: float) -> torch.Tensor:
    """``T^2 * KL(softmax(teacher / T) || softmax(student / T))``, mean over the batch. ``teacher_log_p`` are
    log-probabilities (or logits: the softmax ignores a constant shift); T^2 keeps gradients on the scale of
    cross-entropy's whatever the temperature."""
    t = float(temperature)
    target = torch.log_softmax(teacher_log_p.float() / t, dim=1)
    student = torch.log_softmax(student_logits.float() / t, dim=1)
    return (target.exp() * (target - student)).sum(dim=1).mean() * t * t
