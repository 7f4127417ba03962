"""Near copies of images, verified on their pixels.

Backbone features find the candidates (each image's nearest others), but pooled features are no copy detector:
two photos of the same kind of scene are as close as a photo and its resized copy (CIFAR-10's 32 px images:
recall 0.43 with 353 distinct pairs at the feature threshold that kept hymenoptera clean). A copy, though, keeps
its pixels: small grey versions of the two images correlate almost perfectly once the crop is undone. So each
candidate pair is compared as normalised cross-correlation of SIDE x SIDE grey crops, the larger image cropped at
a few scales and offsets (the crops a copy may have had) against the whole of the other, both ways round.
At 12 px, glyph-like sets look alike: 3,000 MNIST digits gave 2,241 pairs (distinct writers' strokes merge).
"""

from __future__ import annotations

import itertools
from typing import Callable

import numpy as np
from threadpoolctl import threadpool_limits

from transferkit.audit.duplicates import NO_PAIRS, DuplicatePair, scan

THUMB = 32  # px: the grey thumbnail kept per image (the image checks decode it anyway)
SIDE = 12  # px: the two images are compared at this size (a 10% crop is then about one pixel)
# crops undone: kept side 100%, 95%, 90% of the image, each at the corners, edge midpoints and centre
SCALES = (1.0, 0.95, 0.9)
# Correlation (pixels and 3 x 3 detail, averaged) at which a pair is a copy. CIFAR-10's 20,000 images with 100
# copies planted (resized 0.5-2x, cropped up to 10%, JPEG 60-95): every copy found scored 0.916 or more; of the
# 242-248 other pairs above 0.9 (3 seeds) all but 3 were one photo by a measure this check does not use (colour-
# blind SSIM at 32 px, bench/copy_truth.py) or by eye: CIFAR's own copies (ciFAIR), often recoloured; the 3 were
# distinct small planes on plain sky and a ship at sea, under 0.92. Detail keeps such scenes apart: on pixels
# alone they reached 0.95.
COPY_CORRELATION = 0.9
LAYOUT = 8  # px: the thumbnail side candidates are looked up at
CANDIDATES = 2  # nearest others per image, by features and by layout: 98 of CIFAR-10's 100 copies were within 2
# A copy's layout correlates with its original's at 0.62 or more (CIFAR-10's 100 copies); 4 of 5 candidate pairs
# fall below 0.5 and need no verification
LAYOUT_FLOOR = 0.5
CHUNK = 2048  # pairs compared at once: 2 x 2048 x 19 crops x 288 float32, about 90 MB
# Every image's crops are made once when they fit in this (CIFAR-10's 20,000: 438 MB); past it, each chunk of pairs
# makes its own images' crops, about 4 times over (CIFAR-10's 42,000 candidate pairs: 4.4 s of CPU against 3.3 s)
BANK_BYTES = 512 * 2 ** 20


def area_weights(start: float, extent: float) -> np.ndarray:
    """[SIDE, THUMB] weights that average the part [start, start + extent) of a unit-length THUMB px line into
    SIDE cells (each cell the mean of the pixels it overlaps, by overlap): resampling without aliasing."""
    edges = start + extent * np.arange(SIDE + 1) / SIDE
    pixels = np.arange(THUMB + 1) / THUMB
    overlap = (np.minimum(edges[1:, None], pixels[None, 1:]) - np.maximum(edges[:-1, None], pixels[None, :-1]))
    overlap = np.clip(overlap, 0.0, None)
    return (overlap / overlap.sum(axis=1, keepdims=True)).astype(np.float32)


def alignments() -> tuple[np.ndarray, np.ndarray]:
    """(rows [A, SIDE, THUMB], columns [A, SIDE, THUMB]) weights of every crop tried; the whole image first."""
    rows, columns = [], []
    for scale in SCALES:
        offsets = sorted({0.0, (1.0 - scale) / 2, 1.0 - scale})
        for top, left in itertools.product(offsets, offsets):
            rows.append(area_weights(top, scale))
            columns.append(area_weights(left, scale))
    return np.stack(rows), np.stack(columns)


ROWS, COLUMNS = alignments()


def crops(thumbnails: np.ndarray) -> np.ndarray:
    """[m, A, 2 * SIDE * SIDE]: every crop of each [THUMB, THUMB] thumbnail, its pixels and its 3 x 3 detail each
    centred and of unit length, scaled by 1/sqrt(2) (so a dot product is their mean correlation). Written in place:
    the passes over these arrays, not the products, were most of the copy check's time."""
    m, n_crops, pixels = len(thumbnails), len(ROWS), SIDE * SIDE
    grey = thumbnails.astype(np.float32)
    # columns first for every crop in one product, then each crop's rows
    across = (grey.reshape(m * THUMB, THUMB) @ COLUMNS.reshape(-1, THUMB).T).reshape(m, THUMB, n_crops, SIDE)
    out = np.empty((m, n_crops, 2, SIDE, SIDE), dtype=np.float32)
    for a, rows in enumerate(ROWS):
        out[:, a, 0] = np.matmul(rows, across[:, :, a, :])
    # detail: each pixel minus its 3 x 3 mean (edges, not light)
    np.subtract(out[:, :, 0], np.matmul(np.matmul(BLUR, out[:, :, 0]), BLUR.T), out=out[:, :, 1])
    flat = out.reshape(m, n_crops, 2, pixels)
    flat -= flat.mean(axis=-1, keepdims=True)
    # a flat crop (norm under SIDE) stays near zero: it matches none
    norm = np.sqrt(np.einsum("...d,...d->...", flat, flat))
    flat /= (np.maximum(norm, np.float32(SIDE)) * np.float32(np.sqrt(2.0)))[..., None]
    return flat.reshape(m, n_crops, 2 * pixels)


def blur() -> np.ndarray:
    """[SIDE, SIDE]: the mean of each pixel and its two neighbours along a line (the edge pixel repeated);
    ``B @ crop @ B.T`` is the 3 x 3 mean around each pixel."""
    weights = np.zeros((SIDE, SIDE + 2), dtype=np.float32)
    for i in range(SIDE):
        weights[i, i:i + 3] = 1.0 / 3.0
    fold = np.zeros((SIDE + 2, SIDE), dtype=np.float32)  # padded index -> pixel, edges repeated
    fold[np.arange(SIDE + 2), np.clip(np.arange(SIDE + 2) - 1, 0, SIDE - 1)] = 1.0
    return weights @ fold


BLUR = blur()


def copy_correlation(thumbnails: np.ndarray, first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """For each pair (first[p], second[p]) of rows of ``thumbnails`` [n, THUMB, THUMB]: the highest correlation
    of one image's crops with the other whole image, either way round (either may be the copy)."""
    scores = np.zeros(len(first), dtype=np.float32)
    used = np.unique(np.concatenate([first, second]))
    with threadpool_limits(2, user_api="blas"):
        if len(used) * len(ROWS) * 2 * SIDE * SIDE * 4 <= BANK_BYTES:  # every image's crops once
            bank = np.concatenate([crops(thumbnails[used[s:s + CHUNK]]) for s in range(0, len(used), CHUNK)])
            for start in range(0, len(first), CHUNK):
                a, b = first[start:start + CHUNK], second[start:start + CHUNK]
                scores[start:start + len(a)] = either_way(bank, np.searchsorted(used, a), np.searchsorted(used, b))
            return scores
        for start in range(0, len(first), CHUNK):  # a chunk's images' crops at a time
            a, b = first[start:start + CHUNK], second[start:start + CHUNK]
            chunk, local = np.unique(np.concatenate([a, b]), return_inverse=True)
            scores[start:start + len(a)] = either_way(crops(thumbnails[chunk]), local[:len(a)], local[len(a):])
    return scores


def either_way(bank: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """[p] the best correlation of a crop of bank[a[p]] with the whole of bank[b[p]], or the other way round."""
    one_way = np.einsum("pad,pd->pa", bank[a], bank[b, 0]).max(axis=1)
    other_way = np.einsum("pad,pd->pa", bank[b], bank[a, 0]).max(axis=1)
    return np.maximum(one_way, other_way)


def layout(thumbnails: np.ndarray) -> np.ndarray:
    """[n, LAYOUT^2]: each thumbnail averaged down to LAYOUT x LAYOUT, centred, of unit length: what a copy keeps
    however it was resized or recompressed (a 10% crop moves it under a pixel)."""
    step = THUMB // LAYOUT
    small = thumbnails.astype(np.float32).reshape(len(thumbnails), LAYOUT, step, LAYOUT, step).mean(axis=(2, 4))
    small = small.reshape(len(thumbnails), LAYOUT * LAYOUT)
    small -= small.mean(axis=1, keepdims=True)
    return small / np.maximum(np.linalg.norm(small, axis=1, keepdims=True), np.float32(LAYOUT))


def candidate_pairs(thumbnails: np.ndarray, feature_neighbours: np.ndarray) -> np.ndarray:
    """[p, 2] distinct pairs (i < j) to verify: each image with its CANDIDATES nearest others by backbone features
    and by layout, when their layouts correlate at least LAYOUT_FLOOR. Features miss copies shrunk to half a
    small image (their blur moves them: 6 of 100 CIFAR copies sat outside the 10 nearest), layouts miss copies
    cropped from a busy scene; each is cheap."""
    shapes = layout(thumbnails)
    by_layout = scan(shapes, CANDIDATES, threshold=NO_PAIRS, centre=False).index
    others = np.concatenate([feature_neighbours[:, :CANDIDATES], by_layout], axis=1)  # fewer in a tiny set
    first, second = np.repeat(np.arange(len(thumbnails)), others.shape[1]), others.ravel()
    pairs = np.unique(np.sort(np.stack([first, second], axis=1), axis=1), axis=0)
    pairs = pairs[pairs[:, 0] != pairs[:, 1]]
    return pairs[np.einsum("pd,pd->p", shapes[pairs[:, 0]], shapes[pairs[:, 1]]) >= LAYOUT_FLOOR]


def near_copies(thumbnails: np.ndarray, feature_neighbours: np.ndarray,
                skip: Callable[[int, int], bool]) -> list[DuplicatePair]:
    """The candidate pairs whose pixels correlate as a copy's do, most alike first (``skip(i, j)``: pairs already
    known, exact copies); ``feature_neighbours`` [n, k] are each image's nearest others by features (itself
    where it has none)."""
    pairs = candidate_pairs(thumbnails, feature_neighbours)
    pairs = pairs[[not skip(i, j) for i, j in pairs.tolist()]] if len(pairs) else pairs
    scores = copy_correlation(thumbnails, pairs[:, 0], pairs[:, 1]) if len(pairs) else np.zeros(0)
    found = [DuplicatePair(int(i), int(j), round(float(score), 6), False)
             for (i, j), score in zip(pairs.tolist(), scores) if score >= COPY_CORRELATION]
    return sorted(found, key=lambda pair: -pair.similarity)
