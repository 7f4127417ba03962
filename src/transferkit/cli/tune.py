"""``transferkit tune``: an Optuna search over a run's settings, scored on validation data, in a study kept in a
database (re-running the command resumes it); the best trial becomes a normal run folder. The settings options
are ``transferkit train``'s (generated from RunConfig): a setting given there is fixed, not tuned."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from transferkit.bounds import option_check
from transferkit.cli.output import cell, console, print_json
from transferkit.cli.options import CONFIG_FIELDS, option_name, with_config_options
from transferkit.cli.common import TRAIN_FIELDS, check_before_work, claimed, print_summary
from transferkit.errors import TransferkitError
from transferkit.tuning.base import PRUNERS, TRIALS, require_optuna
from transferkit.tuning.space import SPACES

SPACE_HELP = "; ".join(f"{name}: {space.summary}" for name, space in SPACES.items())


@with_config_options(TRAIN_FIELDS)
def tune(
    data: Annotated[Path, typer.Argument(help="Labelled data, as for train: trials learn from its train split and are "
                                              "scored on its validation split; its test split is scored by the "
                                              "final run only", show_default=False)],
    storage: Annotated[str, typer.Option(help="Database URL of the study, e.g. sqlite:///study.db (re-running the "
                                              "command resumes the study in it); several workers on one study, "
                                              "on one machine or many: postgresql://user:password@host/db "
                                              "(transferkit[scale])", show_default=False)],
    out: Annotated[str, typer.Option(help="Run folder to write the best trial's run to", show_default=False)],
    trials: Annotated[int, typer.Option(help="Finished trials the study should hold (those it holds count, and "
                                             "those other workers on the study run)",
                                        callback=option_check(TRIALS, "--trials"))] = 20,
    space: Annotated[Optional[str], typer.Option(help=f"What to tune ({SPACE_HELP}); default: the --strategy's "
                                                      "(linear-probe: probe)", show_default=False)] = None,
    study: Annotated[Optional[str], typer.Option(help="Study name in the storage (default: from the data, the "
                                                      "space and the settings)", show_default=False)] = None,
    pruner: Annotated[Optional[str], typer.Option(help=f"Stops fine-tuning trials behind the others: "
                                                       f"{' or '.join(PRUNERS.names())} (default: the space's, "
                                                       f"finetune: {SPACES['finetune'].pruner})",
                                                  show_default=False)] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing run folder at --out (never a "
                                                                "folder that is not a run)")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the trials, the best settings and the run's "
                                                         "metrics as JSON")] = False,
    **settings: Any,
) -> None:
    """Search DATA's best settings with Optuna (on validation data only) and save the best as a run folder."""
    if not out.strip():
        raise TransferkitError("--out is empty: name the run folder to write (e.g. --out runs/NAME)")
    require_optuna()
    from transferkit.tuning.study import plan, tune as run_search  # lazy: optuna, numpy; --help must not pay

    search = plan(data, {name: value for name, value in settings.items() if value is not None}, space)
    with claimed(Path(out), lambda: check_before_work(Path(out), search.config, overwrite, resume=False,
                                                      resumable=False)):
        summary, clf = run_search(search, trials, storage, out, study, pruner)
        if clf is None:  # another worker on the study fits the best trial (it said so on stderr)
            print_json(summary) if as_json else print_trials(summary)
            return
        if not getattr(clf, "is_main_process_", True):
            return  # other ranks of a multi-process run: rank 0 saves
        clf.save(out, overwrite=overwrite)
    if as_json:
        run = {split: {k: clf.metrics_[split][k] for k in ("accuracy", "macro_f1", "n")}
               for split in ("val", "test") if split in clf.metrics_}
        print_json({**summary, "run": {"folder": out, **run}})
        return
    print_trials(summary)
    print_summary(clf.metrics_, Path(out))


def print_trials(summary: dict[str, Any]) -> None:
    from rich import box
    from rich.table import Table

    rows, best = summary["trials"], summary["best"]
    names = list(dict.fromkeys(name for row in rows for name in row["params"]))
    table = Table(title=f"study {summary['study']}: {summary['finished']} trials, {summary['seconds_per_trial'] or 0:.2f} s "
                        "each", box=box.SIMPLE_HEAD, show_edge=False,
                  pad_edge=False, padding=(0, 1, 0, 0), caption="* best: highest val accuracy, then lowest val log-loss")
    table.add_column("trial", justify="right", no_wrap=True)
    table.add_column("state", overflow="fold")
    for title in ("val acc", "val loss"):
        table.add_column(title, justify="right", no_wrap=True)
    for title in names:  # a text probe tunes four: long names fold rather than cut the values short
        table.add_column(title.replace("_", " "), justify="right", overflow="fold")
    table.add_column("s", justify="right", no_wrap=True)
    for row in rows:
        value = "-" if row["value"] is None else f"{row['value']:.4f}"
        loss = "-" if row["val_log_loss"] is None else f"{row['val_log_loss']:.4f}"
        state = row["state"] + (f" @{row['pruned_at_epoch']}" if row["pruned_at_epoch"] else "")
        table.add_row(f"{row['number']}{'*' if row['number'] == best['number'] else ''}", state, value, loss,
                      *(cell(shown(row["params"].get(name))) for name in names),
                      "-" if row["seconds"] is None else f"{row['seconds']:.1f}")
    screen = console()
    screen.print(table)
    options = "  ".join(f"{option_name(CONFIG_FIELDS[k])} {shown(v)}" for k, v in best["settings"].items())
    screen.print(cell(f"best: trial {best['number']}, val accuracy {best['value']:.4f}  {options}"))


def shown(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:.3g}" if isinstance(value, float) else str(value)
