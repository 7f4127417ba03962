"""What every ``auto`` shares, with or without a target domain: the data read once, the budget kept back for what
follows the trials, the study's name, and the winner made an ordinary run (scored on test once)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any

from transferkit.automl.budget import Clock
from transferkit.automl.decisions import write_decisions
from transferkit.automl.search import STUDY_FILE, Fit, Outcome
from transferkit.config import FINE_TUNING, RunConfig
from transferkit.errors import DataError, TransferkitError, arg
from transferkit.estimators import classifier_for_data
from transferkit.estimators.core import TransferClassifier, absolute_paths
from transferkit.modalities.base import LabelledData
from transferkit.progress import log
from transferkit.runs.rundir import check_out_vs_data, check_writable
from transferkit.tuning.objective import estimator_params

METRICS = ("accuracy", "macro_f1")
SAVE_SECONDS = 5.0  # writing the run folder
EXPORT_SECONDS = 20.0  # a fine-tuned winner's engine is exported to ONNX when saved
REPORT_SECONDS = 10.0  # report.html: matplotlib's import and figures
OWN_CALLBACKS = ("deadline", "optuna-prune")  # what trials added to their configs; the saved run has none
# settings only fine-tuning reads: a probe given one is refused (config.py), so they go to fine-tuning trials only
FINETUNE_ONLY = frozenset(f.name for f in dataclasses.fields(RunConfig) if f.metadata["panel"] == FINE_TUNING)


def check_out(out: str | Path | None, data: Any, given: dict[str, Any], dry_run: bool, overwrite: bool,
              *more: Any) -> None:
    """Before anything is read: ``out`` is neither inside the data (``data``, the given val/test, ``more``) nor an
    existing folder it may not replace (its study file aside: the command resumes it)."""
    if out is None or dry_run:
        return
    check_out_vs_data(out, data, given.get("val_data"), given.get("test_data"), *more)
    check_writable(out, overwrite, ignore=(STUDY_FILE,), resumable=False)


def prepare(data: Any, settings: dict[str, Any],
            metric: str) -> tuple[type[TransferClassifier], RunConfig, LabelledData]:
    """The classifier class, the base config and the data, read once (train, validation, and the test split,
    which only the winner's final score reads)."""
    if metric not in METRICS:
        raise TransferkitError(f"{arg('metric', metric)}: choose one of {', '.join(METRICS)}")
    classifier = classifier_for_data(str(data))
    config = absolute_paths(RunConfig(data=str(data), **{"backbone": classifier.modality.default_backbone, **settings}))
    config.validate()
    reader = classifier(**estimator_params(config))
    dataset = reader.read_data(config.data, None, config.val_data, config)
    if not len(dataset.val):
        raise DataError(f"{data}: no validation data to choose on; give {arg('val_data')} or a "
                        f"{arg('val_fraction', 0.2)} above 0 (auto never chooses on test)")
    log(f"auto: {dataset.describe()}")
    return classifier, config, dataset


def reserve_seconds(n_test: int, per_item: float, finetunes: bool, report: bool) -> float:
    """Seconds kept back for what follows the trials: scoring ``n_test`` items, saving (exporting a fine-tuned
    winner's engine), the report."""
    return (n_test * per_item + SAVE_SECONDS + (EXPORT_SECONDS if finetunes else 0.0)
            + (REPORT_SECONDS if report else 0.0))


def study_name(config: RunConfig, given: dict[str, Any]) -> str:
    """The same data and fixed settings resume the same study (the budget may differ: trials are known by key)."""
    identity = json.dumps({"data": config.data, "val": config.val_data, "given": given, "metric": config.metric},
                          sort_keys=True, default=str)
    return "auto-" + hashlib.blake2b(identity.encode(), digest_size=6).hexdigest()


def finish(winner: Outcome, base: RunConfig, fit: Fit, config: RunConfig, dataset: LabelledData,
           trained: str = "trained on train; validation chose the epoch and the winner") -> TransferClassifier:
    """The winner's classifier (refitted through ``fit`` when an earlier run of the command trained it), its
    config made a plain run's, and the test split scored once."""
    clf = winner.clf
    if clf is None:
        log(f"auto: refitting {winner.trial.key}, chosen from the study (trained by an earlier run)")
        clf = fit(base.replace(test_data=None, **winner.trial.settings))
        winner.note = "refitted: an earlier run of this command trained it"
    callbacks = [c for c in clf.config.callbacks if c.split(":")[0] not in OWN_CALLBACKS]
    clf.config = clf.config.replace(callbacks=callbacks, test_data=config.test_data)
    refit = (clf.metrics_.get("probe") or {}).get("refit_on_train_and_val")
    winner.note = winner.note or ("the probe's head refitted on train + validation (validation chose its L2)" if refit
                                  else trained)
    if len(dataset.test):
        names = [dataset.classes[i] for i in dataset.test.labels]
        scored = clf.evaluate(dataset.test.items, names)
        clf.metrics_["test"] = {k: v for k, v in scored.items() if k not in ("misclassified", "skipped")}
        log(f"auto: test accuracy {scored['accuracy']:.4f} (scored once, after the choice)")
    return clf


def keep_winner(clf: TransferClassifier, decisions: dict[str, Any], folder: Path | None, overwrite: bool,
                clock: Clock) -> TransferClassifier:
    """The decisions in the winner's metrics; with ``folder``, the run saved there (the study kept beside it) and
    ``decisions.json`` written, its seconds counting the saving too."""
    clf.metrics_["auto"] = decisions
    if folder is not None:
        clf.save(folder, overwrite=overwrite, keep=(STUDY_FILE,))
        decisions["used_seconds"] = round(clock.used, 1)
        write_decisions(folder, decisions)
    return clf
