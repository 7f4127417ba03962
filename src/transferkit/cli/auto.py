"""``transferkit auto``: the best model a time budget allows on DATA, chosen on validation only, saved as an
ordinary run folder with the record of every choice (decisions.json, and report.html's decisions section). The
settings options are ``transferkit train``'s (generated from RunConfig): one given is fixed in every trial."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from transferkit.cli.options import LabelledDataArgument, with_config_options
from transferkit.cli.output import cell, console, print_json
from transferkit.errors import TransferkitError

# the settings a user may fix; the backbone, strategy's details and sizes are otherwise what auto chooses
AUTO_FIELDS = ("val_data", "test_data", "exclude", "seed", "val_fraction", "strict", "image_size", "crop_pct", "engine",
               "batch_size", "workers", "cache", "cache_dir", "cache_dtype", "strategy", "class_weights", "epochs",
               "lr", "augment", "adapter", "precision", "text_column", "label_column", "max_length", "pooling")


@with_config_options(AUTO_FIELDS)
def auto(
    data: LabelledDataArgument,
    out: Annotated[Optional[str], typer.Option(help="Run folder to write the winner to (its study auto.db is kept "
                                                    "there: the same command resumes it)", show_default=False)] = None,
    budget: Annotated[str, typer.Option(help="Time for the whole job: 90s, 15m, 1h30m or seconds")] = "15m",
    backbones: Annotated[Optional[str], typer.Option(help="More comma-separated backbones to rank beside the "
                                                          "packaged ones", show_default=False)] = None,
    metric: Annotated[str, typer.Option(help="Validation metric that chooses: accuracy or macro_f1")] = "accuracy",
    target: Annotated[Optional[Path], typer.Option(help="Unlabelled target images (domain adaptation): the "
                                                        "methods are chosen by info-max, reading no target label; "
                                                        "--test-data may be labelled target images",
                                                   show_default=False)] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the plan with its estimated seconds; train "
                                                            "nothing")] = False,
    report: Annotated[bool, typer.Option("--report/--no-report", help="Write RUN/report.html with the decisions "
                                                                      "section (needs the 'report' extra)")] = True,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing run folder at --out")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the decisions as JSON")] = False,
    **settings: Any,
) -> None:
    """Rank backbones, time a training step, and spend --budget on the trials that fit: the winner on validation
    is saved to --out with why it won."""
    from transferkit.cli.rank import parse_names
    from transferkit.tuning.base import require_optuna

    if out is None and not dry_run:
        raise TransferkitError("--out is missing: name the run folder to write (e.g. --out runs/NAME), or pass "
                               "--dry-run")
    if out is not None and not out.strip():
        raise TransferkitError("--out is empty: name the run folder to write (e.g. --out runs/NAME)")
    from transferkit.automl.budget import parse_budget

    parse_budget(budget)  # before any data is read
    require_optuna()
    from transferkit.automl.run import auto as run_auto  # lazy: numpy, optuna; --help must not pay

    names = parse_names(backbones) if backbones is not None else []
    chosen = {name: value for name, value in settings.items() if value is not None}
    result = run_auto(data, out, budget, names, metric, dry_run, overwrite, report,
                      str(target) if target is not None else None, **chosen)
    decisions = result if dry_run else result.metrics_["auto"]
    if report and not dry_run:
        from transferkit.cli.common import write_html_report

        write_html_report(Path(out))
    if as_json:
        print_json(decisions if dry_run else {**decisions, "test": result.metrics_.get("test", {}).get("accuracy")})
        return
    show(decisions, None if dry_run else result.metrics_.get("test"), out)


def show(decisions: dict[str, Any], test: dict[str, Any] | None, out: str | None) -> None:
    from rich import box
    from rich.table import Table

    metric = decisions["metric"]
    objective = decisions.get("objective")  # a label-free score that chose (auto --target)
    scores = [metric, *([objective] if objective else [])]
    title = (f"plan for a {decisions['budget_seconds']:.0f} s budget" if decisions["dry_run"] else
             f"auto: {decisions['used_seconds']:.0f} s of a {decisions['budget_seconds']:.0f} s budget")
    table = Table(title=title, box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, padding=(0, 1, 0, 0))
    for name, justify in (("trial", "left"), ("state", "left"), (f"val {metric}", "right"),
                          *([(objective, "right")] if objective else []), ("s", "right"), ("est. s", "right"),
                          ("why", "left")):
        table.add_column(name, justify=justify, overflow="fold")
    for row in decisions["trials"]:
        values = [row["val"].get(name) for name in scores]
        table.add_row(cell(row["key"]), row["state"], *("-" if v is None else f"{v:.4f}" for v in values),
                      f"{row['seconds']:.0f}" if row["seconds"] else "-", f"{row['estimate_seconds']:.0f}",
                      cell(row.get("why") or row["tries"]))
    screen = console()
    screen.print(table)
    for note in decisions["notes"]:
        screen.print(cell(f"note: {note}"))
    if decisions["dry_run"]:
        screen.print(f"estimated {sum(r['estimate_seconds'] for r in decisions['trials']):.0f} s of trials; "
                     "nothing was trained")
        return
    winner = decisions["winner"]
    chooser = objective or metric
    value = winner["val"].get(chooser, float("nan"))
    line = f"chosen: {winner['key']} ({'' if objective else 'val '}{chooser} {value:.4f})"
    if test:
        line += f"; test accuracy {test['accuracy']:.4f} (scored once, after the choice)"
    screen.print(cell(line))
    screen.print(cell(f"saved to {out}: a run folder, with decisions.json"))
