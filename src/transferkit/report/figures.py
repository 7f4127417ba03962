"""The report's plots, drawn with matplotlib's object API (``Figure``, no pyplot state, no GUI backend) and
embedded as base64 PNG data URIs, so the HTML file needs nothing else to open."""

from __future__ import annotations

import base64
import io
from typing import Any, Sequence

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from transferkit.metrics import expected_calibration_error

WIDTH = 7.2  # inches at 100 dpi: figures fit a 760-px column
COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf")


def data_uri(figure: Figure) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight", facecolor="white")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def numeric(rows: Sequence[dict[str, Any]], key: str) -> tuple[list[int], list[float]]:
    """(epochs, values) of the rows that have a number under ``key``."""
    pairs = [(int(r.get("epoch", i + 1)), float(r[key])) for i, r in enumerate(rows)
             if isinstance(r.get(key), (int, float)) and not isinstance(r.get(key), bool)]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def learning_curves(history: Sequence[dict[str, Any]]) -> Figure:
    """Losses per epoch (train, validation, each ``loss_<term>``) beside validation accuracy and macro-F1;
    dotted lines mark where a phase (head only, then everything) begins."""
    figure = Figure(figsize=(WIDTH, 3.2))
    losses, scores = figure.subplots(1, 2)
    keys = ["train_loss", "val_loss"] + sorted({k for r in history for k in r if k.startswith("loss_")})
    for colour, key in zip(COLOURS * 4, keys):
        epochs, values = numeric(history, key)
        if values:
            losses.plot(epochs, values, marker="o", ms=3, color=colour, label=key,
                        linestyle="--" if key.startswith("loss_") else "-")
    for colour, key in zip(COLOURS, ("val_accuracy", "val_macro_f1")):
        epochs, values = numeric(history, key)
        if values:
            scores.plot(epochs, values, marker="o", ms=3, color=colour, label=key)
    phases = [r.get("epoch") for i, r in enumerate(history) if i and r.get("phase") != history[i - 1].get("phase")]
    for axis, title in ((losses, "loss per epoch"), (scores, "validation per epoch")):
        for epoch in phases:
            axis.axvline(epoch - 0.5, color="grey", linestyle=":", linewidth=1)
        axis.set_title(title, fontsize=10)
        axis.set_xlabel("epoch")
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        axis.grid(alpha=0.3)
        if axis.lines:
            axis.legend(fontsize=7)
    return figure


def probe_path(path: Sequence[dict[str, Any]], chosen: float | None) -> Figure:
    """A linear probe has no epochs: validation accuracy and log-loss along its L2 path, the chosen L2 marked."""
    figure = Figure(figsize=(WIDTH, 3.0))
    accuracy, loss = figure.subplots(1, 2)
    strengths = [float(p["l2"]) for p in path]
    for axis, key, colour in ((accuracy, "val_accuracy", COLOURS[0]), (loss, "val_log_loss", COLOURS[1])):
        values = [p.get(key) for p in path]
        if all(isinstance(v, (int, float)) for v in values):
            axis.plot(strengths, values, marker="o", ms=3, color=colour)
        if chosen:
            axis.axvline(chosen, color="grey", linestyle=":", label=f"chosen l2 {chosen:g}")
            axis.legend(fontsize=7)
        axis.set_xscale("log")
        axis.invert_xaxis()  # strong to weak, the order the path is solved in
        axis.set_xlabel("L2 strength")
        axis.set_title(key.replace("_", " ") + " along the L2 path", fontsize=10)
        axis.grid(alpha=0.3)
    return figure


def confusion_matrix(matrix: Sequence[Sequence[int]], classes: Sequence[Any]) -> Figure:
    counts = np.asarray(matrix, dtype=np.int64)
    k = len(classes)
    side = min(9.0, max(3.6, 0.45 * k + 2.0))
    figure = Figure(figsize=(side, side * 0.85))
    axis = figure.subplots()
    rows = counts.sum(axis=1, keepdims=True)
    image = axis.imshow(np.divide(counts, rows, out=np.zeros(counts.shape), where=rows > 0), cmap="Blues",
                        vmin=0, vmax=1)
    figure.colorbar(image, ax=axis, fraction=0.046, label="share of the true class")
    if k <= 25:
        for (i, j), n in np.ndenumerate(counts):
            axis.text(j, i, str(n), ha="center", va="center", fontsize=8,
                      color="white" if n > 0.6 * max(1, rows[i, 0]) else "black")
    ticks = range(k) if k <= 40 else range(0, k, max(1, k // 20))
    names = [str(classes[i])[:18] for i in ticks]
    axis.set_xticks(list(ticks), names, rotation=60 if k > 4 else 0, ha="right" if k > 4 else "center", fontsize=8)
    axis.set_yticks(list(ticks), names, fontsize=8)
    axis.set_xlabel("predicted")
    axis.set_ylabel("true")
    axis.set_title("confusion matrix (validation)", fontsize=10)
    return figure


def per_class_bars(per_class: dict[str, dict[str, Any]]) -> Figure:
    names = list(per_class)
    k = len(names)
    figure = Figure(figsize=(max(WIDTH, min(16.0, 0.35 * k + 2)), 3.2))
    axis = figure.subplots()
    x = np.arange(k)
    for offset, key, colour in ((-0.2, "precision", COLOURS[0]), (0.2, "recall", COLOURS[1])):
        axis.bar(x + offset, [float(per_class[n].get(key, 0.0)) for n in names], width=0.4, color=colour, label=key)
    axis.set_xticks(x, [n[:18] for n in names], rotation=60 if k > 6 else 0, ha="right" if k > 6 else "center",
                    fontsize=8)
    axis.set_ylim(0, 1.05)
    axis.set_title("precision and recall per class (validation)", fontsize=10)
    axis.legend(fontsize=8, loc="lower right")
    axis.grid(axis="y", alpha=0.3)
    return figure


def reliability_diagram(labels: np.ndarray, proba: np.ndarray, bins: int = 10) -> tuple[Figure, float]:
    """Accuracy per confidence bin against the diagonal, the share of items per bin below; ECE (15 bins, as
    the run's metrics compute it) in the title."""
    confidence, correct = proba.max(axis=1), proba.argmax(axis=1) == labels
    ece = expected_calibration_error(proba, labels)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    counts = np.bincount(which, minlength=bins)
    hits = np.bincount(which, weights=correct.astype(float), minlength=bins)
    accuracy = np.divide(hits, counts, out=np.zeros(bins), where=counts > 0)
    figure = Figure(figsize=(4.6, 5.0))
    top, bottom = figure.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    centres, width = (edges[:-1] + edges[1:]) / 2, 1.0 / bins
    top.bar(centres[counts > 0], accuracy[counts > 0], width=width * 0.95, color=COLOURS[0], edgecolor="black",
            linewidth=0.5, label="accuracy")
    top.plot([0, 1], [0, 1], color="grey", linestyle="--", label="perfect calibration")
    top.set_ylim(0, 1)
    top.set_ylabel("accuracy")
    top.set_title(f"reliability diagram, ECE {ece:.3f} (n={len(labels)})", fontsize=10)
    top.legend(fontsize=7, loc="upper left")
    bottom.bar(centres, counts / max(1, len(labels)), width=width * 0.95, color=COLOURS[1])
    bottom.set_xlim(0, 1)
    bottom.set_xlabel("confidence (top probability)")
    bottom.set_ylabel("share")
    return figure, ece


def comparison_curves(runs: Sequence[tuple[str, Sequence[dict[str, Any]]]]) -> Figure | None:
    """Validation accuracy per epoch, one line per run that trained for epochs (None when none did)."""
    figure = Figure(figsize=(WIDTH, 3.0))
    axis = figure.subplots()
    for colour, (name, history) in zip(COLOURS * 4, runs):
        epochs, values = numeric(history, "val_accuracy")
        if values:
            axis.plot(epochs, values, marker="o", ms=3, color=colour, label=name[-40:])
    if not axis.lines:
        return None
    axis.set_xlabel("epoch")
    axis.xaxis.set_major_locator(MaxNLocator(integer=True))
    axis.set_ylabel("validation accuracy")
    axis.set_title("validation accuracy per epoch, all runs", fontsize=10)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=7)
    return figure
