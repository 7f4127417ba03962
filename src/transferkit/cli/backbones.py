"""``transferkit backbones``: what can be used, offline or not, for every modality."""

from __future__ import annotations

from typing import Annotated

import typer
from rich import box
from rich.table import Table

from transferkit.cli.output import cell, console, print_json


def backbones(as_json: Annotated[bool, typer.Option("--json", help="One JSON list, a row per backbone")] = False,
              ) -> None:
    """Backbones that can be used (image networks and text encoders), which work offline, their input size
    and feature dimension."""
    from transferkit.modalities import all_backbones  # lazy: numpy

    rows = all_backbones()
    if as_json:
        print_json(rows)
        return
    for modality in dict.fromkeys(row["modality"] for row in rows):
        table = Table(title=f"{modality} backbones", title_justify="left", box=box.SIMPLE_HEAD)
        for column in ("name", "offline", "input", "features", "source"):
            table.add_column(column, no_wrap=column == "name")  # what to pass to --backbone: never cut
        for row in (r for r in rows if r["modality"] == modality):
            offline = "yes" if row["offline"] else "no"
            needs = f"; needs {row['needs']}" if not row["offline"] and row.get("needs") else ""
            size = str(row["input_size"] or "model's") if modality == "image" else "tokens"
            table.add_row(cell(row["name"]), offline, size, str(row["num_features"] or "model's"),
                          cell(row["source"] + needs))  # cells, not markup: "transferkit[mpnet]" shows as it is
        console().print(table)
