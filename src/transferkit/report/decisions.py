"""The report's *decisions* section for a run ``transferkit auto`` saved: what the data settled, the backbones as
ranked, each trial with its validation score, seconds and why it lost or did not run, and the budget used. It
reads metrics.json's ``"auto"`` (untrusted, like every run file): anything of the wrong type shows as "-"."""

from __future__ import annotations

from typing import Any

from transferkit.report.markup import esc, fmt


def rows(items: Any) -> list[dict[str, Any]]:
    return [row for row in items if isinstance(row, dict)] if isinstance(items, list) else []


def sub(row: dict[str, Any], key: str) -> dict[str, Any]:
    value = row.get(key)
    return value if isinstance(value, dict) else {}


def table(head: list[str], body: list[list[str]]) -> str:
    cells = "".join(f"<th>{esc(h)}</th>" for h in head)
    lines = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in body)
    return f"<table><tr>{cells}</tr>{lines}</table>"


def decisions_section(metrics: dict[str, Any]) -> str:
    """The section's HTML, or "" for a run auto did not choose."""
    record = metrics.get("auto")
    if not isinstance(record, dict):
        return ""
    metric = str(record.get("metric", "accuracy"))
    objective = record.get("objective") if isinstance(record.get("objective"), str) else None
    settings = sub(sub(record, "facts"), "settings")
    chooser = f"{objective} (no target label read)" if objective else f"validation {metric}"
    parts = ["<h3>Decisions</h3>",
             f'<p class="note">Chosen by transferkit auto on {esc(chooser)} in '
             f"{fmt(record.get('used_seconds'), '.0f')} s of a {fmt(record.get('budget_seconds'), '.0f')} s budget; "
             "trials never read the test split.</p>"]
    chosen = [[esc(k), esc(v.get("value")), esc(v.get("why"))] for k, v in settings.items() if isinstance(v, dict)]
    if chosen:
        parts.append(table(["setting", "value", "why"], chosen))
    ranking = [[esc(r.get("backbone")), fmt(sub(r, "scores").get("probe_accuracy"), ".3f"),
                fmt(sub(r, "scores").get("logme"), ".3f"), esc(r.get("why"))] for r in rows(record.get("ranking"))]
    if ranking:
        parts.append(table(["backbone", "cv probe acc", "LogME", "ranking"], ranking))
    scores = [f"val {metric}", *([objective] if objective else [])]
    trials = [[esc(r.get("key")), esc(r.get("state")),
               *(fmt(sub(r, "val").get(name.removeprefix("val ")), ".4f") for name in scores),
               fmt(r.get("seconds"), ".0f"), fmt(r.get("estimate_seconds"), ".0f"), esc(r.get("why", r.get("note")))]
              for r in rows(record.get("trials"))]
    if trials:
        parts.append(table(["trial", "state", *scores, "seconds", "estimated", "why"], trials))
    notes = record.get("notes") if isinstance(record.get("notes"), list) else []
    parts += [f'<p class="note">{esc(note)}</p>' for note in notes]
    return '<section class="decisions">' + "\n".join(parts) + "</section>"
