"""User-facing errors: each carries one line that names the file or field and what to do.

Messages name what the user typed, in the front end they typed it in: :func:`arg` spells an argument
``overwrite=True`` from Python and ``--overwrite`` on the command line (the CLI sets :data:`FRONT_END` for the
duration of a command), so one message serves both. :func:`shown` bounds a value quoted in a message.
"""

from __future__ import annotations

import os
import reprlib
from contextvars import ContextVar
from typing import Any


class TransferkitError(Exception):
    """An error caused by the user's input; the CLI prints it as one line, without a traceback."""


class DataError(TransferkitError):
    """A data folder or file is unusable as given."""


class BackboneError(TransferkitError):
    """A backbone name or weights file cannot be resolved or loaded."""


class RunDirError(TransferkitError):
    """A run directory is missing, incomplete, damaged, unwritable, or would be overwritten."""


class CacheError(TransferkitError):
    """A cache folder cannot be used or cleared as asked."""


class TrainingError(TransferkitError):
    """Training cannot go on (non-finite loss, nothing to train)."""


class CheckpointError(TransferkitError):
    """A checkpoint is missing, damaged, or does not belong to the run being resumed."""


# "api" (the default) or "cli"; transferkit.cli sets "cli" while a command runs
FRONT_END: ContextVar[str] = ContextVar("transferkit_front_end", default="api")
# How the command running now continues a fine-tune Ctrl-C interrupted; None: ``train --resume`` (which the
# training loop spells with the run's config). A command whose fine-tune is one step of its own sets it.
RESUME_HINT: ContextVar[str | None] = ContextVar("transferkit_resume_hint", default=None)
UNSET: Any = object()
SHOWN_CHARS = 80  # a value quoted in a message is cut to this many characters


def arg(name: str, value: Any = UNSET, option: str | None = None, api: str | None = None) -> str:
    """An argument as the user spells it in the current front end.

    ``arg("overwrite", True)``: ``overwrite=True`` / ``--overwrite``; ``arg("epochs", 3)``: ``epochs=3`` /
    ``--epochs 3``; ``arg("cache", False)``: ``cache=False`` / ``--no-cache``; ``arg("out")``: ``out`` /
    ``--out``. ``option`` is the CLI spelling where it is not the name (``--method`` for ``methods``); ``api``
    the words for Python where the argument has no one name there (``--out`` is ``fit(out=)``, ``save(path)``).
    """
    if FRONT_END.get() != "cli":
        if api is not None:
            return api
        return name if value is UNSET else f"{name}={shown(value)}"
    flag = option or "--" + name.replace("_", "-")
    if value is UNSET or value is True:
        return flag
    if value is False:
        return "--no-" + flag.removeprefix("--")
    if isinstance(value, list):  # a repeatable option, as it was typed
        return " ".join(arg(name, item, option) for item in value)
    return f"{flag} {value if isinstance(value, (int, float)) else shown(str(value), quote=False)}"


def shown(value: Any, limit: int = SHOWN_CHARS, quote: bool = True) -> str:
    """``repr(value)`` (``str`` with ``quote=False``), at most ``limit`` characters: a long value ends in "...".
    Built with :mod:`reprlib`, so even a huge nested value costs little to show."""
    short = reprlib.Repr()
    short.maxstring = short.maxother = short.maxlong = limit
    short.maxlist = short.maxtuple = short.maxdict = short.maxset = 8
    text = short.repr(value) if quote else str(value)[:limit + 1]
    return text if len(text) <= limit else text[:limit - 3] + "..."


def first_line(exc: BaseException) -> str:
    """An exception's first line, shortened (a library's message can be a page): what a one-line error quotes."""
    text = str(exc).strip().splitlines()
    return shown(text[0], 160, quote=False) if text else type(exc).__name__


def not_found(path: str | os.PathLike, what: str) -> str:
    """Why ``path`` is not the ``what`` asked for ("data folder", "weights file"): "<what> not found" only when
    nothing is there; else what is there instead (the other kind, a dangling link, a device, pipe or socket)."""
    if not os.path.lexists(path):
        return f"{what} not found"
    if not os.path.exists(path):
        return "a dangling symbolic link"
    if os.path.isdir(path):
        return f"is a folder, not a {what}"
    if os.path.isfile(path):
        return f"is a file, not a {what}"
    return "not a regular file (a device, pipe or socket)"
