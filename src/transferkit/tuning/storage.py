"""The study's database and what trials share through it.

The study lives in a SQL database (SQLite: ``sqlite:///study.db``), so a killed ``tune`` loses only the trial it
was running: the next run loads the study and goes on. Trials record a heartbeat; one whose process died
(no heartbeat for :data:`GRACE_SECONDS`) is marked failed when the next trial starts, and a trial still shown
as running is never counted as finished. The prune callback reaches its trial through the same database
(:func:`trial_handle`): the callback is built from a spec string in the run's config, not handed an object.
"""

from __future__ import annotations

import functools
import warnings
from pathlib import Path
from typing import Callable

import optuna
from optuna.exceptions import ExperimentalWarning

from transferkit.errors import arg, first_line
from transferkit.registry import format_spec
from transferkit.runs.folders import write_problem
from transferkit.tuning.base import TuningError

HEARTBEAT_SECONDS = 10
GRACE_SECONDS = 30  # three missed heartbeats: the trial's process is gone

PRUNERS: dict[str, Callable[[], optuna.pruners.BasePruner]] = {
    "none": optuna.pruners.NopPruner,
    # Stop a trial whose best validation accuracy so far is below the median of earlier trials at the same
    # epoch, from its first epoch on (short fine-tunes save most there); never within the first 2 trials.
    "median": lambda: optuna.pruners.MedianPruner(n_startup_trials=2),
}


def storage_option(url: str) -> str:
    return arg("storage", url)


def check_url(url: str) -> None:
    """One line for a URL that cannot hold a study: not a URL, an in-memory database (nothing would be kept),
    a SQLite file in a folder that does not exist or cannot be written to, or a comma (it would split the prune
    callback's spec)."""
    scheme, sep, rest = url.partition("://")
    if not sep or not scheme or not rest:
        raise TuningError(f"{storage_option(url)}: not a database URL; pass one such as sqlite:///study.db")
    if "," in url:
        raise TuningError(f"{storage_option(url)}: a storage URL with a comma cannot be passed to the prune "
                          "callback; rename the file or folder")
    if scheme.split("+")[0] != "sqlite":  # a server database: its driver and the server say what is wrong
        return
    path = rest.removeprefix("/")  # sqlite:///study.db is study.db here; sqlite:////abs/study.db is /abs/study.db
    if not path or path == ":memory:" or path.startswith("file::memory:"):
        raise TuningError(f"{storage_option(url)}: an in-memory database keeps no study; name a file, e.g. "
                          "sqlite:///study.db")
    folder = Path(path).parent
    if not folder.is_dir():
        raise TuningError(f"{storage_option(url)}: folder {folder} not found; create it or choose another file")
    problem = write_problem(folder)  # SQLite writes its journal beside the database
    if problem:
        raise TuningError(f"{storage_option(url)}: cannot write the study database there ({problem})")


def open_storage(url: str, heartbeat: bool = True) -> optuna.storages.RDBStorage:
    """The database at ``url`` (created if new), with heartbeats for the trials this process runs."""
    check_url(url)
    beats = {"heartbeat_interval": HEARTBEAT_SECONDS, "grace_period": GRACE_SECONDS} if heartbeat else {}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ExperimentalWarning)  # heartbeats are "experimental" since optuna 2.9
            return optuna.storages.RDBStorage(url, **beats)
    except Exception as exc:  # noqa: BLE001 - SQLAlchemy, its drivers and optuna's schema check each raise their own
        raise TuningError(f"{storage_option(url)}: cannot open it as a study database ({first_line(exc)})") from None


def prune_spec(url: str, study: str, number: int, pruner: str) -> str:
    """The ``optuna-prune`` callback spec for trial ``number`` (how the training loop's registry builds it)."""
    return format_spec("optuna-prune", {"storage": url, "study": study, "trial": number, "pruner": pruner})


@functools.lru_cache(maxsize=None)
def trial_storage(url: str) -> optuna.storages.RDBStorage:
    """One connection pool per database for the trials a process runs (a pool per trial stayed open until exit);
    without heartbeats: the process running the study beats for its trials."""
    return open_storage(url, heartbeat=False)


def trial_handle(url: str, study: str, number: int, pruner: str) -> optuna.Trial:
    """Trial ``number`` of ``study``, rebuilt from the database: reports through it are the trial's own, and
    ``should_prune`` asks ``pruner`` about the curves of the study's other trials."""
    if pruner not in PRUNERS:
        raise TuningError(f"pruner '{pruner}' is not known; choose one of: {', '.join(PRUNERS)}")
    storage = trial_storage(url)
    try:
        loaded = optuna.load_study(study_name=study, storage=storage, pruner=PRUNERS[pruner](),
                                   sampler=optuna.samplers.RandomSampler())
        trial_id = storage.get_trial_id_from_study_id_trial_number(storage.get_study_id_from_name(study), number)
    except KeyError:
        raise TuningError(f"study '{study}' has no trial {number} in {url}") from None
    return optuna.trial.Trial(loaded, trial_id)
