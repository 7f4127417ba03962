"""Adapters decide which parameters exist and which of them train.

A strategy's phase says which backbone *blocks* train (all, the last k, none); the adapter says which
parameters *inside* a training block do. The new head always trains. ``attach`` may add modules (LoRA's
low-rank matrices, through ``peft``) before training, and ``merge`` folds them back so the saved model is one
plain module. Adapters come by name from ``config.adapter`` through :data:`~transferkit.plugins.ADAPTERS`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Mapping

import numpy as np
import torch
from safetensors.numpy import load_file
from torch import nn

from transferkit.errors import TransferkitError, first_line
from transferkit.plugins import ADAPTERS
from transferkit.runs.folders import ADAPTER_CONFIG, ADAPTER_FILE
from transferkit.runs.rundir import tensor_shapes
from transferkit.runs.schema import check_object, damaged, one_of, read_json_file

MAX_TARGETS = 10_000  # layers an adapter.json may name


@dataclass
class AdapterWeights:
    """What an adapter trained, apart from the base model: its tensors (``backbone.*``, ``head.*``) and the
    options that rebuild it (``adapter`` names it)."""

    tensors: dict[str, np.ndarray]
    config: dict[str, Any]

    def files(self) -> dict[str, bytes]:
        """adapter.safetensors and adapter.json, for a run folder."""
        from safetensors.numpy import save

        return {ADAPTER_FILE: save(self.tensors), ADAPTER_CONFIG: json.dumps(self.config, indent=2).encode()}

    @classmethod
    def of(cls, tensors: dict[str, torch.Tensor], config: dict[str, Any]) -> "AdapterWeights":
        """From torch tensors (as fp32 numpy, what safetensors.numpy writes)."""
        return cls({k: v.detach().cpu().numpy().astype(np.float32) for k, v in tensors.items()}, config)


class Adapter:
    """Every parameter of a training block trains (plain fine-tuning)."""

    name = "full"
    lr: ClassVar[float | None] = None  # the adapter's own default LR, measured where declared (None: the modality's)

    def attach(self, model: nn.Module) -> nn.Module:
        """The model to train (the same one, or with adapter modules added)."""
        return model

    def trains(self, name: str, parameter: nn.Parameter) -> bool:
        """Whether ``parameter`` (named relative to the backbone) trains when its block does."""
        return True

    def defaults(self, modality: Mapping[str, Any]) -> Mapping[str, Any]:
        """The fine-tuning defaults a run with this adapter takes for the fields it leaves null: the data's
        modality's (``modality``, keyed as config.FINETUNE_DEFAULTS), with the adapter's own learning rate where
        it declares one (:attr:`lr`, measured on validation there: adapters train few parameters, or start at
        zero, and need other steps than weights). A given --lr wins; SGD keeps its own (these LRs are AdamW's)."""
        return modality if self.lr is None else {**modality, "lr": self.lr}

    def merge(self, model: nn.Module) -> nn.Module:
        """The trained model as one plain module (adapter weights folded in)."""
        return model

    def saved(self, model: nn.Module, statistics: bool = False) -> AdapterWeights | None:
        """The adapter's own tensors and options, before merging (None: the adapter is the whole model);
        ``statistics``: BatchNorm's running statistics trained too, so they go along."""
        return None

    def trained_tensors(self, model: nn.Module, statistics: bool) -> dict[str, torch.Tensor]:
        """The backbone tensors :meth:`trains` names (with BatchNorm's running statistics when they trained too)
        and the head's: what an adapter that adds or picks parameters, rather than merging them, saves."""
        tensors = {f"backbone.{k}": v for k, v in model.backbone.state_dict().items()
                   if self.trains(k, v) or (statistics and "running_" in k)}
        tensors.update({f"head.{k}": v for k, v in model.head.state_dict().items()})
        return tensors

    def check_saved(self, shapes: dict[str, list[int]]) -> str | None:
        """Why tensors of these shapes (an adapter.safetensors) cannot be this adapter's, or None: checked before
        :meth:`attach` allocates anything."""
        return None

    def rebuild(self, backbone: nn.Module) -> None:
        """Add, untrained, the modules this adapter keeps in the saved model (those :meth:`merge` cannot fold
        into weights: a prompt), so a run's saved tensors load into a bare backbone; most adapters keep none."""

    def load(self, model: nn.Module, tensors: dict[str, Any]) -> None:
        """Put :meth:`saved` tensors into an attached model."""
        model.backbone.load_state_dict({k.removeprefix("backbone."): v for k, v in tensors.items()
                                        if k.startswith("backbone.")}, strict=False)
        model.head.load_state_dict({k.removeprefix("head."): v for k, v in tensors.items() if k.startswith("head.")})


class FullAdapter(Adapter):
    name = "full"


class BitFitAdapter(Adapter):
    """BitFit (Ben Zaken et al. 2022): only the backbone's bias terms train, with the new head; a fraction of
    a per cent of the parameters, and nothing to merge."""

    name = "bitfit"

    def trains(self, name: str, parameter: nn.Parameter) -> bool:
        return name.rsplit(".", 1)[-1] == "bias"

    def saved(self, model: nn.Module, statistics: bool = False) -> AdapterWeights:
        return AdapterWeights.of(self.trained_tensors(model, statistics), {"adapter": self.name})


def apply_adapter_file(model: nn.Module, folder: str | Path) -> nn.Module:
    """A pretrained model plus a run's adapter.safetensors / adapter.json, merged: the run's model rebuilt from
    the base weights and the adapter alone (a few hundred kB instead of the whole network). Both files are
    untrusted: the options are checked against the adapter's own, and against the saved tensors' shapes before
    anything is allocated (a rank of 100000 in adapter.json is gigabytes)."""
    folder = Path(folder)
    adapter = read_adapter_config(folder / ADAPTER_CONFIG)
    shapes = tensor_shapes(folder / ADAPTER_FILE)
    problem = adapter.check_saved(shapes)
    if problem:
        raise damaged(folder / ADAPTER_CONFIG, "", f"disagrees with {ADAPTER_FILE} ({problem})")
    model = adapter.attach(model)
    try:
        adapter.load(model, {k: torch.from_numpy(v) for k, v in load_file(str(folder / ADAPTER_FILE)).items()})
    except (TransferkitError, RuntimeError, ValueError) as exc:  # torch's shape mismatches are RuntimeErrors
        raise damaged(folder / ADAPTER_FILE, "", f"does not fit the model ({first_line(exc)})") from None
    return adapter.merge(model).eval()


def restore_unmerged(backbone: nn.Module, state: dict[str, Any], run_model: str | Path) -> None:
    """Before a run's saved backbone tensors (``state``) load into a bare ``backbone``: when they hold tensors
    the architecture lacks, the run's adapter.json names the adapter that kept them (a prompt: nothing to
    merge), checked as an adapter file is, and that adapter adds them. Other runs are left as they are."""
    extra = set(state) - set(backbone.state_dict())
    if not extra:
        return
    source = Path(run_model).parent / ADAPTER_CONFIG
    if not source.is_file():
        raise damaged(run_model, "", f"holds {len(extra)} tensor(s) its architecture lacks ({min(extra)}) and "
                                     f"no {ADAPTER_CONFIG} says which adapter they belong to")
    adapter = read_adapter_config(source)
    problem = adapter.check_saved({f"backbone.{k}": list(state[k].shape) for k in extra})
    if problem:
        raise damaged(source, "", f"disagrees with {Path(run_model).name} ({problem})")
    adapter.rebuild(backbone)
    backbone.kept_adapter = adapter.name  # a --from continuation must train this adapter (check_continuation)
    unknown = sorted(extra - set(backbone.state_dict()))
    if unknown:
        raise damaged(source, "", f"names adapter {adapter.name}, which keeps no tensor {unknown[0]} "
                                  f"({Path(run_model).name} holds it)")


def check_continuation(adapter: Adapter, model: nn.Module) -> None:
    """Refuse another adapter on a model that keeps an unmergeable one (a --from run's prompt): attaching, say,
    LoRA beside it would fail deep in the model, or drop the prompt the parent learnt."""
    kept = next((module.kept_adapter for module in model.modules() if hasattr(module, "kept_adapter")), None)
    if kept is not None and kept != adapter.name:
        raise TransferkitError(f"--adapter {adapter.name}: the run this continues (--from) keeps a {kept} adapter "
                               f"in its model, which cannot be merged into the weights; continue it with --adapter "
                               f"{kept} (the options in its adapter.json), or start from its base backbone")


def read_adapter_config(source: Path) -> Adapter:
    """The adapter an adapter.json names, built from its options; every field checked first."""
    names = ADAPTERS.names()
    config = dict(check_object(source, read_json_file(source), {"adapter": one_of(*names)}, extra=True))
    name = config.pop("adapter")
    targets = config.pop("target_modules", None)
    if targets is not None:  # the exact layers it was trained on, whatever preset or regex chose them then
        if not (isinstance(targets, list) and len(targets) <= MAX_TARGETS
                and all(isinstance(t, str) and 0 < len(t) <= 500 for t in targets)):
            raise damaged(source, "target_modules", f"is not a list of at most {MAX_TARGETS} layer names")
        config["targets"] = "|".join(re.escape(t) for t in targets)
    try:  # the registry's declared options and bounds, as for a typed --adapter spec (lora r <= 1024, ...)
        return ADAPTERS.factory(name)(**ADAPTERS.check_options(name, config))
    except (TransferkitError, TypeError, ValueError) as exc:
        raise damaged(source, "", f"holds options adapter {name} refuses ({first_line(exc)})") from None
