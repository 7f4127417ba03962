"""The audit as one self-contained HTML page (the report's style): counts, balance, then each finding with the
items themselves (image thumbnails or the texts), worst first. Opens without a network or any other file."""

from __future__ import annotations

import base64
import datetime
import io
from pathlib import Path
from typing import Any, Callable

from transferkit import __version__
from transferkit.atomic import atomic_write_bytes, check_replaceable
from transferkit.audit.kinds import excluded
from transferkit.errors import arg
from transferkit.report.html import STYLE
from transferkit.report.markup import esc

SHOWN = 60  # rows per section at the most (the JSON has them all)
THUMBNAIL = 96  # px, the longer side
MARK = "<!-- transferkit audit -->"
EXTRA_STYLE = "img.thumb{max-width:96px;max-height:96px;display:block} td.item{max-width:420px;word-break:break-all}"


def thumbnail(path: str) -> str:
    """An <img> with the item as a small JPEG data URI, or the reason it cannot be shown."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            image.draft("RGB", (THUMBNAIL * 2, THUMBNAIL * 2))
            small = image.convert("RGB")
            small.thumbnail((THUMBNAIL, THUMBNAIL))
            buffer = io.BytesIO()
            small.save(buffer, "JPEG", quality=80)
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        return f"<span class=note>cannot show ({esc(str(exc).splitlines()[0][:80])})</span>"
    data = base64.b64encode(buffer.getvalue()).decode()
    return f'<img class=thumb alt="{esc(Path(path).name)}" src="data:image/jpeg;base64,{data}">'


def item_view(result: dict[str, Any]) -> Callable[[str], str]:
    """How an item shows: a text row as its text (the result keeps the flagged ones), any other as a thumbnail."""
    texts = result.get("texts", {})

    def view(item: str) -> str:
        shown = esc(texts[item]) if item in texts else thumbnail(item)
        return f"{shown}<br><span class=note>{esc(item)}</span>"
    return view


def table(headers: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td class=item>{cell}</td>" for cell in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def section(title: str, headers: list[str], records: list[dict[str, Any]],
            row: Callable[[dict[str, Any]], list[str]], none: str) -> str:
    """A finding's heading and table; rows (and their thumbnails) only for the SHOWN records the page holds."""
    total = len(records)
    if not total:
        return f"<h2>{esc(title)}</h2><p class=note>{esc(none)}</p>"
    more = f"<p class=note>{total - SHOWN} more in the JSON (--json)</p>" if total > SHOWN else ""
    return f"<h2>{esc(title)} ({total})</h2>{table(headers, [row(r) for r in records[:SHOWN]])}{more}"


def render(result: dict[str, Any]) -> str:
    view = item_view(result)

    def label_row(i: dict[str, Any]) -> list[str]:
        return [view(i["item"]), esc(i["split"]), esc(i["given"]), esc(i["suggested"]), f"{i['quality']:.3f}"]

    cards = "".join(f"<div class=card><b>{value}</b><span>{esc(name)}</span></div>" for name, value in (
        ("items", result["items"]), ("label issues", len(result["label_issues"])),
        ("doubtful labels", len(result["doubtful_labels"])),
        ("duplicate pairs", len(result["duplicates"])), ("outliers", len(result["outliers"])),
        ("item issues", len(result["item_issues"])), ("to exclude", len(excluded(result)))))
    balance = result["balance"]
    counts = table(["class", "train", "val", "test"], [[esc(name), *(str(row[s]) for s in ("train", "val", "test"))]
                                                      for name, row in balance["per_class"].items()])
    sizes = ", ".join(f"{esc(k.replace('_', ' '))} {esc(v)}" for k, v in result["sizes"].items())
    parts = [
        f"<h1>Audit of {esc(result['data'])}</h1>",
        f"<p class=meta>{result['items']} items, {len(result['classes'])} classes, features of "
        f"{esc(result['backbone'])}; transferkit {__version__}, {datetime.date.today()}; "
        f"{result['seconds']['total']:.1f} s</p><div class=cards>{cards}</div>",
        f"<h2>Balance and sizes</h2>{counts}<p>{esc(balance['advice'])}</p><p class=note>{sizes}</p>",
        section("Label issues", ["item", "split", "given", "looks like", "quality"], result["label_issues"],
                label_row, "No label looks wrong to confident learning."),
        section("Doubtful labels, left out of training by default", ["item", "split", "given", "more likely",
                                                                      "quality"], result["doubtful_labels"],
                label_row, "No other label is in doubt."),
        section("Duplicates and leaks", ["kind", "first", "second", "similarity"], result["duplicates"],
                lambda p: [esc(p["kind"]) + ("" if not p["exact"] else " (exact)"),
                           f"{view(p['items'][0])}{esc(p['splits'][0])}, {esc(p['labels'][0])}",
                           f"{view(p['items'][1])}{esc(p['splits'][1])}, {esc(p['labels'][1])}",
                           f"{p['similarity']:.3f}"], "No two items are copies of each other."),
        section("Outliers", ["item", "split", "label", "unlike", "isolation"], result["outliers"],
                lambda o: [view(o["item"]), esc(o["split"]), esc(o["label"]),
                           f"its {o['scope']}" if o["scope"] == "class" else "the whole set", f"{o['score']:.3f}"],
                "No item stands far from the others."),
        section("Item issues", ["item", "split", "issue"], result["item_issues"],
                lambda c: [view(c["item"]), esc(c["split"]), esc(f"{c['kind']}: {c['detail']}")],
                "No blank, tiny, stretched, empty or unreadable item."),
    ]
    return (f"<!doctype html>\n{MARK}\n<html lang=en><head><meta charset=utf-8><title>transferkit audit</title>"
            f"<style>{STYLE}{EXTRA_STYLE}</style></head><body>{''.join(parts)}</body></html>\n")


def check_page_path(out: str | Path) -> None:
    """An audit page may replace an earlier audit page, never another file."""
    check_replaceable(out, arg("out"), lambda head: MARK.encode() in head[:200], "audit.html")


def write_page(result: dict[str, Any], out: str | Path) -> Path:
    target = Path(out)
    check_page_path(target)
    atomic_write_bytes(target, render(result).encode())
    return target
