"""``transferkit audit``: label issues, duplicates and leaks across splits, outliers, balance and sizes of labelled
data, on the features ``train`` caches. The data and feature options are ``train``'s (generated from RunConfig)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from transferkit.audit.kinds import DEFAULT_EXCLUDED, EXCLUSION_KINDS
from transferkit.cli.options import LabelledDataArgument, with_config_options
from transferkit.cli.output import cell, console, print_json
from transferkit.runs.lock import is_other_rank

AUDIT_FIELDS = ("backbone", "weights", "image_size", "val_data", "test_data", "seed", "strict", "crop_pct", "engine",
                "batch_size", "workers", "cache", "cache_dir", "cache_dtype", "text_column", "label_column",
                "max_length", "pooling", "feature_layers")
LISTED = 10  # rows per finding in the terminal (the page and --json have them all)


@with_config_options(AUDIT_FIELDS)
def audit(
    data: LabelledDataArgument,
    out: Annotated[Optional[Path], typer.Option(help="Write the audit as one HTML page (thumbnails or texts of "
                                                     "every finding)", show_default=False)] = None,
    exclusions: Annotated[Optional[Path], typer.Option(help="Write the flagged training and validation items, one a "
                                                            "line, for train --exclude", show_default=False)] = None,
    exclude_kinds: Annotated[Optional[str], typer.Option(
        help=f"Comma-separated kinds the exclusions file names: {', '.join(EXCLUSION_KINDS)} (default: "
             f"{','.join(DEFAULT_EXCLUDED)}, what harms training)", show_default=False)] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object: every finding, counts, seconds")] = False,
    **settings: Any,
) -> None:
    """Find label errors, duplicates and leaks across splits, outliers and imbalance in DATA (never modified)."""
    from transferkit.audit.kinds import check_kinds, excluded
    from transferkit.audit.page import check_page_path, write_page  # lazy: numpy; --help must not pay for it
    from transferkit.audit.run import audit as run_audit
    from transferkit.exclusions import check_exclusions_path, write_exclusions

    if out is not None:
        check_page_path(out)
    if exclusions is not None:
        check_exclusions_path(exclusions)
    # a wrong kind fails before the audit, not after it
    kinds = DEFAULT_EXCLUDED if exclude_kinds is None else \
        check_kinds([kind.strip() for kind in exclude_kinds.split(",") if kind.strip()])
    chosen = {name: value for name, value in settings.items() if value is not None}
    result = run_audit(data, **chosen)
    if is_other_rank():  # a launch's ranks shared the extraction; rank 0 writes and prints
        return
    written = []
    if out is not None:
        written.append(f"page: {write_page(result, out)}")
    if exclusions is not None:
        names = excluded(result, kinds)
        written.append(f"exclusions: {write_exclusions(exclusions, names)} ({len(names)} items: "
                       f"{', '.join(kinds)}; train --exclude {exclusions})")
    if as_json:
        print_json(result)
        return
    show(result, written)


def show(result: dict[str, Any], written: list[str]) -> None:
    screen = console()
    splits = ", ".join(f"{name} {count}" for name, count in result["splits"].items() if count)
    screen.print(cell(f"{result['data']}: {result['items']} items ({splits}), {len(result['classes'])} classes; "
                      f"{result['balance']['advice']}"))
    for title, rows, line in (
            ("label issues", result["label_issues"],
             lambda r: f"{r['item']} ({r['split']}): given {r['given']}, looks like {r['suggested']} "
                       f"({r['quality']:.3f})"),
            ("doubtful labels (left out of training by default)", result["doubtful_labels"],
             lambda r: f"{r['item']} ({r['split']}): given {r['given']}, more likely {r['suggested']} "
                       f"({r['quality']:.3f})"),
            ("duplicate pairs", result["duplicates"],
             lambda r: f"{r['kind']}{' (exact)' if r['exact'] else ''}: {r['items'][0]} ({r['splits'][0]}) ~ "
                       f"{r['items'][1]} ({r['splits'][1]}) {r['similarity']:.3f}"),
            ("outliers", result["outliers"], lambda r: f"{r['item']} ({r['split']}, {r['label']}): unlike its "
                                                       f"{r['scope']} ({r['score']:.3f})"),
            ("item issues", result["item_issues"],
             lambda r: f"{r['item']} ({r['split']}): {r['kind']}, {r['detail']}")):
        screen.print(f"{title}: {len(rows)}")
        for row in rows[:LISTED]:
            screen.print(cell(f"  {line(row)}"))
        if len(rows) > LISTED:
            screen.print(f"  ... {len(rows) - LISTED} more (--out PAGE or --json)")
    for line in written:
        screen.print(cell(line))
    screen.print(f"audited in {result['seconds']['total']:.1f} s")
