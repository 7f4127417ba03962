"""Exclusions files: the items ``transferkit audit --exclusions`` flags, which ``train --exclude`` leaves out.

One item a line, named as the audit names it: an image by its absolute path, a text row as ``FILE:LINE`` (the
file's absolute path and the row's 1-based line). Lines starting with ``#`` are comments. Only training and
validation items are ever left out: a test split cleaned by the model under test would flatter it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from transferkit.atomic import atomic_write_bytes, check_replaceable
from transferkit.errors import TransferkitError, arg

if TYPE_CHECKING:
    from transferkit.modalities.base import LabelledData

MAX_BYTES = 64 << 20  # an exclusions file is a list of names: 64 MB is millions of them
HEADER = "# transferkit audit exclusions: one item a line (an image's path, a text row's FILE:LINE)"


def item_name(item: str, line: int | None, source: str | Path) -> str:
    """How an item is named: an image's path as it is, a text row by its file and line."""
    return item if line is None else f"{Path(source).resolve()}:{line}"


def read_exclusions(path: str | Path) -> set[str]:
    """The names in an exclusions file (one line, naming the file, when it cannot be read)."""
    where = Path(path)
    try:
        if where.exists() and not where.is_file():  # a pipe or device: reading it would block or never end
            raise TransferkitError(f"{arg('exclude', str(path))}: not a regular file (a device, pipe or socket); give "
                                   "the file audit --exclusions wrote")
        if where.stat().st_size > MAX_BYTES:
            raise TransferkitError(f"{arg('exclude', str(path))}: {where.stat().st_size} bytes is not an exclusions "
                                   f"file (at most {MAX_BYTES >> 20} MB); give the file audit --exclusions wrote")
        text = where.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise TransferkitError(f"{arg('exclude', str(path))}: not a UTF-8 text file; give the file audit "
                               "--exclusions wrote") from None
    except OSError as exc:
        raise TransferkitError(f"{arg('exclude', str(path))}: {exc.strerror or exc}") from None
    return {line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")}


def check_exclusions_path(path: str | Path) -> None:
    """An exclusions file may replace an earlier one, never another file."""
    check_replaceable(path, arg("exclusions"), lambda head: head.startswith(HEADER.encode()), "exclusions.txt")


def write_exclusions(path: str | Path, names: Sequence[str]) -> Path:
    target = Path(path)
    check_exclusions_path(target)
    atomic_write_bytes(target, ("\n".join([HEADER, *names]) + "\n").encode())
    return target


def leave_out(dataset: "LabelledData", excluded: set[str], data: Any, val_data: Any) -> None:
    """Drop the named items from ``dataset``'s train and val splits (in place) and say how many went."""
    from transferkit.progress import log

    before = len(dataset.train) + len(dataset.val)
    source = data if isinstance(data, (str, Path)) else ""
    dataset.train = dataset.train.take(keep_indices(dataset.train.items, dataset.train.lines, source, excluded))
    dataset.val = dataset.val.take(keep_indices(dataset.val.items, dataset.val.lines, val_data or source, excluded))
    dropped = before - len(dataset.train) - len(dataset.val)
    log(f"exclude: left out {dropped} of the {len(excluded)} item(s) the file names"
        + ("" if dropped == len(excluded) else " (the others are not in train or val)"))


def keep_indices(items: Sequence[str], lines: Sequence[int] | None, source: str | Path,
                 excluded: set[str]) -> list[int]:
    """Indices of the items an exclusions set does not name."""
    return [i for i, item in enumerate(items)
            if item_name(item, None if lines is None else lines[i], source) not in excluded]
