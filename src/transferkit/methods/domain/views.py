"""FixMatch's strong view, made on the training device from a batch of weak views (float NCHW in [0, 1]):
a random affine warp, brightness and contrast jitter, and a cut-out square. It draws from torch's global RNG,
which the loop reseeds per epoch and restores on resume, so a resumed step makes the same view."""

from __future__ import annotations

import math

import torch
from torch.nn import functional as F

ROTATE_DEGREES, SHIFT, SCALE = 15.0, 0.12, (0.85, 1.15)
CONTRAST, BRIGHTNESS, CUTOUT = (0.6, 1.4), 0.2, 0.35


def uniform(n: int, low: float, high: float, like: torch.Tensor) -> torch.Tensor:
    return torch.rand(n, device=like.device, dtype=torch.float32) * (high - low) + low


def affine(images: torch.Tensor) -> torch.Tensor:
    n = len(images)
    angle = uniform(n, -ROTATE_DEGREES, ROTATE_DEGREES, images) * math.pi / 180
    scale = uniform(n, *SCALE, images)
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin, uniform(n, -SHIFT, SHIFT, images)], 1),
                         torch.stack([sin, cos, uniform(n, -SHIFT, SHIFT, images)], 1)], 1)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images.float(), grid, padding_mode="zeros", align_corners=False)


def jitter(images: torch.Tensor) -> torch.Tensor:
    n = len(images)
    mean = images.mean(dim=(1, 2, 3), keepdim=True)
    contrast = uniform(n, *CONTRAST, images).view(n, 1, 1, 1)
    brightness = uniform(n, -BRIGHTNESS, BRIGHTNESS, images).view(n, 1, 1, 1)
    return ((images - mean) * contrast + mean + brightness).clamp(0.0, 1.0)


def cutout(images: torch.Tensor) -> torch.Tensor:
    n, _, height, width = images.shape
    side_h, side_w = max(1, round(CUTOUT * height)), max(1, round(CUTOUT * width))
    top = (torch.rand(n, device=images.device) * (height - side_h + 1)).long().view(n, 1)
    left = (torch.rand(n, device=images.device) * (width - side_w + 1)).long().view(n, 1)
    rows = torch.arange(height, device=images.device).view(1, height)
    cols = torch.arange(width, device=images.device).view(1, width)
    in_rows = ((rows >= top) & (rows < top + side_h)).view(n, 1, height, 1)
    in_cols = ((cols >= left) & (cols < left + side_w)).view(n, 1, 1, width)
    return images.masked_fill(in_rows & in_cols, 0.5)


def strong_view(images: torch.Tensor) -> torch.Tensor:
    """A strongly augmented copy of a float NCHW batch in [0, 1] (uint8 NHWC batches are converted first).
    Inputs that are not image batches (feature vectors) come back as they are: there is no image to warp."""
    if images.ndim != 4:
        return images
    if images.dtype == torch.uint8:
        images = images.permute(0, 3, 1, 2).float().div(255.0)
    view = cutout(jitter(affine(images)))
    return view.contiguous(memory_format=torch.channels_last)
