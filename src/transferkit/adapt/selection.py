"""Choosing among adapted models without target labels.

* ``source-val``: accuracy on the source validation split (higher is better). Safe, but blind to the target.
* ``entropy``: mean entropy of the predictions on the target images (lower is better). Rewards confidence on
  the target, which a collapsed model also has; use it to compare runs of one method.
* ``info-max``: mutual information between a target image and its predicted class (higher is better): the
  entropy of the mean prediction (every class used) minus the mean entropy (each prediction confident), so a
  model that collapses onto few classes loses what its confidence gained. Among the better label-free
  validators in Musgrave et al.'s benchmark (2022, "Three new validators ... for UDA").
* ``dev``: deep embedded validation (You et al. 2019, lower is better): the source validation loss
  importance-weighted by the density ratio target/source, estimated by a logistic-regression domain classifier
  on the features, with the control variate that lowers its variance.

The default is ``info-max``. DEV's estimate rests on density ratios, and when the domain classifier nearly
separates the domains (MNIST from USPS does) a handful of source rows carry the weight: on bench/adapt.py one
method's DEV varied 12-fold across seeds (CORAL, USPS -> MNIST: 0.40 to 4.89), such outliers decided the
per-method means, and DEV chose MMD (0.915) over pseudo-labels (0.948) there; info-max chose the best method in
both directions (bench/results/adapt-*.json).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from transferkit.adapt.criteria import CRITERIA, Criterion
from transferkit.errors import TransferkitError


@dataclass
class Evidence:
    """What the criteria read from one fitted model (no target label among it)."""

    val_proba: np.ndarray  # source validation probabilities [n_val, classes]
    val_labels: np.ndarray
    target_proba: np.ndarray  # predictions on the (unlabelled) target images
    source_features: np.ndarray  # features of the source training images (a sample), for DEV's domain classifier
    val_features: np.ndarray
    target_features: np.ndarray


def source_accuracy(evidence: Evidence) -> float:
    return float((evidence.val_proba.argmax(axis=1) == evidence.val_labels).mean())


def target_entropy(evidence: Evidence) -> float:
    p = np.clip(evidence.target_proba, 1e-12, 1.0)
    return float(-(p * np.log(p)).sum(axis=1).mean())


def information_maximization(evidence: Evidence) -> float:
    p = np.clip(evidence.target_proba, 1e-12, 1.0)
    mean = p.mean(axis=0)
    return float(-(mean * np.log(mean)).sum() - target_entropy(evidence))


def density_ratios(source: np.ndarray, target: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """p_target(x) / p_source(x) at ``queries``, from a domain classifier trained on ``source`` vs ``target``."""
    from sklearn.linear_model import LogisticRegression  # import cost: only DEV needs scikit-learn
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(np.concatenate([source, target]))
    x = scaler.transform(np.concatenate([source, target]))
    y = np.r_[np.zeros(len(source)), np.ones(len(target))]
    classifier = LogisticRegression(C=0.1, max_iter=500).fit(x, y)
    p_target = np.clip(classifier.predict_proba(scaler.transform(queries))[:, 1], 1e-6, 1 - 1e-6)
    return p_target / (1 - p_target) * (len(source) / len(target))


def deep_embedded_validation(evidence: Evidence) -> float:
    weights = density_ratios(evidence.source_features, evidence.target_features, evidence.val_features)
    rows = np.arange(len(evidence.val_labels))
    losses = -np.log(np.clip(evidence.val_proba[rows, evidence.val_labels], 1e-12, None))
    weighted = weights * losses
    variance = np.var(weights, ddof=1)
    eta = -np.cov(weighted, weights)[0, 1] / variance if variance > 0 else 0.0
    return float(weighted.mean() + eta * weights.mean() - eta)


def criterion(name: str) -> Criterion:
    if name not in CRITERIA:
        raise TransferkitError(f"select '{name}' is not known; choose one of: {', '.join(CRITERIA)}")
    return CRITERIA[name]


def all_scores(evidence: Evidence) -> dict[str, float]:
    """Every criterion's score of one model, by name (the run records them all, and which one chose)."""
    return {name: round(c.score(evidence), 6) for name, c in CRITERIA.items()}
