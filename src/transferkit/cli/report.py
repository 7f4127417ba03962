"""Printing an evaluation report: summary line, per-class table, confusion matrix, skipped and misclassified
items (image files, or text rows by line)."""

from __future__ import annotations

from typing import Any

from rich.table import Table

from transferkit.cli.output import cell, console, printable

TEXT_WIDTH = 60  # a misclassified text is cut to this many characters in the table


def print_report(report: dict[str, Any], classes: list[str], show_errors: int = 10) -> None:
    screen = console()
    screen.print(f"accuracy {report['accuracy']:.4f}   macro-F1 {report['macro_f1']:.4f}   "
                 f"log-loss {report['log_loss']:.4f}   ECE {report['ece']:.4f}   n={report['n']}")
    table = Table(title="per class")
    for column in ("class", "precision", "recall", "f1", "support"):
        table.add_column(column, justify="left" if column == "class" else "right")
    for name, row in report["per_class"].items():
        table.add_row(cell(name), f"{row['precision']:.3f}", f"{row['recall']:.3f}", f"{row['f1']:.3f}",
                      str(row["support"]))
    screen.print(table)
    matrix = Table(title="confusion matrix (rows: true, columns: predicted)")
    matrix.add_column("")
    for name in classes:
        matrix.add_column(cell(name), justify="right")
    for name, row in zip(classes, report["confusion_matrix"]):
        matrix.add_row(cell(name), *map(str, row))
    screen.print(matrix)
    skipped = report.get("skipped") or []
    if skipped:
        listing = "; ".join(f"{where(s)} ({s['reason']})" for s in skipped[:5])
        screen.print(printable(f"skipped {len(skipped)}: {listing}" + (" ..." if len(skipped) > 5 else "")),
                     markup=False)
    wrong = report.get("misclassified") or []
    if wrong and show_errors > 0:
        screen.print(misclassified_table(wrong[:show_errors], len(wrong)))


def where(row: dict[str, Any]) -> str:
    """A text row by its line, an image by its file."""
    return f"line {row['line']}" if "line" in row else str(row.get("item", ""))


def misclassified_table(rows: list[dict[str, Any]], total: int) -> Table:
    text = any("line" in row for row in rows)
    table = Table(title=f"misclassified ({total}; showing {len(rows)})")
    if text:
        table.add_column("where", no_wrap=True)
        table.add_column("text")
    else:
        table.add_column("file", overflow="fold")
    for column in ("label", "predicted", "probability"):
        table.add_column(column, justify="right" if column == "probability" else "left")
    for row in rows:
        item = printable(str(row["item"]))
        cells = [where(row), item if len(item) <= TEXT_WIDTH else item[:TEXT_WIDTH - 3] + "..."] if text else [item]
        table.add_row(*map(cell, cells), cell(row["label"]), cell(row["predicted"]), f"{row['probability']:.2f}")
    return table
