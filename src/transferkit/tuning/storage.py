"""The study's database and what trials share through it.

The study lives in a SQL database (SQLite: ``sqlite:///study.db``; PostgreSQL or MySQL for workers on several
machines, their drivers in the ``scale`` extra), so a killed ``tune`` loses only the trial it was running: the
next run loads the study and goes on. The database is the study's own: one that holds another
application's tables is refused before Optuna adds its tables beside them, and a URL's password is never shown.
Trials record a heartbeat; one whose process died (no heartbeat for :data:`GRACE_SECONDS`) is marked failed
when the next trial starts, and a trial still shown as running is never counted as finished. The prune callback
reaches its trial through the same database (:func:`trial_handle`): the callback is built from a spec string in
the run's config, not handed an object.
"""

from __future__ import annotations

import functools
import random
import re
import time
import warnings
from pathlib import Path

import optuna
from optuna.exceptions import ExperimentalWarning
from sqlalchemy import create_engine, inspect
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError, ProgrammingError

from transferkit.atomic import write_problem
from transferkit.errors import arg, shown
from transferkit.progress import log
from transferkit.registry import format_spec
from transferkit.tuning.base import PRUNED_ATTR, PRUNERS, TuningError

HEARTBEAT_SECONDS = 10
GRACE_SECONDS = 30  # three missed heartbeats: the trial's process is gone
OPEN_TRIES = 3

SCALE_HINT = "pip install 'transferkit[scale]'"
# the URLs whose drivers transferkit[scale] installs (SQLAlchemy's default MySQL driver needs a C build)
DRIVERS = ("postgresql://", "mysql+pymysql://")


def median_pruner() -> optuna.pruners.BasePruner:
    """Stop a trial whose best validation accuracy so far is below the median of earlier trials at the same
    epoch, from its first epoch on (short fine-tunes save most there); never within the first 2 trials, and only
    against at least 2 earlier trials at that epoch: with one, auto on CIFAR-10 (30m) pruned LoRA, a second LR,
    last-k and finetune each after epoch 1 against one gradual trial's head-only first epoch, and left 18 of its
    30 minutes unused."""
    return optuna.pruners.MedianPruner(n_startup_trials=2, n_min_trials=2)


# Optuna's tables (its RDB storage's models, and alembic's, which its schema upgrades use); a study database
# holds no others. tests/test_tune.py holds this equal to the installed Optuna's models.
OPTUNA_TABLES = frozenset({"alembic_version", "studies", "study_directions", "study_system_attributes",
                           "study_user_attributes", "trial_heartbeats", "trial_intermediate_values", "trial_params",
                           "trial_system_attributes", "trial_user_attributes", "trial_values", "trials",
                           "version_info"})
OPTUNA_CORE = frozenset({"studies", "version_info"})  # in every database Optuna has set up
LISTED = 4  # foreign tables named in a message
WHY_CHARS = 160  # of a library's error message
# [scheme://]user:password@ at the start of a URL, SQLAlchemy's parser or not: the password is masked all the same
PASSWORD = re.compile(r"^((?:[\w+.-]+://)?[^:/@]*):([^@]*)@")


def shown_url(url: str) -> str:
    """``url`` as typed, for messages and records, its password as ``***``."""
    return without_secrets(PASSWORD.sub(r"\1:***@", url), url)


def scrubbed(text: str, url: str) -> str:
    """``text`` (a library's message about ``url``) without the URL's password, raw or %-decoded."""
    return without_secrets(text.replace(url, shown_url(url)), url)


def without_secrets(text: str, url: str) -> str:
    secrets = {match.group(2) for match in PASSWORD.finditer(url)}
    try:
        secrets.add(make_url(url).password or "")
    except Exception:  # noqa: BLE001 - SQLAlchemy's parser raises ArgumentError, ValueError, ...
        pass
    for secret in sorted(filter(None, secrets), key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


def why(exc: BaseException, url: str) -> str:
    """A library's error about ``url`` in one line: the password taken out before the line is cut short."""
    lines = scrubbed(str(exc), url).strip().splitlines()
    return shown(lines[0], WHY_CHARS, quote=False) if lines else type(exc).__name__


def storage_option(url: str) -> str:
    return arg("storage", shown_url(url))


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
    if scheme.split("+")[0] != "sqlite":  # a server database: past its driver, the server says what is wrong
        check_driver(url)
        return
    try:  # sqlite:///study.db is study.db here; sqlite:////abs/study.db is /abs/study.db
        path = make_url(url).database or ""
    except Exception:  # noqa: BLE001 - SQLAlchemy's parser raises ArgumentError, ValueError, ...
        raise TuningError(f"{storage_option(url)}: not a database URL; pass one such as sqlite:///study.db") from None
    if not path or path == ":memory:" or path.startswith("file::memory:"):
        raise TuningError(f"{storage_option(url)}: an in-memory database keeps no study; name a file, e.g. "
                          "sqlite:///study.db")
    folder = Path(path).parent
    if not folder.is_dir():
        raise TuningError(f"{storage_option(url)}: folder {folder} not found; create it or choose another file")
    problem = write_problem(folder)  # SQLite writes its journal beside the database
    if problem:
        raise TuningError(f"{storage_option(url)}: cannot write the study database there ({problem})")


def check_driver(url: str) -> None:
    """One line naming the extra when the URL's database driver is not installed (SQLAlchemy would raise an
    ImportError from deep inside Optuna)."""
    try:
        dialect = make_url(url).get_dialect()
    except Exception:  # noqa: BLE001 - an unknown scheme: open_storage says so with SQLAlchemy's words
        return
    try:
        dialect.import_dbapi()
    except ImportError:
        raise TuningError(f"{storage_option(url)}: the database driver {dialect.driver} is not installed; run "
                          f"{SCALE_HINT} (it brings the drivers of {' and '.join(DRIVERS)} URLs)") from None


def check_tables(url: str) -> None:
    """Refuse a database that holds tables which are not Optuna's: another application's database, which Optuna
    would add its tables to (or fail in half-way, on a table named like one of its own)."""
    found = set(table_names(url))
    foreign = sorted(found - OPTUNA_TABLES)
    if found and (foreign or not OPTUNA_CORE <= found):  # a lone "trials" table is another application's
        named = foreign or sorted(found)
        listing = ", ".join(named[:LISTED]) + (f" and {len(named) - LISTED} more" if len(named) > LISTED else "")
        raise TuningError(f"{storage_option(url)}: the database holds tables that are not Optuna's ({listing}); "
                          "keep the study in a database of its own, e.g. sqlite:///study.db")


def table_names(url: str) -> list[str]:
    """The tables of the database at ``url``; none for a SQLite file not made yet (looking would create it)."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and not Path(parsed.database or "").is_file():
        return []
    engine = create_engine(parsed)
    try:
        return inspect(engine).get_table_names()
    finally:
        engine.dispose()


def open_storage(url: str, heartbeat: bool = True) -> optuna.storages.RDBStorage:
    """The database at ``url`` (created if new), with heartbeats for the trials this process runs."""
    check_url(url)
    beats = {"heartbeat_interval": HEARTBEAT_SECONDS, "grace_period": GRACE_SECONDS,
             "heartbeat_stale_trial_callback": log_stale} if heartbeat else {}
    for attempt in range(1, OPEN_TRIES + 1):
        try:
            check_tables(url)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ExperimentalWarning)  # heartbeats are "experimental" since optuna 2.9
                return optuna.storages.RDBStorage(url, **beats)
        except TuningError:
            raise
        except (IntegrityError, ProgrammingError):
            # workers started together on a new database each create Optuna's tables: all but one collide
            # (PostgreSQL: a duplicate type or table); once the tables exist, opening it again succeeds
            if attempt == OPEN_TRIES:
                raise TuningError(f"{storage_option(url)}: cannot create the study's tables there") from None
            time.sleep(random.uniform(0.5, 1.5))
        except Exception as exc:  # noqa: BLE001 - SQLAlchemy, its drivers and optuna's schema check each raise their own
            raise TuningError(f"{storage_option(url)}: cannot open it as a study database ({why(exc, url)})") from None
    raise AssertionError("not reached")


def log_stale(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
    log(f"trial {trial.number}: failed, its worker stopped (no heartbeat for {GRACE_SECONDS} s)")


def prune_spec(url: str, study: str, number: int, pruner: str) -> str:
    """The ``optuna-prune`` callback spec for trial ``number`` (how the training loop's registry builds it)."""
    return format_spec("optuna-prune", {"storage": url, "study": study, "trial": number, "pruner": pruner})


def pruned_at(study: optuna.Study, number: int) -> int | None:
    """The epoch after which the prune callback stopped trial ``number`` (None: not pruned). The callback marked
    the trial through its own handle, so it is read back from the database."""
    (stored,) = [t for t in study.get_trials(deepcopy=False) if t.number == number]
    return stored.user_attrs.get(PRUNED_ATTR)


@functools.lru_cache(maxsize=None)
def trial_storage(url: str) -> optuna.storages.RDBStorage:
    """One connection pool per database for the trials a process runs (a pool per trial stayed open until exit);
    without heartbeats: the process running the study beats for its trials."""
    return open_storage(url, heartbeat=False)


def trial_handle(url: str, study: str, number: int, pruner: str) -> optuna.Trial:
    """Trial ``number`` of ``study``, rebuilt from the database: reports through it are the trial's own, and
    ``should_prune`` asks ``pruner`` about the curves of the study's other trials."""
    if pruner not in PRUNERS.names():
        raise TuningError(f"pruner '{pruner}' is not known; choose one of: {', '.join(PRUNERS.names())}")
    storage = trial_storage(url)
    try:
        loaded = optuna.load_study(study_name=study, storage=storage, pruner=PRUNERS.create(pruner),
                                   sampler=optuna.samplers.RandomSampler())
        trial_id = storage.get_trial_id_from_study_id_trial_number(storage.get_study_id_from_name(study), number)
    except KeyError:
        raise TuningError(f"study '{study}' has no trial {number} in {shown_url(url)}") from None
    return optuna.trial.Trial(loaded, trial_id)
