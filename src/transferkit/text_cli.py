"""The text side of ``transferkit train / predict / evaluate`` (cli.py dispatches here for text data and runs)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .config import RunConfig


def train_text(run_config: "RunConfig", out: Path, overwrite: bool, as_json: bool, backbone_given: bool,
               resume: bool = False) -> None:
    from rich.console import Console

    from .text import DEFAULT_TEXT_BACKBONE, TextClassifier

    if not backbone_given:
        run_config = run_config.replace(backbone=DEFAULT_TEXT_BACKBONE)
    params = {k: v for k, v in run_config.to_dict().items() if k != "data"}
    clf = TextClassifier(**params).fit(run_config.data, out=out, resume=resume)
    if not getattr(clf, "is_main_process_", True):
        return  # other ranks of a multi-process run: rank 0 saves
    clf.save(out, overwrite=overwrite or resume)
    if as_json:
        print(json.dumps(clf.metrics_))
        return
    console = Console(highlight=False)
    if "val" in clf.metrics_:
        m = clf.metrics_["val"]
        console.print(f"val: accuracy {m['accuracy']:.4f}  macro-F1 {m['macro_f1']:.4f}  (n={m['n']})")
    console.print(f"saved to {out}  ({clf.metrics_['train_seconds']:.1f} s)")


def predict_text(run: Path, inputs: list[str], top_k: int, as_json: bool) -> None:
    """Each input is a .csv/.tsv/.jsonl file (one prediction per row) or a text to classify."""
    import numpy as np

    from .text import TextClassifier, is_text_data, read_text_table

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

    from .text import TextClassifier

    clf = TextClassifier.load(run)
    report = clf.evaluate(data)
    if as_json:
        print(json.dumps(report, ensure_ascii=False))
        return report
    from .cli import _print_report

    _print_report(report, clf.classes_)
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
