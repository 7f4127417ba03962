"""``transferkit evaluate``: one code path for image and text runs, through the estimator API."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from transferkit.bounds import Int, option_check
from transferkit.cli.output import print_json
from transferkit.cli.report import print_report

if TYPE_CHECKING:
    from transferkit.estimators import TransferClassifier

RUN_HELP = "Run folder written by `transferkit train`"
CacheDir = Annotated[Optional[Path], typer.Option(help="Feature/engine cache (default: $TRANSFERKIT_CACHE or the user "
                                                       "cache dir; a run's own cache_dir is never written to)")]


def evaluate(
    run: Annotated[Path, typer.Argument(help=RUN_HELP)],
    data: Annotated[Path, typer.Argument(help="Labelled data: an image folder <class>/*, or a text "
                                              ".csv/.tsv/.jsonl with a label column")],
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object: accuracy, macro_f1, per_class, "
                                                         "misclassified, ...")] = False,
    show_errors: Annotated[int, typer.Option(help="List up to N misclassified items",
                                             callback=option_check(Int(0, 10**6), "--show-errors"))] = 10,
    cache_dir: CacheDir = None,
) -> None:
    """Accuracy, per-class precision/recall/F1, the confusion matrix and the misclassified items of RUN on DATA."""
    clf = load_run(run, cache_dir)
    report = clf.evaluate(data)
    if as_json:
        print_json(report)
        return
    print_report(report, list(clf.classes_), show_errors)


def load_run(run: Path, cache_dir: Path | None) -> "TransferClassifier":
    """The run's classifier, with its features cached in ``cache_dir`` when one is given (checked first)."""
    # lazy: numpy, onnxruntime, maybe torch
    from transferkit.estimators import load_classifier
    from transferkit.features.cache import check_cache_writable

    if cache_dir is not None:
        check_cache_writable(cache_dir)
    return load_classifier(run, None if cache_dir is None else cache_dir.expanduser().resolve())
