"""Printing an evaluation report: summary line, per-class table, confusion matrix."""

from __future__ import annotations

from typing import Any

from rich.console import Console


def print_report(report: dict[str, Any], classes: list[str]) -> None:
    from rich.table import Table

    console = Console(highlight=False)
    console.print(f"accuracy {report['accuracy']:.4f}   macro-F1 {report['macro_f1']:.4f}   "
                  f"log-loss {report['log_loss']:.4f}   ECE {report['ece']:.4f}   n={report['n']}")
    table = Table(title="per class")
    for column in ("class", "precision", "recall", "f1", "support"):
        table.add_column(column, justify="left" if column == "class" else "right")
    for name, row in report["per_class"].items():
        table.add_row(name, f"{row['precision']:.3f}", f"{row['recall']:.3f}", f"{row['f1']:.3f}", str(row["support"]))
    console.print(table)
    matrix = Table(title="confusion matrix (rows: true, columns: predicted)")
    matrix.add_column("")
    for name in classes:
        matrix.add_column(name, justify="right")
    for name, row in zip(classes, report["confusion_matrix"]):
        matrix.add_row(name, *map(str, row))
    console.print(matrix)
    if report.get("skipped_files"):
        console.print(f"skipped {len(report['skipped_files'])} unreadable file(s): "
                      + ", ".join(s["path"] for s in report["skipped_files"][:5]))
