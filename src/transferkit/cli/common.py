"""What the commands that write a run (train, tune, adapt) share: the run options' fields, the
checks before any work, the run folder's lock and the closing summary."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

from transferkit.cli.options import CONFIG_FIELDS
from transferkit.cli.output import console
from transferkit.config import RunConfig
from transferkit.progress import log
from transferkit.runs.lock import hold_run_folder

# every RunConfig field but DATA (the argument) is one of train's options
TRAIN_FIELDS = tuple(name for name in CONFIG_FIELDS if name != "data")


@contextmanager
def claimed(out: Path, check: Callable[[], None]) -> Iterator[None]:
    """``check`` the settings and the run folder before any work, then hold the folder's lock (runs/lock.py) until
    the run is saved, checking again once it is held: a run that ended meanwhile may have filled the folder."""
    check()
    with hold_run_folder(out):
        check()
        yield


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


def write_html_report(out: Path) -> None:
    """RUN/report.html, when the report extra is installed (else a notice)."""
    try:
        from transferkit.report.html import write_report  # lazy: matplotlib, an optional extra
        from transferkit.runs.folders import RUN_REPORT
    except ImportError:
        log("notice: no report.html (pip install 'transferkit[report]' for one)")
        return
    log(f"report: {write_report([out], out / RUN_REPORT)}")
