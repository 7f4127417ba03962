"""Optimiser and per-step learning-rate schedule for one phase."""

from __future__ import annotations

from typing import Any, Mapping

import torch

from transferkit.config import RunConfig

def build_optimizer(groups: list[dict[str, Any]], config: RunConfig) -> torch.optim.Optimizer:
    lr = groups[-1]["lr"]  # every group carries its own LR
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=config.momentum, nesterov=config.nesterov and config.momentum > 0)
    if config.optimizer == "adam":
        return torch.optim.Adam(groups, lr=lr)
    return torch.optim.AdamW(groups, lr=lr)


def build_schedule(optimizer: torch.optim.Optimizer, config: RunConfig, total: int, steps_per_epoch: int,
                   defaults: Mapping[str, Any]) -> torch.optim.lr_scheduler.LRScheduler:
    """A per-optimiser-step schedule over ``total`` steps, after the configured epochs of linear warm-up."""
    from torch.optim import lr_scheduler as S

    total = max(1, total)
    warmup = min(total - 1, round(config.setting("warmup", defaults) * steps_per_epoch))
    if config.schedule == "one-cycle":
        return S.OneCycleLR(optimizer, max_lr=[g["lr"] for g in optimizer.param_groups], total_steps=total,
                            pct_start=max(warmup / total, 0.05) if warmup else 0.25)
    rest = total - warmup
    if config.schedule == "cosine":
        main = S.CosineAnnealingLR(optimizer, T_max=max(1, rest))
    elif config.schedule == "step":
        main = S.StepLR(optimizer, step_size=max(1, rest // 3), gamma=0.1)
    elif config.schedule == "multistep":
        main = S.MultiStepLR(optimizer, milestones=[max(1, rest // 2), max(2, rest * 3 // 4)], gamma=0.1)
    else:
        main = S.ConstantLR(optimizer, factor=1.0, total_iters=0)
    if not warmup:
        return main
    return S.SequentialLR(optimizer, [S.LinearLR(optimizer, start_factor=0.01, total_iters=warmup), main],
                          milestones=[warmup])


