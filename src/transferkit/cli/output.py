"""Output shared by the commands: a rich console for tables, JSON for machines."""

from __future__ import annotations

import json
from typing import Any

from rich.console import Console
from rich.text import Text


def console() -> Console:
    """A console on the current ``sys.stdout`` (made per call: test runners swap stdout between commands)."""
    return Console(highlight=False)


def print_json(value: Any) -> None:
    """One JSON document on one line; texts keep their characters (no ``\\u`` escapes), except that a document
    with a file name that is not UTF-8 (kept by Python as surrogate escapes, which no terminal can encode) is
    written all in ``\\u`` escapes, which decode back to that same name."""
    text = json.dumps(value, ensure_ascii=False)
    if text != printable(text):
        text = json.dumps(value)
    print(text)


def printable(text: str) -> str:
    """``text`` with the bytes of a name that is not UTF-8 shown as ``\\xff`` escapes (printing the surrogates
    Python keeps them as would fail on a strict UTF-8 terminal)."""
    try:
        raw = text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a lone surrogate that is no escaped byte (a text's own "\\ud800")
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return raw.decode("utf-8", "backslashreplace")


def cell(value: Any) -> Text:
    """A table cell shown as it is: a class or file named ``[red]`` is not rich markup, an int label is text,
    and a file name that is not UTF-8 shows its bytes."""
    return Text(printable(str(value)))
