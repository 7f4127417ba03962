"""What a report shows of an image run: its misclassified images as one grid of thumbnails."""

from __future__ import annotations

import html
from pathlib import Path

import numpy as np

from transferkit.modalities.base import Misclassified
from transferkit.modalities.image.images import load_rgb

THUMBNAIL = 112  # px, the longer side of a misclassified image in the grid


def image_errors(errors: list[Misclassified]) -> str:
    from transferkit.report import figures  # reports only: matplotlib

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
    uri = figures.data_uri(figures.image_grid(thumbs, captions))
    return f'<img class="figure" alt="{html.escape("misclassified images", quote=True)}" src="{uri}">'
