"""What every modality shares: splits, labelled data, featurised results, and the :class:`Modality` protocol.

A modality (images, text, ...) owns everything that depends on what the items are: how labelled data is
read, how items become features through the cache and the engines, which network and head train, what a
run folder holds besides the common files, its defaults and what ``auto`` derives from its data, what its run's
model takes (export, serve: :class:`ModelInputs`) and how a report shows its items.
:class:`~transferkit.estimators.core.TransferClassifier` holds fit / predict / evaluate / save / load once and
asks its modality for those parts; export, serve, report, tune and auto ask the run's modality too.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Mapping, Protocol, Sequence

import numpy as np

from transferkit.config import RunConfig
from transferkit.errors import DataError
from transferkit.progress import log

if TYPE_CHECKING:
    import torch
    from accelerate import Accelerator
    from torch import nn

    from transferkit.runs.rundir import RunFiles
    from transferkit.strategies import Strategy
    from transferkit.train.data import TrainData

# what predict_proba / predict_records take: a path, a text, or a list of them
Inputs = str | Path | Sequence[str | Path]
# (model, inputs as eval_inputs made them, accelerator or None) -> class probabilities
Predictor = Callable[["nn.Module", Any, "Accelerator | None"], np.ndarray]


class Decide(Protocol):
    """How a modality's data settles a setting (auto): (RunConfig field, value or None to leave it, why);
    ``larger``: values a fine-tune may take instead when the budget affords them (auto's plan measures and
    chooses), ascending."""

    def __call__(self, name: str, value: Any, why: str, larger: tuple[Any, ...] = ()) -> None: ...


Batches = Iterator[tuple[np.ndarray, tuple[np.ndarray, ...]]]  # (positions of the batch's items, model inputs)
MODEL_OUTPUT = "probabilities"  # the exported whole model's output
Embed = Callable[[Any, str], str]  # (a matplotlib Figure, its alt text) -> the report's <img> of it


@dataclass
class Split:
    """Items and integer labels of one split: image paths, or texts with their line in the file."""

    items: list[str] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    lines: list[int] | None = None  # text rows: the 1-based line of each item in its file

    def __len__(self) -> int:
        return len(self.items)

    def take(self, indices: Sequence[int]) -> "Split":
        lines = None if self.lines is None else [self.lines[i] for i in indices]
        return Split([self.items[i] for i in indices], [self.labels[i] for i in indices], lines)


@dataclass
class LabelledData:
    """Training data as a modality read it: classes, splits, and what was left out while reading."""

    classes: list[str]
    train: Split
    val: Split
    test: Split = field(default_factory=Split)
    val_source: str = "none"  # "folder", a file name, "<fraction> of train, stratified, seed <seed>" or "none"
    held_out: bool = False  # True: val is the user's own held-out set, so the probe never refits on it
    skipped: list[dict[str, Any]] = field(default_factory=list)  # rows left out while reading ({"line", "reason"})
    ignored: list[str] = field(default_factory=list)  # files passed over for their extension
    details: dict[str, Any] = field(default_factory=dict)  # what the run's metrics keep about the data

    def describe(self) -> str:
        parts = [f"{len(self.classes)} classes", f"train {len(self.train)}", f"val {len(self.val)} ({self.val_source})"]
        if len(self.test):
            parts.append(f"test {len(self.test)}")
        if self.skipped:
            parts.append(f"skipped {len(self.skipped)}")
        return ", ".join(parts)


@dataclass
class Featurized:
    """Features of the items that could be read, in input order, and why the others could not."""

    features: np.ndarray  # float32 [n_ok, d]
    ok: np.ndarray  # bool [n]: which items have a row
    failed: list[tuple[str, str]] = field(default_factory=list)  # (item, reason), in input order
    stats: dict[str, Any] = field(default_factory=dict)  # cached, extracted, seconds, engine
    normalized: bool = False  # rows are L2-normalised: the probe keeps their geometry (one scale, not per feature)

    def part(self, start: int, stop: int) -> "Featurized":
        """The result for items ``start:stop`` of the input (``failed`` is in input order, like the rows)."""
        rows_before, failed_before = int(self.ok[:start].sum()), int((~self.ok[:start]).sum())
        ok = self.ok[start:stop]
        return Featurized(self.features[rows_before:rows_before + int(ok.sum())], ok,
                          self.failed[failed_before:failed_before + int((~ok).sum())], self.stats, self.normalized)


class Spec(Protocol):
    """A torch-free backbone description: what its features are called in the caches."""

    name: str
    source: str

    @property
    def fingerprint(self) -> str: ...

    def pinned(self, fingerprint: str) -> "Spec":
        """The same backbone under a fixed fingerprint (a fine-tuned or saved network)."""


@dataclass
class RunParts:
    """What a modality adds to a run folder: model metadata, preprocessing.json, extra files."""

    meta: dict[str, str]
    preprocessing: dict[str, Any]
    add_files: Callable[[Path], None] | None = None  # writes into the run's staging folder


@dataclass(frozen=True)
class Defaults:
    """What a modality settles when the user does not: its fine-tuning settings (the RunConfig fields left null),
    the epochs a fine-tuning trial takes (``auto`` and ``tune``), ``auto``'s fine-tuning trials, and which of the
    settings only it reads a search may tune."""

    training: Mapping[str, Any]  # epochs, batch_size, lr, layer_decay, warmup, freeze_epochs (RunConfig.setting)
    epochs: tuple[int, int, int]  # (least, preferred, most) epochs of one fine-tuning trial
    # auto's fine-tunes, most promising first: (strategy, adapter, lr or None for the default, what it tries)
    finetunes: tuple[tuple[str, str, float | None, str], ...] = ()
    tuned: frozenset[str] = frozenset()  # its own RunConfig fields a search may tune (tuning/space.py: own=True)


@dataclass
class Misclassified:
    """One misclassified held-out item, as a report shows it (most confident first)."""

    item: str
    line: int | None  # its line in a file (text rows), else None
    true: Any  # the labels, as classes.json holds them
    predicted: Any
    confidence: float  # the predicted class's probability


class ModelInputs(Protocol):
    """The inputs of one loaded run's whole model, for export and serve (``Modality.inputs``)."""

    names: tuple[str, ...]  # the model's input names, in call order

    def contract(self, preprocessing: dict[str, Any]) -> dict[str, Any]:
        """preprocessing.json of an export: the run's own, plus the inputs and how to prepare them."""

    def example(self) -> tuple["torch.Tensor", ...]:
        """A small batch of valid inputs, for tracing and exporting."""

    def export_onnx(self, model: "nn.Module", path: Path) -> None:
        """``model`` as ONNX at ``path`` (output :data:`MODEL_OUTPUT`), with a dynamic batch axis, atomically."""

    def batches(self, items: Any, batch_size: int) -> Batches:
        """Prepared items (decoded images, token ids) as the model's input arrays, batch by batch."""

    def engine(self) -> Callable[..., np.ndarray]:
        """The run's feature engine (ONNX Runtime on CPU, torch on a GPU), opened once: inputs -> features; a
        fine-tuned run's own ``engine.onnx`` is seeded into the cache first (``seed_run_engine``), not exported."""

    def add_files(self, folder: Path) -> None:
        """Files the export needs beside the model (a text run's tokenizer)."""

    def requests(self, service: Any, decoding: Any) -> Any:
        """The server's ``POST /predict`` for these inputs (modalities/<name>/requests.py: a
        ``modalities.http.Requests`` with ``register(app, batcher)``); ``service`` is serve's Service, ``decoding``
        its MemoryBudget for preparing items."""


class Modality(Protocol):
    """The parts of transfer learning that depend on what the items are (see the module docstring)."""

    name: str  # "image" | "text": messages, reports, the modality registry (modalities/__init__.py)
    defaults: Defaults
    default_backbone: str
    run_format: str  # model.safetensors metadata "format" of its runs
    run_files: tuple[str, ...]  # entries its run folders hold besides the common files
    item_key: str  # what its items are called in reports and records ("path", "text")
    skipped_key: str  # the metrics key listing what fit left out ("skipped_files", "skipped_rows")
    data_hint: str  # the data it reads, for messages

    def accepts(self, data: Any) -> bool:
        """Whether ``data`` (given to fit) is this modality's."""

    def check(self, config: RunConfig, strategy: "Strategy") -> None:
        """Refuse settings and strategies this modality has no use for (one-line TransferkitError)."""

    def read_training(self, data: Any, labels: Sequence[Any] | None, val_data: Any,
                      config: RunConfig) -> LabelledData:
        """Classes and train / val (/ test) splits."""

    def read_labelled(self, data: Any, labels: Sequence[Any] | None, classes: list[str],
                      config: RunConfig) -> tuple[Split, list[dict[str, Any]]]:
        """A labelled set for evaluate, labels indexed by ``classes``; and the rows left out."""

    def predict_inputs(self, inputs: Inputs, config: RunConfig, text: bool = False) -> list[dict[str, Any]]:
        """One record per item to predict: ``{"input": item}`` plus where it came from (a file's line).
        ``text=True``: every input is a text, even one that looks like a file name (text modalities only)."""

    def backbones(self) -> list[dict[str, Any]]:
        """What ``transferkit backbones`` lists: a row per backbone or kind of backbone name (name, source,
        offline, needs, input_size, num_features)."""

    def resolve(self, config: RunConfig, strategy: "Strategy") -> Spec:
        """The backbone the config names (pretrained unless the config or strategy says not)."""

    def spec_from_run(self, run: "RunFiles") -> Spec:
        """The backbone of a saved run, built from the run's own files when nothing is cached."""

    def build_net(self, spec: Spec) -> "nn.Module":
        """The feature network (items' tensors -> features) engines export and runs save as ``features.*``."""

    def featurize(self, spec: Spec, items: list[str], config: RunConfig, build_net: Callable[[], "nn.Module"],
                  show_progress: bool, calibrate_on: list[str] | None = None) -> Featurized:
        """Features through the cache; ``build_net`` is called only when no cached engine fits, and an engine
        that calibrates (int8) does so on ``calibrate_on`` (the training items), else on ``items``."""

    def build_model(self, spec: Spec, n_classes: int) -> "nn.Module":
        """Backbone + new ``head`` (nn.Linear) for the training loop: ``.features``, ``.backbone``, ``.head``."""

    def train_data(self, spec: Spec, split: Split, config: RunConfig, n_classes: int) -> "TrainData":
        """What the loop draws training batches from."""

    def eval_inputs(self, spec: Spec, split: Split,
                    config: RunConfig) -> tuple[Any, np.ndarray, list[tuple[str, str]]]:
        """(inputs for :meth:`predictor`, labels of the items read, (item, reason) of the others)."""

    def predictor(self, spec: Spec, config: RunConfig) -> Predictor:
        """Class probabilities from a torch model on :meth:`eval_inputs`' inputs."""

    def frozen_forward(self, spec: Spec, config: RunConfig) -> Callable[[Any], np.ndarray] | None:
        """A training batch's inputs -> the untouched backbone's features, for head-only phases (or None)."""

    def engine_file(self, spec: Spec) -> str:
        """The file name of ``spec``'s cached ONNX feature engine (in its fingerprint's engine folder)."""

    def export_engine(self, spec: Spec, net: "nn.Module", path: Path) -> None:
        """Export the feature network ``net`` as that engine, at ``path``."""

    def source_head(self, spec: Spec, num_features: int) -> "nn.Module | None":
        """The pretrained model's own classifier (LwF, source retention), or None where it has none."""

    def run_details(self, spec: Spec, config: RunConfig) -> dict[str, Any]:
        """What the run's metrics keep about the backbone beyond its name in config.yaml."""

    def run_parts(self, spec: Spec, config: RunConfig) -> RunParts:
        """Metadata, preprocessing.json and extra files of a run folder."""

    # -- what the tools around a run ask (export, serve, report, auto, ``transferkit backbones``) ---------------
    def inputs(self, clf: Any) -> ModelInputs:
        """The inputs of the loaded run ``clf`` (a TransferClassifier): export and serve read them."""

    def show_errors(self, errors: list[Misclassified], embed: Embed) -> str:
        """The report's HTML of misclassified items (an image grid, rows of text, ...); ``embed`` puts a figure
        in the page as the report's own are."""

    def derive(self, dataset: LabelledData, config: RunConfig, decide: Decide) -> dict[str, Any]:
        """Settings the data itself settles for ``auto`` (each through ``decide``); returns what it measured."""

    def input_label(self, row: dict[str, Any]) -> str:
        """The "input" column of ``transferkit backbones`` for one of :meth:`backbones`' rows."""


def skipped_record(modality: Modality, item: str, reason: str) -> dict[str, Any]:
    """An item a run left out: under "item" for every modality and under the modality's own name for it
    ("path"), as reports had it before."""
    return {"item": item, modality.item_key: item, "reason": reason}


def empty_split_error(name: str, size: int, failed: list[tuple[str, str]]) -> DataError:
    """Validation data none of which could be read: the L2 strength, early stopping and the val metrics all
    come from it, so training on without it would silently be another model."""
    first = f" ({failed[0][0]}: {failed[0][1]})" if failed else ""
    return DataError(f"{name}: none of its {size} item(s) could be read{first}; fix or remove them, or give no "
                     "validation data (val_fraction then splits it off train)")


def check_read(failed: list[tuple[str, str]], where: str, strict: bool) -> None:
    """Items that could not be read: an error with ``strict`` (``--strict``), else one warning line."""
    if not failed:
        return
    listing = "; ".join(f"{item} ({why})" for item, why in failed[:5])
    if strict:
        raise DataError(f"{len(failed)} unreadable file(s) in {where}: {listing}")
    log(f"warning: skipped {len(failed)} unreadable file(s) in {where}: {listing}"
        f"{' ...' if len(failed) > 5 else ''} (use --strict to stop instead)")


def stratified_indices(labels: Sequence[int], fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Train / validation row indices, stratified; classes with fewer than 2 rows stay in train."""
    from sklearn.model_selection import train_test_split

    counts = Counter(labels)
    eligible = [i for i, y in enumerate(labels) if counts[y] >= 2]
    rare = [i for i, y in enumerate(labels) if counts[y] < 2]
    n_classes = len({labels[i] for i in eligible})
    n_val = max(n_classes, round(len(labels) * fraction))
    if n_val >= len(eligible) - n_classes + 1 or not eligible:
        raise DataError(f"--val-fraction {fraction} leaves too few training rows ({len(labels)} in all); "
                        "lower it, add rows, or give validation data")
    train, val = train_test_split(eligible, test_size=n_val, random_state=seed,
                                  stratify=[labels[i] for i in eligible])
    return sorted(list(train) + rare), sorted(val)


def warn_single_examples(split: Split, classes: list[str], source: str, consequence: str) -> None:
    """Warn about the classes with one example in ``split``, naming where it is (its line, or the item)."""
    counts = Counter(split.labels)
    single = sorted(label for label, n in counts.items() if n == 1)
    if not single:
        return
    named = []
    for label in single[:5]:
        at = split.labels.index(label)
        where = f"line {split.lines[at]}" if split.lines is not None else split.items[at]
        named.append(f"'{classes[label]}' ({where})")
    log(f"warning: {len(single)} class(es) have a single example in {source}, which {consequence}: "
        f"{', '.join(named)}{' ...' if len(single) > 5 else ''}; add examples")


def sort_classes(labels: Sequence[str]) -> list[str]:
    """Distinct labels in order: numerically when they all read as numbers ("2" before "10"), else by name."""
    names = set(labels)
    try:
        return sorted(names, key=lambda s: (float(s), s))
    except ValueError:
        return sorted(names)
