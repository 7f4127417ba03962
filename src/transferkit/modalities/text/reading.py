"""What the text modality says about the tables it reads, and which predict inputs are files or texts."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

from transferkit.errors import DataError
from transferkit.modalities.text.table import TEXT_SUFFIXES, TextTable, describe_skipped, read_text_table
from transferkit.progress import log

# Suffixes that make a predict input a file name, not a text: the tables we read and files people pass by
# mistake (a .txt is not split into texts: one per line or one per file is a guess we do not make).
FILE_SUFFIXES = frozenset({*TEXT_SUFFIXES, ".txt", ".json", ".parquet", ".xlsx", ".xls"})
TEXT_HINT = "to classify this as text, pass --text (text=True from Python)"


def warn_table(table: TextTable) -> None:
    """One warning for the rows left out, one for the label spellings merged."""
    if table.skipped:
        log(f"warning: skipped {describe_skipped(table)} (use --strict to stop instead)")
    if table.merged:
        log(f"warning: merged labels of {table.path} that differ only in case or surrounding spaces: "
            f"{'; '.join(table.merged[:3])}{' ...' if len(table.merged) > 3 else ''}")


def looks_like_path(item: str) -> bool:
    """A predict input that names a file or folder rather than being a text: it exists, has a file suffix,
    or has a path separator and no spaces (``data/reviews``, ``./x``; not "A/B tests are fun")."""
    if "\n" in item or not item.strip():
        return False
    try:
        if Path(item).expanduser().exists():
            return True
    except (OSError, ValueError):  # too long for a file name, or a NUL byte: a text
        return False
    if Path(item).suffix.lower() in FILE_SUFFIXES:
        return True
    return item.startswith(("/", "./", "../", "~/")) or (os.sep in item and not any(c.isspace() for c in item))


def text_records(inputs: str | Path | Sequence[str | Path], text_column: str | None, strict: bool,
                 text: bool = False) -> list[dict[str, Any]]:
    """One record per text: each row of a .csv / .tsv / .jsonl input ({"input", "file", "line"}), each other
    input as one text ({"input"}). An input that looks like a path is read or refused in one line, never
    classified as words; ``text=True`` takes every input as a text."""
    records: list[dict[str, Any]] = []
    for item in [inputs] if isinstance(inputs, (str, Path)) else inputs:
        if text or not (isinstance(item, Path) or looks_like_path(str(item))):
            records.append({"input": str(item)})
            continue
        path = Path(item).expanduser()
        if path.is_dir():
            raise DataError(f"{item}: is a folder, not a table; pass .csv, .tsv or .jsonl files; {TEXT_HINT}")
        if not path.is_file():
            what = "not a regular file (a device, pipe or socket)" if path.exists() else "no such file"
            raise DataError(f"{item}: {what}; {TEXT_HINT}")
        if path.suffix.lower() not in TEXT_SUFFIXES:
            raise DataError(f"{item}: '{path.suffix}' files are not read; pass a .csv, .tsv or .jsonl file with a "
                            f"text column; {TEXT_HINT}")
        table = read_text_table(path, text_column, None, require_labels=False, strict=strict)
        warn_table(table)
        records.extend({"input": row, "file": str(item), "line": line} for line, row in zip(table.lines, table.texts))
    return records
