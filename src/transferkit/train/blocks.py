"""A backbone's parameters grouped into blocks, input end first: what strategies freeze and train, and
what layer-wise learning-rate decay steps over."""

from __future__ import annotations

from torch import nn

from transferkit.backbone_sources import SOURCES
from transferkit.errors import TrainingError


def backbone_blocks(backbone: "nn.Module") -> list[list[str]]:
    """Parameter names of the backbone grouped into blocks, input end first: as the source that knows the
    network's family groups them (backbone_sources.py), else one block per top-level module."""
    names = [n for n, _ in backbone.named_parameters()]
    blocks = SOURCES.blocks(backbone, names)
    if blocks is None:
        order: dict[str, list[str]] = {}
        for name in names:
            order.setdefault(name.split(".")[0], []).append(name)
        blocks = list(order.values())
    blocks = [b for b in blocks if b]
    covered = {n for b in blocks for n in b}
    missing = [n for n in names if n not in covered]
    if missing:  # anything the matcher left out belongs with the stem
        blocks[0] = missing + blocks[0]
    return blocks


def trainable_blocks(n_blocks: int, train_blocks: int | None) -> list[bool]:
    """Which of ``n_blocks`` blocks train when the last ``train_blocks`` do (None = all)."""
    if train_blocks is None:
        return [True] * n_blocks
    if train_blocks > n_blocks:
        raise TrainingError(f"strategy last-k:{train_blocks}: this backbone has only {n_blocks} blocks; use "
                            f"last-k:{n_blocks} or fewer (last-k:{n_blocks} trains them all, as finetune does)")
    return [i >= n_blocks - train_blocks for i in range(n_blocks)]
