"""Ground truth for "is this pair one photo?", independent of the audit's own copy check (bench/audit.py).

The audit verifies candidate pairs by the normalised cross-correlation of 12 px grey crops (pixels and 3 x 3
detail, transferkit/audit/copies.py). This measure shares none of that: colour SSIM (Wang et al. 2004, Gaussian
window, sigma 1.5) at CIFAR's own 32 px, the best over a finer grid of crops (kept side 100% to 85% in steps of 3%,
offsets in fifths of the margin), either image taken as the copy, each crop resampled by PIL's bicubic filter.
Local means, contrasts and structure in three colour channels at full resolution: two photos of a plane on blue
sky share a grey layout, not 1,024 colour pixels' worth of texture.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Sequence

import numpy as np

SIDE = 32
SCALES = (1.0, 0.97, 0.94, 0.91, 0.88, 0.85)
STEPS = 5  # offsets per axis: 0, 1/4, ..., 1 of the margin
C1, C2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2


def rgb(path: str) -> "object":
    from PIL import Image

    with Image.open(path) as image:
        return image.convert("RGB")


def views(image: object, whole_only: bool = False) -> np.ndarray:
    """[v, SIDE, SIDE, 3] float32: the whole image resampled to SIDE, then every crop of the grid."""
    from PIL import Image

    w, h = image.size  # type: ignore[attr-defined]
    boxes = [(0.0, 0.0, w, h)]
    if not whole_only:
        for scale in SCALES[1:]:
            offsets = np.linspace(0.0, 1.0 - scale, STEPS)
            for top, left in itertools.product(offsets, offsets):
                boxes.append((left * w, top * h, (left + scale) * w, (top + scale) * h))
    grey = image.convert("L")  # type: ignore[attr-defined]
    return np.stack([ranked(np.asarray(grey.resize((SIDE, SIDE), Image.BICUBIC, box=box), dtype=np.float32))
                     for box in boxes])[..., None]


def ranked(pixels: np.ndarray) -> np.ndarray:
    """Each pixel's rank among the view's pixels, on 0-255: CIFAR's duplicates are often recoloured (a yellow
    truck turned green, a sky turned pink), which moves every grey level but keeps their order."""
    order = pixels.ravel().argsort(kind="stable")
    out = np.empty(pixels.size, dtype=np.float32)
    out[order] = np.arange(pixels.size, dtype=np.float32) * (255.0 / (pixels.size - 1))
    return out.reshape(pixels.shape)


def blur(x: np.ndarray) -> np.ndarray:
    from scipy.ndimage import gaussian_filter

    return gaussian_filter(x, sigma=(0, 1.5, 1.5, 0), truncate=3.5, mode="reflect")


def ssim(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Mean colour SSIM of each a[i] against b[i] ([m, SIDE, SIDE, 3], b broadcast when it has one row)."""
    b = np.broadcast_to(b, a.shape)
    mu_a, mu_b = blur(a), blur(b)
    var_a, var_b = blur(a * a) - mu_a ** 2, blur(b * b) - mu_b ** 2
    cov = blur(a * b) - mu_a * mu_b
    score = ((2 * mu_a * mu_b + C1) * (2 * cov + C2)) / ((mu_a ** 2 + mu_b ** 2 + C1) * (var_a + var_b + C2))
    return score.reshape(len(a), -1).mean(axis=1)


def pair_ssim(first: str, second: str) -> float:
    """The best colour SSIM of a crop of one image against the whole other one, either way round."""
    one, other = rgb(first), rgb(second)
    best = ssim(views(one), views(other, whole_only=True)).max()
    return float(max(best, ssim(views(other), views(one, whole_only=True)).max()))


def pairs_ssim(pairs: Sequence[tuple[str, str]]) -> np.ndarray:
    return np.asarray([pair_ssim(a, b) for a, b in pairs], dtype=np.float64)


def montage(pairs: Sequence[tuple[str, str]], captions: Sequence[str], target: Path, scale: int = 3,
            columns: int = 4) -> Path:
    """A PNG of the pairs side by side (each image at SIDE * scale px), a caption under each pair: what a person
    checks the measure against."""
    from PIL import Image, ImageDraw

    cell_w, cell_h = 2 * SIDE * scale + 16, SIDE * scale + 14
    rows = (len(pairs) + columns - 1) // columns
    sheet = Image.new("RGB", (columns * cell_w, rows * cell_h), "white")
    draw = ImageDraw.Draw(sheet)
    for k, ((a, b), caption) in enumerate(zip(pairs, captions)):
        x, y = (k % columns) * cell_w, (k // columns) * cell_h
        for j, path in enumerate((a, b)):
            sheet.paste(rgb(path).resize((SIDE * scale, SIDE * scale), Image.NEAREST),  # type: ignore
                        (x + j * (SIDE * scale + 2), y))
        draw.text((x, y + SIDE * scale), caption, fill="black")
    target.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(target)
    return target


# Calibrated on CIFAR-10 (seed 0 of bench/audit.py): the 103 pairs of a planted copy scored 0.58 or more (1 under
# 0.6); 300 random same-class pairs at most 0.35; each of 300 images with its most alike same-class image by 8 x 8
# layout, left unreported by the audit: the 3 above 0.5 were, by eye, one photo (the audit had missed them), the
# distinct ones stayed under 0.55. Under THRESHOLD a pair is one photo only if a person said so (INSPECTED): flat
# skies and white grounds rank noise, and recoloured copies lose some order.
THRESHOLD = 0.6
INSPECTED = Path(__file__).resolve().parent / "audit_inspected.json"


def inspected() -> dict[frozenset[str], str]:
    """{pair of names: "same" | "distinct"}: the verdicts of a person who looked at the montages."""
    import json

    if not INSPECTED.exists():
        return {}
    verdicts = json.loads(INSPECTED.read_text())
    return {frozenset(pair): verdict for verdict in ("same", "distinct") for pair in verdicts[verdict]}


def judge(pairs: Sequence[tuple[str, str]], names: Sequence[tuple[str, str]]) -> tuple[np.ndarray, list[str]]:
    """(scores, verdicts) of reported pairs: "measure" (one photo by the score), "same" / "distinct" (by eye,
    under THRESHOLD), or "not inspected" (under THRESHOLD, nobody looked: counted as false)."""
    scores, eye = pairs_ssim(pairs), inspected()
    return scores, ["measure" if score >= THRESHOLD else eye.get(frozenset(name), "not inspected")
                    for score, name in zip(scores, names)]
