"""The planned trials as an Optuna study in the run folder (``RUN/auto.db``): each trial is asked of the study,
trained through the ordinary estimator (its test split never read), scored on validation and told back, so a
re-run of the same command skips the trials the study holds as finished. Fine-tuning trials report each epoch to
the study's median pruner and carry the budget's deadline; no trial starts whose estimate does not fit."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import optuna
from optuna.trial import TrialState

from transferkit.automl.budget import Clock
from transferkit.automl.plan import SAFETY, Plan, Trial
from transferkit.config import RunConfig
from transferkit.errors import TransferkitError, first_line
from transferkit.estimators.core import TransferClassifier
from transferkit.progress import log
from transferkit.registry import format_spec
from transferkit.runs.folders import AUTO_STUDY as STUDY_FILE
from transferkit.tuning.base import PRUNERS
from transferkit.tuning.objective import estimator_params, trial_classifier
from transferkit.tuning.storage import open_storage, prune_spec, pruned_at

KEY_ATTR = "auto_key"


@dataclass
class Outcome:
    """One planned trial as it ended: its validation scores, seconds, state, and why it did not win or run."""

    trial: Trial
    state: str  # "complete" | "pruned" | "failed" | "skipped" | "resumed"
    scores: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0
    epochs_run: int | None = None
    note: str = ""
    clf: TransferClassifier | None = None

    def value(self, metric: str) -> float | None:
        return self.scores.get(metric) if self.state in ("complete", "resumed") else None

    def to_dict(self) -> dict[str, Any]:
        return {**self.trial.to_dict(), "state": self.state, "val": self.scores, "seconds": round(self.seconds, 1),
                "epochs_run": self.epochs_run, "note": self.note}


def study_url(folder: Path) -> str:
    return f"sqlite:///{(folder / STUDY_FILE).resolve()}"


def open_auto_study(folder: Path, name: str) -> optuna.Study:
    folder.mkdir(parents=True, exist_ok=True)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # trials are asked and told here, not run by study.optimize: no heartbeats; a killed run's trial stays
    # "running" and, not finished, is run again
    return optuna.create_study(storage=open_storage(study_url(folder), heartbeat=False), study_name=name,
                               direction="maximize", load_if_exists=True, pruner=PRUNERS.create("median"))


def finished(study: optuna.Study) -> dict[str, optuna.trial.FrozenTrial]:
    """The study's finished trials by their plan key (the last one of a key wins)."""
    return {t.user_attrs[KEY_ATTR]: t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,
                                                                                         TrialState.PRUNED))
            if KEY_ATTR in t.user_attrs}


Fit = Callable[[RunConfig], TransferClassifier]  # a trial's config -> its fitted classifier (never reading test)


def fit_classifier(classifier: type[TransferClassifier]) -> Fit:
    """The ordinary trial: ``classifier`` fitted on train, scored on validation."""
    return lambda config: trial_classifier(classifier)(**estimator_params(config)).fit(config.data)


def run_trials(plan: Plan, base: RunConfig, fit: Fit, study: optuna.Study, folder: Path, clock: Clock,
               reserve: float, objective: str | None = None) -> list[Outcome]:
    """Every planned trial that fits, in order; the estimates of later fine-tunes scaled by how long the earlier
    ones really took. ``objective``: the score told to the study (default: the config's validation metric)."""
    done, outcomes, scale = finished(study), [], 1.0
    for planned in plan.trials:
        if planned.key in done:
            outcomes.append(resumed(planned, done[planned.key]))
            continue
        estimate = planned.estimate * (scale if planned.trains_backbone else 1.0)
        left = clock.left - reserve
        if not planned.trains_backbone and not any(o.state in ("complete", "resumed") for o in outcomes):
            left = float("inf")  # the first probe (seconds, on features ranking cached) always runs: a result, not none
        if estimate * SAFETY > left:
            outcomes.append(Outcome(planned, "skipped", note=f"not started: needs ~{estimate:.0f} s, {max(0, left):.0f} s "
                                                             "of the budget were left"))
            continue
        outcome = run_one(planned, base, fit, study, folder, clock, reserve, objective)
        if planned.trains_backbone and outcome.state == "complete" and planned.estimate:
            scale = max(scale, outcome.seconds / planned.estimate)
        outcomes.append(outcome)
    return outcomes


def resumed(planned: Trial, frozen: optuna.trial.FrozenTrial) -> Outcome:
    attrs = frozen.user_attrs
    state = "resumed" if frozen.state == TrialState.COMPLETE else "pruned"
    return Outcome(planned, state, dict(attrs.get("val", {})), float(attrs.get("seconds", 0.0)), attrs.get("epochs_run"),
                   "finished by an earlier run of this command (kept in the study)")


def run_one(planned: Trial, base: RunConfig, fit: Fit, study: optuna.Study, folder: Path, clock: Clock,
            reserve: float, objective: str | None = None) -> Outcome:
    trial = study.ask()
    trial.set_user_attr(KEY_ATTR, planned.key)
    config = base.replace(test_data=None, **planned.settings)
    if planned.trains_backbone:  # no epoch starts that would pass the budget; each epoch reaches the pruner
        deadline = format_spec("deadline", {"at": round(clock.deadline_epoch - reserve, 1)})
        pruner = [prune_spec(study_url(folder), study.study_name, trial.number, "median")] if planned.pruned else []
        config = config.replace(callbacks=[*config.callbacks, deadline, *pruner])
    log(f"auto: trial {trial.number} {planned.key} (~{planned.estimate:.0f} s; {clock.left:.0f} s of the budget left)")
    start = time.perf_counter()
    try:
        clf = fit(config)
    except KeyboardInterrupt:
        study.tell(trial, state=TrialState.FAIL)
        raise
    except TransferkitError as exc:
        study.tell(trial, state=TrialState.FAIL)
        return Outcome(planned, "failed", seconds=time.perf_counter() - start, note=first_line(exc))
    seconds = time.perf_counter() - start
    val = clf.metrics_.get("val", {})
    scores = {k: round(float(val[k]), 6) for k in ("accuracy", "macro_f1", "log_loss") if k in val}
    scores.update({k: round(float(v), 6) for k, v in clf.metrics_.get("selection", {}).items()})  # label-free
    epochs = clf.metrics_.get("epochs_run")
    for name, value in (("val", scores), ("seconds", round(seconds, 3)), ("epochs_run", epochs)):
        trial.set_user_attr(name, value)
    epoch = pruned_at(study, trial.number)
    if epoch is not None:
        study.tell(trial, state=TrialState.PRUNED)
        return Outcome(planned, "pruned", scores, seconds, epochs, f"pruned after epoch {epoch}: behind the median "
                                                                   "of earlier trials")
    told = objective or base.metric.removeprefix("val_")
    study.tell(trial, scores.get(told, scores.get("accuracy", 0.0)))
    log(f"auto: trial {trial.number}: val accuracy {scores.get('accuracy', float('nan')):.4f}"
        + (f", {objective} {scores[objective]:.4f}" if objective in scores else "") + f" ({seconds:.1f} s)")
    return Outcome(planned, "complete", scores, seconds, epochs, clf=clf)
