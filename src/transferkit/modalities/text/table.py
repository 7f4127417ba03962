"""Texts and labels from CSV, TSV and JSONL files, with named or guessed columns."""

from __future__ import annotations

import csv
import io
import json
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from transferkit.errors import DataError, not_found

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
    merged: list[str] = field(default_factory=list)  # label spellings merged (see merge_spellings)

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


def _records(path: Path) -> tuple[list[str], list[tuple[int, dict[str, Any]]], list[tuple[int, str]]]:
    """Column names, (line, row) pairs, and (line, reason) of the rows that cannot be read as rows."""
    text = _decode(path)
    if path.suffix.lower() == ".jsonl":
        return _json_records(path, text)
    delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    try:
        header = next(reader)
    except StopIteration:
        raise DataError(f"{path}: the file is empty; expected a header row naming the columns") from None
    except csv.Error as exc:
        raise DataError(f"{path}:1: cannot parse the header ({exc})") from None
    header = [h.strip() for h in header]
    rows, problems = [], []
    previous = reader.line_num
    while True:
        try:
            values = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            raise DataError(f"{path}:{previous + 1}: cannot parse this row ({exc})") from None
        line, last, previous = previous + 1, reader.line_num, reader.line_num
        if not values or (len(values) == 1 and not values[0].strip()):
            continue
        problem = _row_problem(values, len(header), line, last, delimiter)
        if problem:
            problems.append((line, problem))
            continue
        rows.append((line, {name: (values[i] if i < len(values) else None) for i, name in enumerate(header)}))
    return header, rows, problems


def _row_problem(values: list[str], expected: int, line: int, last: int, delimiter: str) -> str | None:
    """Why a CSV/TSV row cannot be trusted: an unclosed quote that swallowed the rows after it, or a field
    count that differs from the header's (an unquoted delimiter in a text shifts the label column)."""
    extra = values[expected:]
    count_differs = len(values) < expected or any(v.strip() for v in extra)  # trailing empty fields are harmless
    if last > line:  # a quoted field spans lines: fine in itself, unless it holds what look like rows
        row_end = re.compile(rf'{re.escape(delimiter)}[^\s{re.escape(delimiter)}"]{{1,40}}\r?\n')  # ",pos\n"
        if count_differs or any(row_end.search(v) for v in values):
            return (f"a quote opened on line {line} is not closed until line {last}, so the rows between are "
                    "read as one text; close the quote, or double a quote inside a text (\"\")")
    if count_differs:
        fields = f"{len(values)} field{'' if len(values) == 1 else 's'}"
        what = "comma" if delimiter == "," else "tab"
        return f"{fields} but the header has {expected} (an unquoted {what} in a text?); quote the text"
    return None


def _json_records(path: Path, text: str) -> tuple[list[str], list[tuple[int, dict[str, Any]]], list[tuple[int, str]]]:
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
    return list(columns), rows, []


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
    """Read texts (and labels) from CSV / TSV / JSONL. Rows with an empty text or a missing label, and CSV rows
    that cannot be trusted (a field count other than the header's, an unclosed quote) are skipped and reported
    (``strict``: the first one is an error). Labels are merged across case and surrounding spaces."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: {not_found(path, 'file')}; pass a .csv, .tsv or .jsonl file")
    if not is_text_data(path):
        raise DataError(f"{path}: unsupported file type '{path.suffix}'; use .csv, .tsv or .jsonl")
    columns, rows, problems = _records(path)
    text_col = _pick_column(path, columns, text_column, TEXT_COLUMNS, "text", "--text-column", True)
    label_col = None  # prediction reads no labels: a row with an empty label is still a text to classify
    if require_labels:
        label_col = _pick_column(path, columns, label_column, LABEL_COLUMNS, "label", "--label-column", True,
                                 exclude=text_col)
    for name in (text_col, label_col):
        if name is not None and columns.count(name) > 1:  # which of them holds the texts or labels is a guess
            raise DataError(f"{path}:1: column '{name}' appears more than once in the header; rename or remove "
                            "the duplicate")
    table = TextTable(str(path), columns, text_col, label_col)
    entries = sorted([(line, row.get(text_col), row.get(label_col) if label_col else None, None) for line, row in rows]
                     + [(line, None, None, why) for line, why in problems], key=lambda entry: entry[0])
    raw_labels = fill_table(table, entries, strict, lambda line: f"{path}:{line}")
    if not table.texts:
        first = f"; line {table.skipped[0]['line']}: {table.skipped[0]['reason']}" if table.skipped else ""
        raise DataError(f"{path}: no usable rows ({len(table.skipped)} skipped{first})")
    table.labels, table.merged = merge_spellings(raw_labels)
    return table


def fill_table(table: TextTable, entries: list[tuple[int, Any, Any, str | None]], strict: bool,
               where: Callable[[int], str]) -> list[str]:
    """Keep each ``(line, text, label, problem)`` that has a text (and a label, when the table has a label
    column) and no problem; skip the others with their reason (``--strict``: stop at the first). Returns the
    kept labels as written, for :func:`merge_spellings`."""
    raw_labels = []
    for line, text, label, reason in entries:
        text, label = as_text(text), as_text(label)
        if reason is None and (text is None or not text.strip()):
            reason = f"empty text in column '{table.text_column}'"
        elif reason is None and table.label_column and (label is None or not label.strip()):
            reason = f"missing label in column '{table.label_column}'"
        if reason:
            if strict:
                raise DataError(f"{where(line)}: {reason} (without --strict such rows are skipped)")
            table.skipped.append({"line": line, "reason": reason})
            continue
        table.texts.append(text)
        table.lines.append(line)
        if table.label_column:
            raw_labels.append(label)
    return raw_labels


def merge_spellings(labels: Sequence[str]) -> tuple[list[str], list[str]]:
    """Labels without surrounding spaces, those that differ only in case merged into their most frequent
    spelling (ties: the first in sorted order); and a note per merged group ("'Pos' (3) into 'pos' (40)")."""
    counts = Counter(labels)
    groups: dict[str, Counter] = {}
    for label, n in counts.items():
        groups.setdefault(label.strip().casefold(), Counter())[label] += n
    canonical, notes = {}, []
    for spellings in groups.values():
        stripped: Counter = Counter()
        for label, n in spellings.items():
            stripped[label.strip()] += n
        keep = max(sorted(stripped), key=stripped.__getitem__)
        canonical.update(dict.fromkeys(spellings, keep))
        if len(spellings) > 1:
            merged = ", ".join(f"{label!r} ({n})" for label, n in sorted(spellings.items()) if label != keep)
            notes.append(f"{merged} into {keep!r} ({spellings.get(keep, 0)})")
    return [canonical[label] for label in labels], notes


def describe_skipped(table: TextTable, shown: int = 3) -> str:
    """'<n> row(s) of <file>: line 3 (reason); line 7 (reason) ...' for a warning or an error."""
    lines = "; ".join(f"line {s['line']} ({s['reason']})" for s in table.skipped[:shown])
    return f"{len(table.skipped)} row(s) of {table.path}: {lines}{' ...' if len(table.skipped) > shown else ''}"


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
    entries = [(i, text if isinstance(text, str) else None, label, None)
               for i, (text, label) in enumerate(zip(texts, labels), 1)]
    raw_labels = fill_table(table, entries, strict, lambda line: f"item {line}")
    if not table.texts:
        raise DataError("no usable texts (all empty or unlabelled)")
    table.labels, table.merged = merge_spellings(raw_labels)
    return table
