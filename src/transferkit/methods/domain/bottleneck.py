"""The bottleneck domain-adaptation terms align: ``backbone -> Linear -> BatchNorm -> classifier``.

It is linear on purpose. Composed with the classifier it is one affine map, so once trained it folds into a
plain ``nn.Linear`` head on the backbone's pooled features (:attr:`BottleneckHead.weight` / ``bias``), and an
adapted run is saved, exported and served like any other: ``features.*`` + ``head.weight`` / ``head.bias``.
What it adds while training is a narrow space (256 wide by default, against Lite0's 1280) where MMD's kernels
and the discriminators see the features the classifier reads.
"""

from __future__ import annotations

import torch
from torch import nn


class BottleneckHead(nn.Module):
    """``Linear(in, width) -> BatchNorm1d(width) -> Linear(width, classes)``; ``weight`` and ``bias`` are the
    one linear layer it equals in eval mode (BatchNorm on its running statistics), as ``nn.Linear`` has them."""

    def __init__(self, in_features: int, width: int, n_classes: int) -> None:
        super().__init__()
        self.in_features, self.width, self.out_features = in_features, width, n_classes
        self.bottleneck = nn.Sequential(nn.Linear(in_features, width), nn.BatchNorm1d(width))
        self.classifier = nn.Linear(width, n_classes)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.bottleneck(features))

    def folded(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(weight [classes, in], bias [classes]) of the equivalent linear layer, in float64 then float32."""
        linear, norm = self.bottleneck
        with torch.no_grad():
            scale = norm.weight.double() / torch.sqrt(norm.running_var.double() + norm.eps)
            shift = scale * (linear.bias.double() - norm.running_mean.double()) + norm.bias.double()
            inner = scale[:, None] * linear.weight.double()
            weight = self.classifier.weight.double() @ inner
            bias = self.classifier.weight.double() @ shift + self.classifier.bias.double()
        return weight.float(), bias.float()

    @property
    def weight(self) -> torch.Tensor:
        return self.folded()[0]

    @property
    def bias(self) -> torch.Tensor:
        return self.folded()[1]


class BottleneckModel(nn.Module):
    """An image model (``features`` -> pooled vector, ``head``) with a :class:`BottleneckHead` of ``width``
    in place of its linear head; ``forward(..., with_features=True)`` returns the bottleneck's output as the
    features loss terms read."""

    def __init__(self, model: nn.Module, width: int) -> None:
        super().__init__()
        self.features = model.features
        self.head = BottleneckHead(model.head.in_features, width, model.head.out_features)

    @property
    def backbone(self) -> nn.Module:
        return getattr(self.features, "backbone", self.features)

    def forward(self, inputs: torch.Tensor, with_features: bool = False,
                ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        reduced = self.head.bottleneck(self.features(inputs))
        logits = self.head.classifier(reduced)
        return (reduced, logits) if with_features else logits


def feature_width(model: nn.Module) -> int:
    """The width of the features a loss term is given: the bottleneck's, else the linear head's input."""
    head = model.head
    return head.width if isinstance(head, BottleneckHead) else head.in_features
