"""One object describes a run; it round-trips to YAML, and re-running a saved ``config.yaml`` reproduces it.

Each field is declared once: its type (a ``Literal`` lists the allowed values), default, help text, the
``--help`` panel it shows in and, where the type alone does not say it, which values are valid. Validation
and the ``transferkit train`` options are both generated from these declarations (see cli/train.py).
This module stays torch-free: the CLI imports it to build ``--help``.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Callable, Literal, Mapping

from transferkit.atomic import atomic_write_bytes
from transferkit.bounds import Bound, Int, Real
from transferkit.errors import TransferkitError, arg, shown
from transferkit.plugins import ADAPTERS, CALLBACKS, LOSS_TERMS
from transferkit.registry import Registry, plugin
from transferkit.strategies import STRATEGY_NAMES, parse_strategy

Optimizer = Literal["sgd", "adam", "adamw"]
Schedule = Literal["constant", "step", "multistep", "cosine", "one-cycle"]
BnMode = Literal["auto", "frozen", "train"]
Augment = Literal["none", "light", "affine", "strong"]
Metric = Literal["val_accuracy", "val_macro_f1", "val_loss"]
Precision = Literal["auto", "no", "bf16", "fp16"]
# The feature engines by name, each the plan in features/engines.py that opens it (referenced, not imported:
# this module stays numpy-free); the engine field's choices are their names.
ENGINES = Registry("engine", {
    "auto": plugin("transferkit.features.engines:plan_auto"),
    "onnx": plugin("transferkit.features.engines:plan_onnx"),
    "torch": plugin("transferkit.features.engines:plan_torch"),
    "onnx-int8": plugin("transferkit.features.engines:plan_int8"),
})
Engine = Literal[tuple(ENGINES.names())]  # type: ignore[valid-type]  # the same Literal, from the registry
CacheDtype = Literal["float32", "float16"]
ClassWeights = Literal["auto", "none"]
Pooling = Literal["auto", "mean", "cls"]

# --help panels (train's own options show under "Options")
MODEL, DATA, FEATURES, HEAD, FINE_TUNING, TEXT = "Model", "Data", "Features", "Head", "Fine-tuning", "Text"

# Fine-tuning defaults for the fields left null: a modality's own (Modality.defaults.training) start from these,
# measured on images, and change what its data wants otherwise (modalities/text/modality.py). gradual's
# head-only epochs after the probe: 1 (the head meets augmented views).
FINETUNE_DEFAULTS: Mapping[str, Any] = types.MappingProxyType(
    {"epochs": 10, "batch_size": 64, "lr": 3e-4, "layer_decay": 0.7, "warmup": 0.0, "freeze_epochs": 1})
SGD_LR = 1e-2
# Extraction / prediction batch. ONNX Runtime keeps a batch's activations in its arena: Lite0 @224 peaked at
# 884 MB with 64 images, 488 MB with 32, at the same img/s (105-115 either way); MiniLM 340 vs 294 MB, same speed.
# An ONNX image engine slices it further (features/engines.py: ENGINE_PIXELS).
INFERENCE_BATCH = 32
MAX_CONFIG_BYTES = 1 << 20  # a config is a few kB; anything near this is not one
# Image input side, in pixels: the largest pretrained backbones take 800-1024; each pixel is memory in every batch
# (a 60000-pixel side is 10 GB per decoded image), so a run file or option beyond this is refused.
MIN_IMAGE_SIZE, MAX_IMAGE_SIZE = 16, 1024
# Pillow warns above ~89 MP and raises above twice that; transferkit makes every larger image an error
MAX_IMAGE_PIXELS = 89_478_485
CROP_RANGE = (0.3, 1.0)
TOKENS_RANGE = (2, 8192)  # max_length: tokens per text
LAYERS_RANGE = (1, 128)  # feature_layers: encoder layers pooled (the deepest encoders have a few dozen)
# Fine-tuning fields a linear probe may carry at non-default values without a word: callbacks are plug-ins a
# probe does not call, but a config that names them is still a valid probe (see validate). Loss terms are not:
# a probe asked for L2-SP or DANN would silently be a plain probe.
PROBE_TOLERATED = ("callbacks",)


def declare(default: Any, help: str, panel: str, valid: Callable[[Any], bool] | None = None,
            expected: str | None = None, option: str | None = None) -> Any:
    """A config field. ``valid`` checks a value of the right type (it may raise its own one-line error); a
    :class:`~transferkit.bounds.Bound` there is the field's declared range, which error messages then quote;
    ``expected`` describes the valid values in error messages (default: from the type); ``option`` names the
    CLI option when it is not the field name (a list field's option is singular and repeatable)."""
    metadata = {"help": help, "panel": panel, "valid": valid, "expected": expected, "option": option}
    if isinstance(default, list):  # a mutable default is made afresh per instance
        return dataclasses.field(default_factory=lambda: list(default), metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


# Ranges of the numeric fields (bounds.py): wide enough for any real run, finite, and short of sizes that
# exhaust memory before the first step (an image of 10^5 pixels a side, a batch of 10^6).
SEED = Int(0, 2**32 - 1)  # numpy's and torch's seeds both take it
IMAGE_SIZE = Int(MIN_IMAGE_SIZE, MAX_IMAGE_SIZE)  # a run file's preprocessing is held to the same
EPOCHS = Int(1, 100_000)
BELOW_ONE = Real(0, 1, open_high=True)


def check_specs(registry: Registry) -> Callable[[list[str]], bool]:
    """Every spec names a registered part (the registry raises a one-line error naming close matches)."""
    return lambda specs: all(registry.check(spec) for spec in specs)


def registered(registry: Registry) -> str:
    return ", ".join(registry.names()) or "none registered yet"


@dataclass
class RunConfig:
    """Everything that decides what a run computes. Field names are the CLI's option names."""

    data: str | None = declare(None, "Image folder: train/<class>/* (+ val/, test/) or <class>/*; or a text "
                                     ".csv/.tsv/.jsonl", DATA)
    val_data: str | None = declare(None, "Validation data, in the form of DATA (default: its val/, else split off "
                                         "train by --val-fraction)", DATA)
    test_data: str | None = declare(None, "Test data, in the form of DATA, scored after training (default: its "
                                          "test/)", DATA)
    exclude: str | None = declare(None, "A file of items to leave out of train and val, one a line (transferkit "
                                        "audit --exclusions writes it); test items are never left out", DATA)
    backbone: str = declare("efficientnet_lite0", "efficientnet_lite0/1/2, timm:<arch>, torchvision:<arch>; "
                                                   "for text a Hugging Face encoder (all-MiniLM-L6-v2)", MODEL)
    weights: str | None = declare(None, "Local .safetensors/.pth weights for the backbone", MODEL)
    pretrained: bool = declare(True, "Start from the backbone's pretrained weights", MODEL)
    init_from: str | None = declare(None, "Continue a finished run on new data: its network is the backbone, its head "
                                          "keeps the classes it knows (the data's classes must include them)", MODEL,
                                    option="--from")
    strategy: str = declare("linear-probe", f"How the backbone trains: {', '.join(STRATEGY_NAMES)}", MODEL,
                            valid=lambda name: bool(parse_strategy(name)))
    seed: int = declare(0, "Seed of the split, initialisation and augmentation", DATA, SEED)
    val_fraction: float = declare(0.2, "Validation share of train when there is no val/", DATA, BELOW_ONE)
    strict: bool = declare(False, "Unreadable images (or text rows) are an error, not a warning", DATA)
    image_size: int | None = declare(None, "Input size (default: the backbone's)", DATA, IMAGE_SIZE)
    crop_pct: float | None = declare(None, "Centre-crop share; 1.0 keeps the whole image (default: the "
                                           "backbone's)", DATA, Real(*CROP_RANGE))
    engine: Engine = declare("auto", "Feature engine for the frozen backbone", FEATURES)
    batch_size: int | None = declare(None, "Training batch (default 64 images, 32 text); feature extraction 64",
                                     FEATURES, Int(1, 8192))
    workers: int | None = declare(None, "Decoding workers", FEATURES, Int(0, 256))
    cache: bool = declare(True, "Read and write the feature cache", FEATURES)
    cache_dir: str | None = declare(None, "Feature/engine cache (default: user cache dir)", FEATURES)
    cache_dtype: CacheDtype = declare("float32", "Precision of cached features", FEATURES)
    l2: float | None = declare(None, "Head L2 strength (default: chosen on validation)", HEAD,
                               Real(0, 1e6, open_low=True))
    class_weights: ClassWeights | None = declare(None, "auto: inverse class frequency", HEAD)
    epochs: int | None = declare(None, "Epochs in total (default 10 images, 2 text)", FINE_TUNING, EPOCHS)
    freeze_epochs: int | None = declare(None, "gradual: head-only epochs after the probe (default 1 images, 0 text)",
                                        FINE_TUNING, Int(0, EPOCHS.high))
    lr: float | None = declare(None, "Base learning rate (head); default sgd 1e-2, adam(w) the adapter's own "
                               "where it declares one, else 3e-4 images / 2e-4 text",
                               FINE_TUNING, Real(0, 10, open_low=True))
    optimizer: Optimizer = declare("adamw", "Optimiser", FINE_TUNING)
    momentum: float = declare(0.9, "SGD momentum", FINE_TUNING, BELOW_ONE)
    nesterov: bool = declare(True, "SGD with Nesterov momentum", FINE_TUNING)
    weight_decay: float = declare(0.01, "Decoupled weight decay (adamw) or L2 (sgd, adam)", FINE_TUNING,
                                  Real(0, 100))
    schedule: Schedule = declare("cosine", "Learning-rate schedule after warm-up", FINE_TUNING)
    warmup: float | None = declare(None, "Epochs of linear LR warm-up (default 0 images, 0.1 text)", FINE_TUNING,
                                   Real(0, EPOCHS.high))
    layer_decay: float | None = declare(None, "LR factor per block towards the input (gradual: 0.7 images, 0.8 "
                                              "text; else 1)", FINE_TUNING, Real(0, 1, open_low=True))
    bn: BnMode = declare("auto", "BatchNorm statistics", FINE_TUNING)
    augment: Augment = declare("light", "Augmentation (light: crops and flips; affine: rotate, shift and zoom, "
                               "never flip, for digits and text; strong: RandAugment + mixup/cutmix)", FINE_TUNING)
    label_smoothing: float = declare(0.0, "Cross-entropy label smoothing", FINE_TUNING, BELOW_ONE)
    balanced_sampler: bool = declare(False, "Sample classes equally", FINE_TUNING)
    early_stop: int = declare(0, "Stop after N epochs without a better --metric (0: off)", FINE_TUNING,
                              Int(0, EPOCHS.high))
    metric: Metric = declare("val_accuracy", "Validation metric that picks the saved epoch", FINE_TUNING)
    grad_clip: float | None = declare(None, "Clip the gradient norm", FINE_TUNING, Real(0, 1e6, open_low=True))
    grad_accum: int = declare(1, "Accumulate gradients over N batches", FINE_TUNING, Int(1, 1024))
    grad_checkpointing: bool = declare(False, "Recompute the backbone's activations in the backward pass: less "
                                              "memory, slower steps (same results)", FINE_TUNING)
    precision: Precision = declare("auto", "auto: bf16 where the hardware has it, else fp32; fp16 on a GPU",
                                   FINE_TUNING)
    adapter: str = declare("full", f"Which parameters exist and train: {registered(ADAPTERS)}", FINE_TUNING,
                           ADAPTERS.check)
    methods: list[str] = declare([], f"Extra loss term name:key=value,... (repeatable): {registered(LOSS_TERMS)}",
                                 FINE_TUNING, check_specs(LOSS_TERMS), option="--method")
    callbacks: list[str] = declare([], f"Training callback name:key=value,... (repeatable): "
                                       f"{registered(CALLBACKS)}", FINE_TUNING, check_specs(CALLBACKS),
                                   option="--callback")
    text_column: str | None = declare(None, "The text column (default: text, sentence, review, ...)", TEXT)
    label_column: str | None = declare(None, "The label column (default: label, class, target, ...)", TEXT)
    max_length: int = declare(128, "Tokens per text (longer texts are truncated)", TEXT,
                              Int(*TOKENS_RANGE))
    pooling: Pooling | None = declare(None, "How token vectors become one (default: the model's own, "
                                            "1_Pooling/config.json, else mean)", TEXT)
    # the text probe's default, PROBE_FEATURE_LAYERS, lives with the text estimator
    feature_layers: int | None = declare(None, "Pool the last N encoder layers and concatenate them (default: 4 "
                                               "for linear-probe, 1 (the sentence embedding) when fine-tuning)",
                                         TEXT, Int(*LAYERS_RANGE))

    def __post_init__(self) -> None:
        self.check_fields()

    def check_fields(self) -> None:
        """Raise a one-line :class:`TransferkitError` for the first field of the wrong type or value."""
        for f in fields(self):
            value, hint, valid = getattr(self, f.name), FIELD_TYPES[f.name], f.metadata["valid"]
            ok = conforms(value, hint)
            if ok and value is not None and valid is not None:
                try:
                    ok = valid(value)
                except TransferkitError as exc:  # a validator's own message quotes the value: bound it
                    raise type(exc)(clip_values(str(exc), value)) from None
            if not ok:
                expected = f.metadata["expected"] or describe(hint, valid)
                raise TransferkitError(f"config field '{f.name}' = {shown(value)}: expected {expected}")

    def validate(self) -> None:
        """Everything a run checks before it starts: each field, then settings that contradict each other.

        Construction checks the fields only, so that a config is built one parameter at a time
        (scikit-learn's ``set_params``, ``clone``) and a saved run loads whatever it was trained with.
        """
        self.check_fields()
        check_consistency(self)

    def setting(self, name: str, defaults: Mapping[str, Any] = FINETUNE_DEFAULTS) -> Any:
        """A fine-tuning field, or its default when null: the data's modality's (``defaults``: its
        ``Modality.defaults.training``)."""
        value = getattr(self, name)
        if value is not None:
            return value
        if name == "lr" and self.optimizer == "sgd":
            return SGD_LR
        return defaults[name]

    @property
    def inference_batch(self) -> int:
        """Batch size for feature extraction and prediction."""
        return self.batch_size or INFERENCE_BATCH

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "config") -> "RunConfig":
        known = {f.name for f in fields(cls)}
        odd = [key for key in data if not isinstance(key, str)]
        if odd:
            raise TransferkitError(f"{source}: field names are words, not {shown(odd[0])}")
        unknown = sorted(set(data) - known)
        if unknown:
            raise TransferkitError(f"{source}: unknown field {shown(unknown[0])}; valid fields: "
                                   f"{', '.join(sorted(known))}")
        return cls(**data)

    def to_yaml(self, path: str | Path | None = None) -> str:
        import yaml  # lazy: PyYAML adds to every CLI start-up, and only runs that read or write configs need it

        text = yaml.safe_dump(self.to_dict(), sort_keys=False)
        if path is not None:
            atomic_write_bytes(Path(path), text.encode())
        return text

    @classmethod
    def from_yaml(cls, path: str | Path, **changes: Any) -> "RunConfig":
        """The config a file holds, with ``changes`` applied before validation: a value they replace (a
        callback only the interrupted process had registered, say) is never checked."""
        path = Path(path)
        data = read_config_file(path)
        return cls.from_dict({**data, **changes}, str(path))

    def replace(self, **changes: Any) -> "RunConfig":
        return dataclasses.replace(self, **changes)


FIELD_TYPES: dict[str, Any] = typing.get_type_hints(RunConfig)


def read_config_file(path: Path) -> dict[str, Any]:
    """The mapping a config.yaml holds. Untrusted: at most MAX_CONFIG_BYTES, plain YAML (no tags, no anchors
    or aliases, which can expand a small file into gigabytes), and every failure is one line naming it."""
    import yaml  # lazy: PyYAML adds to every CLI start-up, and only runs that read or write configs need it

    if not path.exists():
        raise TransferkitError(f"{path}: config file not found")
    if not path.is_file():
        raise TransferkitError(f"{path}: not a file; pass a config.yaml")
    try:
        with open(path, "rb") as handle:
            raw = handle.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise TransferkitError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise TransferkitError(f"{path}: larger than {MAX_CONFIG_BYTES >> 10} kB, which no config is; pass the "
                               "config.yaml of a run")
    try:
        data = yaml.load(raw.decode("utf-8"), Loader=plain_yaml_loader()) or {}
    except UnicodeDecodeError:
        raise TransferkitError(f"{path}: not UTF-8 text; pass a config.yaml") from None
    except yaml.YAMLError as exc:
        reason = str(exc).strip().splitlines()[0][:160]
        raise TransferkitError(f"{path}: not valid YAML ({reason})") from None
    except RecursionError:
        raise TransferkitError(f"{path}: nested too deeply to be a config") from None
    if not isinstance(data, dict):
        raise TransferkitError(f"{path}: expected a mapping of config fields, found {type(data).__name__}")
    return data


def plain_yaml_loader() -> type:
    """PyYAML's safe loader, refusing anchors and aliases (a billion-laughs file is a few hundred bytes)."""
    import yaml

    class PlainLoader(yaml.SafeLoader):
        def compose_node(self, parent: Any, index: Any) -> Any:
            event = self.peek_event()
            if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
                raise yaml.composer.ComposerError(
                    None, None, "anchors and aliases (&name, *name) are not allowed in a config", event.start_mark)
            return super().compose_node(parent, index)

    return PlainLoader


def clip_values(message: str, value: Any) -> str:
    """``message`` with each long string of ``value`` (a string, or a list's items) cut as :func:`shown` cuts."""
    for text in [value] if isinstance(value, str) else [v for v in value if isinstance(v, str)]:
        if len(text) > 80:
            message = message.replace(text, shown(text, quote=False))
    return message


def field_default(field: dataclasses.Field) -> Any:
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return field.default


def check_consistency(config: RunConfig) -> None:
    """Settings that are each valid but do nothing together: fine-tuning fields set (away from their defaults)
    for a strategy that does not train, which a user who set them expects to apply."""
    if not parse_strategy(config.strategy).frozen_backbone:
        return
    for f in fields(config):
        value = getattr(config, f.name)
        if f.metadata["panel"] == FINE_TUNING and f.name not in PROBE_TOLERATED and value != field_default(f):
            given, strategy = arg(f.name, value, f.metadata["option"]), arg("strategy", config.strategy)
            raise TransferkitError(
                f"{given} is ignored by {strategy}, which fits a head on frozen features and trains nothing else; "
                "drop it, or choose a strategy that trains (finetune, gradual, last-k:N, scratch)")


def choices(hint: Any) -> tuple[str, ...]:
    """The values a ``Literal`` field allows (under ``X | None`` too); empty for other types."""
    if typing.get_origin(hint) is Literal:
        return typing.get_args(hint)
    return tuple(value for arg in typing.get_args(hint) if arg is not type(None) for value in choices(arg))


def conforms(value: Any, hint: Any) -> bool:
    """Whether ``value`` has the declared type (YAML gives int for ``1``: an int is a valid float)."""
    origin = typing.get_origin(hint)
    if origin is Literal:
        return value in typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return any(conforms(value, arg) for arg in typing.get_args(hint))
    if origin is list:
        return isinstance(value, list) and all(conforms(item, typing.get_args(hint)[0]) for item in value)
    if hint is type(None):
        return value is None
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, hint)


def describe(hint: Any, valid: Any = None) -> str:
    """What a value of this type (within its :class:`~transferkit.bounds.Bound`, if any) looks like."""
    allowed = [arg for arg in typing.get_args(hint) if arg is not type(None)]
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return " or ".join(describe(arg, valid) for arg in allowed) + " or null"
    if isinstance(valid, Bound):
        return valid.describe()
    if typing.get_origin(hint) is Literal:
        return " | ".join(allowed)
    if typing.get_origin(hint) is list:
        return "a list of name:key=value strings"
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(hint, str(hint))
