"""``transferkit cache info`` and ``transferkit cache clear``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal, Optional

import typer
from rich.table import Table

from transferkit.cli.output import console, print_json

cache_app = typer.Typer(no_args_is_help=True, help="Inspect or clear cached engines and features.")
CacheDir = Annotated[Optional[Path], typer.Option(help="Cache folder (default: $TRANSFERKIT_CACHE or the user "
                                                       "cache dir)")]


@cache_app.command("info")
def info(cache_dir: CacheDir = None,
         as_json: Annotated[bool, typer.Option("--json", help="One JSON object")] = False) -> None:
    """What the cache holds: engines and feature sets per backbone fingerprint."""
    from transferkit.features.cache import cache_info  # lazy: numpy

    found = cache_info(cache_dir)
    if as_json:
        print_json(found)
        return
    table = Table(title=f"cache at {found['root']} ({found['bytes'] / 1e6:.1f} MB)")
    for column in ("kind", "backbone", "input", "items", "MB", "fingerprint"):
        table.add_column(column)
    for e in found["entries"]:
        table.add_row(e["kind"], str(e["backbone"]), str(e["input_size"] or ""),
                      "" if e["items"] is None else str(e["items"]), f"{e['bytes'] / 1e6:.1f}", e["fingerprint"])
    console().print(table)


@cache_app.command("clear")
def clear(cache_dir: CacheDir = None,
          kind: Annotated[Optional[Literal["features", "engines"]],
                          typer.Option(help="What to delete (default: both)")] = None) -> None:
    """Delete cached features and/or exported engines."""
    from transferkit.features.cache import cache_clear  # lazy: numpy

    freed = cache_clear(cache_dir, kind)
    print(f"freed {freed / 1e6:.1f} MB")
