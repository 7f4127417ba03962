"""One object describes a run; it round-trips to YAML, and re-running a saved ``config.yaml`` reproduces it."""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from .errors import TransferkitError

PROBE_STRATEGIES = ("linear-probe",)


@dataclass
class RunConfig:
    """Everything that decides what a run computes. Field names are the CLI's option names."""

    data: str | None = None
    backbone: str = "efficientnet_lite0"
    weights: str | None = None
    pretrained: bool = True
    strategy: str = "linear-probe"
    seed: int = 0
    val_fraction: float = 0.2
    strict: bool = False
    image_size: int | None = None
    # feature path
    engine: str = "auto"
    batch_size: int = 64
    workers: int | None = None
    cache: bool = True
    cache_dir: str | None = None
    cache_dtype: str = "float32"
    # head
    l2: float | None = None
    class_weights: str | None = None

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        def check(name: str, ok: bool, expected: str) -> None:
            if not ok:
                raise TransferkitError(f"config field '{name}' = {getattr(self, name)!r}: expected {expected}")

        check("val_fraction", 0 <= self.val_fraction < 1, "a number in [0, 1)")
        check("engine", self.engine in ("auto", "onnx", "torch"), "auto, onnx or torch")
        check("cache_dtype", self.cache_dtype in ("float32", "float16"), "float32 or float16")
        check("batch_size", self.batch_size >= 1, "a positive integer")
        check("class_weights", self.class_weights in (None, "auto", "none"), "auto or none")
        check("l2", self.l2 is None or self.l2 > 0, "a positive number or null (chosen on validation)")
        check("image_size", self.image_size is None or self.image_size >= 16, "null (the backbone's) or >= 16")
        from .strategies import parse_strategy

        parse_strategy(self.strategy)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "config") -> "RunConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise TransferkitError(f"{source}: unknown field '{unknown[0]}'; valid fields: {', '.join(sorted(known))}")
        return cls(**data)

    def to_yaml(self, path: str | Path | None = None) -> str:
        import yaml

        text = yaml.safe_dump(self.to_dict(), sort_keys=False)
        if path is not None:
            from .cache import atomic_write_bytes

            atomic_write_bytes(Path(path), text.encode())
        return text

    @classmethod
    def from_yaml(cls, path: str | Path) -> "RunConfig":
        import yaml

        path = Path(path)
        if not path.is_file():
            raise TransferkitError(f"{path}: config file not found")
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise TransferkitError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
        if not isinstance(data, dict):
            raise TransferkitError(f"{path}: expected a mapping of config fields")
        return cls.from_dict(data, str(path))

    def replace(self, **changes: Any) -> "RunConfig":
        return dataclasses.replace(self, **changes)
