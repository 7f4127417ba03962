"""``transferkit train``. Its config options are generated from :class:`RunConfig`'s fields (type, help,
panel, choices), so a new field is a new option without an edit here; an option left unset keeps the value
of ``--config`` (or the field's default)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from transferkit.cli.common import TRAIN_FIELDS, check_before_work, claimed, print_summary, write_html_report
from transferkit.cli.options import CONFIG_FIELDS, with_config_options
from transferkit.cli.output import console, print_json
from transferkit.config import RunConfig
from transferkit.errors import TransferkitError
from transferkit.plugins import DOMAIN_TERMS


@with_config_options(TRAIN_FIELDS)
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
    from transferkit.adapt.estimator import adapting_classifier  # lazy: torch

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
