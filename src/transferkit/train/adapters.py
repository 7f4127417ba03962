"""Adapters decide which parameters exist and which of them train.

A strategy's phase says which backbone *blocks* train (all, the last k, none); the adapter says which
parameters *inside* a training block do. The new head always trains. ``attach`` may add modules (LoRA's
low-rank matrices, through ``peft``) before training, and ``merge`` folds them back so the saved model is one
plain module. Adapters come by name from ``config.adapter`` through :data:`~transferkit.train.registries.ADAPTERS`.
"""

from __future__ import annotations

from torch import nn


class Adapter:
    """Every parameter of a training block trains (plain fine-tuning)."""

    name = "full"

    def attach(self, model: nn.Module) -> nn.Module:
        """The model to train (the same one, or with adapter modules added)."""
        return model

    def trains(self, name: str, parameter: nn.Parameter) -> bool:
        """Whether ``parameter`` (named relative to the backbone) trains when its block does."""
        return True

    def merge(self, model: nn.Module) -> nn.Module:
        """The trained model as one plain module (adapter weights folded in)."""
        return model


class FullAdapter(Adapter):
    name = "full"


class BitFitAdapter(Adapter):
    """BitFit (Ben Zaken et al. 2022): only the backbone's bias terms train, with the new head; a fraction of
    a per cent of the parameters, and nothing to merge."""

    name = "bitfit"

    def trains(self, name: str, parameter: nn.Parameter) -> bool:
        return name.rsplit(".", 1)[-1] == "bias"
