"""The text side of ``transferkit predict / evaluate`` (cli.py dispatches here for text runs)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from transferkit.cli.report import print_report


def predict_text(run: Path, inputs: list[str], top_k: int, as_json: bool) -> None:
    """Each input is a .csv/.tsv/.jsonl file (one prediction per row) or a text to classify."""
    import numpy as np

    from transferkit.estimators.text import TextClassifier

    from transferkit.modalities.text.table import is_text_data, read_text_table

    clf = TextClassifier.load(run)
    clf.verbose = False
    items: list[dict[str, Any]] = []
    for item in inputs:
        if is_text_data(item) and Path(item).is_file():
            table = read_text_table(item, clf.config.text_column, clf.config.label_column, require_labels=False,
                                    strict=clf.config.strict)
            items.extend({"file": item, "line": line, "text": text} for line, text in zip(table.lines, table.texts))
        else:
            items.append({"text": item})
    proba = clf.predict_proba([i["text"] for i in items])
    k = max(1, min(top_k, len(clf.classes_)))
    for record, p in zip(items, proba):
        top = np.argsort(-p)[:k]
        record["predictions"] = [{"label": clf.classes_[i], "probability": round(float(p[i]), 6)} for i in top]
        if as_json:
            print(json.dumps(record, ensure_ascii=False))
        else:
            where = f"{record['file']}:{record['line']}\t" if "file" in record else ""
            print(f"{where}{record['text']}\t" + "  ".join(f"{r['label']} {r['probability']:.3f}"
                                                           for r in record["predictions"]))


def evaluate_text(run: Path, data: Path, as_json: bool, show_errors: int) -> dict[str, Any]:
    from rich.console import Console

    from transferkit.estimators.text import TextClassifier

    clf = TextClassifier.load(run)
    report = clf.evaluate(data)
    if as_json:
        print(json.dumps(report, ensure_ascii=False))
        return report
    print_report(report, clf.classes_)
    console = Console(highlight=False)
    if report["skipped_rows"]:
        first = report["skipped_rows"][0]
        console.print(f"skipped {len(report['skipped_rows'])} row(s): line {first['line']} ({first['reason']})"
                      + (" ..." if len(report["skipped_rows"]) > 1 else ""))
    wrong = report["misclassified"]
    if wrong and show_errors:
        console.print(f"misclassified ({len(wrong)}; showing {min(len(wrong), show_errors)}):")
        for row in wrong[:show_errors]:
            console.print(f"  line {row['line']}: {row['text'][:100]!r}  true {row['label']} -> {row['predicted']} "
                          f"({row['probability']:.2f})", markup=False)
    return report
