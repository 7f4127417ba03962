"""The pretrained model's own classifier (ImageNet's 1000 classes for the packaged Lite weights): what LwF keeps
predicting and what source retention is measured with. The backbone is built without it (``num_classes=0``),
so it is read back from the weights file, or asked of the backbone's source (timm's pretrained model)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from transferkit.backbone_sources import SOURCES
from transferkit.modalities.image.backbones import BackboneSpec, read_state_dict

if TYPE_CHECKING:
    import torch
    from torch import nn

# classifier names in checkpoints: timm's own, torchvision's, and ports (lukemelas' EfficientNet: ``_fc``)
CLASSIFIER_NAMES = ("classifier", "fc", "_fc", "head", "head.fc", "last_linear")


def source_head(spec: BackboneSpec, num_features: int) -> "nn.Linear | None":
    """The classifier that came with the pretrained weights, or None (random init, a fine-tuned run's backbone,
    torchvision hub weights, or a file without one)."""
    if not spec.pretrained or spec.run_model:
        return None
    if spec.weights:
        return head_from_state(read_state_dict(spec.weights), num_features)
    return SOURCES.get(spec.source).source_head(spec, num_features)


def head_from_state(state: "dict[str, torch.Tensor]", num_features: int,
                    names: tuple[str, ...] = CLASSIFIER_NAMES) -> "nn.Linear | None":
    from torch import nn

    for name in names:
        prefix = f"{name}." if name else ""
        weight, bias = state.get(f"{prefix}weight"), state.get(f"{prefix}bias")
        if weight is not None and weight.ndim == 2 and weight.shape[1] == num_features:
            head = nn.Linear(num_features, weight.shape[0], bias=bias is not None)
            head.weight.data.copy_(weight)
            if bias is not None:
                head.bias.data.copy_(bias)
            return head.eval().requires_grad_(False)
    return None
