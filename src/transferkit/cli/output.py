"""Output shared by the commands: a rich console for tables, JSON for machines."""

from __future__ import annotations

import json
from typing import Any

from rich.console import Console


def console() -> Console:
    """A console on the current ``sys.stdout`` (made per call: test runners swap stdout between commands)."""
    return Console(highlight=False)


def print_json(value: Any) -> None:
    """One JSON document on one line; texts keep their characters (no ``\\u`` escapes)."""
    print(json.dumps(value, ensure_ascii=False))
