"""One trial: its settings from the search space, and its validation accuracy (its validation log-loss is
recorded too: it breaks ties). The test split is never read here: trials learn from the training split and are
scored on the validation split (the data's own, ``val_data``, or ``val_fraction`` of train, as ``train`` splits
it); only the best trial's final run, fitted by :mod:`~transferkit.tuning.study`, scores the test split.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import optuna
from threadpoolctl import threadpool_limits

from transferkit.config import RunConfig
from transferkit.errors import DataError, arg
from transferkit.estimators.core import TransferClassifier, read_training
from transferkit.heads.probe import fit_probe
from transferkit.metrics import classification_metrics
from transferkit.modalities.base import Featurized, LabelledData, Split, check_read
from transferkit.strategies import parse_strategy
from transferkit.tuning.base import LOG_LOSS_ATTR, TuningError
from transferkit.tuning.space import Dimension, SearchSpace
from transferkit.tuning.storage import prune_spec, pruned_at

Labelled = tuple[Featurized, np.ndarray]  # features of the items read, their labels


@dataclass
class Search:
    """What every trial of one search shares: the space and its dimensions in play, the settings the user fixed
    (``config``, with the test data the final run scores), and the estimator class of the data."""

    space: SearchSpace
    dimensions: list[Dimension]
    config: RunConfig
    kind: str  # the data's modality's name: what its dimensions read of it (tuning/space.py: defaults_of)
    classifier: type[TransferClassifier]

    @property
    def trial_config(self) -> RunConfig:
        """The settings trials start from: no test data (the data's own test split is dropped when read)."""
        return self.config.replace(test_data=None)

    def estimator_params(self, config: RunConfig) -> dict[str, Any]:
        return estimator_params(config)


def estimator_params(config: RunConfig) -> dict[str, Any]:
    """An estimator's parameters for ``config`` (everything but the data, which ``fit`` takes)."""
    return {name: value for name, value in config.to_dict().items() if name != "data"}


def without_test(dataset: LabelledData) -> LabelledData:
    """The data with its test split dropped: a folder's test/ is listed by the reader, never featurised here."""
    dataset.test = Split()
    return dataset


def read_without_test(self: TransferClassifier, data: Any, labels: Sequence[Any] | None, val_data: Any,
                      config: RunConfig) -> LabelledData:
    """``TransferClassifier.read_data`` for trials: train and validation only."""
    return without_test(read_training(self.modality, data, labels, val_data, config))


def training_data(search: Search) -> LabelledData:
    """What trials learn from and are scored on, read once before the first trial (which it checks can be scored)."""
    config = search.trial_config
    dataset = without_test(read_training(search.classifier.modality, config.data, None, config.val_data, config))
    if not len(dataset.val):
        raise TuningError(f"{config.data}: no validation data to score trials on; give {arg('val_data')} or "
                          f"{arg('val_fraction', 0.2)}")
    return dataset


TRIAL_CLASSES: dict[type, type] = {}


def trial_classifier(classifier: type[TransferClassifier]) -> type[TransferClassifier]:
    """``classifier`` whose fit never reads a test split (one subclass per class, made once)."""
    if classifier not in TRIAL_CLASSES:
        TRIAL_CLASSES[classifier] = type(f"Trial{classifier.__name__}", (classifier,),
                                         {"read_data": read_without_test, "__module__": __name__})
    return TRIAL_CLASSES[classifier]


class ProbeObjective:
    """Trials on cached features: each feature set (for text, the pooled layers and the pooling choose one) is
    extracted once, through the feature cache; a trial fits the probe head (heads/probe.py, the head ``train``
    fits) with its settings on train, and scores it on validation. Seconds per trial."""

    def __init__(self, search: Search) -> None:
        self.search = search
        self.dataset = training_data(search)
        self.features: dict[str, tuple[Labelled, Labelled]] = {}
        self.featurized(search.trial_config)  # extracted (or read from the cache) before, not in, the first trial

    def __call__(self, trial: optuna.Trial) -> float:
        search = self.search
        params = search.space.suggest(trial, search.kind, search.dimensions)
        config = search.space.config_for(params, search.trial_config, search.dimensions)
        (train_x, train_y), (val_x, val_y) = self.featurized(config)
        # One BLAS thread: a trial's products are small, and a study's parallelism is its workers. Threaded BLAS
        # took 1-6 s a hymenoptera trial on a busy 2-core machine, one thread 0.1-0.3 s (selection/rank.py too).
        with threadpool_limits(1, user_api="blas"):
            head = fit_probe(train_x.features, train_y, len(self.dataset.classes), val_x.features, val_y,
                             l2=config.l2, class_weight=config.class_weights, standardize=not train_x.normalized)
        scores = classification_metrics(val_y, head.val_proba, self.dataset.classes)
        trial.set_user_attr(LOG_LOSS_ATTR, round(scores["log_loss"], 6))
        return scores["accuracy"]

    def featurized(self, config: RunConfig) -> tuple[Labelled, Labelled]:
        """(train, validation) features of the backbone as ``config`` sets it up, extracted on first use."""
        modality = self.search.classifier.modality
        spec = modality.resolve(config, parse_strategy(config.strategy))
        if spec.fingerprint not in self.features:
            train, val = self.dataset.train, self.dataset.val
            result = modality.featurize(spec, train.items + val.items, config, lambda: modality.build_net(spec),
                                        True, calibrate_on=train.items)
            train_part, val_part = result.part(0, len(train)), result.part(len(train), len(train) + len(val))
            check_read(train_part.failed, "train", config.strict)
            check_read(val_part.failed, "val", config.strict)
            if not val_part.ok.any():
                raise DataError(f"{config.data}: none of the validation items could be read")
            self.features[spec.fingerprint] = ((train_part, labels_read(train, train_part)),
                                               (val_part, labels_read(val, val_part)))
        return self.features[spec.fingerprint]


def labels_read(split: Split, part: Featurized) -> np.ndarray:
    """The labels of the items of ``split`` that have a feature row."""
    return np.asarray(split.labels, dtype=np.int64)[part.ok]


class FinetuneObjective:
    """Short fine-tunes through the ordinary estimator (so a trial trains exactly as ``train`` would), each with
    the ``optuna-prune`` callback: its validation curve reaches the study, and a trial behind the others stops."""

    def __init__(self, search: Search, storage: str, study: str, pruner: str) -> None:
        self.search, self.storage, self.study, self.pruner = search, storage, study, pruner
        self.classifier = trial_classifier(search.classifier)
        training_data(search)  # no validation data fails here, before the first trial

    def __call__(self, trial: optuna.Trial) -> float:
        search = self.search
        params = search.space.suggest(trial, search.kind, search.dimensions)
        config = search.space.config_for(params, search.trial_config, search.dimensions)
        config = config.replace(callbacks=[*config.callbacks, prune_spec(self.storage, self.study, trial.number,
                                                                         self.pruner)])
        clf = self.classifier(**search.estimator_params(config)).fit(config.data)
        epoch = pruned_at(trial.study, trial.number)
        if epoch is not None:
            raise optuna.TrialPruned(f"after epoch {epoch}")
        val = clf.metrics_["val"]
        trial.set_user_attr(LOG_LOSS_ATTR, round(val["log_loss"], 6))
        return val["accuracy"]
