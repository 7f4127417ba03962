"""``TransferClassifier``: fit / predict / evaluate / save / load, written once for every modality.

A pretrained backbone plus a new head. ``linear-probe`` fits the head on cached features (numpy only when the
engine and features are cached); other strategies train the backbone too, through the shared training loop,
and the trained network then serves prediction, evaluation and saving exactly as a probe's does: features
through the engines and the cache (under a fingerprint of the trained weights), the head in numpy.
Everything that depends on what the items are (images, texts) is asked of the class's :attr:`modality`.
"""

from __future__ import annotations

import time
from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Sequence

import numpy as np

from transferkit.config import RunConfig
from transferkit.errors import DataError, RunDirError, TransferkitError, first_line
from transferkit.estimators.finetune import Reshape, Unlabelled, finetune
from transferkit.estimators.parent import (check_data_kind, check_parent_classes, grown_head, load_parent,
                                          parent_record, score_on_parent_data)
from transferkit.exclusions import leave_out, read_exclusions
from transferkit.estimators.params import ConfiguredEstimator, check_parameters, typed_classes
from transferkit.features.engines import check_precision_device, engine_dir, net_tensors, seed_engine
from transferkit.features.ranks import across_ranks
from transferkit.heads.probe import ProbeHead, fit_probe
from transferkit.metrics import classification_metrics, record_scored_items
from transferkit.modalities.base import (Featurized, Inputs, LabelledData, Modality, Split, check_read,
                                        empty_split_error, skipped_record)
from transferkit.progress import log
from transferkit.runs.folders import RUN_ENGINE
from transferkit.runs.lock import hold_run_folder, is_other_rank
from transferkit.runs.rundir import (check_out_vs_data, check_writable, checkpoint_dir, read_run, read_tensors,
                                     run_format, training_files, write_run)
from transferkit.strategies import Strategy, parse_strategy

if TYPE_CHECKING:
    from torch import nn


def absolute_paths(config: RunConfig) -> RunConfig:
    """Paths in the config made absolute: a saved config.yaml re-runs from any directory."""
    return config.replace(**{name: str(Path(value).expanduser().resolve())
                             for name in ("data", "val_data", "test_data", "exclude", "weights", "cache_dir",
                                          "init_from")
                             if (value := getattr(config, name))})


def with_engine(add_files: Callable[[Path], None] | None, modality: Modality, spec: Any,
                net: "nn.Module") -> Callable[[Path], None]:
    """A run's ``add_files``, plus the tuned feature network's engine exported into the staging folder."""
    def add(staging: Path) -> None:
        if add_files is not None:
            add_files(staging)
        try:
            modality.export_engine(spec, net, staging / RUN_ENGINE)
        except Exception as exc:  # noqa: BLE001 - an architecture that does not export: predict uses torch
            log(f"notice: ONNX export failed for {spec.name} ({first_line(exc)}); predicting will use torch")
    return add


def read_training(modality: Modality, data: Any, labels: Sequence[Any] | None, val_data: Any,
                  config: RunConfig) -> LabelledData:
    """The modality's training data (train and validation), less the items ``config.exclude`` names: what every
    fit reads, a tune or auto trial's included."""
    dataset = modality.read_training(data, labels, val_data, config)
    if config.exclude:
        leave_out(dataset, read_exclusions(config.exclude), data, val_data)
    return dataset


class TransferClassifier(ConfiguredEstimator):
    """A pretrained backbone plus a new head, fitted to labelled data of the class's modality.

    Fitted attributes: ``classes_``, ``head_`` (numpy), ``spec_`` (the backbone; a fine-tuned one under its own
    fingerprint), ``net_`` (the fine-tuned feature network, None for a probe or a loaded run), ``metrics_``.
    """

    modality: ClassVar[Modality]

    def __init__(self, backbone: str | None = None, strategy: str = "linear-probe", **params: Any) -> None:
        check_parameters(list(params), type(self).__name__)
        self.config = RunConfig(backbone=backbone or self.modality.default_backbone, strategy=strategy, **params)
        self.verbose = True

    # -- fitting ---------------------------------------------------------------------------------------------
    def fit(self, data: Any, labels: Sequence[Any] | None = None, val_data: Any = None,
            out: str | Path | None = None, resume: bool = False, *, unlabelled: Unlabelled | None = None,
            reshape: Reshape | None = None) -> "TransferClassifier":
        """Fit on ``data`` (an image folder, a .csv/.tsv/.jsonl file, or texts with ``labels``); validation is
        ``val_data`` (or ``config.val_data``), the data's own val split, or split off train (``val_fraction``);
        ``config.test_data`` adds a test split. Strategies other than ``linear-probe`` train the backbone, with
        checkpoints in ``out/checkpoints`` (a temporary folder without ``out``); ``resume=True`` continues.
        When the backbone trains, ``unlabelled`` adds a second training stream without labels and ``reshape``
        changes the model first (both: :func:`~transferkit.estimators.finetune.finetune`; ``adapt`` passes them)."""
        start = time.perf_counter()
        config = absolute_paths(self.config.replace(data=str(data) if isinstance(data, (str, Path)) else None))
        config.validate()
        strategy = parse_strategy(config.strategy)
        self.modality.check(config, strategy)
        if not strategy.frozen_backbone:
            check_precision_device(config.precision)
        if out is not None:
            check_out_vs_data(out, config.data, config.val_data, config.test_data)
        dataset = self.read_data(config.data or data, labels, val_data if val_data is not None else config.val_data,
                                 config)  # a path as absolute: items name the same files from any folder
        log(f"data: {dataset.describe()}")
        self.config, self.net_, self.checkpoint_dir_, self.embed_stats_ = config, None, None, {}
        self.source_head_, self.adapter_ = None, None
        self.classes_ = typed_classes(dataset.classes, labels)
        self.spec_ = self.modality.resolve(config, strategy)
        parent = load_parent(type(self), config.init_from) if config.init_from else None
        if parent is not None:  # its network is the backbone, under its fingerprint (its cached features serve)
            check_parent_classes(parent, config.init_from, self.classes_)
            self.spec_ = parent.spec_
        metrics: dict[str, Any] = {"data": dataset.describe(), "strategy": config.strategy, **dataset.details,
                                   **self.modality.run_details(self.spec_, config)}
        if parent is not None:
            metrics["parent"] = parent_record(parent, config.init_from)
        if strategy.frozen_backbone:
            self._fit_probe(dataset, metrics)
        else:
            head = grown_head(parent, [str(c) for c in self.classes_]) if parent is not None else None
            self._fit_finetune(dataset, strategy, metrics, out, resume, head, unlabelled, reshape)
        if parent is not None:
            metrics["parent"].update(score_on_parent_data(self, parent))
        # a first run's one-off ONNX export is reported apart, so train_seconds compares across runs
        export = self.embed_stats_.get("export_seconds", 0.0)  # features come in one pass (_featurize_splits)
        metrics["train_seconds"] = round(time.perf_counter() - start - export, 3)
        if export:
            metrics["export_seconds"] = round(export, 3)
        record_scored_items(metrics, dataset, metrics.get(self.modality.skipped_key) or [])  # compare pairs runs by it
        self.metrics_ = metrics
        return self

    def read_data(self, data: Any, labels: Sequence[Any] | None, val_data: Any, config: RunConfig) -> LabelledData:
        """The modality's training data, with ``config.test_data`` read as the test split when given."""
        dataset = read_training(self.modality, data, labels, val_data, config)
        if config.test_data:
            dataset.test, skipped = self.modality.read_labelled(config.test_data, None, dataset.classes, config)
            dataset.skipped = dataset.skipped + skipped
        return dataset

    def _fit_probe(self, dataset: LabelledData, metrics: dict[str, Any]) -> None:
        train, val, test = self._featurize_splits(dataset, dataset.train, dataset.val, dataset.test)
        # A validation split carved out of the training data only chooses the L2 strength: the head is then
        # refitted on both. The user's own held-out set stays out of training.
        head = self._probe(train, val, refit=not dataset.held_out)
        self.head_, self.is_main_process_ = head, not is_other_rank()  # every rank fits the same head; rank 0 saves
        metrics["probe"] = {"l2": head.l2, "path": head.path, "refit_on_train_and_val": head.refit}
        metrics["embeddings"] = train[0].stats
        if len(val[1]):
            metrics["val"] = classification_metrics(
                val[1], head.val_proba if head.val_proba is not None else self._proba(val[0].features), self.classes_)
        if len(dataset.test):
            metrics["test"] = classification_metrics(test[1], self._proba(test[0].features), self.classes_)
        failed = train[0].failed + val[0].failed + test[0].failed
        metrics[self.modality.skipped_key] = dataset.skipped + [skipped_record(self.modality, item, why) for item, why in failed]
        metrics["trainable_parameters"] = int(head.weight.size + head.bias.size)

    def _featurize_splits(self, dataset: LabelledData, *splits: Split) -> list[tuple[Featurized, np.ndarray]]:
        """(features, labels of the items read) per split, through one pass over the cache and the engine."""
        with across_ranks():  # under a launch, every rank is here with the same items: they share the extraction
            result = self.featurize([item for split in splits for item in split.items], splits[0].items)  # train first
        parts, start = [], 0
        for name, split in zip(("train", "val", "test"), splits):
            part = result.part(start, start + len(split))
            check_read(part.failed, name, self.config.strict)
            if name == "val" and len(split) and not part.ok.any():
                raise empty_split_error(name, len(split), part.failed)
            parts.append((part, np.asarray(split.labels, dtype=np.int64)[part.ok]))
            start += len(split)
        readable = set(parts[0][1].tolist())
        missing = [c for i, c in enumerate(dataset.classes) if i not in readable]
        if missing:
            raise DataError(f"class '{missing[0]}' has no readable training items")
        return parts

    def _probe(self, train: tuple[Featurized, np.ndarray], val: tuple[Featurized, np.ndarray],
               refit: bool) -> ProbeHead:
        have_val = len(val[1]) > 0
        return fit_probe(train[0].features, train[1], len(self.classes_), val[0].features if have_val else None,
                         val[1] if have_val else None, l2=self.config.l2, class_weight=self.config.class_weights,
                         refit=refit, standardize=not train[0].normalized)

    def _fit_finetune(self, dataset: LabelledData, strategy: Strategy, metrics: dict[str, Any],
                      out: str | Path | None, resume: bool, head_init: ProbeHead | None = None,
                      unlabelled: Unlabelled | None = None, reshape: Reshape | None = None) -> None:
        """Train the backbone too, the head from ``head_init`` (a parent run's) or the probe (LP-FT) or new;
        afterwards the trained network serves predict / save like a probe's."""
        if head_init is None and strategy.init_head_from_probe:  # LP-FT: the head starts from the probe on the pretrained features
            train, val, _ = self._featurize_splits(dataset, dataset.train, dataset.val, Split())
            head_init = self._probe(train, val, refit=False)
            metrics["probe"] = {"l2": head_init.l2, "path": head_init.path}
        with hold_run_folder(out) if out is not None else nullcontext():  # its checkpoints are written there
            tuned = finetune(self.modality, self.spec_, self.config, self.classes_, dataset, strategy, metrics, out,
                             resume, head_init, unlabelled=unlabelled, reshape=reshape,
                             classifier=classifier_class(self.modality))
        self.net_, self.spec_, self.head_, self.is_main_process_ = tuned.net, tuned.spec, tuned.head, tuned.is_main
        self.source_head_, self.adapter_ = tuned.source_head, tuned.adapter
        self.checkpoint_dir_ = None if out is None else checkpoint_dir(out)

    # -- features --------------------------------------------------------------------------------------------
    def feature_net(self) -> "nn.Module":
        """The feature network: the fine-tuned one held in memory after fit, else the backbone's (or run's)."""
        return self.net_.eval() if getattr(self, "net_", None) is not None else self.modality.build_net(self.spec_)

    def features(self, items: Sequence[str]) -> np.ndarray:
        """What the head reads, for ``items`` (image paths, texts), through the cache."""
        return self.featurize(list(items)).features

    @property
    def trained_tensors_(self) -> dict[str, np.ndarray] | None:
        """The fine-tuned feature network's tensors (None for a probe or a loaded run)."""
        if getattr(self, "net_", None) is None:
            return None
        return {k: v.detach().cpu().numpy() for k, v in self.net_.state_dict().items()}

    def seed_run_engine(self) -> None:
        """A loaded run's own engine becomes its cached engine (no export); here, not at load, so a cache_dir set
        after loading is the one seeded."""
        if getattr(self, "run_engine_", None) is not None:
            seed_engine(self.spec_.fingerprint, self.modality.engine_file(self.spec_), self.run_engine_,
                        self.config.cache_dir)
            self.run_engine_ = None

    def featurize(self, items: list[str], calibrate_on: list[str] | None = None) -> Featurized:
        """Features of ``items`` and which were read, through the cache (a run's own engine seeded); an int8
        engine is calibrated on ``calibrate_on`` (training items: never on validation or test images)."""
        self.seed_run_engine()
        result = self.modality.featurize(self.spec_, items, self.config, self.feature_net, self.verbose, calibrate_on)
        self.embed_stats_ = result.stats
        return result

    # -- inference -------------------------------------------------------------------------------------------
    def _check_fitted(self) -> None:
        if not hasattr(self, "head_"):
            name = type(self).__name__
            raise TransferkitError(f"this {name} is not fitted yet; call fit() or {name}.load()")

    def _proba(self, features: np.ndarray) -> np.ndarray:
        if not len(features):
            return np.zeros((0, len(self.classes_)), np.float32)
        return self.head_.predict_proba(features)

    def predict_proba(self, inputs: Inputs, text: bool = False) -> np.ndarray:
        """Class probabilities, one row per item (folders expanded to their images, data files to their rows)."""
        self._check_fitted()
        records = self.modality.predict_inputs(inputs, self.config, text=text)
        result = self.featurize([r["input"] for r in records])
        if result.failed:
            raise DataError(f"{result.failed[0][0]}: cannot read it ({result.failed[0][1]})")
        return self._proba(result.features)

    def predict(self, inputs: Inputs, text: bool = False) -> list[Any]:
        """The most probable label per item; ``text=True`` takes every input as a text (a text run), even one
        that looks like a file name."""
        return [self.classes_[i] for i in self.predict_proba(inputs, text=text).argmax(axis=1)]

    def predict_records(self, inputs: Inputs, top_k: int = 1, text: bool = False) -> list[dict[str, Any]]:
        """One record per item: ``{"input", "predictions": [{"label", "probability"}, ...]}`` (top ``top_k``),
        or ``{"input", "error"}`` for an item that cannot be read; rows of a text file add ``file`` and ``line``.
        The item is also under the modality's own name for it (``path``, ``text``)."""
        self._check_fitted()
        records = self.modality.predict_inputs(inputs, self.config, text=text)
        result = self.featurize([r["input"] for r in records])
        rows, reasons = iter(self._proba(result.features)), dict(result.failed)
        k = max(1, min(top_k, len(self.classes_)))
        for record, ok in zip(records, result.ok):
            record[self.modality.item_key] = record["input"]
            if not ok:
                record["error"] = reasons[record["input"]]
                continue
            proba = next(rows)
            record["predictions"] = [{"label": self.classes_[i], "probability": round(float(proba[i]), 6)}
                                     for i in np.argsort(-proba)[:k]]
        return records

    def evaluate(self, data: Any, labels: Sequence[Any] | None = None) -> dict[str, Any]:
        """:func:`~transferkit.metrics.classification_metrics` on labelled data (labels among the fitted classes),
        plus ``misclassified`` rows (item, line for text rows, label, predicted, probability) and ``skipped``
        (unreadable items, rows left out: item or line, reason)."""
        self._check_fitted()
        check_data_kind(self.modality, data, "evaluate a run trained on it")
        names = [str(c) for c in self.classes_]  # the modality reads labels as text; classes_ keeps y's types
        split, skipped = self.modality.read_labelled(data, None if labels is None else [str(y) for y in labels], names,
                                                     self.config)
        result = self.featurize(split.items)
        if result.failed and self.config.strict:
            raise DataError(f"{result.failed[0][0]}: cannot read it ({result.failed[0][1]})")
        kept = np.flatnonzero(result.ok)
        truth = np.asarray(split.labels, dtype=np.int64)[kept]
        proba = self._proba(result.features)
        report = classification_metrics(truth, proba, self.classes_)
        predicted = proba.argmax(axis=1)
        report["misclassified"] = [self._row(split, int(kept[j]), int(predicted[j]), float(proba[j, predicted[j]]))
                                   for j in np.flatnonzero(predicted != truth)]
        report["skipped"] = skipped + [skipped_record(self.modality, item, why) for item, why in result.failed]
        return report

    def _row(self, split: Split, index: int, predicted: int, probability: float) -> dict[str, Any]:
        item = split.items[index]
        row: dict[str, Any] = {"item": item, self.modality.item_key: item}
        if split.lines is not None:
            row["line"] = split.lines[index]
        row.update(label=self.classes_[split.labels[index]], predicted=self.classes_[predicted],
                   probability=round(probability, 6))
        return row

    def score(self, data: Any, labels: Sequence[Any] | None = None) -> float:
        return self.evaluate(data, labels)["accuracy"]

    # -- persistence -----------------------------------------------------------------------------------------
    def save(self, path: str | Path, overwrite: bool = False, keep: tuple[str, ...] = ()) -> Path:
        """A run folder: config.yaml, classes.json, preprocessing.json, model.safetensors (``features.*`` +
        ``head.*``, its metadata naming format, backbone and fingerprint), metrics.json, and what the
        modality adds; a fine-tuned model saved into its training folder keeps ``checkpoints/`` there, and
        the entries named in ``keep`` (``adapt``'s candidates) stay too. A folder another process is writing is
        refused (runs/lock.py)."""
        self._check_fitted()
        path, spec, modality = Path(path), self.spec_, self.modality
        extra: dict[str, bytes] = {}
        if self.net_ is not None:
            trained, extra = training_files(path, self.checkpoint_dir_, self.metrics_.get("history", []))
            keep = (*keep, *trained)
        check_out_vs_data(path, self.config.data, self.config.val_data, self.config.test_data)
        check_writable(path, overwrite, ignore=keep)  # before the tensors are gathered
        if self.net_ is not None:
            features = self.trained_tensors_
        else:  # a frozen backbone's tensors come from beside its cached engine: no torch needed
            features = net_tensors(spec.fingerprint, self.feature_net, self.config.cache_dir, self.config.cache)
        tensors = {f"features.{k}": v for k, v in features.items()}
        tensors["head.weight"], tensors["head.bias"] = self.head_.weight, self.head_.bias
        if self.source_head_ is not None:  # LwF's tuned source classifier stays with the run
            tensors.update({f"source_head.{k}": v.detach().numpy() for k, v in self.source_head_.state_dict().items()})
        if self.adapter_ is not None:  # the adapter alone, beside the merged model
            extra = {**extra, **self.adapter_.files()}
        parts = modality.run_parts(spec, self.config)
        meta = {"format": modality.run_format, "backbone": spec.name, "source": spec.source,
                "fingerprint": spec.fingerprint, **parts.meta, "num_features": str(self.head_.weight.shape[1]),
                "num_classes": str(len(self.classes_))}
        add_files = parts.add_files
        if self.net_ is not None:  # a tuned network's engine is exported here once, not by a later predict
            add_files = with_engine(parts.add_files, modality, spec, self.net_)
        with hold_run_folder(path):  # checked above; write_run checks again with the lock held
            write_run(path, config=self.config, classes=self.classes_, preprocessing=parts.preprocessing,
                      tensors=tensors, model_meta=meta, metrics=self.metrics_, overwrite=overwrite, keep=keep,
                      extra_files=extra, add_files=add_files)
        if self.net_ is None and self.config.cache:
            share_probe_engine(modality, spec, path, self.config.cache_dir)
        return path

    @classmethod
    def load(cls, path: str | Path, cache_dir: str | Path | None = None) -> "TransferClassifier":
        """A saved run of this class's modality (any modality's: ``transferkit.estimators.load_classifier``).
        Its features and engines are cached in ``cache_dir``, else the default cache: never in the folder the
        run's config names, which a copied run could point anywhere."""
        modality = cls.modality
        found = run_format(path)
        if found and found != modality.run_format:
            raise RunDirError(f"{path}: its model has format {found!r}, which {cls.__name__} does not read "
                              f"({modality.run_format}); load it with transferkit.estimators.load_classifier")
        run = read_run(path, modality.run_files)
        clf = cls.__new__(cls)
        clf.config = run.config if cache_dir is None else run.config.replace(cache_dir=str(cache_dir))
        clf.verbose, clf.classes_, clf.metrics_ = True, run.classes, run.metrics
        head = read_tensors(run.model_path, "head.")
        clf.head_ = ProbeHead(head["weight"], head["bias"], float(run.metrics.get("probe", {}).get("l2") or 0))
        clf.spec_, clf.net_, clf.checkpoint_dir_ = modality.spec_from_run(run), None, None
        clf.source_head_, clf.adapter_ = None, None
        clf.run_engine_ = Path(path) / RUN_ENGINE
        return clf


def classifier_class(modality: Modality) -> type[TransferClassifier]:
    """The classifier of ``modality``: its own class (``ImageClassifier``, ...), or a plain one for a modality
    that has none."""
    for cls in TransferClassifier.__subclasses__():
        if cls.modality is modality:
            return cls
    return type(f"{modality.name.title()}Classifier", (TransferClassifier,), {"modality": modality})


def share_probe_engine(modality: Modality, spec: Any, path: Path, cache_dir: str | None) -> None:
    """A loaded run's engine and features are cached under its content fingerprint (runs/integrity.py), not the
    backbone's: the engine this probe's features came from (the same network and preprocessing the run holds) is
    linked there now, so the run's first predict exports nothing."""
    name = modality.engine_file(spec)
    saved = modality.spec_from_run(read_run(path, modality.run_files))
    source = engine_dir(spec.fingerprint, cache_dir)
    # the fp32 engine, and the int8 engines built from it (NAME-TAG-DIGEST.onnx): an int8 probe's run meets the
    # int8 features it was fitted on (hard links keep their order: the first built stays the engine)
    for engine in [source / name, *sorted(source.glob(f"{Path(name).stem}-*.onnx"))]:
        seed_engine(saved.fingerprint, engine.name, engine, cache_dir)
