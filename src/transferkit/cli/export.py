"""``transferkit export``: a run as one ONNX or TorchScript model, with its preprocessing, labels and a parity
report against the run's own torch model."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from transferkit.cli.evaluate import RUN_HELP


def export(
    run: Annotated[Path, typer.Argument(help=RUN_HELP)],
    out: Annotated[Path, typer.Option(help="Folder to write the export to (new, empty, or an earlier export "
                                           "with --overwrite)")],
    fmt: Annotated[str, typer.Option("--format", help="onnx (ONNX Runtime, dynamic batch) or torchscript")] = "onnx",
    data: Annotated[Optional[Path], typer.Option(help="Labelled data to check the export on (default: the "
                                                      "run's validation split)")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an earlier export in --out")] = False,
) -> None:
    """The whole model (normalisation, backbone, head, softmax) as one file, with preprocessing.json,
    classes.json (a text run: tokenizer/) and parity.json beside it."""
    from transferkit.export.exporter import export_run  # lazy: torch

    result = export_run(run, fmt, out, data=data, overwrite=overwrite)
    parity = result.parity
    size = result.model.stat().st_size / 1e6
    print(f"exported {run} to {result.model} ({size:.1f} MB) in {parity['export_seconds']:.1f} s")
    print(f"parity on {parity['items']} items of {parity['data']}: max |difference| of probabilities "
          f"{parity['max_abs_diff']:.2e}, top-1 agreement {parity['top1_agreement']:.1%} "
          f"({'ok' if parity['ok'] else 'ABOVE TOLERANCE'}; {result.folder / 'parity.json'})")
