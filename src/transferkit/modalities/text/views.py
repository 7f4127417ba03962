"""What a report shows of a text run: its misclassified texts as rows, with their line in the file."""

from __future__ import annotations

import html
from typing import Any

from transferkit.modalities.base import Embed, Misclassified


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def text_errors(errors: list[Misclassified], embed: Embed) -> str:
    rows = []
    for error in errors:
        line = error.line if error.line is not None else ""
        rows.append(f"<tr><td class=\"num\">{esc(line)}</td><td class=\"text\">{esc(error.item[:400])}</td>"
                    f"<td>{esc(error.true)}</td><td>{esc(error.predicted)}</td>"
                    f"<td class=\"num\">{error.confidence:.2f}</td></tr>")
    return ("<table class=\"errors\"><tr><th>line</th><th>text</th><th>true</th><th>predicted</th>"
            "<th>confidence</th></tr>" + "".join(rows) + "</table>")
