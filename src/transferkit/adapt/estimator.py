"""``DomainAdaptClassifier``: an image classifier fitted on a labelled source domain and adapted, through the
shared training loop, to an unlabelled target folder.

The loss terms (``methods``: coral, mmd, dann, cdan, pseudo-label; methods/domain/) read the target stream this
classifier passes to the fine-tune (``fit(..., unlabelled=...)``); the model trains with a linear bottleneck
(methods/domain/bottleneck.py, passed as ``reshape``) that folds into the head, so the fitted classifier
predicts, evaluates and saves exactly as an :class:`ImageClassifier` does. Target labels (a target folder with
class sub-folders, or ``target_test``) only score the run: ``metrics_["target"]``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from transferkit.adapt.selection import Evidence, all_scores
from transferkit.config import RunConfig
from transferkit.errors import TransferkitError
from transferkit.estimators.image import ImageClassifier
from transferkit.methods.domain.base import DomainTerm
from transferkit.methods.domain.bottleneck import BottleneckModel
from transferkit.metrics import classification_metrics, record_scored_items
from transferkit.modalities.base import LabelledData, Split
from transferkit.modalities.image.backbones import DEFAULT_IMAGE_BACKBONE
from transferkit.modalities.image.target import TargetImages, check_target_folder, read_target, target_train_data
from transferkit.plugins import BOTTLENECK, LOSS_TERMS
from transferkit.runs.rundir import check_out_vs_data
from transferkit.strategies import parse_strategy

if TYPE_CHECKING:
    from torch import nn

    from transferkit.train.data import TrainData

OWN_PARAMETERS = ("target", "target_test", "bottleneck")
DEV_SOURCE_SAMPLE = 1000  # source training images DEV's domain classifier sees (a seeded sample)


def adapting_classifier(cls: type, target: str, params: dict[str, Any]) -> "DomainAdaptClassifier":
    """``train --target``: the :class:`DomainAdaptClassifier` in place of ``cls`` (which must be the image
    classifier), with no bottleneck: ``train`` saves the plain model."""
    check_adaptable(cls, target)
    return DomainAdaptClassifier(**params, target=target, bottleneck=0)


def check_adaptable(cls: type, target: str) -> None:
    """One line unless ``cls`` (the data's classifier) reads images, the only data a target domain is for."""
    if not issubclass(cls, ImageClassifier):
        raise TransferkitError(f"--target {target}: only image data can have a target domain (the data is read "
                               f"as {cls.modality.name})")


def reads_target(method: str) -> bool:
    """Whether the loss term ``method`` (a spec, ``name:key=value,...``) reads the target stream: the domain terms
    do; L2-SP, LwF or distillation beside ``--target`` would only pay a target forward per step."""
    name, _ = LOSS_TERMS.check(method)
    factory = LOSS_TERMS.factory(name)
    return isinstance(factory, type) and issubclass(factory, DomainTerm)


class DomainAdaptClassifier(ImageClassifier):
    """An :class:`ImageClassifier` adapted to ``target`` (a folder of images: flat, or one sub-folder per class).

    >>> clf = DomainAdaptClassifier(target="usps/", methods=["dann"], epochs=3).fit("mnist/")
    >>> clf.metrics_["target"]["accuracy"], clf.metrics_["selection"]  # target scored only if labelled

    ``bottleneck`` is the width the terms align (0: none, they read the pooled features); ``target_test`` is a
    labelled folder that scores the run instead of the target's own labels. Strategy defaults to ``finetune``.
    """

    def __init__(self, backbone: str = DEFAULT_IMAGE_BACKBONE, strategy: str = "finetune", target: str | None = None,
                 target_test: str | None = None, bottleneck: int = 256, **params: Any) -> None:
        super().__init__(backbone, strategy, **params)
        self.target, self.target_test, self.bottleneck = target, target_test, bottleneck

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        return {**super().get_params(deep), **{name: getattr(self, name) for name in OWN_PARAMETERS}}

    def set_params(self, **params: Any) -> "DomainAdaptClassifier":
        for name in OWN_PARAMETERS:
            if name in params:
                setattr(self, name, params.pop(name))
        return super().set_params(**params)

    def fit(self, data: Any, labels: Sequence[Any] | None = None, val_data: Any = None,
            out: str | Path | None = None, resume: bool = False) -> "DomainAdaptClassifier":
        """Fit on the source ``data`` with the target images as the unlabelled stream; then score the target
        (when labelled) and record every model-selection criterion (none reads a target label)."""
        self.fit_network(data, labels, val_data, out, resume)
        self.score_adaptation()
        return self

    def fit_network(self, data: Any, labels: Sequence[Any] | None = None, val_data: Any = None,
                    out: str | Path | None = None, resume: bool = False) -> "DomainAdaptClassifier":
        """The training half of :meth:`fit`: afterwards the classifier predicts and saves, unscored (``adapt``
        saves each candidate here, before anything after training can fail)."""
        self.check_target_settings(out)
        strategy = parse_strategy(self.config.strategy)
        # without a term that reads it, the target would only cost a forward and move BatchNorm's statistics:
        # source-only stays source-only
        reads = any(reads_target(method) for method in self.config.methods)
        super().fit(data, labels, val_data, out, resume, unlabelled=self.target_stream if reads else None,
                    reshape=self.with_bottleneck if self.bottleneck else None)
        self.metrics_["adapt"] = {"target": str(self.target), "target_test": self.target_test,
                                  "bottleneck": self.bottleneck if not strategy.frozen_backbone else 0,
                                  "methods": list(self.config.methods)}
        return self

    def target_stream(self, spec: Any, config: RunConfig) -> "TrainData":
        """The target images (read with the source data, :meth:`read_data`) as the unlabelled training stream."""
        return target_train_data(self.target_.items, spec.preprocessing, config)

    def with_bottleneck(self, model: "nn.Module") -> "nn.Module":
        return BottleneckModel(model, self.bottleneck)

    def score_adaptation(self) -> None:
        """The scoring half of :meth:`fit`: source validation metrics, every selection criterion, and the
        target's accuracy when it has labels (``metrics_["target"]``; absent for an unlabelled target)."""
        evidence = self.evidence()
        self.metrics_["val"] = classification_metrics(evidence.val_labels, evidence.val_proba,
                                                      [str(c) for c in self.classes_])
        # the val metrics are new (the loop never saw the held-back split): which items they score, for compare
        scored = dataclasses.replace(self.source_data_, val=self.source_val_)
        record_scored_items(self.metrics_, scored, self.metrics_.get(self.modality.skipped_key) or [])
        self.metrics_["selection"] = all_scores(evidence)
        target = self.scored_target()
        if target is not None:
            self.metrics_["target"] = target

    def check_target_settings(self, out: str | Path | None) -> None:
        if not self.target:
            raise TransferkitError("DomainAdaptClassifier: no target given; pass target=<folder of target images>")
        self.bottleneck = BOTTLENECK.read("bottleneck", self.bottleneck)  # its width is allocated: bounded first
        strategy = parse_strategy(self.config.strategy)
        if strategy.frozen_backbone and self.config.methods:
            raise TransferkitError(f"strategy {self.config.strategy} trains no network, so the domain-adaptation "
                                   "methods cannot run; use finetune or last-k:N")
        if self.config.early_stop and not strategy.frozen_backbone:
            raise TransferkitError(f"early_stop {self.config.early_stop}: adaptation trains every epoch and keeps the "
                                   "last (source accuracy is no guide to the target); drop it")
        if strategy.init_head_from_probe and self.bottleneck:
            raise TransferkitError(f"strategy {self.config.strategy} starts the head from a linear probe, which a "
                                   "bottleneck head cannot take; use finetune or last-k:N, or bottleneck 0")
        check_target_folder(self.target)
        if self.target_test:
            check_target_folder(self.target_test)
        if out is not None:
            check_out_vs_data(out, self.target, self.target_test)

    def read_data(self, data: Any, labels: Sequence[Any] | None, val_data: Any, config: RunConfig) -> LabelledData:
        dataset = super().read_data(data, labels, val_data, config)
        self.target_: TargetImages = read_target(self.target, dataset.classes)
        if not len(dataset.val):  # before any training: every criterion reads the source validation split
            raise TransferkitError("model selection needs source validation data; give val_data or a val_fraction "
                                   "above 0")
        self.source_data_, self.source_val_ = dataset, dataset.val
        if not parse_strategy(config.strategy).frozen_backbone:
            # Held back from the loop, which would return the epoch best on it: source accuracy levels off
            # early while adaptation goes on, so every run keeps its last epoch and the criteria read this split.
            dataset.val = Split()
            dataset.val_source = f"{len(self.source_val_)} held back for model selection: {dataset.val_source}"
        dataset.details["target_images"] = self.target_.describe()  # "target" is the scores, when it has labels
        return dataset

    # -- after fitting ---------------------------------------------------------------------------------------
    def evidence(self) -> Evidence:
        """What the selection criteria read: source validation predictions, target predictions, features."""
        val, train = self.source_val_, self.source_data_.train
        rng = np.random.default_rng(self.config.seed)
        sample = sorted(rng.choice(len(train), min(DEV_SOURCE_SAMPLE, len(train)), replace=False).tolist())
        val_features = self.readable_features(val.items)
        target_features = self.readable_features(self.target_.items)
        return Evidence(self.head_.predict_proba(val_features), np.asarray(val.labels), self.head_.predict_proba(
            target_features), self.readable_features([train.items[i] for i in sample]), val_features,
            target_features)

    def readable_features(self, items: list[str]) -> np.ndarray:
        features = self.features(items)
        if len(features) != len(items):
            raise TransferkitError(f"{len(items) - len(features)} image(s) read during training could not be read "
                                   "again to score the run; check the data folders")
        return features

    def scored_target(self) -> dict[str, Any] | None:
        """Accuracy and macro-F1 on the labelled target (``target_test``, else the target's own labels)."""
        source = read_target(self.target_test, self.source_data_.classes) if self.target_test else self.target_
        if not source.labelled:
            return None
        split = source.scored()
        proba = self.head_.predict_proba(self.readable_features(split.items))
        m = classification_metrics(np.asarray(split.labels), proba, [str(c) for c in self.classes_])
        return {"folder": source.folder, "n": m["n"], "accuracy": m["accuracy"], "macro_f1": m["macro_f1"],
                "transductive": not self.target_test}
