"""Several ``transferkit tune`` workers on one study: the same command run in any number of processes, on one
machine or many, with the study in a database they share (PostgreSQL or MySQL across machines; SQLite on one).

* ``--trials`` is the study's total, not each worker's: a trial takes a slot when it starts (Optuna's
  ``MaxTrialsCallback`` stops a worker once finished and running trials fill the slots; :class:`Slotted`
  settles the race of two workers asking for the last slot at once, by trial number);
* a worker that dies stops beating (storage.py's heartbeat): its trial is failed after the grace period by a
  worker still waiting (:func:`run_trials`), which then runs the freed slot;
* a trial's settings are drawn from a sampler seeded by its trial number, so two workers never propose the same
  random settings for their first trials, and a study run by one worker or by several proposes the same ones;
* the best trial is fitted once: by the worker that wins :func:`claim_fit` when the study is done.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
import warnings
from typing import Any, Callable, Sequence

import optuna
from optuna.exceptions import ExperimentalWarning
from optuna.study import MaxTrialsCallback
from optuna.trial import TrialState
from sqlalchemy import MetaData, Table
from sqlalchemy.exc import IntegrityError

from transferkit.errors import TrainingError
from transferkit.progress import log

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
SLOTTED = (*FINISHED, TrialState.RUNNING)  # trials that hold one of the study's slots
SURPLUS_ATTR = "surplus"  # set on a trial asked for when every slot was taken (it runs nothing and ends failed)
FIT_ATTR = "transferkit_fit"  # the study's user attribute that names the worker fitting the best trial
WAIT_SECONDS = 1.0  # how often a worker with no free slot looks at the study again
ATTRIBUTES = "study_user_attributes"  # Optuna's table of study attributes (storage.OPTUNA_TABLES)


class Surplus(Exception):
    """A trial asked for after the study's other trials took every slot."""


class Slotted:
    """``objective`` within the study's total: trial numbers are given in the order trials are created (Optuna
    locks the study's row to number one), so a trial whose lower-numbered trials already hold ``trials`` slots
    is surplus: it ends failed, marked, without suggesting anything, and its worker stops asking."""

    def __init__(self, objective: Callable[[optuna.Trial], float], trials: int, seed: int) -> None:
        self.objective, self.trials, self.seed = objective, trials, seed
        self.ran = 0  # trials this worker ran (surplus ones not counted)

    def __call__(self, trial: optuna.Trial) -> float:
        held = trial.study.get_trials(deepcopy=False, states=SLOTTED)
        if sum(t.number < trial.number for t in held) >= self.trials:
            trial.set_user_attr(SURPLUS_ATTR, True)
            trial.study.stop()
            raise Surplus(f"trial {trial.number}: the study's {self.trials} trial(s) are taken")
        self.ran += 1
        trial.study.sampler = optuna.samplers.TPESampler(seed=self.seed + trial.number)
        return self.objective(trial)


class QuietSurplus(logging.Filter):
    """Optuna logs each failed trial with its traceback: a surplus trial is no failure worth one."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], Surplus))


QUIET = QuietSurplus()


def counts(study: optuna.Study) -> tuple[int, int]:
    """(finished trials, running trials) of the study, stale trials failed first."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)
    trials = study.get_trials(deepcopy=False, states=SLOTTED)
    finished = sum(t.state in FINISHED for t in trials)
    return finished, len(trials) - finished


def run_trials(study: optuna.Study, objective: Callable[[optuna.Trial], float], trials: int, seed: int,
               callbacks: Sequence[Callable[..., None]], gc_after_trial: bool) -> bool:
    """Run trials until the study holds ``trials`` finished ones, with other workers on the same study; when
    every slot is taken by running trials, wait for them (a dead worker's trial is failed after the grace
    period, and its slot runs here). At most ``trials`` minus those finished before are run here, failures
    included, so a search whose trials all fail ends. Returns whether this worker ran or waited for trials."""
    for handler in logging.getLogger("optuna").handlers:
        handler.addFilter(QUIET)
    finished, running = counts(study)
    attempts, took_part, waiting = trials - finished, False, 0
    while finished < trials:
        if finished + running < trials and attempts > 0:
            slotted = Slotted(objective, trials, seed)
            study.optimize(slotted, n_trials=attempts, catch=(TrainingError, Surplus), gc_after_trial=gc_after_trial,
                           callbacks=[*callbacks, MaxTrialsCallback(trials, states=SLOTTED)])
            attempts, took_part, waiting = attempts - slotted.ran, True, 0
        elif running:
            if running != waiting:
                log(f"tune: {finished} of {trials} trial(s) finished; waiting for {running} running in other "
                    "worker(s)")
            time.sleep(WAIT_SECONDS)
            took_part, waiting = True, running
        else:  # no slot left to this worker, none running: trials failed
            break
        finished, running = counts(study)
    return took_part


def claim_fit(storage: optuna.storages.RDBStorage, study: optuna.Study, trials: int, out: str) -> dict[str, Any] | None:
    """Claim the final fit of the study done at ``trials`` trials: None when this worker holds the claim, else
    the claim of the worker that does (its host, process and run folder)."""
    # Why a row, not the run lock or set_user_attr: workers on other machines share only the database, and
    # Optuna's set_user_attr reads then inserts or updates, so two workers racing could both think they won.
    # An INSERT under the table's UNIQUE (study_id, key) succeeds for exactly one of any number racing; the key
    # names the total, so a later search to more trials claims anew (a command re-run on a done study fits
    # without claiming: the user asked for that run).
    key = f"{FIT_ATTR}@{trials}"
    mine = {"host": socket.gethostname(), "pid": os.getpid(), "out": str(out)}
    study_id = storage.get_study_id_from_name(study.study_name)
    table = Table(ATTRIBUTES, MetaData(), autoload_with=storage.engine)
    try:
        with storage.engine.begin() as connection:
            connection.execute(table.insert().values(study_id=study_id, key=key, value_json=json.dumps(mine)))
    except IntegrityError:
        return storage.get_study_user_attrs(study_id).get(key, {})
    return None
