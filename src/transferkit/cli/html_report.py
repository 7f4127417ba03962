"""``transferkit report``: one self-contained HTML file for one or several runs (the terminal report of
``evaluate`` is cli/report.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from transferkit.errors import TransferkitError


def report(
    runs: Annotated[list[Path], typer.Argument(help="Run folders written by `transferkit train`")],
    out: Annotated[Path, typer.Option(help="The HTML file to write (a report written earlier is replaced)")] = Path(
        "report.html"),
    data: Annotated[Optional[Path], typer.Option(help="Labelled data to show calibration and errors on (default: "
                                                      "each run's validation split)")] = None,
) -> None:
    """Learning curves, confusion matrix, per-class precision/recall, reliability diagram with ECE and the
    misclassified items of each run; with several runs, a comparison table first. Opens without a network."""
    try:
        from transferkit.report.html import (
            write_report,  # lazy, and an extra: pip install 'transferkit[report]'
        )
    except ImportError as exc:
        raise TransferkitError(f"report needs matplotlib ({exc.name} is not installed); run "
                               "`pip install 'transferkit[report]'`") from None
    path = write_report(runs, out, data)
    print(f"report of {len(runs)} run(s) written to {path} ({path.stat().st_size / 1e6:.1f} MB)")
