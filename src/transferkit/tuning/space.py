"""Search spaces as objects: each dimension knows how a trial suggests it, which kinds of data and settings it
applies to, and which :class:`~transferkit.config.RunConfig` fields its value sets. A setting the user fixed on
the command line is not tuned. Free of optuna and numpy at import (a trial is anything with optuna's ``suggest_*``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Mapping

from transferkit.config import RunConfig
from transferkit.errors import TransferkitError, arg
from transferkit.registry import format_spec, parse_spec

if TYPE_CHECKING:
    from transferkit.modalities.base import Defaults

Trial = Any  # optuna.Trial (duck-typed: this module never imports optuna)


def defaults_of(kind: str) -> Defaults:
    """The defaults of the modality called ``kind`` (what it tunes, its epochs)."""
    from transferkit.modalities import modality_named  # lazy: the modalities import numpy

    return modality_named(kind).defaults


@dataclass(frozen=True)
class Dimension:
    """One tuned setting: the RunConfig field ``name``; ``own``: a field only some modalities read, tuned for
    those whose defaults list it (``Defaults.tuned``). ``kind`` below is the data's modality's name."""

    name: str
    own: bool = False

    def for_kind(self, kind: str) -> bool:
        return not self.own or self.name in defaults_of(kind).tuned

    def applies(self, kind: str, config: RunConfig, fixed: frozenset[str]) -> bool:
        """Tuned for this data kind, unless the user fixed the field."""
        return self.for_kind(kind) and self.name not in fixed

    def suggest(self, trial: Trial, kind: str) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def changes(self, value: Any, config: RunConfig) -> dict[str, Any]:
        """The config fields ``value`` sets."""
        return {self.name: value}

    def describe(self, kind: str) -> str:  # pragma: no cover - abstract
        raise NotImplementedError


@dataclass(frozen=True)
class LogFloat(Dimension):
    low: float = 1e-3
    high: float = 1.0

    def suggest(self, trial: Trial, kind: str) -> Any:
        return trial.suggest_float(self.name, self.low, self.high, log=True)

    def describe(self, kind: str) -> str:
        return f"{self.name} log-uniform [{self.low:g}, {self.high:g}]"


@dataclass(frozen=True)
class Uniform(Dimension):
    low: float = 0.0
    high: float = 1.0

    def suggest(self, trial: Trial, kind: str) -> Any:
        return trial.suggest_float(self.name, self.low, self.high)

    def describe(self, kind: str) -> str:
        return f"{self.name} uniform [{self.low:g}, {self.high:g}]"


@dataclass(frozen=True)
class Integer(Dimension):
    """An integer in [low, high]; ``high`` None: the most epochs of the modality's fine-tuning trials
    (``Defaults.epochs``: text fine-tunes take fewer)."""

    low: int = 1
    high: int | None = None

    def top(self, kind: str) -> int:
        return self.high if self.high is not None else defaults_of(kind).epochs[2]

    def suggest(self, trial: Trial, kind: str) -> Any:
        return trial.suggest_int(self.name, self.low, self.top(kind))

    def describe(self, kind: str) -> str:
        return f"{self.name} integer [{self.low}, {self.top(kind)}]"


@dataclass(frozen=True)
class Choice(Dimension):
    choices: tuple[Any, ...] = ()

    def suggest(self, trial: Trial, kind: str) -> Any:
        return trial.suggest_categorical(self.name, list(self.choices))

    def describe(self, kind: str) -> str:
        return f"{self.name} one of {', '.join(map(str, self.choices))}"


@dataclass(frozen=True)
class AdapterRank(Choice):
    """The rank of a low-rank adapter the user chose (``--adapter lora``), unless the spec names one."""

    adapters: tuple[str, ...] = ("lora",)
    option: str = "r"

    def applies(self, kind: str, config: RunConfig, fixed: frozenset[str]) -> bool:
        name, options = parse_spec(config.adapter)
        return self.for_kind(kind) and name in self.adapters and self.option not in options

    def changes(self, value: Any, config: RunConfig) -> dict[str, Any]:
        name, options = parse_spec(config.adapter)
        options[self.option] = value
        return {"adapter": format_spec(name, options)}


@dataclass(frozen=True)
class SearchSpace:
    """What one kind of search tunes, and how: trials that train the backbone (and can be pruned on their
    validation curve) or that fit a head on features extracted once."""

    name: str
    trains_backbone: bool
    default_strategy: str  # when the user names no strategy
    pruner: str  # the default pruner (tuning.base.PRUNERS)
    dimensions: tuple[Dimension, ...]
    summary: str

    def active(self, kind: str, config: RunConfig, fixed: frozenset[str]) -> list[Dimension]:
        return [d for d in self.dimensions if d.applies(kind, config, fixed)]

    def suggest(self, trial: Trial, kind: str, dimensions: list[Dimension]) -> dict[str, Any]:
        """A trial's parameters, by dimension name."""
        return {d.name: d.suggest(trial, kind) for d in dimensions}

    def changes(self, params: Mapping[str, Any], base: RunConfig, dimensions: list[Dimension]) -> dict[str, Any]:
        """The config fields the parameters set (a parameter no dimension owns is left out)."""
        changes: dict[str, Any] = {}
        for d in dimensions:
            if d.name in params:
                changes.update(d.changes(params[d.name], base))
        return changes

    def config_for(self, params: Mapping[str, Any], base: RunConfig, dimensions: list[Dimension]) -> RunConfig:
        return base.replace(**self.changes(params, base, dimensions))


# Probe L2 spans the default grid of heads/probe.py (1e-5..10) and a decade past its strong end, where the
# grid's own choice sits on hymenoptera (val accuracy 0.961 at 10 and 30, 0.948 at 100); text probes also
# choose which encoder layers are pooled (each choice is its own feature set, extracted once) and how.
PROBE = SearchSpace(
    "probe", trains_backbone=False, default_strategy="linear-probe", pruner="none",
    dimensions=(LogFloat("l2", low=1e-5, high=100.0), Choice("class_weights", choices=("none", "auto")),
                Choice("feature_layers", own=True, choices=(1, 2, 4)),
                Choice("pooling", own=True, choices=("mean", "cls"))),
    summary="the head on cached features: L2 strength, class weights (text: pooled layers, pooling)")

# Short fine-tunes: epochs up to the modality's most per trial (images 10, their default; text 3, its default 2
# inside the range).
FINETUNE = SearchSpace(
    "finetune", trains_backbone=True, default_strategy="finetune", pruner="median",
    dimensions=(LogFloat("lr", low=3e-5, high=3e-3), Uniform("layer_decay", low=0.5, high=1.0),
                Integer("epochs", low=1),
                # not affine: it is for data whose orientation is the class (digits), a choice of the data, not a
                # setting a search over short fine-tunes should spend trials on
                Choice("augment", own=True, choices=("none", "light")),
                AdapterRank("adapter_rank", choices=(4, 8, 16))),
    summary="short fine-tunes: LR, layer decay, epochs, augmentation (images), adapter rank (LoRA)")

SPACES: dict[str, SearchSpace] = {space.name: space for space in (PROBE, FINETUNE)}


def space_for(name: str | None, trains_backbone: bool | None) -> SearchSpace:
    """The space called ``name``; without one, the space of the strategy (``trains_backbone``; None: the probe)."""
    if name is None:
        return next(s for s in SPACES.values() if s.trains_backbone == bool(trains_backbone))
    if name not in SPACES:
        raise TransferkitError(f"{arg('space', name)}: unknown search space; choose one of: {', '.join(SPACES)}")
    return SPACES[name]
