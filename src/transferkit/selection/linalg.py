"""The singular values and vectors the scores need, through the eigenproblem of the smaller Gram matrix.

For an n x d feature matrix, ``eigh`` of ``X X^T`` (n <= d) or ``X^T X`` (n > d) gives the squared singular values
and one side's vectors; a product gives the other side's. On 1,600 x 3,072 features (two text encoder layers'
worth) that took 0.94 s against 2.68 s for LAPACK's SVD on one core. Squaring the matrix squares its condition
number, so directions whose squared singular value is below :data:`RANK_TOLERANCE` of the largest are dropped:
they are at the level of rounding noise there, and every score here weighs a direction by that value.
"""

from __future__ import annotations

import numpy as np

RANK_TOLERANCE = 1e-10  # squared singular values below this share of the largest count as zero


def thin_svd(x: np.ndarray, left: bool) -> tuple[np.ndarray, np.ndarray]:
    """(vectors, squared singular values [k]) of ``x`` [n, d] over the k directions it spans: the left singular
    vectors [n, k] when ``left``, else the right ones [d, k]."""
    x = np.asarray(x, dtype=np.float64)
    wide = x.shape[0] <= x.shape[1]
    squared, vectors = np.linalg.eigh(x @ x.T if wide else x.T @ x)
    keep = squared > RANK_TOLERANCE * max(float(squared.max(initial=0.0)), 0.0)
    squared, vectors = squared[keep][::-1], vectors[:, keep][:, ::-1]  # largest first
    if wide == left:  # eigh already gave the side asked for
        return vectors, squared
    other = (x.T @ vectors) if wide else (x @ vectors)
    return other / np.sqrt(squared), squared
