"""``auto --target``: domain adaptation to unlabelled target images, within the budget, chosen without a target
label. What the source data settles (input size, augmentation) comes from the same facts as a plain ``auto``;
two source-only fine-tunes then choose the learning rate on source validation (the one question the source's
labels can answer); the adaptation methods train at that rate, as many as the measured step cost fits; and
info-max (adapt/selection.py) chooses among everything that finished, reading the target's predictions only.
The test split (``--test-data``: labelled target images) is scored once, after the choice."""

from __future__ import annotations

import tempfile
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from transferkit.adapt.estimator import DEV_SOURCE_SAMPLE, DomainAdaptClassifier, check_adaptable
from transferkit.adapt.experiment import ADAPT_DEFAULTS
from transferkit.automl.budget import Clock, parse_budget
from transferkit.automl.cost import INFERENCE_SHARE, measure
from transferkit.automl.decisions import record
from transferkit.automl.facts import derive
from transferkit.automl.plan import SAFETY, Plan, Trial
from transferkit.automl.search import Fit, Outcome, open_auto_study, run_trials
from transferkit.automl.steps import (FINETUNE_ONLY, check_out, finish, keep_winner, prepare, reserve_seconds,
                                     study_name)
from transferkit.errors import TransferkitError, arg
from transferkit.estimators import classifier_for_data
from transferkit.estimators.core import TransferClassifier
from transferkit.modalities.image.target import read_target
from transferkit.plugins import SOURCE_ONLY
from transferkit.progress import log
from transferkit.runs.lock import hold_run_folder
from transferkit.tuning.objective import estimator_params

CHOOSER = "info-max"  # label-free: it chose the best method in both digit directions (adapt/selection.py)
# The methods in the order they are tried, best first by their mean target accuracy over both digit directions
# on bench/adapt.py (3 seeds, 64 px, 5 epochs): pseudo-labels 0.956, CORAL 0.920, CDAN 0.917, MMD 0.913, DANN 0.912
METHODS = (("pseudo-label", "confident target predictions as labels: the best method measured on digits"),
           ("coral", "aligns the feature covariances of the two domains"),
           ("cdan", "a domain discriminator conditioned on the predictions"),
           ("mmd", "aligns the feature means in a kernel space"),
           ("dann", "a domain discriminator on the features"))
# The two learning rates the source-only trials compare on source validation: the fine-tune default, and ten
# times it, the rate bench/adapt.py measured at 64 px, far below the backbone's own resolution (the target
# oracle 0.949 / 0.983 there)
LEARNING_RATES = (3e-4, 3e-3)
EPOCHS = (2, 5)  # least, preferred: bench/adapt.py's figures are at 5 epochs
TARGET_STEP = 2.0  # a step with a target batch beside the source batch, against a source step alone
# every layer adapts (the bottleneck head cannot start from a probe: no gradual), with adaptation's defaults
SETTINGS = {"strategy": "finetune", **ADAPT_DEFAULTS}


def adapt_fit(target: str) -> Fit:
    """A trial: a :class:`DomainAdaptClassifier` (its default bottleneck) on the source data with ``target`` as its
    unlabelled stream."""
    return lambda config: DomainAdaptClassifier(target=target, **estimator_params(config)).fit(config.data)


@dataclass
class Pricing:
    """A trial's seconds from the measured step: the fixed setup, a source-only epoch, scoring the finished model."""

    backbone: str
    setup: float
    epoch: float
    scoring: float
    measured: dict[str, Any] = field(default_factory=dict)  # what the measurement chose (Cost.settings)

    def trial(self, method: str, lr: float | None, epochs: int, why: str) -> Trial:
        terms = [] if method == SOURCE_ONLY else [method]
        settings = {"methods": terms, "epochs": epochs, **({"lr": lr} if lr is not None else {}), **self.measured}
        estimate = self.setup + (TARGET_STEP if terms else 1.0) * epochs * self.epoch + self.scoring
        rate = "chosen" if lr is None else f"{lr:g}"
        return Trial(f"adapt/{self.backbone}/{method}/lr={rate}/epochs={epochs}", settings, estimate, why, "adapt")

    def first(self, epochs: int, given: dict[str, Any]) -> list[Trial]:
        """The source-only pair (one trial when the user fixed --lr) and the first method."""
        rates = [given["lr"]] if "lr" in given else LEARNING_RATES
        pair = [self.trial(SOURCE_ONLY, lr, epochs, "source only: the baseline, and a learning rate put to the "
                                                    "test on source validation") for lr in rates]
        return pair + [self.trial(METHODS[0][0], rates[0], epochs, METHODS[0][1])]


def plan_adaptation(pricing: Pricing, seconds: float, given: dict[str, Any]) -> tuple[Plan, int]:
    """The source-only pair, then the methods (their rate chosen later), at the most epochs up to the preferred
    number at which the pair and the first method fit ``seconds``."""
    least, preferred = EPOCHS
    fits = lambda e: sum(t.estimate for t in pricing.first(e, given)) * SAFETY <= seconds  # noqa: E731
    epochs = given.get("epochs") or next((e for e in range(preferred, least - 1, -1) if fits(e)), least)
    plan = Plan(pricing.first(epochs, given)[:-1])
    plan.trials += [pricing.trial(method, given.get("lr"), epochs, why) for method, why in METHODS]
    if not fits(epochs):
        plan.notes.append(f"the budget leaves {seconds:.0f} s: less than the source-only trials and one method need "
                          f"at {epochs} epoch(s); what does not fit is not started")
    return plan, epochs


def at_rate(planned: Trial, lr: float | None) -> Trial:
    """A method's trial at the learning rate the source-only trials chose."""
    if lr is None or "lr" in planned.settings:
        return planned
    return Trial(planned.key.replace("lr=chosen", f"lr={lr:g}"), {**planned.settings, "lr": lr}, planned.estimate,
                 planned.why, planned.kind)


def chosen_rate(outcomes: Sequence[Outcome], metric: str) -> float | None:
    """The source-only learning rate best on source validation (ties: the lower)."""
    done = [o for o in outcomes if o.value(metric) is not None]
    return max(done, key=lambda o: o.value(metric)).trial.settings.get("lr") if done else None


def choose_by_target(outcomes: Sequence[Outcome]) -> Outcome | None:
    done = [o for o in outcomes if o.value(CHOOSER) is not None]
    return max(done, key=lambda o: o.value(CHOOSER)) if done else None


def auto_adapt(data: str | Path, target: str | Path, out: str | Path | None = None, budget: str | float = "20m",
               metric: str = "accuracy", dry_run: bool = False, overwrite: bool = False, report: bool = False,
               **settings: Any) -> TransferClassifier | dict[str, Any]:
    """:func:`transferkit.automl.run.auto` with a target domain: the adapted classifier the budget allows,
    chosen by info-max (no target label read); saved to ``out`` as an ordinary run folder when given."""
    clock = Clock(parse_budget(budget))
    given = {k: v for k, v in settings.items() if v is not None}
    if "methods" in given or "strategy" in given:
        raise TransferkitError(f"{arg('target', str(target))}: auto chooses the adaptation method and trains every "
                               "layer; drop --method/--strategy, or run transferkit adapt with them")
    check_out(out, data, given, dry_run, overwrite, target)
    check_adaptable(classifier_for_data(str(data)), str(target))  # before the data is read
    classifier, config, dataset = prepare(data, {k: v for k, v in given.items() if k not in FINETUNE_ONLY}, metric)
    images = read_target(target, dataset.classes)  # a bad target folder fails before anything trains
    facts = derive(classifier.modality, dataset, config, given, metric)
    base = config.replace(**{**SETTINGS, **facts.settings, **{k: v for k, v in given.items() if k in FINETUNE_ONLY},
                             "metric": f"val_{metric}"})
    log("auto: " + "; ".join(f"{k} {v} ({facts.reasons[k]})" for k, v in facts.settings.items()))
    cost = measure(classifier.modality, base, dataset)
    per_item = cost.step_seconds * INFERENCE_SHARE / cost.batch_size
    # a finished trial scores source validation, the target and DEV's sample of the source (adapt/selection.py)
    scored = len(dataset.val) + len(images.items) + min(DEV_SOURCE_SAMPLE, len(dataset.train))
    pricing = Pricing(cost.backbone, cost.setup_seconds, cost.epoch_seconds(len(dataset.train), 0), per_item * scored,
                      cost.settings)
    reserve = reserve_seconds(len(dataset.test), per_item, True, report)
    plan, epochs = plan_adaptation(pricing, clock.left - reserve, given)
    common = {"budget": clock.budget, "metric": metric, "n_val": len(dataset.val), "facts": facts.to_dict(),
              "ranking": [], "cost": cost.to_dict(), "notes": [
                  f"target: {len(images.items)} unlabelled images in {target}; chosen by {CHOOSER}, which reads "
                  "the target's predictions, never a target label", *plan.notes], "objective": CHOOSER}
    if dry_run:
        return record(used=clock.used, outcomes=[Outcome(t, "planned") for t in plan.trials], winner=None,
                      study=None, dry_run=True, **common)
    folder = Path(out) if out is not None else None
    fit = adapt_fit(str(target))
    with hold_run_folder(folder) if folder is not None else nullcontext(), \
            tempfile.TemporaryDirectory(prefix="tk-auto-") as scratch:
        study = open_auto_study(folder or Path(scratch), study_name(config, {**given, "target": str(target)}))
        pair = [t for t in plan.trials if not t.settings["methods"]]
        outcomes = run_trials(Plan(pair), base, fit, study, folder or Path(scratch), clock, reserve, CHOOSER)
        lr = chosen_rate(outcomes, metric)
        methods = [at_rate(t, lr) for t in plan.trials if t.settings["methods"]]
        outcomes += run_trials(Plan(methods), base, fit, study, folder or Path(scratch), clock, reserve, CHOOSER)
        winner = choose_by_target(outcomes)
        if winner is None:
            raise TransferkitError(f"no adaptation finished within {arg('budget', budget)}: one source-only "
                                   f"fine-tune of {epochs} epoch(s) needs ~{pair[0].estimate:.0f} s here; give a "
                                   "larger budget")
        clf = finish(winner, base, fit, config, dataset, f"trained on the source with the target unlabelled; "
                                                         f"chosen by {CHOOSER}")
        decisions = record(used=clock.used, outcomes=outcomes, winner=winner, study=study.study_name, **common)
        return keep_winner(clf, decisions, folder, overwrite, clock)
