"""``transferkit adapt``: fit on a labelled source, adapt to an unlabelled target folder, choose without target
labels, save the chosen model as a run. Each ``--candidate`` is one candidate (``source-only``, a loss term, or
terms joined by ``+``); with several, or several ``--seeds``, every candidate is fitted and the ``--select``
criterion chooses. The run's other options are ``transferkit train``'s (generated from RunConfig), except
``--method``: in ``train`` a loss term, here once the name of ``--candidate`` (a hidden, deprecated alias)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from transferkit.adapt.criteria import CRITERIA
from transferkit.bounds import option_check
from transferkit.cli.common import check_before_work, claimed
from transferkit.cli.options import CONFIG_FIELDS, with_config_options
from transferkit.cli.output import cell, console, print_json
from transferkit.config import RunConfig
from transferkit.errors import TransferkitError
from transferkit.plugins import BOTTLENECK, DOMAIN_TERMS, SOURCE_ONLY
from transferkit.progress import log
from transferkit.runs.folders import CANDIDATES_DIR

SELECT_CHOICES = tuple(CRITERIA)  # read from the numpy-free table selection.py scores by
CANDIDATES = (SOURCE_ONLY, *DOMAIN_TERMS)  # the built-in ones; plug-in terms are candidates too
OWN_FIELDS = ("data", "methods")  # an argument, and the candidates (each may combine terms) in their place


@with_config_options([name for name in CONFIG_FIELDS if name not in OWN_FIELDS])
def adapt(
    data: Annotated[Path, typer.Argument(help="Labelled source image folder (<class>/ or train/<class>/)",
                                         show_default=False)],
    target: Annotated[Path, typer.Option(help="Target images: a flat folder (unlabelled), or <class>/ folders "
                                              "whose labels only score the run", show_default=False)],
    out: Annotated[str, typer.Option(help="Run folder to write (the chosen model)", show_default=False)],
    candidate: Annotated[Optional[list[str]], typer.Option(
        "--candidate", help=f"A candidate: {', '.join(CANDIDATES)}, with options "
                            "(dann:weight=0.5) or joined by + (mmd+pseudo-label); repeat to compare",
        metavar="<spec>", show_default=False)] = None,
    seeds: Annotated[str, typer.Option(help="Seeds to fit each method with; the table reports mean and spread")] = "0",
    select: Annotated[str, typer.Option(help=f"How the model is chosen, without target labels: "
                                             f"{', '.join(SELECT_CHOICES)}")] = "info-max",
    target_test: Annotated[Optional[Path], typer.Option(help="Labelled <class>/ folder that scores the run "
                                                             "(default: the target's own labels, if any)",
                                                        show_default=False)] = None,
    bottleneck: Annotated[int, typer.Option(help="Width of the linear bottleneck the methods align (0: none); "
                                                 "folded into the head when saved",
                                            callback=option_check(BOTTLENECK, "--bottleneck"))] = 256,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing run folder")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the chosen run's metrics as JSON")] = False,
    method: Annotated[Optional[list[str]], typer.Option("--method", hidden=True, show_default=False)] = None,
    **settings: Any,
) -> None:
    """Adapt a model trained on labelled DATA to the unlabelled --target images; save the chosen model."""
    if select not in SELECT_CHOICES:
        raise TransferkitError(f"--select '{select}': choose one of {', '.join(SELECT_CHOICES)}")
    if method:  # adapt's candidates were once --method, which in train is a loss term
        log("warning: adapt --method is deprecated, use --candidate (the same value)")
    candidates = [*(candidate or []), *(method or [])]
    if not candidates:
        raise TransferkitError(f"name at least one --candidate: {', '.join(CANDIDATES)} (repeat it to compare)")
    from transferkit.runs.seeds import parse_seeds  # lazy: numpy; --help must not pay for it

    seed_list = parse_seeds(seeds, at_least=1)
    chosen = {name: value for name, value in settings.items() if value is not None}
    chosen.setdefault("strategy", "finetune")
    config = RunConfig(data=str(data), **chosen)
    out_path = Path(out)
    with claimed(out_path, lambda: check_before_work(out_path, config, overwrite, resume=False, resumable=False)):
        from transferkit.adapt.experiment import adapt as run_adaptation  # lazy: torch
        from transferkit.runs.rundir import check_out_vs_data

        check_out_vs_data(out_path, target, target_test)
        result = run_adaptation(str(data), str(target), candidates, seed_list, select,
                                str(target_test) if target_test else None, bottleneck, out_path, overwrite, **chosen)
        clf = result.chosen.classifier  # saved, with every candidate when there are several
    if as_json:
        print_json(clf.metrics_)
        return
    print_table(result.record(), out_path)


def print_table(record: dict[str, Any], out: Path) -> None:
    from rich.table import Table

    name = record["criterion"]
    table = Table(title=f"chosen by {name} (no target label read)")
    for column in ("method", "seeds", name, "target accuracy (reported only)", "s / run", ""):
        table.add_column(column)
    for row in record["summary"]:
        accuracy = "-" if row["target_accuracy_mean"] is None else \
            f"{row['target_accuracy_mean']:.4f} ± {row['target_accuracy_std']:.4f}"
        table.add_row(cell(row["method"]), ",".join(map(str, row["seeds"])), f"{row[name]:.4f}", accuracy,
                      f"{row['seconds_mean']:.0f}", "chosen" if row["chosen"] else "")
    screen = console()
    screen.print(table)
    chosen = record["chosen"]
    several = len(record["candidates"]) > 1
    screen.print(f"saved {chosen['method']} (seed {chosen['seed']}) to {out}"
                 + (f"; every candidate in {out / CANDIDATES_DIR}" if several else ""))
