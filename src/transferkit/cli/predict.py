"""``transferkit predict``: one code path for image and text runs, through the estimator API."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from transferkit.cli.evaluate import RUN_HELP, CacheDir, load_run
from transferkit.cli.output import print_json, printable
from transferkit.errors import TransferkitError


def predict(
    run: Annotated[Path, typer.Argument(help=RUN_HELP)],
    inputs: Annotated[list[str], typer.Argument(help="Image files and/or folders; for a text run: texts and/or "
                                                     ".csv/.tsv/.jsonl files")],
    top_k: Annotated[int, typer.Option(help="Labels to show per input")] = 1,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line")] = False,
    text: Annotated[bool, typer.Option("--text", help="Text runs: take every input as a text to classify, even "
                                                      "one that looks like a file name")] = False,
    cache_dir: CacheDir = None,
) -> None:
    """Top-k labels with probabilities for each image (or text). Exits 1 when an input could not be read."""
    if top_k < 1:
        raise TransferkitError(f"--top-k {top_k}: expected k >= 1 (how many labels to show per input)")
    clf = load_run(run, cache_dir)
    clf.verbose = False  # no progress bar between the result lines
    records = clf.predict_records(inputs, top_k, text=text)
    for record in records:
        if as_json:
            print_json(record)
        else:
            print(printable(format_record(record)))
    if any("error" in record for record in records):
        raise typer.Exit(1)


def format_record(record: dict[str, Any]) -> str:
    """``[file:line<TAB>]input<TAB>label probability  label probability ...`` (or ``error: reason``)."""
    where = f"{record['file']}:{record['line']}\t" if "line" in record else ""
    if "error" in record:
        return f"{where}{record['input']}\terror: {record['error']}"
    labels = "  ".join(f"{p['label']} {p['probability']:.3f}" for p in record["predictions"])
    return f"{where}{record['input']}\t{labels}"
