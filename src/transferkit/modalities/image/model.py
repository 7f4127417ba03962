"""The saved model is one module: pixels in, logits out (normalisation, backbone and head inside)."""

from __future__ import annotations

import torch
from torch import nn

from transferkit.modalities.image.preprocessing import Preprocessing


class Normalize(nn.Module):
    """Takes ``uint8`` NHWC images (what the decoder yields) or float NCHW in [0, 1]; returns normalised NCHW.

    Permuting a contiguous NHWC batch gives an NCHW view with channels_last strides, the fast layout on CPU.
    """

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.dtype == torch.uint8:
            images = images.permute(0, 3, 1, 2).float().mul(1.0 / 255.0)
        return (images - self.mean) / self.std


class FeatureNet(nn.Module):
    """Normalisation + backbone: images -> pooled features."""

    def __init__(self, backbone: nn.Module, preprocessing: Preprocessing) -> None:
        super().__init__()
        self.normalize = Normalize(preprocessing.mean, preprocessing.std)
        self.backbone = backbone

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.backbone(self.normalize(images))


class ImageModel(nn.Module):
    """Images -> logits. ``features`` and ``head`` are reachable for probing, distillation and export."""

    def __init__(self, backbone: nn.Module, preprocessing: Preprocessing, num_features: int, num_classes: int) -> None:
        super().__init__()
        self.features = FeatureNet(backbone, preprocessing)
        self.head = nn.Linear(num_features, num_classes)

    @property
    def backbone(self) -> nn.Module:
        """The blocks strategies freeze and train (see strategies.backbone_blocks)."""
        return self.features.backbone

    def forward(self, images: torch.Tensor, with_features: bool = False) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Logits; ``with_features=True`` returns ``(pooled features, logits)`` for loss terms that read both
        (timm's ``forward_features`` / ``forward_head`` split, through one call so DDP's hooks still run)."""
        features = self.features(images)
        logits = self.head(features)
        return (features, logits) if with_features else logits
