"""LoRA and (IA)^3 through ``peft``'s custom-model path: explicit target modules inside the backbone, the new
head trained and saved beside them, and the adapter merged back so the run holds one plain module.

Targets are chosen per family unless ``targets=REGEX`` says otherwise: the first preset (each backbone source
names its families', backbone_sources.py) that matches any linear or convolution layer of the backbone.
Depthwise and grouped convolutions are never targeted: peft refuses to merge convolutions with ``groups > 1``.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar

from torch import nn

from transferkit.backbone_sources import SOURCES
from transferkit.errors import TrainingError
from transferkit.progress import log
from transferkit.train.adapters import Adapter, AdapterWeights

ADAPTER_NAME = "default"  # peft's name for the one adapter a run trains


def adaptable(module: nn.Module) -> bool:
    return isinstance(module, (nn.Linear, nn.Conv2d, nn.Conv1d))


def matches(pattern: re.Pattern[str], name: str) -> bool:
    """A regex selects a module by its full dotted name or by its last part (``conv_pw``)."""
    return bool(pattern.fullmatch(name) or pattern.fullmatch(name.rsplit(".", 1)[-1]))


def kinds_of(backbone: nn.Module) -> str:
    """The distinct last name parts of the backbone's adaptable modules, for error messages."""
    seen = list(dict.fromkeys(n.rsplit(".", 1)[-1] for n, m in backbone.named_modules() if adaptable(m) and n))
    return ", ".join(seen[:12]) + (f", ... ({len(seen)} in all)" if len(seen) > 12 else "")


def select_targets(backbone: nn.Module, targets: str | None) -> list[str]:
    """Full names of the modules to adapt: those ``targets`` matches, else the first preset that matches."""
    candidates = [(n, m) for n, m in backbone.named_modules() if n and adaptable(m)]
    if targets is None:
        for _, preset in SOURCES.lora_targets(backbone):
            chosen = [n for n, m in candidates if matches(re.compile(preset), n) and getattr(m, "groups", 1) == 1]
            if chosen:
                return chosen
        raise TrainingError(f"adapter: no preset targets fit this backbone; pass targets=REGEX naming some of its "
                            f"layers ({kinds_of(backbone)})")
    try:
        pattern = re.compile(targets)
    except re.error as exc:
        raise TrainingError(f"adapter targets={targets!r}: not a regular expression ({exc})") from None
    hits = [(n, m) for n, m in candidates if matches(pattern, n)]
    grouped = [n for n, m in hits if getattr(m, "groups", 1) > 1]
    chosen = [n for n, m in hits if getattr(m, "groups", 1) == 1]
    if not chosen:
        why = (f"it matches only {len(grouped)} depthwise/grouped convolution(s), which peft cannot merge"
               if grouped else "it matches no linear or convolution layer")
        raise TrainingError(f"adapter targets={targets!r}: {why}; layers of this backbone: {kinds_of(backbone)}")
    if grouped:
        log(f"adapter: left out {len(grouped)} depthwise/grouped convolution(s) that targets={targets!r} matches "
            "(peft cannot merge groups > 1)")
    return chosen


class PeftAdapter(Adapter):
    """The shared part of peft-backed adapters: pick targets, inject, train only the adapter tensors, merge."""

    marker: ClassVar[str] = ""  # a substring of every parameter name the adapter adds

    def __init__(self, targets: str | None = None) -> None:
        self.targets, self.chosen, self.tuner = targets, [], None

    def tuner_for(self, backbone: nn.Module, targets: list[str]) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def options(self) -> dict[str, Any]:
        """The adapter's own options, as saved in adapter.json."""
        return {}

    def attach(self, model: nn.Module) -> nn.Module:
        self.chosen = select_targets(model.backbone, self.targets)
        self.tuner = self.tuner_for(model.backbone, self.chosen)  # modifies the backbone in place
        return model

    def trains(self, name: str, parameter: nn.Parameter) -> bool:
        return self.marker in name

    def saved(self, model: nn.Module, statistics: bool = False) -> AdapterWeights:
        from peft import get_peft_model_state_dict

        tensors = {f"backbone.{k.removeprefix('model.')}": v for k, v in get_peft_model_state_dict(self.tuner).items()}
        tensors.update({f"head.{k}": v for k, v in model.head.state_dict().items()})
        if statistics:  # BatchNorm statistics moved (--bn train): without them the adapter alone is another model
            tensors.update({f"backbone.{k}": v for k, v in model.backbone.state_dict().items() if "running_" in k})
        config = {"adapter": self.name, **self.options(), "target_modules": self.chosen}
        return AdapterWeights.of(tensors, config)

    def load(self, model: nn.Module, tensors: dict[str, Any]) -> None:
        """Put saved adapter tensors (from :meth:`saved`) into an attached model."""
        from peft import set_peft_model_state_dict

        adapter = {f"model.{k.removeprefix('backbone.')}": v for k, v in tensors.items()
                   if k.startswith("backbone.") and self.marker in k}
        result = set_peft_model_state_dict(self.tuner, adapter, adapter_name=ADAPTER_NAME)
        missing = [k for k in result.missing_keys if self.marker in k]
        if missing:
            raise TrainingError(f"adapter file lacks {len(missing)} tensor(s) the adapter needs ({missing[0]})")
        super().load(model, {k: v for k, v in tensors.items() if self.marker not in k})  # head, BN statistics

    def merge(self, model: nn.Module) -> nn.Module:
        if self.tuner is not None:
            self.tuner.merge_and_unload()  # replaces the adapted layers inside the backbone by merged ones
            self.tuner = None
        return model


class LoraAdapter(PeftAdapter):
    """LoRA (Hu et al. 2021): a low-rank update ``B @ A`` (rank ``r``, scaled by ``alpha / r``) beside each
    target layer's frozen weight; ``B`` starts at zero, so training starts from the pretrained model."""

    name = "lora"
    marker = "lora_"
    # B starts at zero and the update is scaled by alpha / r: far larger steps than full fine-tuning's. Validation
    # accuracy, MiniLM gradual, 2 epochs of 1600 rows, seed 0, trec / rt_polarity: LR 1e-3 0.885 / 0.785, 3e-3
    # 0.900 / 0.803, 6e-3 0.888 / 0.798. Images: hymenoptera, Lite0 gradual, 3 epochs, seed 0, its 49 validation
    # images: 3e-3 0.939 against the image bench's 9e-4 0.918 (one image is 2 points: only "not worse").
    lr = 3e-3

    def __init__(self, r: int = 8, alpha: float = 16, dropout: float = 0.05, targets: str | None = None) -> None:
        super().__init__(targets)  # the options' ranges are declared in plugins.py, checked when parsed
        self.r, self.alpha, self.dropout = int(r), float(alpha), float(dropout)

    def options(self) -> dict[str, Any]:
        return {"r": self.r, "alpha": self.alpha, "dropout": self.dropout}

    def check_saved(self, shapes: dict[str, list[int]]) -> str | None:
        ranks = {shape[0] for name, shape in shapes.items() if "lora_A" in name and shape} | \
                {shape[1] for name, shape in shapes.items() if "lora_B" in name and len(shape) > 1}
        return None if ranks <= {self.r} else f"r={self.r}, but its tensors have rank {sorted(ranks)[0]}"

    def tuner_for(self, backbone: nn.Module, targets: list[str]) -> Any:
        from peft import LoraConfig
        from peft.tuners.lora import LoraModel

        config = LoraConfig(r=self.r, lora_alpha=self.alpha, lora_dropout=self.dropout, target_modules=targets)
        return LoraModel(backbone, config, ADAPTER_NAME)


class IA3Adapter(PeftAdapter):
    """(IA)^3 (Liu et al. 2022): a learned per-channel scale on each target layer, initialised to one; the
    fewest parameters of all (one vector per layer)."""

    name = "ia3"
    marker = "ia3_l"

    def tuner_for(self, backbone: nn.Module, targets: list[str]) -> Any:
        from peft import IA3Config
        from peft.tuners.ia3 import IA3Model

        # scaling the inputs of every target (feedforward) or their outputs: inputs, as for MLP layers
        config = IA3Config(target_modules=targets, feedforward_modules=targets)
        return IA3Model(backbone, config, ADAPTER_NAME)
