"""The H-score (Bao et al., ICIP 2019) regularised by shrinkage (Ibrahim et al., "Newer is not always better:
Rethinking transferability metrics, their peculiarities, stability and performance", 2022).

``H = tr(cov(f)^-1 cov(E[f | y]))`` rewards features whose class means are far apart relative to their
spread. With fewer samples than dimensions ``cov(f)`` is singular and the plain score explodes; the
regularised one uses the Ledoit-Wolf estimate ``cov_a = (1 - a) S + a mu I`` (``mu`` = mean variance, ``a``
the Ledoit-Wolf shrinkage) and scales the between-class covariance by ``1 - a`` alike:
``H_a = tr(cov_a^-1 (1 - a) cov(E[f | y]))``.

Both covariances are taken with 1/n (Ledoit-Wolf's empirical covariance); the reference code's ``np.cov`` of
the class means uses 1/(n - 1), a factor n / (n - 1) that changes no ranking on one data set. Everything is
computed in the eigenbasis of ``S`` over the directions the centred samples span: the class-mean differences
lie in that span, so the directions outside it add nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from transferkit.selection.linalg import thin_svd


@dataclass
class Shrinkage:
    """The Ledoit-Wolf estimate of centred features' covariance, in the eigenbasis of their covariance ``S``."""

    shrinkage: float  # a in [0, 1]
    mu: float  # trace(S) / d
    eigenvalues: np.ndarray  # of S, on the axes below (the directions S spans; the others are 0)
    axes: np.ndarray  # [d, k] orthonormal

    def shrunk_eigenvalues(self) -> np.ndarray:
        return (1.0 - self.shrinkage) * self.eigenvalues + self.shrinkage * self.mu


def ledoit_wolf(centered: np.ndarray) -> Shrinkage:
    """Ledoit and Wolf's (2004) shrinkage towards ``mu I`` for centred rows ``centered`` [n, d], with the
    same estimate of the optimal intensity as scikit-learn's ``ledoit_wolf_shrinkage``."""
    x = np.asarray(centered, dtype=np.float64)
    n, d = x.shape
    axes, squared = thin_svd(x, left=False)
    eigenvalues = squared / n
    mu = float(eigenvalues.sum()) / d
    frobenius2 = float((eigenvalues ** 2).sum())  # |S|_F^2
    fourth = float(((x ** 2).sum(axis=1) ** 2).sum()) / n  # mean of |x_i|^4
    beta = (fourth - frobenius2) / (d * n)
    delta = (frobenius2 - d * mu ** 2) / d  # |S - mu I|_F^2 / d
    shrinkage = 0.0 if delta <= 0 else min(max(beta, 0.0), delta) / delta
    return Shrinkage(shrinkage, mu, eigenvalues, axes)


def h_score(features: np.ndarray, labels: np.ndarray) -> float:
    """The shrinkage-regularised H-score of ``features`` [n, d] for integer ``labels`` [n]: higher transfers
    better (comparable between backbones on the same data). Invariant to the features' overall scale."""
    f = np.asarray(features, dtype=np.float64)
    y = np.asarray(labels, dtype=np.int64)
    x = f - f.mean(axis=0)
    estimate = ledoit_wolf(x)
    shrunk = estimate.shrunk_eigenvalues()
    if estimate.mu <= 0 or not np.all(shrunk > 0):
        return 0.0  # constant features: no class is told apart
    onehot = y[:, None] == np.arange(int(y.max()) + 1)[None, :]
    counts = onehot.sum(axis=0)
    present = counts > 0
    sums = onehot.T.astype(np.float64) @ x
    means = sums[present] / counts[present, None]  # class means of the centred features
    between = np.sqrt(counts[present] / len(y))[:, None] * means  # cov(E[f|y]) = between^T between
    projected = between @ estimate.axes
    return float((1.0 - estimate.shrinkage) * ((projected ** 2) / shrunk).sum())
