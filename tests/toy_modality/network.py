"""The toy backbone: vectors [n, dim] -> features [n, width], two linear layers (two blocks for the strategies)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn

from transferkit.runs.rundir import read_tensors


class VectorNet(nn.Module):
    def __init__(self, dim: int, width: int) -> None:
        super().__init__()
        self.inner, self.outer = nn.Linear(dim, width), nn.Linear(width, width)
        self.num_features = width

    def forward(self, vectors: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.outer(torch.relu(self.inner(vectors.float()))))


def net_from(tensors: dict[str, torch.Tensor]) -> VectorNet:
    width, dim = tensors["inner.weight"].shape
    net = VectorNet(int(dim), int(width))
    net.load_state_dict(tensors)
    return net.eval()


@dataclass(frozen=True)
class VectorSpec:
    """A weights file (source "file") or a run's model.safetensors (source "run", its ``features.*``)."""

    name: str
    source: str
    location: str
    pretrained: bool = True
    fixed_fingerprint: str | None = None

    @property
    def fingerprint(self) -> str:
        if self.fixed_fingerprint:
            return self.fixed_fingerprint
        digest = hashlib.sha256(Path(self.location).read_bytes() + str(self.pretrained).encode())
        return f"vectors-{digest.hexdigest()[:16]}"

    def pinned(self, fingerprint: str) -> "VectorSpec":
        return replace(self, fixed_fingerprint=fingerprint)

    def build(self) -> VectorNet:
        if self.source == "run":
            tensors = {k: torch.from_numpy(v) for k, v in read_tensors(Path(self.location), "features.").items()}
        else:
            tensors = load_file(self.location)
        net = net_from(tensors)
        if not self.pretrained:  # scratch: the same shape, seeded random weights
            torch.manual_seed(0)
            net = VectorNet(net.inner.in_features, net.num_features)
        return net.eval()

    @property
    def dim(self) -> int:
        return self.build().inner.in_features


class VectorModel(nn.Module):
    """What the training loop trains: ``features`` (the backbone, exported as the engine) and a ``head``."""

    def __init__(self, features: VectorNet, num_classes: int) -> None:
        super().__init__()
        self.features = features
        self.head = nn.Linear(features.num_features, num_classes)

    @property
    def backbone(self) -> nn.Module:
        return self.features

    def forward(self, batch: torch.Tensor, with_features: bool = False):  # noqa: ANN201 - as ImageModel's
        features = self.features(batch)
        logits = self.head(features)
        return (features, logits) if with_features else logits
