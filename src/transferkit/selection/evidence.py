"""LogME (You et al., "LogME: Practical Assessment of Pre-trained Models for Transfer Learning", ICML 2021; the
fixed-point solver of "Ranking and Tuning Pre-trained Models", arXiv 2110.10545).

Each class's one-hot column ``y`` is modelled as a Bayesian linear regression on the features ``F`` [n, d]:
``w ~ N(0, 1/alpha I)``, ``y | F, w ~ N(F w, 1/beta I)``. The evidence ``log p(y | F, alpha, beta)`` is
maximised over (alpha, beta) by MacKay's fixed point (gamma = sum sigma / (sigma + alpha / beta); alpha =
gamma / |m|^2, beta = (n - gamma) / |y - F m|^2), evaluated in the singular basis of ``F`` so one
decomposition serves every class. LogME is the maximum evidence divided by n, averaged over the classes.

The evidence is the exact Gaussian marginal likelihood: ``log |alpha I + beta F^T F|`` counts the d - k
directions ``F`` does not span (k = rank) as ``log alpha`` each. thuml's fixed-point code leaves those out
when n < d, which adds ``(d - k) / 2 log alpha / n`` to its score; the ICML code and this one do not.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from transferkit.selection.linalg import thin_svd

EPSILON = 1e-5  # keeps alpha and beta finite when a class is fitted exactly (as the reference code does)
# The reference code stops after 11 steps or a relative change of 1e-3. With fewer samples than dimensions the
# fixed point can creep (1e-3 a step while far from the maximum): on 30 x 60 features 11 steps left the evidence
# 0.026 per sample short of it (tests/test_rank.py checks that the point found is the maximum). Each step is a
# few vector operations over the spectrum, so iterating to convergence costs nothing worth counting.
MAX_ITER = 1000
TOLERANCE = 1e-7  # relative change of alpha / beta that ends the iteration


@dataclass
class Evidence:
    """One target column's maximum evidence (per sample) and the (alpha, beta) that reach it."""

    value: float
    alpha: float
    beta: float


def column_evidences(x2: np.ndarray, residual: np.ndarray, sigma: np.ndarray, n: int, max_iter: int = MAX_ITER,
                     tolerance: float = TOLERANCE) -> list[Evidence]:
    """Maximum evidence of each target column (all at once) given ``x2`` [k, columns] = (u^T y)^2 per direction
    and ``residual`` [columns] = the part of |y|^2 outside the span of the features. The d - k unspanned
    directions' ``log alpha`` terms of ``log |A|`` cancel against ``d / 2 log alpha``, leaving ``k / 2 log alpha``."""
    sigma = sigma[:, None]
    alpha, beta = np.ones(x2.shape[1]), np.ones(x2.shape[1])

    def fit_terms(t: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """gamma, |m|^2 and |y - F m|^2 at alpha / beta = t."""
        gamma = (sigma / (sigma + t)).sum(axis=0)
        m2 = (sigma * x2 / (sigma + t) ** 2).sum(axis=0)
        res2 = (x2 * (t / (sigma + t)) ** 2).sum(axis=0) + residual
        return gamma, m2, res2

    for _ in range(max_iter):
        t = alpha / beta
        gamma, m2, res2 = fit_terms(t)
        alpha, beta = gamma / (m2 + EPSILON), (n - gamma) / (res2 + EPSILON)
        if np.all(np.abs(alpha / beta - t) / t <= tolerance):
            break
    _, m2, res2 = fit_terms(alpha / beta)  # at the (alpha, beta) the evidence is reported for
    log_evidence = (len(sigma) / 2 * np.log(alpha) + n / 2 * np.log(beta)
                    - 0.5 * np.log(alpha + beta * sigma).sum(axis=0)
                    - beta / 2 * res2 - alpha / 2 * m2 - n / 2 * np.log(2 * np.pi))
    return [Evidence(float(v) / n, float(a), float(b)) for v, a, b in zip(log_evidence, alpha, beta)]


def class_evidences(features: np.ndarray, labels: np.ndarray) -> list[Evidence]:
    """The maximum evidence of each class's one-hot column (classes 0 .. max(labels))."""
    y = np.asarray(labels, dtype=np.int64)
    u, sigma = thin_svd(features, left=True)
    onehot = (y[:, None] == np.arange(int(y.max()) + 1)[None, :]).astype(np.float64)
    x2 = (u.T @ onehot) ** 2
    residual = np.maximum(onehot.sum(axis=0) - x2.sum(axis=0), 0.0)  # |y|^2 = the class count for one-hot y
    return column_evidences(x2, residual, sigma, len(y))


def logme(features: np.ndarray, labels: np.ndarray) -> float:
    """LogME of ``features`` [n, d] for integer ``labels`` [n]: higher transfers better (comparable between
    backbones on the same data, not between data sets)."""
    return float(np.mean([e.value for e in class_evidences(features, labels)]))
