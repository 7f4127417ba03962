"""What a report shows of an image run: its misclassified images as one grid of thumbnails."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

from transferkit.modalities.base import Embed, Misclassified
from transferkit.modalities.image.images import load_rgb

if TYPE_CHECKING:
    from matplotlib.figure import Figure

THUMBNAIL = 112  # px, the longer side of a misclassified image in the grid
GRID_WIDTH = 7.2  # inches at 100 dpi, as the report's figures: the grid fits its 760-px column


def image_grid(images: Sequence[np.ndarray], captions: Sequence[str], columns: int = 6) -> "Figure":
    from matplotlib.figure import Figure  # reports only

    rows = max(1, -(-len(images) // columns))
    figure = Figure(figsize=(GRID_WIDTH, 1.45 * rows + 0.2))
    axes = np.atleast_1d(figure.subplots(rows, columns, squeeze=False).ravel())
    for axis, image, caption in zip(axes, images, captions):
        axis.imshow(image)
        axis.set_title(caption, fontsize=7)
    for axis in axes:
        axis.axis("off")
    return figure


def image_errors(errors: list[Misclassified], embed: Embed) -> str:
    thumbs, captions = [], []
    for error in errors:
        try:
            image = load_rgb(error.item, draft_size=THUMBNAIL)
        except (OSError, ValueError):  # gone or changed since it was predicted: left out of the grid
            continue
        image.thumbnail((THUMBNAIL, THUMBNAIL))
        thumbs.append(np.asarray(image))
        captions.append(f"{Path(error.item).name[:22]}\ntrue {str(error.true)[:14]}\n"
                        f"pred {str(error.predicted)[:14]} {error.confidence:.2f}")
    if not thumbs:
        return '<p class="note">The misclassified images can no longer be read.</p>'
    return embed(image_grid(thumbs, captions), "misclassified images")
