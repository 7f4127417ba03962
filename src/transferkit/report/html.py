"""One self-contained HTML file for one or several runs: a comparison table (several runs), then per run its
learning curves, confusion matrix, per-class precision/recall, reliability diagram with ECE and the
misclassified validation items (images as a grid, texts as rows). Plots are PNG data URIs and the style is
inline: the file opens without a network or any other file."""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from transferkit import __version__
from transferkit.atomic import atomic_write_bytes
from transferkit.errors import RunDirError, TransferkitError, arg
from transferkit.metrics import classification_metrics
from transferkit.modalities.base import Misclassified
from transferkit.report import figures
from transferkit.report.collect import Heldout, RunReport, collect
from transferkit.report.decisions import decisions_section
from transferkit.report.markup import esc, fmt
from transferkit.runs.folders import RUN_REPORT, is_run_folder
from transferkit.strategies import parse_strategy

MARK = "<!-- transferkit report -->"  # the first line after the doctype: a file transferkit may replace
MAX_ERRORS = 24  # misclassified items shown per run, most confident first
STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0 auto;max-width:1000px;padding:16px 24px;
color:#222;background:#fff}
h1{font-size:1.6em;margin:.2em 0} h2{font-size:1.25em;border-bottom:2px solid #ddd;padding-bottom:4px;margin-top:2em}
h3{font-size:1.05em;margin:1.4em 0 .4em} .meta,.note{color:#666;font-size:.9em}
table{border-collapse:collapse;font-size:.9em;margin:.5em 0}
th,td{border:1px solid #ddd;padding:3px 8px;text-align:left}
th{background:#f4f4f4} td.num{text-align:right;font-variant-numeric:tabular-nums}
.cards{display:flex;flex-wrap:wrap;gap:10px;margin:.6em 0}
.card{border:1px solid #ddd;border-radius:6px;padding:6px 12px;min-width:90px}
.card b{display:block;font-size:1.3em} .card span{color:#666;font-size:.8em}
img.figure{display:block;max-width:100%;height:auto;margin:.4em 0}
td.text{max-width:560px;word-break:break-word}
"""


def pretrained(report: RunReport) -> bool:
    """Whether the run started from pretrained weights (``scratch`` does not, whatever the config says)."""
    config = report.files.config
    return bool(config.pretrained and parse_strategy(config.strategy).pretrained)


def img(figure: Any, alt: str) -> str:
    return f'<img class="figure" alt="{esc(alt)}" src="{figures.data_uri(figure)}">'


# -- one run ----------------------------------------------------------------------------------------------------
def run_section(report: RunReport) -> str:
    metrics = report.metrics
    parts = [f"<section class=\"run\"><h2>{esc(report.path)}</h2>", facts(report), cards(metrics),
             decisions_section(metrics)]
    parts.append("<h3>Learning curves</h3>")
    probe = metrics.get("probe") if isinstance(metrics.get("probe"), dict) else {}
    if report.history:
        parts.append(img(figures.learning_curves(report.history), "learning curves"))
    elif isinstance(probe.get("path"), list) and probe["path"]:
        parts.append('<p class="note">A linear probe trains no epochs: its validation scores along the L2 path '
                     "it chose from are shown instead.</p>")
        parts.append(img(figures.probe_path(probe["path"], probe.get("l2")), "L2 path of the linear probe"))
    else:
        parts.append('<p class="note">This run recorded no per-epoch history.</p>')
    val = metrics.get("val") if isinstance(metrics.get("val"), dict) else None
    if val is None and report.heldout is not None and len(report.heldout.labels):
        val = classification_metrics(report.heldout.labels, report.heldout.proba, report.classes)
    if val and val.get("confusion_matrix"):
        parts.append("<h3>Confusion matrix</h3>" + img(figures.confusion_matrix(val["confusion_matrix"],
                                                                               report.classes), "confusion matrix"))
        parts.append("<h3>Precision and recall per class</h3>"
                     + img(figures.per_class_bars(val["per_class"]), "precision and recall per class"))
    parts.append(heldout_parts(report, probe))
    parts.append("</section>")
    return "\n".join(parts)


def facts(report: RunReport) -> str:
    config, metrics, meta = report.files.config, report.metrics, report.files.model_meta
    rows = [("modality", report.clf.modality.name), ("backbone", meta.get("backbone", config.backbone)),
            ("strategy", config.strategy), ("pretrained", pretrained(report)),
            ("data", metrics.get("data", config.data)),
            ("classes", ", ".join(map(str, report.classes[:30])) + (" ..." if len(report.classes) > 30 else "")),
            ("epochs", metrics.get("epochs_run", "-")), ("train seconds", fmt(metrics.get("train_seconds"), ".1f")),
            ("trainable parameters", fmt(metrics.get("trainable_parameters"), ",d"))]
    cells = "".join(f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in rows)
    return f'<table class="facts">{cells}</table>'


def cards(metrics: dict[str, Any]) -> str:
    shown = []
    for split in ("val", "test"):
        values = metrics.get(split)
        if isinstance(values, dict):
            shown += [(f"{split} {name}", values.get(key)) for key, name in
                      (("accuracy", "accuracy"), ("macro_f1", "macro-F1"), ("ece", "ECE"), ("log_loss", "log-loss"))]
    if not shown:
        return '<p class="note">metrics.json holds no validation or test metrics.</p>'
    return '<div class="cards">' + "".join(f"<div class=\"card\"><b>{fmt(v)}</b><span>{esc(k)}</span></div>"
                                           for k, v in shown) + "</div>"


def heldout_parts(report: RunReport, probe: dict[str, Any]) -> str:
    heldout = report.heldout
    if heldout is None:
        return f'<h3>Calibration and errors</h3><p class="note">Not shown: {esc(report.missing)}</p>'
    if not len(heldout.labels):
        return (f'<h3>Calibration and errors</h3><p class="note">None of the items ({esc(heldout.source)}) could be '
                "read.</p>")
    notes = [f"On {len(heldout.labels)} items: {esc(heldout.source)}"
             + (f" ({heldout.unreadable} unreadable)" if heldout.unreadable else "") + "."]
    if probe.get("refit_on_train_and_val") and heldout.own_split:
        notes.append("The saved probe was refitted on train and validation together after choosing its L2, so "
                     "these items were seen in training: the calibration and errors below are optimistic.")
    figure, _ = figures.reliability_diagram(heldout.labels, heldout.proba)
    parts = ["<h3>Calibration</h3>", f'<p class="note">{" ".join(notes)}</p>', img(figure, "reliability diagram")]
    predicted = heldout.proba.argmax(axis=1)
    wrong = np.flatnonzero(predicted != heldout.labels)
    wrong = wrong[np.argsort(-heldout.proba[wrong, predicted[wrong]], kind="stable")][:MAX_ERRORS]
    total = int((predicted != heldout.labels).sum())
    parts.append(f"<h3>Misclassified ({total} of {len(heldout.labels)}; most confident first)</h3>")
    if not total:
        parts.append('<p class="note">None: every item was classified correctly.</p>')
    else:
        parts.append(report.clf.modality.show_errors(misclassified(heldout, wrong, predicted, report.classes), img))
    return "\n".join(parts)


def misclassified(heldout: Heldout, wrong: np.ndarray, predicted: np.ndarray,
                  classes: Sequence[Any]) -> list[Misclassified]:
    """The rows ``wrong`` of the held-out predictions, as the run's modality shows them."""
    return [Misclassified(heldout.items[i], heldout.lines[i] if heldout.lines is not None else None,
                          classes[heldout.labels[i]], classes[predicted[i]], float(heldout.proba[i, predicted[i]]))
            for i in wrong]


# -- several runs -----------------------------------------------------------------------------------------------
NUM = ' class="num"'
COMPARISON = ("run", "strategy", "backbone", "pretrained", "epochs", "val acc", "val F1", "val ECE", "test acc",
              "test F1", "train s", "trainable")


def comparison(reports: Sequence[RunReport]) -> str:
    def score(report: RunReport, split: str, key: str) -> Any:
        values = report.metrics.get(split)
        return values.get(key) if isinstance(values, dict) else None

    accuracies = [score(r, "val", "accuracy") for r in reports]
    best = max((a for a in accuracies if isinstance(a, (int, float))), default=None)
    rows = []
    for report, accuracy in zip(reports, accuracies):
        m, config = report.metrics, report.files.config
        cells = [esc(report.path), esc(config.strategy), esc(report.files.model_meta.get("backbone", config.backbone)),
                 esc(pretrained(report)), fmt(m.get("epochs_run"), "d") if "epochs_run" in m else "-",
                 (f"<strong>{fmt(accuracy)}</strong>" if accuracy == best and best is not None else fmt(accuracy)),
                 fmt(score(report, "val", "macro_f1")), fmt(score(report, "val", "ece")),
                 fmt(score(report, "test", "accuracy")), fmt(score(report, "test", "macro_f1")),
                 fmt(m.get("train_seconds"), ".1f"), fmt(m.get("trainable_parameters"), ",d")]
        rows.append("<tr>" + "".join(f"<td{NUM if i > 3 else ''}>{c}</td>" for i, c in enumerate(cells)) + "</tr>")
    table = ("<table class=\"comparison\"><tr>" + "".join(f"<th>{esc(c)}</th>" for c in COMPARISON) + "</tr>"
             + "".join(rows) + "</table>")
    curves = figures.comparison_curves([(str(r.path), r.history) for r in reports])
    return ("<h2>Comparison</h2>" + table + '<p class="note">Best validation accuracy in bold. A baseline is a run '
            "like the others: train one with --strategy scratch (no pretrained knowledge) or linear-probe and "
            "name it here.</p>" + (img(curves, "validation accuracy per epoch, all runs") if curves else ""))


def render(reports: Sequence[RunReport]) -> str:
    title = "transferkit report: " + ", ".join(str(r.path) for r in reports)
    now = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    body = [f"<h1>{esc(title)}</h1>", f'<p class="meta">Written {esc(now)} by transferkit {esc(__version__)}; '
            f"{len(reports)} run(s).</p>"]
    if len(reports) > 1:
        body.append(comparison(reports))
    body += [run_section(r) for r in reports]
    return (f"<!DOCTYPE html>\n{MARK}\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>{esc(title)}</title>"
            f"<style>{STYLE}</style></head>\n<body>\n" + "\n".join(body) + "\n</body></html>\n")


def check_report_path(out: Path) -> None:
    """``out`` is a new file or a report transferkit wrote, and not a file a run folder would not hold."""
    if out.is_dir():
        raise TransferkitError(f"{out}: is a folder; pass {arg('out')} with a file name such as report.html")
    if out.exists():
        with open(out, "rb") as handle:
            head = handle.read(200).decode("utf-8", "replace")
        if MARK not in head:
            raise TransferkitError(f"{out}: exists and is not a transferkit report, so it is not replaced; choose "
                                   f"another {arg('out')}")
    if is_run_folder(out.parent) and out.name != RUN_REPORT:
        raise RunDirError(f"{out}: is inside the run folder {out.parent}, where a file it does not hold would stop "
                          f"the run from being replaced; choose another {arg('out')}, outside it")


def write_report(runs: Sequence[str | Path], out: str | Path, data: Any = None) -> Path:
    """Collect each run (predictions on its validation data, or ``data``) and write the report to ``out``."""
    out = Path(out)
    check_report_path(out)
    page = render([collect(run, data) for run in runs])
    atomic_write_bytes(out, page.encode("utf-8"))
    return out
