"""Per phase: which parameters train, at which learning rate, and BatchNorm's mode."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from torch import nn

from transferkit.config import RunConfig
from transferkit.errors import TrainingError
from transferkit.progress import console
from transferkit.strategies import Phase, Strategy
from transferkit.train.adapters import Adapter
from transferkit.train.blocks import backbone_blocks, trainable_blocks

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


def layer_decay(config: RunConfig, strategy: Strategy, phase: Phase, defaults: Mapping[str, Any]) -> float:
    """The LR factor per block towards the input in this phase (1: no discriminative LRs)."""
    if not phase.layer_decay:
        return 1.0
    if config.layer_decay is not None:
        return config.layer_decay
    return config.setting("layer_decay", defaults) if strategy.layer_decay_by_default else 1.0


def apply_phase(model: nn.Module, phase: Phase, config: RunConfig, strategy: Strategy, adapter: Adapter,
                bn_mode: str, defaults: Mapping[str, Any], extra: dict[str, list[nn.Parameter]] | None = None,
                ) -> tuple[list[dict[str, Any]], list[GroupInfo]]:
    """Set ``requires_grad`` for ``phase``; return the optimiser's parameter groups and a row per block.

    ``model`` has a ``backbone`` (the blocks; see blocks.backbone_blocks) and a ``head``. In a block the phase
    trains, ``adapter`` picks the parameters that do; the head always trains, and so do ``extra`` groups
    (loss terms' own modules), at the base LR."""
    backbone = model.backbone
    blocks = backbone_blocks(backbone)
    flags = trainable_blocks(len(blocks), phase.train_blocks)
    decay = layer_decay(config, strategy, phase, defaults)
    base = config.setting("lr", defaults)
    params = dict(backbone.named_parameters())
    if not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in backbone.modules()):
        bn_mode = "-"  # nothing to set (transformers use LayerNorm)
    groups: list[dict[str, Any]] = []
    rows: list[GroupInfo] = []
    for i, (names, train) in enumerate(zip(blocks, flags)):
        named = [(k, params[k], train and adapter.trains(k, params[k])) for k in names]
        rows.append(add_group(groups, f"block {i} ({block_label(names)})", named, base * decay ** (len(blocks) - i),
                              config.weight_decay, bn_mode))
    rows.append(add_group(groups, "head", [(k, p, True) for k, p in model.head.named_parameters()], base,
                          config.weight_decay, bn_mode))
    for name, term_params in (extra or {}).items():
        rows.append(add_group(groups, f"term {name}", [(str(i), p, True) for i, p in enumerate(term_params)], base,
                              config.weight_decay, "-"))
    if not any(r.trainable for r in rows):
        raise TrainingError(f"strategy '{config.strategy}' with adapter '{adapter.name}' leaves nothing trainable "
                            f"in phase '{phase.name}'")
    return groups, rows


def add_group(groups: list[dict[str, Any]], name: str, named: list[tuple[str, nn.Parameter, bool]], lr: float,
              weight_decay: float, bn_mode: str) -> GroupInfo:
    """Set ``requires_grad`` per parameter, append optimiser groups (weight decay on matrices only) for those
    that train, and return the block's row for the table."""
    for _, p, train in named:
        p.requires_grad_(train)
    training = [(k, p) for k, p, train in named if train]
    for plist, wd in (([p for _, p in training if p.ndim > 1], weight_decay), ([p for _, p in training if p.ndim <= 1], 0.0)):
        if plist:
            groups.append({"params": plist, "lr": lr, "weight_decay": wd, "name": name})
    trainable = sum(p.numel() for _, p in training)
    return GroupInfo(name, len(named), trainable, lr if training else None,
                     bn_mode if training or bn_mode == "-" else "frozen")


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


