"""A backbone's parameters grouped into blocks, input end first: what strategies freeze and train, and
what layer-wise learning-rate decay steps over."""

from __future__ import annotations

import re

from torch import nn

from transferkit.errors import TrainingError


def backbone_blocks(backbone: "nn.Module") -> list[list[str]]:
    """Parameter names of the backbone grouped into blocks, input end first."""
    names = [n for n, _ in backbone.named_parameters()]
    if hasattr(backbone, "group_matcher"):
        from timm.models import group_parameters

        grouped = group_parameters(backbone, backbone.group_matcher(coarse=True))
        blocks = [list(grouped[k]) for k in sorted(grouped)]
    elif any(LAYER_INDEX.search(n) for n in names):
        blocks = layer_blocks(names)
    else:
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


LAYER_INDEX = re.compile(r"(?:^|\.)(?:layer|layers|block|blocks|h)\.(\d+)\.")


def layer_blocks(names: list[str]) -> list[list[str]]:
    """Transformer-style names (``encoder.layer.3.attention...``): what precedes the first layer (embeddings),
    one block per layer index, and what follows the last layer (pooler, final norm) with the last layer."""
    before: list[str] = []
    layers: dict[int, list[str]] = {}
    after: list[str] = []
    for name in names:
        match = LAYER_INDEX.search(name)
        if match:
            layers.setdefault(int(match.group(1)), []).append(name)
        elif layers:
            after.append(name)
        else:
            before.append(name)
    blocks = [before] + [layers[i] for i in sorted(layers)]
    blocks[-1] = blocks[-1] + after
    return blocks


def trainable_blocks(n_blocks: int, train_blocks: int | None) -> list[bool]:
    """Which of ``n_blocks`` blocks train when the last ``train_blocks`` do (None = all)."""
    if train_blocks is None:
        return [True] * n_blocks
    if train_blocks > n_blocks:
        raise TrainingError(f"strategy last-k:{train_blocks}: this backbone has only {n_blocks} blocks; use "
                            f"last-k:{n_blocks} or fewer (last-k:{n_blocks} trains them all, as finetune does)")
    return [i >= n_blocks - train_blocks for i in range(n_blocks)]
