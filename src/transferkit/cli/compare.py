"""``transferkit compare``: one table across runs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich import box
from rich.table import Table

from transferkit.cli.output import cell, console, print_json

NAME_WIDTH = 20  # a longer run path shows as its last parts (or its end), so the table fits 80 columns
# two-line headers keep the metric columns as narrow as their numbers; runs on different backbones show theirs
# under the run's name, where a column of its own would not fit
COLUMNS = ("run", "strategy", "epochs", "val\nacc", "val\nF1", "test\nacc", "test\nF1", "time", "params")


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
            "epochs": number(m.get("epochs_run")),
            **{f"{split}_{key}": number(m[split].get(key)) if isinstance(m.get(split), dict) else None
               for split in ("val", "test") for key in ("accuracy", "macro_f1")},
            "train_seconds": number(m.get("train_seconds")),
            "trainable_parameters": number(m.get("trainable_parameters")),
        })
    if as_json:
        print_json(rows)
        return
    console().print(runs_table(rows, short_names(runs)))


def runs_table(rows: list[dict[str, Any]], names: list[str]) -> Table:
    """Compact enough for 80 columns: no rules between columns, one space between them, 3 decimals (``--json``
    has them all), the backbone in the title when the runs share it, else under each run's name."""
    backbones = {r["backbone"] for r in rows}
    shared = len(backbones) == 1
    table = Table(box=box.SIMPLE_HEAD, padding=0, show_edge=False,
                  title=f"backbone {next(iter(backbones))}" if shared else None)
    for column in COLUMNS:
        header = column if shared or column != "run" else "run\nbackbone"
        table.add_column(header, justify="left" if column in ("run", "strategy") else "right", no_wrap=True)
    for name, r in zip(names, rows):
        backbone = str(r["backbone"])
        backbone = Path(backbone).name if "/" in backbone else backbone  # a local folder: its name
        run = name if shared else f"{name}\n{fit(backbone, NAME_WIDTH)}"
        cells = {"run": run, "strategy": r["strategy"], "epochs": num(r["epochs"], "d"),
                 "time": num(r["train_seconds"], ".1f", " s"), "params": count(r["trainable_parameters"]),
                 **{f"{split}\n{short}": num(r[f"{split}_{key}"], ".3f")
                    for split in ("val", "test") for key, short in (("accuracy", "acc"), ("macro_f1", "F1"))}}
        table.add_row(*(cell(cells[c]) for c in COLUMNS))
    return table


def number(value: Any) -> int | float | None:
    """A metric as a number, or None where metrics.json has none (or something else: an edited file)."""
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def num(value: Any, fmt: str, unit: str = "") -> str:
    if value is None:
        return "-"
    return (format(value, fmt) if not (fmt == "d" and isinstance(value, float)) else f"{value:g}") + unit


def count(value: int | None) -> str:
    """2,562 -> 2.6k, 4,012,345 -> 4.0M."""
    if value is None:
        return "-"
    for unit, size in (("M", 1e6), ("k", 1e3)):
        if value >= size:
            return f"{value / size:.1f}{unit}"
    return str(value)


def fit(text: str, width: int) -> str:
    """``text``, or its end after "..." when it is longer than ``width``."""
    return text if len(text) <= width else "..." + text[-(width - 3):]


def short_names(paths: list[Path], width: int = NAME_WIDTH) -> list[str]:
    """Each path as given, or when longer than ``width`` its last parts: as few as keep the names distinct."""
    for keep in range(1, max(len(p.parts) for p in paths) + 1):
        names = [str(p) if len(str(p)) <= width or len(p.parts) <= keep else ".../" + "/".join(p.parts[-keep:])
                 for p in paths]
        if len(set(names)) == len(names):
            tails = [fit(name, width) for name in names]
            return tails if len(set(tails)) == len(tails) else names  # a long last part keeps its distinct end
    return [str(p) for p in paths]
