"""Per phase: which parameters train, at which learning rate, and BatchNorm's mode."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import nn

from transferkit.config import RunConfig
from transferkit.errors import TrainingError
from transferkit.progress import console
from transferkit.train.strategies import Phase, Strategy, backbone_blocks, trainable_blocks

SMALL_DATASET = 10_000  # below this many training images, --bn auto freezes BatchNorm statistics

@dataclass
class GroupInfo:
    name: str
    tensors: int
    trainable: int
    lr: float | None  # None: frozen
    bn: str


def resolve_bn(config: RunConfig, strategy: Strategy, n_train: int) -> str:
    if config.bn != "auto":
        return config.bn
    if not strategy.pretrained:
        return "train"  # random init: running statistics must be learned
    return "frozen" if n_train < SMALL_DATASET else "train"


def apply_phase(model: nn.Module, phase: Phase, config: RunConfig, strategy: Strategy, bn_mode: str,
                kind: str = "image") -> tuple[list[dict[str, Any]], list[GroupInfo]]:
    """Set ``requires_grad`` for ``phase``; return the optimiser's parameter groups and a row per block.

    ``model`` has a ``backbone`` (the blocks; see strategies.backbone_blocks) and a ``head``."""
    backbone = model.backbone
    blocks = backbone_blocks(backbone)
    flags = trainable_blocks(len(blocks), phase.train_blocks)
    decay = config.layer_decay if config.layer_decay is not None else (
        config.setting("layer_decay", kind) if strategy.name == "gradual" else 1.0)
    decay = decay if phase.layer_decay else 1.0
    base = config.setting("lr", kind)
    params = dict(backbone.named_parameters())
    if not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in backbone.modules()):
        bn_mode = "-"  # nothing to set (transformers use LayerNorm)
    groups: list[dict[str, Any]] = []
    rows: list[GroupInfo] = []

    def add(name: str, named: list[tuple[str, nn.Parameter]], train: bool, scale: float) -> None:
        for _, p in named:
            p.requires_grad_(train)
        n = sum(p.numel() for _, p in named)
        lr = base * scale if train else None
        rows.append(GroupInfo(name, len(named), n if train else 0, lr, bn_mode if train or bn_mode == "-" else "frozen"))
        if train:
            with_wd = [p for k, p in named if p.ndim > 1]
            without = [p for k, p in named if p.ndim <= 1]
            for plist, wd in ((with_wd, config.weight_decay), (without, 0.0)):
                if plist:
                    groups.append({"params": plist, "lr": lr, "weight_decay": wd, "name": name})

    for i, (names, train) in enumerate(zip(blocks, flags)):
        label = f"block {i} ({block_label(names)})"
        add(label, [(k, params[k]) for k in names], train, decay ** (len(blocks) - i))
    add("head", list(model.head.named_parameters()), True, 1.0)
    if not any(r.trainable for r in rows):
        raise TrainingError(f"strategy '{config.strategy}' leaves nothing trainable in phase '{phase.name}'")
    return groups, rows


def block_label(names: list[str]) -> str:
    """A short name for a block's parameters: their common dotted prefix (``blocks.3``, ``encoder.layer.2``)."""
    parts = [n.split(".")[:-1] for n in names]
    common = []
    for level in zip(*parts):
        if len(set(level)) > 1:
            break
        common.append(level[0])
    if common:
        return ".".join(common[:4])
    first, last = names[0].split(".")[0], names[-1].split(".")[0]
    return first if first == last else f"{first}..{last}"


def set_train_mode(model: nn.Module, bn_mode: str) -> None:
    """Train mode, except modules whose parameters are all frozen, and BatchNorm when its statistics are frozen."""
    model.train()
    for module in model.modules():
        own = list(module.parameters(recurse=False))
        if own and not any(p.requires_grad for p in own):
            module.eval()
        if bn_mode == "frozen" and isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.eval()


def print_groups(rows: list[GroupInfo], phase: Phase, n_phases: int) -> None:
    from rich.table import Table

    table = Table(title=f"phase {phase.index + 1}/{n_phases} '{phase.name}': epochs {phase.first_epoch + 1}-"
                        f"{phase.last_epoch + 1}")
    for column in ("group", "tensors", "trainable params", "LR", "BN"):
        table.add_column(column, justify="left" if column == "group" else "right")
    for r in rows:
        table.add_row(r.name, str(r.tensors), f"{r.trainable:,}", "frozen" if r.lr is None else f"{r.lr:.3g}", r.bn)
    table.add_row("total", str(sum(r.tensors for r in rows)), f"{sum(r.trainable for r in rows):,}", "", "")
    console.print(table)


