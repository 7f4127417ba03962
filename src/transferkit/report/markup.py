"""What every HTML page transferkit writes uses to put values in its markup (the report, its decisions section,
the audit page); numpy- and matplotlib-free."""

from __future__ import annotations

import html
from typing import Any


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def fmt(value: Any, spec: str = ".3f") -> str:
    """A number as ``spec`` formats it; "-" for anything else (a damaged run file's value included)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return "-"
    return format(value, spec)
