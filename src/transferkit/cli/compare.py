"""``transferkit compare``: one table across runs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich import box
from rich.table import Table

from transferkit.cli.output import console, print_json

NAME_WIDTH = 24  # a longer run path shows as its last parts, so the table fits 80 columns
# two-line headers keep the metric columns as narrow as their numbers
COLUMNS = ("run", "strategy", "backbone", "epochs", "val\nacc", "val\nF1", "test\nacc", "test\nF1", "time", "params")


def compare(
    runs: Annotated[list[Path], typer.Argument(help="Run folders written by `transferkit train`")],
    as_json: Annotated[bool, typer.Option("--json", help="One JSON list, a row per run")] = False,
) -> None:
    """One table: strategy, epochs, val/test accuracy and macro-F1, train time and trainable parameters."""
    from transferkit.runs.rundir import read_run  # lazy: numpy, safetensors

    rows = []
    for path in runs:
        run = read_run(path)
        m = run.metrics
        rows.append({
            "run": str(path), "strategy": run.config.strategy, "backbone": run.config.backbone,
            "epochs": m.get("epochs_run"),
            **{f"{split}_{key}": m[split][key] if split in m else None
               for split in ("val", "test") for key in ("accuracy", "macro_f1")},
            "train_seconds": m.get("train_seconds"), "trainable_parameters": m.get("trainable_parameters"),
        })
    if as_json:
        print_json(rows)
        return
    console().print(runs_table(rows, short_names(runs)))


def runs_table(rows: list[dict[str, Any]], names: list[str]) -> Table:
    """Compact enough for 80 columns: no vertical rules, 3 decimals (``--json`` has them all), the backbone
    in the title when the runs share it."""
    backbones = {r["backbone"] for r in rows}
    shared = len(backbones) == 1
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True,
                  title=f"backbone {next(iter(backbones))}" if shared else None)
    columns = [c for c in COLUMNS if not (shared and c == "backbone")]
    for column in columns:
        table.add_column(column, justify="left" if column in ("run", "strategy", "backbone") else "right",
                         no_wrap=True)
    for name, r in zip(names, rows):
        cells = {"run": name, "strategy": r["strategy"], "backbone": r["backbone"], "epochs": num(r["epochs"], "d"),
                 "time": num(r["train_seconds"], ".1f", " s"), "params": count(r["trainable_parameters"]),
                 **{f"{split}\n{short}": num(r[f"{split}_{key}"], ".3f")
                    for split in ("val", "test") for key, short in (("accuracy", "acc"), ("macro_f1", "F1"))}}
        table.add_row(*(cells[c] for c in columns))
    return table


def num(value: Any, fmt: str, unit: str = "") -> str:
    return "-" if value is None else format(value, fmt) + unit


def count(value: int | None) -> str:
    """2,562 -> 2.6k, 4,012,345 -> 4.0M."""
    if value is None:
        return "-"
    for unit, size in (("M", 1e6), ("k", 1e3)):
        if value >= size:
            return f"{value / size:.1f}{unit}"
    return str(value)


def short_names(paths: list[Path], width: int = NAME_WIDTH) -> list[str]:
    """Each path as given, or when longer than ``width`` its last parts: as few as keep the names distinct."""
    for keep in range(1, max(len(p.parts) for p in paths) + 1):
        names = [str(p) if len(str(p)) <= width or len(p.parts) <= keep else ".../" + "/".join(p.parts[-keep:])
                 for p in paths]
        if len(set(names)) == len(names):
            return names
    return [str(p) for p in paths]
