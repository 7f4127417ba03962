"""timm: ``timm:<arch>`` or a bare timm architecture name, with timm's pretrained weights from their hub (or a local
``--weights`` file). The timm family's facts: block grouping is timm's ``group_matcher``; the pooled width is
``head_hidden_size`` (MobileNetV4's head convolution widens ``num_features``); networks with a fixed input size
(ViTs: a position table per patch) load a weights file through timm's own checkpoint filter and are then resampled
to the run's input size (DINOv2's 518 px weights at 224 px); LoRA presets per timm model class.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any, ClassVar

from transferkit.backbone_sources import BackboneSource
from transferkit.errors import BackboneError, first_line
from transferkit.modalities.hub import cached_hub_file, hf_endpoint, quiet_hub
from transferkit.modalities.image.backbones import BackboneSpec, check_downloadable, offline_error, torch_hub_file
from transferkit.modalities.image.preprocessing import Preprocessing

if TYPE_CHECKING:
    import torch
    from torch import nn


class TimmSource(BackboneSource):
    name = "timm"
    prefix = "timm"
    # measured: Lite0 with r=8 trains 182,272 of 3.55M (5.1%)
    lora_targets: ClassVar[tuple[tuple[str, str], ...]] = (
        ("EfficientNet / MobileNet pointwise convolutions", r"conv_pw|conv_pwl|conv_head"),
        ("ViT attention and MLP", r"qkv|proj|fc1|fc2"),
    )
    # timm model class -> its preset: MobileNetV3 is also MobileNetV4's class (universal inverted residuals,
    # EdgeResidual stages, the hybrids' attention), ConvNeXt's MLP is linear layers beside depthwise convolutions
    families: ClassVar[dict[str, tuple[str, str]]] = {
        "EfficientNet": lora_targets[0],
        "MobileNetV3": ("MobileNetV3 / V4 pointwise convolutions and attention",
                        (r"conv_pw|conv_pwl|conv_exp|conv_head|.*\.(pw_exp|pw_proj)\.conv"
                         r"|.*\.(query|key|value|output)\.proj")),
        "VisionTransformer": lora_targets[1],
        "ConvNeXt": ("ConvNeXt MLP", r"fc1|fc2"),
    }

    def claims(self, name: str) -> bool:
        return name.startswith(f"{self.prefix}:") or ":" not in name

    def resolve(self, name: str, weights: str | None = None, pretrained: bool = True, **_: Any) -> BackboneSpec:
        arch = name.partition(":")[2] if ":" in name else name
        check_arch(name, arch)
        cfg = timm_cfg(arch)
        if pretrained and weights is None:  # fail now, not after minutes of work, when it cannot download
            check_downloadable(name, *timm_weights(arch))
        return BackboneSpec(name, arch, self.name, Preprocessing.from_timm_cfg(cfg), weights, pretrained)

    def build(self, spec: BackboneSpec) -> "nn.Module":
        return timm_model(spec.name, spec.arch, spec.pretrained and not spec.weights)

    def rows(self) -> list[dict[str, Any]]:
        return [{"name": "timm:<arch>", "source": "timm (hub)", "offline": False,
                 "needs": "network or --weights", "input_size": None, "num_features": None}]

    def source_head(self, spec: BackboneSpec, num_features: int) -> "nn.Linear | None":
        import timm  # import cost: only when a run asks for the source head

        from transferkit.modalities.image.source_head import head_from_state

        model = timm.create_model(spec.arch, pretrained=True)
        return head_from_state(model.get_classifier().state_dict(), num_features, names=("",))

    def blocks(self, backbone: "nn.Module", names: list[str]) -> list[list[str]] | None:
        if not hasattr(backbone, "group_matcher"):
            return None
        from timm.models import group_parameters

        grouped = group_parameters(backbone, backbone.group_matcher(coarse=True))
        return [list(grouped[k]) for k in sorted(grouped)]

    def lora_presets(self, backbone: "nn.Module") -> tuple[tuple[str, str], ...]:
        family = self.families.get(type(backbone).__name__)
        return (family,) if family else self.lora_targets

    def feature_width(self, backbone: "nn.Module") -> int:
        return int(getattr(backbone, "head_hidden_size", None) or backbone.num_features)

    def fit_state(self, model: "nn.Module", state: "dict[str, torch.Tensor]") -> "dict[str, torch.Tensor]":
        # the filter timm applies to its own hub weights (resamples position tables, converts original checkpoints),
        # where the input size is part of the network; other files load as they are
        checkpoint_filter = getattr(import_module(type(model).__module__), "checkpoint_filter_fn", None)
        if checkpoint_filter is None or not fixed_size(model):
            return state
        try:
            return checkpoint_filter(state, model)
        except Exception as exc:  # noqa: BLE001 - a file of another architecture fails in the filter's own way
            raise BackboneError(f"timm cannot fit its tensors to {type(model).__name__} ({first_line(exc)}); the "
                                "file was saved from a different architecture") from None

    def fit_input_size(self, model: "nn.Module", input_size: int) -> None:
        # built (and loaded) at its own size; a ViT that interpolates at run time (dynamic_img_size) is left so
        if fixed_size(model) and not getattr(model, "dynamic_img_size", False) and hasattr(model, "set_input_size"):
            model.set_input_size(img_size=(input_size, input_size))  # resamples its position table once


def fixed_size(model: "nn.Module") -> bool:
    """Whether the input size is part of the network (timm's ``fixed_input_size``: a ViT's position table)."""
    return bool(getattr(model, "pretrained_cfg", {}).get("fixed_input_size"))


def timm_cfg(arch: str) -> dict[str, Any]:
    import timm

    cfg = timm.get_pretrained_cfg(arch)
    return cfg.to_dict() if cfg is not None else {}


def timm_weights(arch: str) -> tuple[str | None, str | None]:
    """(the local copy of timm's pretrained weights for ``arch``, or None; where they are downloaded from)."""
    cfg = timm_cfg(arch)
    if cfg.get("hf_hub_id"):
        filename = cfg.get("hf_hub_filename")
        names = (filename,) if filename else ("model.safetensors", "pytorch_model.bin")
        return cached_hub_file(cfg["hf_hub_id"], names), hf_endpoint()
    if cfg.get("url"):
        return torch_hub_file(cfg["url"]), cfg["url"]
    return None, None


def check_arch(name: str, arch: str) -> None:
    import timm

    if not timm.is_model(arch):
        raise BackboneError(f"backbone '{name}': unknown timm architecture '{arch}'; see timm.list_models()")


def timm_model(name: str, arch: str, download: bool) -> "nn.Module":
    """timm's ``arch`` without its classifier (pooled features), with timm's pretrained weights if ``download``."""
    import timm

    check_arch(name, arch)
    overlay = None
    if download:
        cached, origin = timm_weights(arch)
        check_downloadable(name, cached, origin)
        # the local copy directly: no request to the hub (which, offline, retries for most of a minute)
        overlay = {"file": cached, "source": "timm"} if cached else None
    try:
        with quiet_hub():
            return timm.create_model(arch, pretrained=download, num_classes=0, pretrained_cfg_overlay=overlay)
    except Exception as exc:  # noqa: BLE001 - network failures come in many types
        if download:
            raise offline_error(name, exc) from None
        raise BackboneError(f"backbone '{name}': timm could not build '{arch}': {exc}") from None
