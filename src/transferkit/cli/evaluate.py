"""``transferkit evaluate``: one code path for image and text runs, through the estimator API."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from transferkit.cli.output import print_json
from transferkit.cli.report import print_report

RUN_HELP = "Run folder written by `transferkit train`"


def evaluate(
    run: Annotated[Path, typer.Argument(help=RUN_HELP)],
    data: Annotated[Path, typer.Argument(help="Labelled data: an image folder <class>/*, or a text "
                                              ".csv/.tsv/.jsonl with a label column")],
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object: accuracy, macro_f1, per_class, "
                                                         "misclassified, ...")] = False,
    show_errors: Annotated[int, typer.Option(help="List up to N misclassified items")] = 10,
) -> None:
    """Accuracy, per-class precision/recall/F1, the confusion matrix and the misclassified items of RUN on DATA."""
    from transferkit.estimators import load_classifier  # lazy: numpy, onnxruntime, maybe torch

    clf = load_classifier(run)
    report = clf.evaluate(data)
    if as_json:
        print_json(report)
        return
    print_report(report, list(clf.classes_), show_errors)
