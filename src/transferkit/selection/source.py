"""Scores read off the pretrained model's own classifier (ImageNet's 1000 classes for the packaged Lite weights):
LEEP (Nguyen et al., ICML 2020) and NCE (Tran et al., ICCV 2019), and how confident that classifier is on the
target data, which :mod:`~transferkit.selection.recommend` reads as a hint of the domain gap.

With ``theta(x)`` the source classifier's probabilities over its classes z and ``y`` the target labels:

* LEEP: the empirical joint ``P(y, z) = 1/n sum_{i: y_i = y} theta_z(x_i)`` gives ``P(y | z)``; each sample's
  expected empirical prediction is ``sum_z P(y_i | z) theta_z(x_i)``; LEEP is the mean of its log.
* NCE: the same with hard source labels ``z_i = argmax theta(x_i)``: ``-H(Y | Z) = sum P(y, z) log P(y | z)``.
"""

from __future__ import annotations

import numpy as np


def source_probabilities(features: np.ndarray, weight: np.ndarray, bias: np.ndarray | None) -> np.ndarray:
    """Softmax of the source classifier ``features @ weight.T + bias`` [n, source classes]."""
    logits = np.asarray(features, dtype=np.float64) @ np.asarray(weight, dtype=np.float64).T
    if bias is not None:
        logits += np.asarray(bias, dtype=np.float64)
    logits -= logits.max(axis=1, keepdims=True)
    proba = np.exp(logits)
    return proba / proba.sum(axis=1, keepdims=True)


def onehot(labels: np.ndarray) -> np.ndarray:
    y = np.asarray(labels, dtype=np.int64)
    return (y[:, None] == np.arange(int(y.max()) + 1)[None, :]).astype(np.float64)


def leep(source_proba: np.ndarray, labels: np.ndarray) -> float:
    """LEEP of the source classifier's probabilities [n, source classes] for integer target ``labels`` [n]:
    a mean log-likelihood, at most 0; higher transfers better."""
    theta = np.asarray(source_proba, dtype=np.float64)
    targets = onehot(labels)
    joint = targets.T @ theta / len(theta)  # [target, source]
    marginal = joint.sum(axis=0, keepdims=True)
    conditional = np.divide(joint, marginal, out=np.zeros_like(joint), where=marginal > 0)  # P(y | z)
    expected = (theta @ conditional.T)[np.arange(len(theta)), np.asarray(labels, dtype=np.int64)]
    return float(np.mean(np.log(np.maximum(expected, np.finfo(np.float64).tiny))))


def nce(source_labels: np.ndarray, labels: np.ndarray) -> float:
    """Negative conditional entropy ``-H(Y | Z)`` of target ``labels`` given hard source labels, in nats: at
    most 0 (0: the source label determines the target label)."""
    z = np.asarray(source_labels, dtype=np.int64)
    _, z = np.unique(z, return_inverse=True)  # only the source classes that occur
    joint = onehot(labels).T @ onehot(z) / len(z)  # [target, source]
    marginal = joint.sum(axis=0, keepdims=True)
    conditional = np.divide(joint, marginal, out=np.zeros_like(joint), where=marginal > 0)
    terms = np.where(joint > 0, joint * np.log(np.where(joint > 0, conditional, 1.0)), 0.0)
    return float(terms.sum())


def source_confidence(source_proba: np.ndarray) -> float:
    """The source classifier's mean top-1 probability on the target data: high when the images look like its
    own classes (a small domain gap), low when it spreads its bets."""
    return float(np.asarray(source_proba).max(axis=1).mean())
