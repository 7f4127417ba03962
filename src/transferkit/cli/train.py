"""``transferkit train``. Its config options are generated from :class:`RunConfig`'s fields (type, help,
panel, choices), so a new field is a new option without an edit here; an option left unset keeps the value
of ``--config`` (or the field's default)."""

from __future__ import annotations

import dataclasses
import inspect
import typing
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, Callable, Iterator, Optional

import typer

from transferkit.cli.output import console, print_json
from transferkit.config import FIELD_TYPES, RunConfig, choices
from transferkit.errors import TransferkitError
from transferkit.progress import log
from transferkit.runs.lock import hold_run_folder
from transferkit.train.registries import DOMAIN_TERMS

CONFIG_FIELDS = {f.name: f for f in dataclasses.fields(RunConfig)}


def option_name(field: dataclasses.Field) -> str:
    """``--val-fraction``; ``--no-cache`` for a flag that is on by default; a list field names its repeatable
    option in its metadata (``--method``)."""
    if field.metadata["option"]:
        return field.metadata["option"]
    name = field.name.replace("_", "-")
    return f"--no-{name}" if field.default is True else f"--{name}"


def option_help(field: dataclasses.Field) -> str:
    values = choices(FIELD_TYPES[field.name])
    text = field.metadata["help"] + (f"; one of: {', '.join(values)}" if values else "")
    if isinstance(field.default, bool):
        return f"{text} (default: {'on' if field.default else 'off'})"
    if field.default not in (None, dataclasses.MISSING):  # null defaults say what they mean in the help
        return f"{text} (default: {field.default})"
    return text


def cli_type(hint: Any) -> Any:
    """The option's type: the field's type without ``None`` (unset is ``None`` for every option)."""
    args = typing.get_args(hint)
    if type(None) in args:
        (hint,) = (arg for arg in args if arg is not type(None))
    return Optional[hint]


def config_option(field: dataclasses.Field) -> inspect.Parameter:
    hint, name = FIELD_TYPES[field.name], option_name(field)
    info: dict[str, Any] = {"help": option_help(field), "rich_help_panel": field.metadata["panel"],
                            "show_default": False}
    if hint is bool and field.default is True:
        info["callback"] = switch_off
    elif choices(hint):  # the choices are in the help, where they wrap between words
        info["metavar"] = "<choice>"
    elif typing.get_origin(hint) is list:
        info["metavar"] = "<spec>"
    # Typer's older spelling (the option as the default) builds faster than Annotated[...], ~50 of them per start
    return inspect.Parameter(field.name, inspect.Parameter.KEYWORD_ONLY, default=typer.Option(None, name, **info),
                             annotation=cli_type(hint))


def switch_off(given: bool | None) -> bool | None:
    """``--no-cache`` given sets ``cache`` to False; not given, the field keeps --config's value."""
    return False if given else None


def with_config_options(command: Any) -> Any:
    """Give ``command`` (which takes ``**settings``) one keyword option per RunConfig field; Typer reads
    the options from ``__signature__``."""
    own = [p for p in inspect.signature(command, eval_str=True).parameters.values()
           if p.kind is not inspect.Parameter.VAR_KEYWORD]
    generated = [config_option(f) for name, f in CONFIG_FIELDS.items() if name != "data"]  # data: an argument
    command.__signature__ = inspect.Signature([*own, *generated], return_annotation=None)
    return command


@with_config_options
def train(
    data: Annotated[Optional[Path], typer.Argument(help=CONFIG_FIELDS["data"].metadata["help"],
                                                   show_default=False)] = None,
    out: Annotated[Optional[str], typer.Option(help="Run folder to write")] = None,
    config: Annotated[Optional[Path], typer.Option(help="Re-run a saved config.yaml (options given here "
                                                        "override it)")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the interrupted run in --out (or the "
                                                          "--config's run); its callbacks are not carried "
                                                          "over")] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing run folder (never a folder "
                                                                "that is not a run)")] = False,
    seeds: Annotated[Optional[str], typer.Option(
        help="Train once per seed, e.g. 0,1,2: OUT/seed-N is each seed's run, OUT/seeds.json their spread "
             "(`transferkit compare OUT` shows it, and a verdict against another run)", show_default=False)] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the metrics as JSON")] = False,
    report: Annotated[bool, typer.Option("--report", help="Also write RUN/report.html (plots, errors; "
                                                          "needs the 'report' extra)")] = False,
    target: Annotated[Optional[Path], typer.Option(
        help="Images of another domain (flat, or <class>/ folders whose labels only score the run): the run "
             f"reports its accuracy there, and --method {'|'.join(DOMAIN_TERMS)} adapt to them "
             "(`transferkit adapt` compares methods)", show_default=False)] = None,
    **settings: Any,
) -> None:
    """Fit a model to DATA and save it as a run folder."""
    if out is not None and not out.strip():
        raise TransferkitError("--out is empty: name the run folder to write (e.g. --out runs/NAME)")
    out_path = Path(out) if out is not None else None
    seed_list = seeds_to_run(seeds, settings.get("seed"), resume)  # a bad --seeds fails before any work
    if resume:
        out_path, config = resume_paths(out_path, config)
    chosen = {name: value for name, value in settings.items() if value is not None}
    if data is not None:
        chosen["data"] = str(data)
    if resume:  # callbacks belong to a process, not to the run: the interrupted one's (a fault injector) stay behind
        chosen.setdefault("callbacks", [])
    run_config = RunConfig.from_yaml(config, **chosen) if config else RunConfig(**chosen)
    if not run_config.data:
        raise TransferkitError("no data given: pass a DATA folder or a --config that names one")
    if out_path is None:
        raise TransferkitError("--out is required: the run folder to write the model to")
    params = {k: v for k, v in run_config.to_dict().items() if k != "data"}
    if config is None and "backbone" not in chosen:
        del params["backbone"]  # the estimator's default suits the data: an image network or a text encoder
    if seed_list is not None:
        with claimed(out_path, lambda: check_seeds_work(out_path, run_config, seed_list, overwrite)):
            return train_seeds(run_config, params, seed_list, out_path, overwrite, target, as_json=as_json,
                               report=report)
    with claimed(out_path, lambda: check_before_work(out_path, run_config, overwrite, resume)):
        clf = new_classifier(run_config.data, params, target).fit(run_config.data, out=out_path, resume=resume)
        if not getattr(clf, "is_main_process_", True):
            return  # other ranks of a multi-process run: rank 0 saves
        clf.save(out_path, overwrite=overwrite or resume)
        if report:
            write_html_report(out_path)
    if as_json:
        print_json(clf.metrics_)
        return
    print_summary(clf.metrics_, out_path)


def new_classifier(data: str, params: dict[str, Any], target: Path | None) -> Any:
    """The estimator for ``data``; with a ``target``, the image classifier that also scores (and, with domain
    terms, adapts to) the target images, on the pooled features (``adapt`` adds a bottleneck)."""
    from transferkit.estimators import classifier_for_data  # lazy: numpy and torch; --help must not pay for them

    if target is None:
        return classifier_for_data(data)(**params)
    from transferkit.methods.domain.estimator import adapting_classifier  # lazy: torch

    return adapting_classifier(classifier_for_data(data), str(target), params)


def seeds_to_run(spec: str | None, seed: int | None, resume: bool) -> list[int] | None:
    """``--seeds`` as a list (None when not given); with ``--seed`` or ``--resume`` it is a one-line error."""
    if spec is None:
        return None
    if seed is not None:
        raise TransferkitError("--seeds and --seed together: --seeds trains once per seed it lists; drop --seed")
    if resume:
        raise TransferkitError("--seeds and --resume together: resume one seed's run instead (--resume --out "
                               "OUT/seed-N)")
    from transferkit.runs.seeds import parse_seeds  # lazy: numpy; --help must not pay for it

    return parse_seeds(spec)


@contextmanager
def claimed(out: Path, check: Callable[[], None]) -> Iterator[None]:
    """``check`` the settings and the run folder before any work, then hold the folder's lock (runs/lock.py) until
    the run is saved, checking again once it is held: a run that ended meanwhile may have filled the folder."""
    check()
    with hold_run_folder(out):
        check()
        yield


def check_seeds_work(out: Path, config: RunConfig, seeds: list[int], overwrite: bool) -> None:
    """``--seeds``: OUT is new or a seeds folder, and every seed's settings and run folder pass the checks."""
    from transferkit.runs.seeds import check_seeds_out, seed_folder  # lazy: numpy

    check_seeds_out(out, seeds, overwrite)
    for seed in seeds:
        check_before_work(seed_folder(out, seed), config.replace(seed=seed), overwrite, resume=False)


def train_seeds(config: RunConfig, params: dict[str, Any], seeds: list[int], out: Path, overwrite: bool,
                target: Path | None, as_json: bool, report: bool) -> None:
    """``--seeds``: the config once per seed, each a normal run folder OUT/seed-N (its config has its seed),
    and the spread of their metrics in OUT/seeds.json (every seed's settings and folder checked before:
    :func:`check_seeds_work`)."""
    from transferkit.runs.seeds import fit_seeds  # lazy: numpy

    runs: dict[str, Any] = {}

    def saved(folder: Path, clf: Any) -> None:
        runs[folder.name] = clf.metrics_
        if report:
            write_html_report(folder)
        if not as_json:
            print_summary(clf.metrics_, folder)

    manifest = fit_seeds(lambda seed: new_classifier(config.data, {**params, "seed": seed}, target), config.data,
                         seeds, out, overwrite, saved)
    if not manifest:
        return  # other ranks of a multi-process run: rank 0 saves
    if as_json:
        print_json({**manifest, "metrics": runs})
        return
    print_spread(manifest["summary"], seeds, out)


def print_spread(summary: dict[str, Any], seeds: list[int], out: Path) -> None:
    """One line per metric: mean, std and the t-interval of the mean over the seeds."""
    screen = console()
    screen.print(f"over {len(seeds)} seeds (std, and the 95% t-interval of the mean):")
    for key, s in summary.items():
        what = key.replace("_", " ", 1).replace("macro_f1", "macro-F1")
        screen.print(f"{what:<13} mean {s['mean']:.4f}  std {s['std']:.4f}  95% interval "
                     f"[{s['low']:.4f}, {s['high']:.4f}]")
    screen.print(f"saved to {out}: a run folder per seed, and seeds.json")


def write_html_report(out: Path) -> None:
    try:
        from transferkit.report.html import write_report  # lazy: matplotlib, an optional extra
        from transferkit.runs.folders import RUN_REPORT
    except ImportError:
        log("notice: no report.html (pip install 'transferkit[report]' for one)")
        return
    log(f"report: {write_report([out], out / RUN_REPORT)}")


def check_before_work(out: Path, config: RunConfig, overwrite: bool, resume: bool, resumable: bool = True) -> None:
    """Everything that would otherwise fail after the features are extracted (or an epoch is trained): the
    settings, the run folder (new or a run, never the data, writable) and the cache folder. ``resumable``: the
    command has --resume (tune and adapt do not)."""
    # lazy: the run folder and cache modules import numpy; --help must not pay for them
    from transferkit.features.cache import check_cache_writable
    from transferkit.features.engines import check_precision_device
    from transferkit.runs.rundir import check_out_vs_data, check_writable

    config.validate()
    check_out_vs_data(out, config.data, config.val_data, config.test_data)
    if not resume:
        check_writable(out, overwrite, resumable=resumable)
    else:  # the folder holds the checkpoints being resumed: it must stay writable, nothing else is asked
        check_writable(out, overwrite=True, ignore=tuple(p.name for p in out.iterdir()))
    check_precision_device(config.precision)
    if config.cache:
        check_cache_writable(config.cache_dir, " or --no-cache")


def resume_paths(out: Path | None, config: Path | None) -> tuple[Path, Path]:
    """The run folder to resume (``--out``, else the one ``--config`` belongs to: ``<out>/config.yaml`` or
    ``<out>/checkpoints/config.yaml``) and the config to resume with."""
    from transferkit.runs.rundir import CHECKPOINT_DIR, LAST_CHECKPOINT, PICKLED_CHECKPOINT, checkpoint_dir  # lazy: numpy

    if out is None and config is not None:
        out = config.parent.parent if config.parent.name == CHECKPOINT_DIR else config.parent
    if out is None:
        raise TransferkitError("--resume needs --out (the run folder) or --config <out>/config.yaml")
    found = [(checkpoint_dir(out) / name).is_file() for name in (LAST_CHECKPOINT, PICKLED_CHECKPOINT)]
    if not any(found):  # an old pickled checkpoint goes on to the loader, which says why it is refused
        raise TransferkitError(f"{out}: no checkpoint to resume from (expected {checkpoint_dir(out) / LAST_CHECKPOINT})")
    if config is None or not config.is_file():
        config = checkpoint_dir(out) / "config.yaml"
    return out, config


def print_summary(metrics: dict[str, Any], out: Path) -> None:
    screen = console()
    for split in ("val", "test"):
        if split in metrics:
            m = metrics[split]
            screen.print(f"{split}: accuracy {m['accuracy']:.4f}  macro-F1 {m['macro_f1']:.4f}  (n={m['n']})")
    if "target" in metrics:
        m = metrics["target"]
        screen.print(f"target {m['folder']}: accuracy {m['accuracy']:.4f}  macro-F1 {m['macro_f1']:.4f}  (n={m['n']})")
    export = f", plus {metrics['export_seconds']:.1f} s for the one-off ONNX export" if metrics.get("export_seconds") else ""
    screen.print(f"saved to {out}  ({metrics['train_seconds']:.1f} s{export})")

