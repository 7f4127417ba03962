"""A probe's head and the training loop's ``nn.Linear`` are the same layer: conversions both ways.

LP-FT (``gradual``) starts the trainable head from the linear-probe solution; a fine-tuned model's head is
kept as a :class:`ProbeHead` so that prediction from cached features stays numpy.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from transferkit.heads.probe import ProbeHead

if TYPE_CHECKING:
    from torch import nn


def load_probe_into(linear: "nn.Linear", head: ProbeHead) -> None:
    """Set ``linear``'s weight and bias to the probe's (in place, outside autograd)."""
    import torch

    with torch.no_grad():
        linear.weight.copy_(torch.from_numpy(head.weight))
        linear.bias.copy_(torch.from_numpy(head.bias))


def probe_from_linear(linear: "nn.Linear", l2: float = 0.0) -> ProbeHead:
    """A trained layer as a numpy head (fp32 copies, detached from the model)."""
    return ProbeHead(linear.weight.detach().float().cpu().numpy().copy(),
                     linear.bias.detach().float().cpu().numpy().copy(), l2)
