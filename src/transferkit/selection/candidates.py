"""What ``rank`` scores: the labelled data, each candidate backbone (at each input size asked for), its features
through the modality's cache and engines, and its source classifier as numpy arrays, cached beside its engine.

Everything here goes through the :class:`~transferkit.modalities.base.Modality` of the data, exactly as
``TransferClassifier`` does: a second ranking of the same data reads every feature from the cache, and the
source classifier from ``source_head.safetensors`` beside the engine, so it never imports torch.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load_file, save

from transferkit.atomic import atomic_write_bytes
from transferkit.config import RunConfig
from transferkit.errors import DataError, TransferkitError, arg
from transferkit.estimators import classifier_for_data
from transferkit.features.engines import engine_dir
from transferkit.modalities.base import Featurized, Modality, Spec, Split
from transferkit.progress import log
from transferkit.strategies import parse_strategy

SOURCE_HEAD_FILE = "source_head.safetensors"  # beside a backbone's engine; no tensors: it has no source classifier


@dataclass
class Backbone:
    """One candidate: a backbone name at one input size (None: its own), resolved to its spec and config."""

    name: str
    image_size: int | None
    config: RunConfig
    spec: Spec

    @property
    def label(self) -> str:
        return self.name if self.image_size is None else f"{self.name} @{self.image_size}"


@dataclass
class LabelledItems:
    """Every labelled item of the data that training would learn from or validate on (not its test split)."""

    classes: list[str]
    items: list[str]
    labels: np.ndarray
    source: str  # how the items were gathered, for the report


def modality_of(data: Any) -> Modality:
    """The modality that reads ``data`` (an image folder, a text file); one line when none does."""
    return classifier_for_data(data).modality


def default_backbones(modality: Modality) -> list[str]:
    """The backbones the modality ships with (installable packages that work offline)."""
    return [row["name"] for row in modality.backbones() if row.get("package") and row.get("offline")]


def input_size(spec: Spec) -> int | None:
    """The spec's input size, for specs that have one (image backbones)."""
    return getattr(getattr(spec, "preprocessing", None), "input_size", None)


def resolve_backbones(modality: Modality, base: RunConfig, names: Sequence[str],
                      sizes: Sequence[int] | None) -> list[Backbone]:
    """Each name at each size, resolved before any feature is extracted (an unknown name fails here)."""
    strategy = parse_strategy(base.strategy)
    found: dict[str, str] = {}
    backbones = []
    for name in names:
        for size in sizes or [None]:
            config = base.replace(backbone=name, image_size=size)
            spec = modality.resolve(config, strategy)
            if size is not None and input_size(spec) != size:
                raise TransferkitError(f"{arg('image_sizes', ','.join(map(str, sizes)))}: backbone '{name}' "
                                       "takes no input size (it is not an image backbone); drop the option")
            backbone = Backbone(name, size, config, spec)
            if spec.fingerprint in found:
                raise TransferkitError(f"'{backbone.label}' and '{found[spec.fingerprint]}' are the same network "
                                       "with the same preprocessing; name each backbone (and size) once")
            found[spec.fingerprint] = backbone.label
            backbones.append(backbone)
    return backbones


def read_items(modality: Modality, data: Any, config: RunConfig) -> LabelledItems:
    """The labelled items of ``data``: train and its own val split (the test split is left for the end)."""
    dataset = modality.read_training(data, None, None, config.replace(val_fraction=0.0))
    every = Split(dataset.train.items + dataset.val.items, dataset.train.labels + dataset.val.labels)
    if not len(every):
        raise DataError(f"{data}: no labelled items to rank backbones on")
    source = "train" + (f" + val ({dataset.val_source})" if len(dataset.val) else "")
    return LabelledItems(list(dataset.classes), every.items, np.asarray(every.labels, dtype=np.int64), source)


def check_counts(classes: list[str], labels: np.ndarray, data: Any) -> None:
    """Cross-validation needs two classes, and two items of each (one to hold out, one to learn from)."""
    counts = Counter(labels.tolist())
    if len(counts) < 2:
        raise DataError(f"{data}: only one class has readable items; ranking needs at least 2 classes")
    short = [classes[c] for c in sorted(counts) if counts[c] < 2]
    missing = [name for c, name in enumerate(classes) if c not in counts]
    if short or missing:
        name = (short or missing)[0]
        raise DataError(f"{data}: class '{name}' has {counts.get(classes.index(name), 0)} readable item(s); "
                        "rank cross-validates, so each class needs at least 2: add items or remove the class")


def featurize(modality: Modality, backbone: Backbone, items: list[str], show_progress: bool = True) -> Featurized:
    """The backbone's features for ``items`` through the cache (extracting only what it lacks)."""
    result = modality.featurize(backbone.spec, items, backbone.config, lambda: modality.build_net(backbone.spec),
                                show_progress)
    if result.failed:
        listing = "; ".join(f"{item} ({why})" for item, why in result.failed[:5])
        if backbone.config.strict:
            raise DataError(f"{len(result.failed)} unreadable item(s): {listing}")
        log(f"warning: skipped {len(result.failed)} unreadable item(s): {listing}"
            f"{' ...' if len(result.failed) > 5 else ''} (use --strict to stop instead)")
    return result


SourceHead = tuple[np.ndarray, np.ndarray | None]  # (weight [source classes, features], bias)


def source_head(modality: Modality, backbone: Backbone, num_features: int) -> SourceHead | None:
    """(weight [source classes, features], bias) of the pretrained model's own classifier, or None; read from
    beside the backbone's engine when cached there, else asked of the modality (which may import torch) and
    stored there."""
    config = backbone.config
    path = engine_dir(backbone.spec.fingerprint, config.cache_dir) / SOURCE_HEAD_FILE if config.cache else None
    if path is not None and path.is_file():
        try:
            return arrays(load_file(str(path)), num_features)
        except (OSError, SafetensorError) as exc:
            log(f"notice: {path} is damaged ({exc}); reading the source classifier again")
    head = modality.source_head(backbone.spec, num_features)
    tensors = {} if head is None else {k: v.detach().cpu().numpy() for k, v in head.state_dict().items()}
    if path is not None:
        store(path, save(tensors))
    return arrays(tensors, num_features)


def arrays(tensors: dict[str, np.ndarray], num_features: int) -> SourceHead | None:
    weight = tensors.get("weight")
    if weight is None or weight.ndim != 2 or weight.shape[1] != num_features:
        return None
    return weight, tensors.get("bias")


def store(path: Path, data: bytes) -> None:
    try:
        atomic_write_bytes(path, data)
    except OSError as exc:
        log(f"warning: cannot write to the cache {path.parent} ({exc.strerror or exc}); going on without it")
