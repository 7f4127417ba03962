"""``auto`` end to end: facts, ranking, cost, plan, trials, the winner saved as an ordinary run folder with its
decisions (``transferkit auto``; :func:`auto` from Python returns the fitted classifier)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import tempfile
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Sequence

from transferkit.automl.budget import Clock, parse_budget
from transferkit.automl.candidates import RANK_ITEMS, Ranked, rank_backbones
from transferkit.automl.cost import SETUP_SECONDS, measure
from transferkit.automl.decisions import choose, record, write_decisions
from transferkit.automl.facts import derive
from transferkit.automl.plan import make_plan
from transferkit.automl.search import Outcome, STUDY_FILE, open_auto_study, run_trials
from transferkit.config import FINE_TUNING, RunConfig
from transferkit.errors import DataError, TransferkitError, arg
from transferkit.estimators import classifier_for_data
from transferkit.estimators.core import TransferClassifier, absolute_paths
from transferkit.modalities.base import LabelledData
from transferkit.progress import log
from transferkit.runs.lock import hold_run_folder
from transferkit.runs.rundir import check_out_vs_data, check_writable
from transferkit.tuning.objective import estimator_params, trial_classifier

METRICS = ("accuracy", "macro_f1")
SAVE_SECONDS = 5.0  # writing the run folder
EXPORT_SECONDS = 20.0  # a fine-tuned winner's engine is exported to ONNX when saved
REPORT_SECONDS = 10.0  # report.html: matplotlib's import and figures
BACKWARD_FACTOR = 3  # a training step against a forward pass alone (backward is ~2x forward)
MEASURE_SECONDS = 45.0  # less budget than this left after ranking: no step is measured, only probes run
OWN_CALLBACKS = ("deadline", "optuna-prune")  # what trials added to their configs; the saved run has none
# settings only fine-tuning reads: a probe given one is refused (config.py), so they go to fine-tuning trials only
FINETUNE_ONLY = frozenset(f.name for f in dataclasses.fields(RunConfig) if f.metadata["panel"] == FINE_TUNING)


def prepare(data: Any, settings: dict[str, Any], metric: str) -> tuple[type[TransferClassifier], RunConfig, LabelledData]:
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


def reserve_for(dataset: LabelledData, ranked: Sequence[Ranked], finetunes: bool, report: bool) -> float:
    """Seconds kept back for what follows the trials: scoring test, saving (and exporting a fine-tuned winner)."""
    per_item = max([r.per_item for r in ranked if r.per_item] or [0.01])
    return (len(dataset.test) * per_item + SAVE_SECONDS + (EXPORT_SECONDS if finetunes else 0.0)
            + (REPORT_SECONDS if report else 0.0))


def training_floor(top: Ranked, epochs: int, n_train: int) -> float:
    """The least the shortest fine-tune can cost, from the inference rate ranking measured (0 when its features
    were cached: nothing measured, so the step is timed)."""
    return (top.per_item or 0.0) * BACKWARD_FACTOR * n_train * epochs + SETUP_SECONDS


def study_name(config: RunConfig, given: dict[str, Any]) -> str:
    """The same data and fixed settings resume the same study (the budget may differ: trials are known by key)."""
    identity = json.dumps({"data": config.data, "val": config.val_data, "given": given, "metric": config.metric},
                          sort_keys=True, default=str)
    return "auto-" + hashlib.blake2b(identity.encode(), digest_size=6).hexdigest()


def auto(data: str | Path, out: str | Path | None = None, budget: str | float = "15m",
         backbones: Sequence[str] = (), metric: str = "accuracy", dry_run: bool = False, overwrite: bool = False,
         report: bool = False, **settings: Any) -> TransferClassifier | dict[str, Any]:
    """The best classifier ``budget`` allows on ``data``, chosen on validation; saved to ``out`` (a run folder
    with ``decisions.json`` and the study ``auto.db``) when given. ``settings`` are RunConfig fields, fixed in every
    trial. ``dry_run=True`` returns the plan (measured step costs, estimated seconds) and trains nothing."""
    clock = Clock(parse_budget(budget))
    given = {k: v for k, v in settings.items() if v is not None}
    if out is not None and not dry_run:
        check_out_vs_data(out, data, given.get("val_data"), given.get("test_data"))
        check_writable(out, overwrite, ignore=(STUDY_FILE,), resumable=False)
    shared = {k: v for k, v in given.items() if k not in FINETUNE_ONLY}
    classifier, config, dataset = prepare(data, shared, metric)
    modality = classifier.modality
    facts = derive(modality, dataset, config, given, metric)
    base = config.replace(**{k: v for k, v in facts.settings.items() if k not in FINETUNE_ONLY})
    tuned = {**{k: v for k, v in facts.settings.items() if k in FINETUNE_ONLY},
             **{k: v for k, v in given.items() if k in FINETUNE_ONLY}, "metric": f"val_{metric}"}
    log("auto: " + "; ".join(f"{k} {v} ({facts.reasons[k]})" for k, v in facts.settings.items()))
    ranked = rank_backbones(modality, dataset, base, backbones, clock)
    top = next(r for r in ranked if r.kept)
    cost, why_not = None, "no fine-tuning: the budget left no time to measure a training step"
    epochs = given.get("epochs", modality.defaults.epochs[0])
    floor, left = training_floor(top, epochs, len(dataset.train)), clock.left - reserve_for(dataset, ranked, True, report)
    if floor > left:
        why_not = (f"no fine-tuning: a training step costs at least ~{BACKWARD_FACTOR}x inference, so {epochs} "
                   f"epoch(s) of {top.name} need >= {floor:.0f} s at the extraction rate measured here, more than "
                   "the budget leaves")
    elif left > MEASURE_SECONDS:
        cost = measure(modality, base.replace(backbone=top.name), dataset)
    seconds = clock.left - reserve_for(dataset, ranked, cost is not None, report)
    weigh = facts.measured["imbalanced"] and "class_weights" not in facts.settings  # the probe tries both
    plan = make_plan(modality.name, ranked, cost, len(dataset.train), len(dataset.val), min(RANK_ITEMS, len(
        dataset.train) + len(dataset.val)), seconds, given, tuned, why_not, weigh)
    common = {"budget": clock.budget, "metric": metric, "n_val": len(dataset.val), "facts": facts.to_dict(),
              "ranking": [r.to_dict() for r in ranked], "cost": cost.to_dict() if cost else None, "notes": plan.notes}
    if dry_run:
        outcomes = [Outcome(t, "planned") for t in plan.trials]
        return record(used=clock.used, outcomes=outcomes, winner=None, study=None, dry_run=True, **common)
    folder = Path(out) if out is not None else None
    with hold_run_folder(folder) if folder is not None else nullcontext(), \
            tempfile.TemporaryDirectory(prefix="tk-auto-") as scratch:
        study = open_auto_study(folder or Path(scratch), study_name(config, given))
        reserve = reserve_for(dataset, ranked, any(t.trains_backbone for t in plan.trials), report)
        outcomes = run_trials(plan, base, classifier, study, folder or Path(scratch), clock, reserve)
        winner = choose(outcomes, metric, len(dataset.val))
        if winner is None:
            why = "; ".join([*plan.notes, *(f"{o.trial.key}: {o.note}" for o in outcomes)][:3])
            raise TransferkitError(f"no trial finished within {arg('budget', budget)} ({why or 'none planned'}); "
                                   "give a larger budget")
        clf = finish(winner, outcomes, base, classifier, config, dataset, metric)
        clf.metrics_["auto"] = record(used=clock.used, outcomes=outcomes, winner=winner, study=study.study_name,
                                      **common)
        if folder is not None:
            clf.save(folder, overwrite=overwrite, keep=(STUDY_FILE,))
            clf.metrics_["auto"]["used_seconds"] = round(clock.used, 1)
            write_decisions(folder, clf.metrics_["auto"])
    return clf


def finish(winner: Outcome, outcomes: list[Outcome], base: RunConfig, classifier: type[TransferClassifier],
           config: RunConfig, dataset: LabelledData, metric: str) -> TransferClassifier:
    """The winner's classifier (refitted when an earlier run of the command trained it), its config made a plain
    run's, and the test split scored once."""
    clf = winner.clf
    if clf is None:
        log(f"auto: refitting {winner.trial.key}, chosen from the study (trained by an earlier run)")
        fitted = base.replace(test_data=None, **winner.trial.settings)
        clf = trial_classifier(classifier)(**estimator_params(fitted)).fit(fitted.data)
        winner.note = "refitted: an earlier run of this command trained it"
    callbacks = [c for c in clf.config.callbacks if c.split(":")[0] not in OWN_CALLBACKS]
    clf.config = clf.config.replace(callbacks=callbacks, test_data=config.test_data)
    refit = (clf.metrics_.get("probe") or {}).get("refit_on_train_and_val")
    winner.note = winner.note or ("the probe's head refitted on train + validation (validation chose its L2)" if refit
                                  else "trained on train; validation chose the epoch and the winner")
    if len(dataset.test):
        names = [dataset.classes[i] for i in dataset.test.labels]
        scored = clf.evaluate(dataset.test.items, names)
        clf.metrics_["test"] = {k: v for k, v in scored.items() if k not in ("misclassified", "skipped")}
        log(f"auto: test accuracy {scored['accuracy']:.4f} (scored once, after the choice)")
    return clf
