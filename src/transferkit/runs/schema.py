"""The files of a run folder are untrusted input: a run is copied, downloaded and shared, and any of its files may
be damaged or edited. Each file is read with a size cap and checked field by field against a schema (types,
bounds, allowed values) by the one path that loads it; a failure is one line, ``damaged run file PATH: FIELD
...``. This module holds the pieces those schemas are made of; the owner of each file declares its own.

Torch- and numpy-free: the CLI's run checks import it.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Callable

from transferkit.errors import RunDirError, shown

MAX_RUN_JSON = 1 << 20  # classes.json, preprocessing.json, adapter.json: a few kB when transferkit writes them
MAX_METRICS = 64 << 20  # metrics.json lists skipped files and per-epoch history: larger, still bounded

# A check returns None when the value is valid, else what it expected ("an integer in [16, 1024]").
Check = Callable[[Any], "str | None"]


def damaged(path: str | Path, field: str, problem: str) -> RunDirError:
    """The one-line error for a run file that fails its schema (``field`` may be empty: the whole file)."""
    where = f"{field} " if field else ""
    return RunDirError(f"damaged run file {path}: {where}{problem}; restore the folder from the original run, or "
                       "train the run again")


def read_json_file(path: Path, limit: int = MAX_RUN_JSON) -> Any:
    """A JSON file of a run, read with a cap (nothing larger is loaded into memory)."""
    try:
        with open(path, "rb") as handle:
            raw = handle.read(limit + 1)
    except OSError as exc:
        raise damaged(path, "", f"cannot be read ({exc.strerror or exc})") from None
    if len(raw) > limit:
        raise damaged(path, "", f"is larger than {limit >> 10} kB, which no transferkit run file is")
    try:
        return json.loads(raw)
    except (ValueError, RecursionError) as exc:
        why = str(exc).splitlines()[0][:120] if str(exc) else "nested too deeply"
        raise damaged(path, "", f"is not valid JSON ({why})") from None


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def number(low: float, high: float, integer: bool = False, open_low: bool = False) -> Check:
    """A finite number (an integer) in [low, high] (``open_low``: (low, high])."""
    kind = "an integer" if integer else "a number"
    expected = f"{kind} in {'(' if open_low else '['}{low:g}, {high:g}]"

    def check(value: Any) -> str | None:
        ok = (isinstance(value, int) and not isinstance(value, bool)) if integer else is_number(value)
        ok = ok and (low < value if open_low else low <= value) and value <= high
        return None if ok else expected

    return check


def optional(check: Check) -> Check:
    return lambda value: None if value is None else (check(value) and f"null or {check(value)}")


def one_of(*values: Any) -> Check:
    return lambda value: None if any(value == v and type(value) is type(v) for v in values) else \
        "one of " + ", ".join(shown(v) for v in values)


def text(limit: int = 1000) -> Check:
    return lambda value: None if isinstance(value, str) and len(value) <= limit else \
        f"a string of at most {limit} characters"


def numbers(count: int, check: Check) -> Check:
    """A list of ``count`` values, each passing ``check``."""
    def check_all(value: Any) -> str | None:
        if isinstance(value, list) and len(value) == count and all(check(v) is None for v in value):
            return None
        return f"a list of {count} values, each {check(None)}"

    return check_all


def check_object(path: str | Path, data: Any, schema: dict[str, Check], optional_keys: tuple[str, ...] = (),
                 extra: bool = False) -> dict[str, Any]:
    """``data`` is an object whose every field passes its check; a field the schema lacks is an error unless
    ``extra`` (files that grew fields over versions), one it names is required unless in ``optional_keys``."""
    if not isinstance(data, dict):
        raise damaged(path, "", f"is {type(data).__name__}, expected an object")
    if not extra:
        unknown = [key for key in data if key not in schema]
        if unknown:
            raise damaged(path, f"field {shown(unknown[0])}", f"is not one transferkit writes (expected only "
                                                             f"{', '.join(schema)})")
    for key, check in schema.items():
        if key not in data:
            if key in optional_keys:
                continue
            raise damaged(path, key, "is missing")
        problem = check(data[key])
        if problem:
            raise damaged(path, key, f"is {shown(data[key])}, expected {problem}")
    return data
