"""Transfer strategies by name: small objects that decide, per phase, which parameters train, at which LR.

    linear-probe   frozen backbone, a logistic-regression head on cached features (no training loop)
    finetune       everything trains from the first epoch
    last-k:N       the last N backbone blocks + the head train; the rest stays frozen (and in eval mode)
    gradual        phase 1: the head only, initialised from the linear-probe solution; phase 2: everything,
                   with discriminative (layer-decayed) learning rates (LP-FT, fastai's ``fine_tune``)
    scratch        the same architecture, randomly initialised, everything trains

"Blocks" are the backbone's coarse parameter groups in output order (timm's ``group_matcher(coarse=True)``:
stem, then one group per stage; transformers encoders: embeddings, one group per layer, then the rest
(pooler); other models: the top-level child modules).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from transferkit.bounds import Int
from transferkit.errors import TransferkitError, shown

LAST_K = Int(1, 1000)  # more blocks than a backbone has train them all


@dataclass(frozen=True)
class Phase:
    """A stretch of epochs with one set of trainable parameters (one optimiser and schedule)."""

    index: int
    name: str
    first_epoch: int  # 0-based, inclusive
    epochs: int
    train_blocks: int | None  # backbone blocks that train, counted from the output end; None = all, 0 = none
    layer_decay: bool  # discriminative LRs over the blocks in this phase

    @property
    def last_epoch(self) -> int:
        return self.first_epoch + self.epochs - 1


@dataclass(frozen=True)
class Strategy:
    name: str
    frozen_backbone: bool  # True only for the feature-cache linear probe (no training loop)
    last_k: int | None = None
    pretrained: bool = True
    init_head_from_probe: bool = False
    layer_decay_by_default: bool = False  # discriminative LRs unless --layer-decay says otherwise

    def phases(self, epochs: int, freeze_epochs: int = 1) -> list[Phase]:
        """The phases covering ``epochs`` epochs in total: by default one, in which everything trains."""
        return [Phase(0, "all", 0, epochs, None, True)]


class LinearProbe(Strategy):
    def phases(self, epochs: int, freeze_epochs: int = 1) -> list[Phase]:
        return []  # no training loop: a head on cached features


class Gradual(Strategy):
    def phases(self, epochs: int, freeze_epochs: int = 1) -> list[Phase]:
        if 0 < epochs <= freeze_epochs:  # freeze_epochs 0: the probe's head is the whole head-only phase (LP-FT)
            raise TransferkitError(
                f"strategy gradual with epochs {epochs} and freeze_epochs {freeze_epochs}: every epoch would train "
                f"the head only; pass epochs {freeze_epochs + 1} or more, or freeze_epochs 0 (the probe's head is "
                "then the head-only phase)")
        head = freeze_epochs
        phases = [Phase(0, "head", 0, head, 0, False)] if head else []
        if epochs > head:
            phases.append(Phase(len(phases), "all", head, epochs - head, None, True))
        return phases


class LastK(Strategy):
    def phases(self, epochs: int, freeze_epochs: int = 1) -> list[Phase]:
        return [Phase(0, f"last-{self.last_k}", 0, epochs, self.last_k, True)]


def last_k(argument: str) -> Strategy:
    try:
        count = LAST_K.read("N", argument)
    except TransferkitError:
        raise TransferkitError(f"strategy {shown(f'last-k:{argument}')}: expected last-k:N with N "
                               f"{LAST_K.describe()}, e.g. last-k:2") from None
    return LastK("last-k", frozen_backbone=False, last_k=count)


@dataclass(frozen=True)
class Entry:
    """A registered strategy: how --help writes it, and what makes it (from the text after ``NAME:`` when it takes
    an argument, else from nothing)."""

    shown: str
    make: Callable[..., Strategy]
    argument: bool = False


# A new strategy is a Strategy subclass (its phases) plus one line here.
STRATEGIES: dict[str, Entry] = {
    "linear-probe": Entry("linear-probe", lambda: LinearProbe("linear-probe", frozen_backbone=True)),
    "finetune": Entry("finetune", lambda: Strategy("finetune", frozen_backbone=False)),
    "last-k": Entry("last-k:N", last_k, argument=True),
    "gradual": Entry("gradual", lambda: Gradual("gradual", frozen_backbone=False, init_head_from_probe=True,
                                                layer_decay_by_default=True)),
    "scratch": Entry("scratch", lambda: Strategy("scratch", frozen_backbone=False, pretrained=False)),
}
STRATEGY_NAMES = tuple(entry.shown for entry in STRATEGIES.values())


def parse_strategy(text: str) -> Strategy:
    name, colon, argument = text.partition(":")
    entry = STRATEGIES.get(name)
    if entry is None or entry.argument != bool(colon):
        raise TransferkitError(f"strategy {shown(text)} is not known; choose one of: {', '.join(STRATEGY_NAMES)}")
    return entry.make(argument) if entry.argument else entry.make()
