"""``transferkit rank``: score candidate backbones on labelled data before training (LogME, H-score, NCE, LEEP,
cross-validated kNN and probe accuracy, each with its seconds) and recommend a backbone and a strategy. The
data and feature options are ``transferkit train``'s (generated from RunConfig)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from transferkit.bounds import Bound, option_check
from transferkit.cli.output import cell, console, print_json
from transferkit.cli.options import with_config_options
from transferkit.config import IMAGE_SIZE
from transferkit.errors import TransferkitError, shown
from transferkit.runs.lock import is_other_rank

# the RunConfig fields that decide which items are read and how their features are computed
RANK_FIELDS = ("seed", "strict", "crop_pct", "engine", "batch_size", "workers", "cache", "cache_dir", "cache_dtype",
               "text_column", "label_column", "max_length", "pooling", "feature_layers")


FOLDS = Bound(int, 2, 100, why="cross-validation needs at least 2 folds")


def parse_names(text: str) -> list[str]:
    names = [part.strip() for part in text.split(",")]
    if not text.strip() or not all(names):
        raise TransferkitError(f"--backbones '{text}': expected comma-separated backbone names, e.g. "
                               "efficientnet_lite0,efficientnet_lite1")
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise TransferkitError(f"--backbones names '{repeated[0]}' more than once; name each backbone once")
    return names


def parse_sizes(text: str) -> list[int]:
    try:  # each size as the config's image_size field bounds it
        sizes = [IMAGE_SIZE.read("size", part) for part in text.split(",")]
    except TransferkitError:
        raise TransferkitError(f"--image-sizes {shown(text)}: expected comma-separated integers >= {IMAGE_SIZE.low} "
                               f"and <= {IMAGE_SIZE.high}, e.g. 224,160") from None
    if len(set(sizes)) < len(sizes):
        raise TransferkitError(f"--image-sizes '{text}': a size is named twice; name each once")
    return sizes


@with_config_options(RANK_FIELDS)
def rank(
    data: Annotated[Path, typer.Argument(help="Labelled data: an image folder (train/<class>/* or <class>/*; "
                                              "train and val are scored, test is left alone) or a .csv/.tsv/.jsonl",
                                         show_default=False)],
    backbones: Annotated[Optional[str], typer.Option(
        help="Comma-separated backbones to rank (default: the packaged ones for the data: "
             "efficientnet_lite0,efficientnet_lite1,efficientnet_lite2, or all-MiniLM-L6-v2)",
        show_default=False)] = None,
    image_sizes: Annotated[Optional[str], typer.Option(help="Comma-separated input sizes to rank each image "
                                                            "backbone at (default: each backbone's own)",
                                                       show_default=False)] = None,
    folds: Annotated[int, typer.Option(help="Cross-validation folds for the kNN and probe accuracies (fewer when "
                                            "the smallest class has fewer items)",
                                       callback=option_check(FOLDS, "--folds"))] = 5,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object: rows of scores with their seconds, "
                                                         "the recommendation")] = False,
    **settings: Any,
) -> None:
    """Rank backbones on DATA without training them, and recommend one with a strategy to try first."""
    names = parse_names(backbones) if backbones is not None else None
    sizes = parse_sizes(image_sizes) if image_sizes is not None else None
    chosen = {name: value for name, value in settings.items() if value is not None}
    if chosen.get("cache", True):
        from transferkit.features.cache import check_cache_writable  # lazy: numpy; --help must not pay for it

        check_cache_writable(chosen.get("cache_dir"), " or --no-cache")
    from transferkit.selection.rank import rank as rank_backbones  # lazy: numpy, scipy

    result = rank_backbones(data, names, sizes, folds, **chosen)
    if is_other_rank():  # a launch's ranks shared the extraction; rank 0 prints
        return
    if as_json:
        print_json(result)
        return
    print_ranking(result)


def print_ranking(result: dict[str, Any]) -> None:
    from rich import box
    from rich.table import Table

    from transferkit.selection.rank import SCORES  # lazy: numpy

    table = Table(title=f"{result['data']}: {result['items']} items ({result['items_from']}), {result['classes']} "
                        f"classes, {result['folds']}-fold cross-validation", box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, padding=(0, 1, 0, 0),
                  caption="higher is better for every score; seconds below each; * recommended")
    table.add_column("backbone", min_width=18, no_wrap=True)
    table.add_column("feat.", justify="right", min_width=6)
    for _, title, decimals in SCORES:
        table.add_column(title, justify="right", min_width=decimals + 3)
    for row in result["rows"]:
        features = row["features"]
        below = (f"@{row['image_size']} " if row["image_size"] else "") + ("*" if row["recommended"] else "")
        table.add_row(cell(f"{row['backbone']}\n{below}"), f"{features['seconds']:.1f} s\n" + ("cached" if not features["extracted"]
                                                                              else f"+{features['extracted']}"),
                      *(score_cell(row["scores"][name], decimals) for name, _, decimals in SCORES))
    screen = console()
    screen.print(table)
    choice = result["recommendation"]
    size = f" --image-size {choice['image_size']}" if choice["image_size"] else ""
    screen.print(cell(f"* recommended: {choice['reason']}"))
    screen.print(cell(f"  try: transferkit train {result['data']} --backbone {choice['name']}{size} "
                      f"--strategy {choice['strategy']} --out runs/NAME"))
    screen.print(f"ranked in {result['seconds']:.1f} s")


def score_cell(score: dict[str, float] | None, decimals: int) -> str:
    """The value over its seconds; "-" for a score that does not apply (NCE and LEEP without a source head)."""
    if score is None:
        return "-"
    return f"{score['value']:.{decimals}f}\n{score['seconds']:.1f} s"
