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
    from transferkit.modalities import all_backbones, backbone_tables  # lazy: numpy

    if as_json:
        print_json(all_backbones())
        return
    for modality, rows in backbone_tables():
        if not rows:
            continue
        table = Table(title=f"{modality.name} backbones", title_justify="left", box=box.SIMPLE_HEAD)
        for column in ("name", "offline", "input", "features", "source"):
            table.add_column(column, no_wrap=column == "name")  # what to pass to --backbone: never cut
        for row in rows:
            offline = "yes" if row["offline"] else "no"
            needs = f"; needs {row['needs']}" if not row["offline"] and row.get("needs") else ""
            size = modality.input_label(row)
            table.add_row(cell(row["name"]), offline, size, str(row["num_features"] or "model's"),
                          cell(row["source"] + needs))  # cells, not markup: "transferkit[mpnet]" shows as it is
        console().print(table)
