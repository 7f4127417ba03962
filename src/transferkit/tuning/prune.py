"""``--callback optuna-prune:storage=URL,study=NAME,trial=N[,pruner=median]``: a fine-tuning trial's validation
curve, reported to its Optuna trial epoch by epoch; when the study's pruner says the trial is behind, the
callback marks the trial (:data:`~transferkit.tuning.storage.PRUNED_ATTR`) and asks the loop to stop.

``transferkit tune`` adds this spec to each fine-tuning trial's config; the trial handle is rebuilt from the
database (:func:`~transferkit.tuning.storage.trial_handle`), so the callback stays a plain registry entry. As
every callback, it only reads the context, asks to stop, and writes (to the study's database).
"""

from __future__ import annotations

import sqlite3
from typing import Any

from transferkit.train.callbacks import Callback, Context
from transferkit.tuning.base import PRUNED_ATTR, TuningError, require_optuna

METRIC = "val_accuracy"  # the tune objective's metric


class OptunaPrune(Callback):
    def __init__(self, storage: str, study: Any, trial: int, pruner: str = "median") -> None:
        require_optuna()
        self.url, self.study, self.number, self.pruner = str(storage), str(study), int(trial), str(pruner)
        self.trial: Any = None
        check_study_database(self.url)

    def fit_start(self, context: Context) -> None:
        if not context.is_main:  # one process reports; a stop asked for on it stops them all
            return
        from transferkit.tuning.storage import trial_handle  # lazy: optuna, an optional extra (checked above)

        self.trial = trial_handle(self.url, self.study, self.number, self.pruner)

    def epoch_end(self, context: Context) -> None:
        value = context.record.get(METRIC)
        if self.trial is None or value is None:
            return
        epoch = context.epoch + 1
        self.trial.report(float(value), epoch)
        if self.trial.should_prune():
            self.trial.set_user_attr(PRUNED_ATTR, epoch)
            context.request_stop(f"trial {self.number}: pruned after epoch {epoch} ({METRIC} {value:.4f} is behind "
                                 "the study's other trials)")



def check_study_database(url: str) -> None:
    """A SQLite storage must already be a study database (``transferkit tune`` made it): opening it through optuna
    would add optuna's tables to any database the spec names. The spec can come from a config file (a copied run's
    ``callbacks:``), so the file is only read here, and a database that is not a study's is refused untouched."""
    scheme, _, rest = url.partition("://")
    if scheme.split("+")[0] != "sqlite" or not rest.removeprefix("/"):
        return  # a server database, or no file: optuna and the server say what is wrong
    path = rest.removeprefix("/").partition("?")[0]  # the file itself: a ?query would drop the mode=ro below
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as connection:
            tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    except sqlite3.Error as exc:
        tables, why = set(), str(exc)
    else:
        why = "it holds no study"
    if not {"studies", "trials"} <= tables:
        raise TuningError(f"callback optuna-prune: storage {url} is not a study database of transferkit tune ({why}), "
                          "so it was left untouched; the callback reports a tune trial's progress: drop it from the "
                          "command or from the config's callbacks (a config passed with --config is your options)")
