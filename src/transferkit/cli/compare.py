"""``transferkit compare``: one table across runs; a seeds folder's spread over its seeds; for two runs, whether
the second beats the first by more than the noise."""

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
METRIC_NAMES = {"val_accuracy": "val acc", "val_macro_f1": "val F1", "test_accuracy": "test acc",
                "test_macro_f1": "test F1"}
# a seeds folder's spread: a table of its own, as mean, std and interval side by side would not fit 80 columns
SPREAD_COLUMNS = ("run", "metric", "mean", "std", "95% interval", "seeds")


def compare(
    runs: Annotated[list[Path], typer.Argument(help="Run folders written by `transferkit train` (a --seeds "
                                                    "folder counts as one run: the mean over its seeds)")],
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object: runs (a row per run; a seeds folder's "
                                                         "with its seeds and spread) and verdict (two runs; "
                                                         "else null)")] = False,
) -> None:
    """One table: strategy, epochs, val/test accuracy and macro-F1, train time and trainable parameters.
    A seeds folder (train --seeds) shows the means over its seeds, then each metric's standard deviation and
    95% interval of the mean (Student t, seeds - 1 degrees of freedom). Two runs (or seeds folders) get a
    verdict on the second's gain over the first: a paired bootstrap over the items both were scored on (the
    test split, else the validation split; each item's result averaged over the seeds; 10,000 resamples of
    the items, fixed RNG seed)."""
    from transferkit.runs.rundir import read_run  # lazy: numpy, safetensors
    from transferkit.runs.seeds import is_seed_group, paired_verdict, read_seed_group

    rows, scores = [], []
    for path in runs:
        if is_seed_group(path):
            group = read_seed_group(path)
            config, metrics, seeds = group.runs[0].config, group.metrics, group.seeds
        else:
            run = read_run(path)
            config, metrics, seeds = run.config, [run.metrics], None
        rows.append(run_row(path, config, metrics, seeds))
        scores.append(metrics)
    names = [str(p) for p in runs] if as_json else short_names(runs)
    verdict = None
    if len(runs) == 2:  # the second against the first
        verdict = {"a": names[0], "b": names[1], **paired_verdict(scores[0], scores[1], (names[0], names[1]))}
    if as_json:
        print_json({"runs": rows, "verdict": verdict})
        return
    screen = console()
    screen.print(runs_table(rows, names))
    if any(r.get("seeds") for r in rows):
        screen.print(spread_table(rows, names))
    if verdict is not None:
        for line in verdict_lines(verdict):
            screen.print(cell(line))


def run_row(path: Path, config: Any, metrics: list[dict[str, Any]], seeds: list[int] | None) -> dict[str, Any]:
    """A run's row; a seeds folder's numbers are the means over its seeds, with its ``seeds`` and ``spread``."""
    from transferkit.runs.seeds import summarize  # lazy: numpy, scipy

    def mean(values: list[Any]) -> int | float | None:
        numbers = [number(v) for v in values]
        if None in numbers:
            return None
        return numbers[0] if len(set(numbers)) == 1 else sum(numbers) / len(numbers)  # equal: keeps an int

    row = {
        "run": str(path), "strategy": config.strategy, "backbone": config.backbone,
        "epochs": mean([m.get("epochs_run") for m in metrics]),
        **{f"{split}_{key}": mean([m[split].get(key) if isinstance(m.get(split), dict) else None for m in metrics])
           for split in ("val", "test") for key in ("accuracy", "macro_f1")},
        "train_seconds": mean([m.get("train_seconds") for m in metrics]),
        "trainable_parameters": mean([m.get("trainable_parameters") for m in metrics]),
    }
    if seeds is not None:
        row.update(seeds=seeds, spread=summarize(metrics))
    return row


def spread_table(rows: list[dict[str, Any]], names: list[str]) -> Table:
    """Each seeds folder's metrics over its seeds: mean, standard deviation, 95% t-interval of the mean."""
    table = Table(box=box.SIMPLE_HEAD, padding=0, show_edge=False,
                  title="spread over seeds (t-interval of the mean)")
    for column in SPREAD_COLUMNS:
        table.add_column(column, justify="left" if column in ("run", "metric") else "right", no_wrap=True)
    for name, r in zip(names, rows):
        if not r.get("seeds"):
            continue
        for i, (key, s) in enumerate(r["spread"].items()):
            interval = "-" if s["low"] is None else f"[{s['low']:.3f}, {s['high']:.3f}]"  # one seed: none
            table.add_row(cell(name if i == 0 else ""), METRIC_NAMES[key], num(s["mean"], ".3f"),
                          num(s["std"], ".3f"), interval, str(s["n"]) if i == 0 else "")
    return table


def verdict_lines(verdict: dict[str, Any]) -> list[str]:
    """``b vs a, the same 153 val items (paired bootstrap):`` / ``gain +1.8 points, ...: outside noise``."""
    if "reason" in verdict:
        return [f"no verdict: {verdict['reason']}"]
    return [f"{verdict['b']} vs {verdict['a']}, the same {verdict['items']} {verdict['split']} items (paired "
            "bootstrap):", verdict["sentence"]]


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
        if r.get("seeds"):  # its numbers are means: say so under its name
            run += f"\nmean of {len(r['seeds'])} seeds"
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
