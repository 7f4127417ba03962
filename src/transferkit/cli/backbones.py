"""``transferkit backbones``: what can be used, offline or not."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from transferkit.cli.output import console, print_json


def backbones(as_json: Annotated[bool, typer.Option("--json", help="One JSON list, a row per backbone")] = False,
              ) -> None:
    """Backbones that can be used, which work offline, their input size and feature dimension."""
    from transferkit.modalities.image.backbones import list_backbones  # lazy: numpy

    rows = list_backbones()
    if as_json:
        print_json(rows)
        return
    table = Table()
    for column in ("name", "source", "offline", "input size", "features"):
        table.add_column(column)
    for row in rows:
        table.add_row(row["name"], row["source"], "yes" if row["offline"] else "no (needs network or --weights)",
                      str(row["input_size"] or "model's"), str(row["num_features"] or "model's"))
    console().print(table)
