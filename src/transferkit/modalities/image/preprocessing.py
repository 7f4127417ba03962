"""A backbone's own preprocessing (timm's ``pretrained_cfg`` subset), and the transforms built from it."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from transferkit.config import CROP_RANGE, MAX_IMAGE_SIZE, MIN_IMAGE_SIZE
from transferkit.runs.schema import Check, check_object, number, numbers, one_of

_PIL_INTERPOLATION = {
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "nearest": Image.Resampling.NEAREST,
    "lanczos": Image.Resampling.LANCZOS,
}


# What a run's preprocessing.json may hold (to_dict's fields); the bounds are the config's (image_size, crop_pct).
RUN_FILE_SCHEMA: dict[str, Check] = {
    "input_size": number(MIN_IMAGE_SIZE, MAX_IMAGE_SIZE, integer=True),
    "mean": numbers(3, number(-10, 10)),
    "std": numbers(3, number(0, 10, open_low=True)),
    "interpolation": one_of(*_PIL_INTERPOLATION),
    "crop_pct": number(*CROP_RANGE),
}


@dataclass(frozen=True)
class Preprocessing:
    """How a backbone expects its input: resize the short side to ``size / crop_pct``, centre-crop ``size``."""

    input_size: int = 224
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    interpolation: str = "bicubic"
    crop_pct: float = 0.875

    def __post_init__(self) -> None:
        if self.interpolation not in _PIL_INTERPOLATION:
            raise ValueError(f"interpolation must be one of {sorted(_PIL_INTERPOLATION)}, got {self.interpolation!r}")
        object.__setattr__(self, "mean", tuple(float(v) for v in self.mean))
        object.__setattr__(self, "std", tuple(float(v) for v in self.std))

    @property
    def resize_size(self) -> int:
        return int(math.floor(self.input_size / self.crop_pct))

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["mean"], data["std"] = list(self.mean), list(self.std)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Preprocessing":
        return cls(**{key: data[key] for key in cls.__dataclass_fields__ if key in data})

    @classmethod
    def from_run_file(cls, data: Any, path: str | Path) -> "Preprocessing":
        """A run's preprocessing.json, every field checked: an input size is memory (a 60000-pixel side is tens
        of gigabytes per image), the rest decides every feature."""
        return cls.from_dict(check_object(path, data, RUN_FILE_SCHEMA))

    @classmethod
    def from_timm_cfg(cls, cfg: dict[str, Any]) -> "Preprocessing":
        size = cfg.get("input_size", (3, 224, 224))[-1]
        return cls(
            input_size=int(size),
            mean=tuple(cfg.get("mean", cls.mean)),
            std=tuple(cfg.get("std", cls.std)),
            interpolation=cfg.get("interpolation", "bicubic") or "bicubic",
            crop_pct=float(cfg.get("crop_pct", 0.875) or 0.875),
        )

    # -- evaluation transform: PIL -> uint8 HWC array (normalisation happens in the model) ---------------
    def resize_and_crop(self, image: Image.Image) -> np.ndarray:
        """Resize the short side and centre-crop, returning a ``uint8`` HWC array.

        Normalisation is folded into the exported model, so decoded batches stay 4x smaller (uint8) between
        worker processes and the engine.
        """
        short = self.resize_size
        width, height = image.size
        scale = short / min(width, height)
        new_w, new_h = max(short, round(width * scale)), max(short, round(height * scale))
        image = image.resize((new_w, new_h), _PIL_INTERPOLATION[self.interpolation], reducing_gap=None)
        left, top = (new_w - self.input_size) // 2, (new_h - self.input_size) // 2
        image = image.crop((left, top, left + self.input_size, top + self.input_size))
        return np.asarray(image, dtype=np.uint8)
