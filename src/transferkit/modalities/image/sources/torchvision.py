"""torchvision: ``torchvision:<arch>`` with torchvision's ``DEFAULT`` weights (or a local ``--weights`` file).
The last linear layer (the classifier) becomes identity, so the network returns pooled features."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from transferkit.backbone_sources import BackboneSource
from transferkit.errors import BackboneError
from transferkit.modalities.image.backbones import BackboneSpec, check_downloadable, offline_error, torch_hub_file
from transferkit.modalities.image.preprocessing import Preprocessing

if TYPE_CHECKING:
    from torch import nn


class TorchvisionSource(BackboneSource):
    name = "torchvision"
    prefix = "torchvision"

    def claims(self, name: str) -> bool:
        return name.startswith(f"{self.prefix}:")

    def resolve(self, name: str, weights: str | None = None, pretrained: bool = True, **_: Any) -> BackboneSpec:
        arch = name.partition(":")[2]
        defaults = default_weights(name, arch)
        transform = defaults.transforms()
        size = transform.crop_size[0]
        preprocessing = Preprocessing(size, tuple(transform.mean), tuple(transform.std),
                                      transform.interpolation.value, size / transform.resize_size[0])
        if pretrained and weights is None:  # fail now, not after minutes of work, when it cannot download
            check_downloadable(name, *cached(defaults))
        return BackboneSpec(name, arch, self.name, preprocessing, weights, pretrained)

    def build(self, spec: BackboneSpec) -> "nn.Module":
        import torchvision
        from torch import nn

        download = spec.pretrained and not spec.weights
        weights = default_weights(spec.name, spec.arch)
        if download:
            check_downloadable(spec.name, *cached(weights))
        try:
            model = torchvision.models.get_model(spec.arch, weights=weights if download else None)
        except Exception as exc:  # noqa: BLE001
            raise offline_error(spec.name, exc) from None
        # Replace the last linear layer (the classifier) by identity so the network returns pooled features.
        head_name, head = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)][-1]
        parent_name, _, attr = head_name.rpartition(".")
        setattr(model.get_submodule(parent_name) if parent_name else model, attr, nn.Identity())
        model.num_features = head.in_features
        return model

    def rows(self) -> list[dict[str, Any]]:
        return [{"name": "torchvision:<arch>", "source": "torchvision", "offline": False,
                 "needs": "network or --weights", "input_size": None, "num_features": None}]


def default_weights(name: str, arch: str) -> Any:
    import torchvision

    if arch not in torchvision.models.list_models(module=torchvision.models):
        raise BackboneError(f"backbone '{name}': unknown torchvision classification model '{arch}'")
    return torchvision.models.get_model_weights(arch).DEFAULT


def cached(weights: Any) -> tuple[str | None, str]:
    """(the hub cache's file of ``weights``, or None, and its URL)."""
    return torch_hub_file(weights.url), weights.url
