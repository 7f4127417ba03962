"""timm: ``timm:<arch>`` or a bare timm architecture name, with timm's pretrained weights from their hub (or a local
``--weights`` file). timm owns its networks' block grouping (``group_matcher``), and the LoRA presets of its
families: EfficientNet / MobileNet pointwise convolutions, ViT attention and MLP."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from transferkit.backbone_sources import BackboneSource
from transferkit.errors import BackboneError
from transferkit.modalities.hub import cached_hub_file, hf_endpoint, quiet_hub
from transferkit.modalities.image.backbones import BackboneSpec, check_downloadable, offline_error, torch_hub_file
from transferkit.modalities.image.preprocessing import Preprocessing

if TYPE_CHECKING:
    from torch import nn


class TimmSource(BackboneSource):
    name = "timm"
    prefix = "timm"
    # measured: Lite0 with r=8 trains 182,272 of 3.55M (5.1%)
    lora_targets: ClassVar[tuple[tuple[str, str], ...]] = (
        ("EfficientNet / MobileNet pointwise convolutions", r"conv_pw|conv_pwl|conv_head"),
        ("ViT attention and MLP", r"qkv|proj|fc1|fc2"),
    )

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
