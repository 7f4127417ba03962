"""Texts and labels from CSV, TSV and JSONL files, with named or guessed columns."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from transferkit.errors import DataError

TEXT_SUFFIXES = (".csv", ".tsv", ".jsonl")
TEXT_COLUMNS = ("text", "sentence", "review", "content", "document", "comment", "body", "utterance", "question",
                "query", "input", "sentence1")
LABEL_COLUMNS = ("label", "labels", "class", "target", "category", "sentiment", "intent", "y", "output")


# ----------------------------------------------------------------------------------------------------------
# Data: CSV, TSV, JSONL
# ----------------------------------------------------------------------------------------------------------
@dataclass
class TextTable:
    path: str
    columns: list[str]
    text_column: str
    label_column: str | None
    texts: list[str] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)  # empty when the table has no label column
    lines: list[int] = field(default_factory=list)  # 1-based line of each kept row in the file
    skipped: list[dict[str, Any]] = field(default_factory=list)  # {"line", "reason"}

    def __len__(self) -> int:
        return len(self.texts)


def is_text_data(path: str | Path) -> bool:
    return Path(str(path)).suffix.lower() in TEXT_SUFFIXES


def _decode(path: Path) -> str:
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[:exc.start].count(b"\n") + 1
        column = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
        raise DataError(f"{path}:{line}: not valid UTF-8 (byte 0x{raw[exc.start]:02x} at column {column}); "
                        "re-save the file as UTF-8") from None


def _records(path: Path) -> tuple[list[str], list[tuple[int, dict[str, Any]]]]:
    """Column names and (line, row) pairs of a CSV, TSV or JSONL file."""
    text = _decode(path)
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        columns: dict[str, None] = {}
        rows = []
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError as exc:
                raise DataError(f"{path}:{number}: not valid JSON ({str(exc).splitlines()[0]})") from None
            if not isinstance(row, dict):
                raise DataError(f"{path}:{number}: expected a JSON object per line, got {type(row).__name__}")
            columns.update(dict.fromkeys(row))
            rows.append((number, row))
        return list(columns), rows
    reader = csv.reader(io.StringIO(text, newline=""), delimiter="\t" if suffix == ".tsv" else ",")
    try:
        header = next(reader)
    except StopIteration:
        raise DataError(f"{path}: the file is empty; expected a header row naming the columns") from None
    except csv.Error as exc:
        raise DataError(f"{path}:1: cannot parse the header ({exc})") from None
    header = [h.strip() for h in header]
    rows = []
    previous = reader.line_num
    while True:
        try:
            values = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            raise DataError(f"{path}:{previous + 1}: cannot parse this row ({exc})") from None
        line, previous = previous + 1, reader.line_num
        if not values or (len(values) == 1 and not values[0].strip()):
            continue
        rows.append((line, {name: (values[i] if i < len(values) else None) for i, name in enumerate(header)}))
    return header, rows


def _pick_column(path: Path, columns: list[str], given: str | None, candidates: tuple[str, ...], what: str,
                 option: str, required: bool, exclude: str | None = None) -> str | None:
    listing = ", ".join(columns) if columns else "(none)"
    if given:
        if given in columns:
            return given
        folded = {c.lower(): c for c in columns}
        if given.lower() in folded:
            return folded[given.lower()]
        raise DataError(f"{path}: no column '{given}' ({option}); the columns are: {listing}")
    folded = {c.lower().strip(): c for c in columns if c != exclude}
    for name in candidates:
        if name in folded:
            return folded[name]
    if required:
        raise DataError(f"{path}: no {what} column found (looked for {', '.join(candidates[:6])}, ...); "
                        f"the columns are: {listing}; pass {option} NAME")
    return None


def as_text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return value if isinstance(value, str) else json.dumps(value) if isinstance(value, (list, dict)) else str(value)


def read_text_table(path: str | Path, text_column: str | None = None, label_column: str | None = None,
                    require_labels: bool = True, strict: bool = False) -> TextTable:
    """Read texts (and labels) from CSV / TSV / JSONL; empty texts and missing labels are skipped (reported)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found; pass a .csv, .tsv or .jsonl file")
    if not is_text_data(path):
        raise DataError(f"{path}: unsupported file type '{path.suffix}'; use .csv, .tsv or .jsonl")
    columns, rows = _records(path)
    text_col = _pick_column(path, columns, text_column, TEXT_COLUMNS, "text", "--text-column", True)
    label_col = _pick_column(path, columns, label_column, LABEL_COLUMNS, "label", "--label-column", require_labels,
                             exclude=text_col)
    table = TextTable(str(path), columns, text_col, label_col)
    for line, row in rows:
        text = as_text(row.get(text_col))
        label = as_text(row.get(label_col)) if label_col else None
        reason = None
        if text is None or not text.strip():
            reason = f"empty text in column '{text_col}'"
        elif label_col and (label is None or not label.strip()):
            reason = f"missing label in column '{label_col}'"
        if reason:
            if strict:
                raise DataError(f"{path}:{line}: {reason} (without --strict such rows are skipped)")
            table.skipped.append({"line": line, "reason": reason})
            continue
        table.texts.append(text)
        table.lines.append(line)
        if label_col:
            table.labels.append(label.strip())
    if not table.texts:
        raise DataError(f"{path}: no usable rows ({len(table.skipped)} skipped: empty text or missing label)")
    return table


def sort_classes(labels: Sequence[str]) -> list[str]:
    names = set(labels)
    try:
        return sorted(names, key=lambda s: (float(s), s))
    except ValueError:
        return sorted(names)




def texts_table(texts: str | Sequence[Any], labels: Sequence[Any] | None = None, strict: bool = False) -> TextTable:
    """Texts given in memory (with labels, or without for prediction) as a table; item ``i`` is "line" ``i``."""
    texts = [texts] if isinstance(texts, str) else list(texts)
    if labels is None:
        table = TextTable("<texts>", ["text"], "text", None)
        table.texts, table.lines = [str(t) for t in texts], list(range(1, len(texts) + 1))
        return table
    labels = list(labels)
    if len(labels) != len(texts):
        raise DataError(f"got {len(texts)} texts but {len(labels)} labels")
    table = TextTable("<texts>", ["text", "label"], "text", "label")
    for i, (text, label) in enumerate(zip(texts, labels), 1):
        label = as_text(label)
        if not isinstance(text, str) or not text.strip() or label is None or not label.strip():
            reason = "empty text" if not isinstance(text, str) or not text.strip() else "missing label"
            if strict:
                raise DataError(f"item {i}: {reason}")
            table.skipped.append({"line": i, "reason": reason})
            continue
        table.texts.append(text)
        table.labels.append(label.strip())
        table.lines.append(i)
    if not table.texts:
        raise DataError("no usable texts (all empty or unlabelled)")
    return table
