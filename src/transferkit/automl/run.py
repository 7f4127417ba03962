"""``auto`` end to end: facts, ranking, cost, plan, trials, the winner saved as an ordinary run folder with its
decisions (``transferkit auto``; :func:`auto` from Python returns the fitted classifier). With a target domain,
adapting.py plans and chooses instead."""

from __future__ import annotations

import tempfile
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Callable, Sequence

from transferkit.automl.adapting import auto_adapt
from transferkit.automl.budget import Clock, parse_budget
from transferkit.automl.candidates import RANK_ITEMS, Ranked, rank_backbones
from transferkit.automl.cost import SETUP_SECONDS, Cost, measure, pixel_ratio
from transferkit.automl.decisions import choose, record
from transferkit.automl.facts import derive
from transferkit.automl.plan import Plan, affords, make_plan
from transferkit.automl.search import Outcome, fit_classifier, open_auto_study, run_trials
from transferkit.automl.steps import (FINETUNE_ONLY, check_out, finish, keep_winner, prepare, reserve_seconds,
                                     study_name)
from transferkit.config import RunConfig
from transferkit.errors import TransferkitError, arg
from transferkit.estimators.core import TransferClassifier
from transferkit.modalities.base import LabelledData, Modality
from transferkit.progress import log
from transferkit.runs.lock import hold_run_folder

BACKWARD_FACTOR = 3  # a training step against a forward pass alone (backward is ~2x forward)
MEASURE_SECONDS = 45.0  # less budget than this left after ranking: no step is measured, only probes run


def reserve_for(dataset: LabelledData, ranked: Sequence[Ranked], finetunes: bool, report: bool,
                scale: float = 1.0) -> float:
    """Seconds kept back for what follows the trials: scoring test (``scale``: a larger input's pixels against the
    ranked one's), saving (and exporting a fine-tuned winner)."""
    per_item = max([r.per_item for r in ranked if r.per_item] or [0.01])
    return reserve_seconds(len(dataset.test), per_item * scale, finetunes, report)


def upscale(cost: Cost | None, base: RunConfig) -> float:
    """The pixels of the input size fine-tunes train at, against the data's (1 unless a larger one was bought)."""
    return pixel_ratio(cost.image_size, base.image_size) if cost else 1.0


def training_floor(top: Ranked, epochs: int, n_train: int) -> float:
    """The least the shortest fine-tune can cost, from the inference rate ranking measured (0 when its features
    were cached: nothing measured, so the step is timed)."""
    return (top.per_item or 0.0) * BACKWARD_FACTOR * n_train * epochs + SETUP_SECONDS


def larger_input(modality: Modality, base: RunConfig, dataset: LabelledData, cost: Cost, sizes: Sequence[int],
                 fits: Callable[[Cost], bool]) -> Cost:
    """The cost at the largest of ``sizes`` where the plan still ``fits`` (plan.affords: the most promising
    fine-tune at its preferred epochs), measured there; else ``cost``, at the data's own size. A size whose
    pixel-scaled guess does not fit is not measured (a measurement costs seconds of the budget)."""
    for size in sorted(sizes, reverse=True):
        if fits(cost.scaled(size, base.image_size)):
            larger = measure(modality, base.replace(backbone=cost.backbone), dataset, image_size=size)
            if fits(larger):
                return larger
    return cost


def plan_trials(modality: Modality, dataset: LabelledData, base: RunConfig, ranked: Sequence[Ranked],
                sizes: Sequence[int], given: dict[str, Any], tuned: dict[str, Any], clock: Clock, report: bool,
                weigh: bool) -> tuple[Plan, Cost | None]:
    """The trials that fit what is left of the budget, and the training step's measured cost they were planned
    on (None: probes only); at a larger input size of ``sizes`` where it leaves the fine-tunes their epochs."""
    top = next(r for r in ranked if r.kept)
    cost, why_not = None, "no fine-tuning: the budget left no time to measure a training step"
    epochs = given.get("epochs", modality.defaults.epochs[0])
    floor = training_floor(top, epochs, len(dataset.train))
    left = clock.left - reserve_for(dataset, ranked, True, report)
    if floor > left:
        why_not = (f"no fine-tuning: a training step costs at least ~{BACKWARD_FACTOR}x inference, so {epochs} "
                   f"epoch(s) of {top.name} need >= {floor:.0f} s at the extraction rate measured here, more than "
                   "the budget leaves")
    elif left > MEASURE_SECONDS:
        cost = measure(modality, base.replace(backbone=top.name), dataset)

    def planned(measured: Cost | None) -> Plan:
        seconds = clock.left - reserve_for(dataset, ranked, measured is not None, report, upscale(measured, base))
        return make_plan(modality.name, ranked, measured, len(dataset.train), len(dataset.val),
                         min(RANK_ITEMS, len(dataset.train) + len(dataset.val)), seconds, given, tuned, why_not, weigh)

    if cost is not None and sizes:
        cost = larger_input(modality, base, dataset, cost, sizes, lambda c: affords(planned(c), modality.name, given))
    plan = planned(cost)
    if cost is not None and cost.image_size:
        plan.notes.insert(0, f"fine-tunes train at {cost.image_size} px, not {base.image_size}: the budget leaves "
                             "the first its epochs there (small images gain from a larger input: BiT-HyperRule), "
                             "and it trains as long as the budget allows")
        log(f"auto: {plan.notes[0]}")
    return plan, cost


def auto(data: str | Path, out: str | Path | None = None, budget: str | float = "15m",
         backbones: Sequence[str] = (), metric: str = "accuracy", dry_run: bool = False, overwrite: bool = False,
         report: bool = False, target: str | Path | None = None,
         **settings: Any) -> TransferClassifier | dict[str, Any]:
    """The best classifier ``budget`` allows on ``data``, chosen on validation; saved to ``out`` (a run folder
    with ``decisions.json`` and the study ``auto.db``) when given. ``settings`` are RunConfig fields, fixed in every
    trial. ``dry_run=True`` returns the plan (measured step costs, estimated seconds) and trains nothing.
    ``target``: a folder of unlabelled target images; the domain-adaptation candidates are then chosen without a
    target label (adapting.py)."""
    if target is not None:
        if backbones:
            raise TransferkitError(f"{arg('backbones', ','.join(backbones))}: with --target, auto adapts the default "
                                   "backbone (ranking reads source labels only); drop --backbones")
        return auto_adapt(data, target, out, budget, metric, dry_run, overwrite, report, **settings)
    clock = Clock(parse_budget(budget))
    given = {k: v for k, v in settings.items() if v is not None}
    check_out(out, data, given, dry_run, overwrite)
    shared = {k: v for k, v in given.items() if k not in FINETUNE_ONLY}
    classifier, config, dataset = prepare(data, shared, metric)
    modality = classifier.modality
    facts = derive(modality, dataset, config, given, metric)
    base = config.replace(**{k: v for k, v in facts.settings.items() if k not in FINETUNE_ONLY})
    tuned = {**{k: v for k, v in facts.settings.items() if k in FINETUNE_ONLY},
             **{k: v for k, v in given.items() if k in FINETUNE_ONLY}, "metric": f"val_{metric}"}
    log("auto: " + "; ".join(f"{k} {v} ({facts.reasons[k]})" for k, v in facts.settings.items()))
    ranked = rank_backbones(modality, dataset, base, backbones, clock)
    weigh = facts.measured["imbalanced"] and "class_weights" not in facts.settings  # the probe tries both
    plan, cost = plan_trials(modality, dataset, base, ranked, facts.larger.get("image_size", ()), given, tuned,
                             clock, report, weigh)
    common = {"budget": clock.budget, "metric": metric, "n_val": len(dataset.val), "facts": facts.to_dict(),
              "ranking": [r.to_dict() for r in ranked], "cost": cost.to_dict() if cost else None, "notes": plan.notes}
    if dry_run:
        outcomes = [Outcome(t, "planned") for t in plan.trials]
        return record(used=clock.used, outcomes=outcomes, winner=None, study=None, dry_run=True, **common)
    folder = Path(out) if out is not None else None
    with hold_run_folder(folder) if folder is not None else nullcontext(), \
            tempfile.TemporaryDirectory(prefix="tk-auto-") as scratch:
        study = open_auto_study(folder or Path(scratch), study_name(config, given))
        reserve = reserve_for(dataset, ranked, any(t.trains_backbone for t in plan.trials), report,
                              upscale(cost, base))
        fit = fit_classifier(classifier)
        outcomes = run_trials(plan, base, fit, study, folder or Path(scratch), clock, reserve)
        winner = choose(outcomes, metric, len(dataset.val))
        if winner is None:
            why = "; ".join([*plan.notes, *(f"{o.trial.key}: {o.note}" for o in outcomes)][:3])
            raise TransferkitError(f"no trial finished within {arg('budget', budget)} ({why or 'none planned'}); "
                                   "give a larger budget")
        clf = finish(winner, base, fit, config, dataset)
        decisions = record(used=clock.used, outcomes=outcomes, winner=winner, study=study.study_name, **common)
        return keep_winner(clf, decisions, folder, overwrite, clock)


