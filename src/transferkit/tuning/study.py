"""The whole search (``transferkit tune``; :func:`plan`, :func:`tune`, then ``clf.save(out)`` from Python): the
study opened or resumed in its database, trials run until ``trials`` of them have finished, and the best
trial's settings fitted through the ordinary estimator, saved as a normal run folder whose ``metrics.json``
keeps the search under ``"tune"`` (so ``predict``, ``evaluate``, ``compare`` and ``report`` read it as any run)."""

from __future__ import annotations

import hashlib
import json
import re
import time
import warnings
from pathlib import Path
from typing import Any

import optuna
from optuna.exceptions import ExperimentalWarning
from optuna.trial import FrozenTrial, TrialState

from transferkit.config import RunConfig
from transferkit.errors import RESUME_HINT, arg
from transferkit.estimators import classifier_for_data
from transferkit.estimators.core import TransferClassifier, absolute_paths
from transferkit.progress import log
from transferkit.registry import parse_value
from transferkit.strategies import parse_strategy
from transferkit.tuning.base import LOG_LOSS_ATTR, PRUNED_ATTR, PRUNERS, TuningError
from transferkit.tuning.objective import FinetuneObjective, ProbeObjective, Search
from transferkit.tuning.space import space_for
from transferkit.tuning.storage import open_storage, shown_url, storage_option
from transferkit.tuning.workers import FINISHED, SURPLUS_ATTR, claim_fit, run_trials

IDENTITY_ATTR = "transferkit"  # the study's user attribute naming the search it belongs to
# Settings that change how fast trials run, or what only the final run scores, not what a trial computes: a
# study resumed with other values of these is the same search. Not the engine: int8 features are not fp32's.
OPERATIONAL = ("test_data", "workers", "cache", "cache_dir", "callbacks")
STUDY_NAME = re.compile(r"[\w.-]+")  # the name travels in the prune callback's spec: no commas, colons, spaces


def plan(data: str | Path, settings: dict[str, Any], space: str | None = None) -> Search:
    """The search for ``data``: ``settings`` are RunConfig fields the user fixed (never tuned); ``space`` is
    ``probe`` or ``finetune`` (default: the one of ``settings["strategy"]``, else the probe)."""
    classifier = classifier_for_data(str(data))
    modality = classifier.modality
    strategy = settings.get("strategy")
    chosen = space_for(space, None if strategy is None else not parse_strategy(strategy).frozen_backbone)
    defaults = {"backbone": modality.default_backbone, "strategy": chosen.default_strategy}
    config = absolute_paths(RunConfig(data=str(data), **{**defaults, **settings}))
    config.validate()
    if parse_strategy(config.strategy).frozen_backbone == chosen.trains_backbone:
        raise TuningError(f"{arg('space', chosen.name)} tunes {chosen.summary}, which {arg('strategy', config.strategy)} "
                          "does not do; drop one of the two options")
    modality.check(config, parse_strategy(config.strategy))
    dimensions = chosen.active(modality.name, config, frozenset(settings))
    if not dimensions:
        raise TuningError(f"nothing to tune: every setting {arg('space', chosen.name)} tunes for {modality.name} data "
                          "is fixed by an option; drop one of them")
    return Search(chosen, dimensions, config, modality.name, classifier)


def tune(search: Search, trials: int, storage: str, out: str | Path, study_name: str | None = None,
         pruner: str | None = None) -> tuple[dict[str, Any], TransferClassifier | None]:
    """Run the study to ``trials`` finished trials (those it already holds count, and those other workers on the
    same study run: see workers.py) and fit the best trial's settings (a fine-tune's checkpoints go to ``out``);
    returns (the search's summary, the fitted classifier, the summary also in its ``metrics_["tune"]``), which
    ``clf.save(out)`` turns into a run folder. The classifier is None when another worker fits the best trial:
    the summary's ``"fitted_by"`` names it."""
    start = time.perf_counter()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # log_trial says one line per trial instead
    if trials < 1:
        raise TuningError(f"{arg('trials', trials)}: run at least 1 trial")
    pruner = pruner or search.space.pruner
    if pruner not in PRUNERS.names():
        raise TuningError(f"{arg('pruner', pruner)}: unknown pruner; choose one of: {', '.join(PRUNERS.names())}")
    name = study_name or default_study_name(search)
    if not STUDY_NAME.fullmatch(name) or parse_value(name) != name:  # trials' callbacks carry it as text
        raise TuningError(f"{arg('study', name)}: use letters, digits, '.', '_' and '-' only, and not a number or "
                          "true/false alone")
    database = open_storage(storage)
    study = open_study(database, name, search, pruner, storage)
    done = len(study.get_trials(deepcopy=False, states=FINISHED))
    log(f"tune: study '{name}' ({search.space.name}: "
        f"{'; '.join(d.describe(search.kind) for d in search.dimensions)}), {done} of {trials} trial(s) finished")
    took_part = False
    if done < trials:
        objective = (FinetuneObjective(search, storage, name, pruner) if search.space.trains_backbone
                     else ProbeObjective(search))  # a trial that trains the backbone goes through the training loop
        took_part = run_trials(study, objective, trials, search.config.seed, [log_trial],
                               search.space.trains_backbone)
    summary = summarize(study, search, trials, storage, time.perf_counter() - start)
    fitter = claim_fit(database, study, trials, str(out)) if took_part else None
    if fitter is not None:
        log(f"tune: the best trial ({summary['best']['number']}) is fitted by the worker of process "
            f"{fitter.get('pid')} on {fitter.get('host')} into {fitter.get('out')}; nothing to fit here")
        return {**summary, "fitted_by": fitter}, None
    clf = fit_best(search, summary["best"]["params"], out)
    clf.metrics_["tune"] = summary
    return summary, clf


def identity(search: Search) -> dict[str, Any]:
    """What makes two searches the same study: the space, its dimensions and their ranges, and every setting a
    trial computes with."""
    settings = {k: v for k, v in search.config.to_dict().items() if k not in OPERATIONAL}
    tuned = [d.describe(search.kind) for d in search.dimensions]
    return json.loads(json.dumps({"space": search.space.name, "tuned": tuned, "settings": settings}))  # as stored


def default_study_name(search: Search) -> str:
    """``<data name>-<space>-<digest of the settings>``: the same command resumes its study, another starts its own."""
    digest = hashlib.blake2b(json.dumps(identity(search), sort_keys=True).encode(), digest_size=4).hexdigest()
    stem = re.sub(r"[^\w.-]+", "-", Path(search.config.data or "data").name).strip("-") or "data"
    return f"{stem}-{search.space.name}-{digest}"


def open_study(storage: optuna.storages.RDBStorage, name: str, search: Search, pruner: str,
               url: str) -> optuna.Study:
    """The study ``name``, new or resumed; one line when it holds another search's trials."""
    study = optuna.create_study(storage=storage, study_name=name, direction="maximize", load_if_exists=True,
                                pruner=PRUNERS.create(pruner))
    wanted, found = identity(search), study.user_attrs.get(IDENTITY_ATTR)
    if found is None and study.get_trials(deepcopy=False):
        raise TuningError(f"study '{name}' in {storage_option(url)} holds trials transferkit tune did not run; "
                          f"choose another {arg('study')}")
    if found is None:
        study.set_user_attr(IDENTITY_ATTR, wanted)
    elif found != wanted:
        old, new = found.get("settings", {}), wanted["settings"]
        key = next((k for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)), None)
        what = (f"{key} = {old.get(key)!r}, not {new.get(key)!r}" if key else
                f"space {found.get('space')!r} tuning {'; '.join(found.get('tuned', []))}")
        raise TuningError(f"study '{name}' was started with {what}; re-run with its settings to resume it, or "
                          f"choose another {arg('study')}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)  # trials of a killed tune: failed, so never counted or resumed
    return study  # its sampler is seeded trial by trial (workers.Slotted)


def log_trial(study: optuna.Study, trial: FrozenTrial) -> None:
    if trial.user_attrs.get(SURPLUS_ATTR):  # never run: other workers took the study's last slots
        return
    params = ", ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}" for k, v in trial.params.items())
    seconds = f"{trial.duration.total_seconds():.1f} s" if trial.duration else "?"
    if trial.state == TrialState.COMPLETE:
        log(f"trial {trial.number}: val accuracy {trial.value:.4f}  ({params}; {seconds})")
    elif trial.state == TrialState.PRUNED:
        log(f"trial {trial.number}: pruned after epoch {trial.user_attrs.get(PRUNED_ATTR)}  ({params}; {seconds})")
    else:
        log(f"trial {trial.number}: failed  ({params}; {seconds})")


def best_trial(study: optuna.Study) -> FrozenTrial:
    """The highest validation accuracy; ties go to the lower validation log-loss (as the probe's own L2 choice
    breaks them), then to the earlier trial."""
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        counts = {state.name.lower(): len(study.get_trials(deepcopy=False, states=(state,)))
                  for state in (TrialState.PRUNED, TrialState.FAIL, TrialState.RUNNING)}
        raise TuningError(f"study '{study.study_name}' has no finished trial with a value "
                          f"({', '.join(f'{n} {s}' for s, n in counts.items())}); run more {arg('trials')}")
    return max(complete, key=lambda t: (t.value, -t.user_attrs.get(LOG_LOSS_ATTR, float("inf")), -t.number))


def trial_row(trial: FrozenTrial) -> dict[str, Any]:
    return {"number": trial.number, "state": trial.state.name.lower(), "value": trial.value,
            "val_log_loss": trial.user_attrs.get(LOG_LOSS_ATTR), "pruned_at_epoch": trial.user_attrs.get(PRUNED_ATTR),
            "params": trial.params,
            "seconds": round(trial.duration.total_seconds(), 3) if trial.duration else None}


def summarize(study: optuna.Study, search: Search, trials: int, storage: str, seconds: float) -> dict[str, Any]:
    rows = [trial_row(t) for t in study.get_trials(deepcopy=False) if not t.user_attrs.get(SURPLUS_ATTR)]
    timed = [row["seconds"] for row in rows if row["state"] in ("complete", "pruned") and row["seconds"] is not None]
    best = best_trial(study)
    return {"study": study.study_name, "storage": shown_url(storage),
            "space": search.space.name, "tuned": [d.describe(search.kind) for d in search.dimensions],
            "trials_requested": trials, "finished": sum(row["state"] in ("complete", "pruned") for row in rows),
            "trials": rows,
            "best": {"number": best.number, "value": best.value, "val_log_loss": best.user_attrs.get(LOG_LOSS_ATTR),
                     "params": best.params,
                     "settings": search.space.changes(best.params, search.config, search.dimensions)},
            "seconds_per_trial": round(sum(timed) / len(timed), 3) if timed else None,
            "seconds": round(seconds, 3)}


def fit_best(search: Search, params: dict[str, Any], out: str | Path) -> TransferClassifier:
    """The best trial's settings through the ordinary estimator: trained on the training data (a probe refitted
    on train + validation when validation was split off it, as ``train`` does), scored on validation and, now
    only, on the test split."""
    config = search.space.config_for(params, search.config, search.dimensions)
    log(f"tune: fitting the best trial's settings into {out}")
    # tune has no --resume: Ctrl-C in this fit is followed by the search again, which fits the best anew
    token = RESUME_HINT.set(f"re-run the search with {arg('overwrite', True)} to fit the best trial's settings again "
                            "(the study keeps its trials)")
    try:
        return search.classifier(**search.estimator_params(config)).fit(config.data, out=out)
    finally:
        RESUME_HINT.reset(token)
