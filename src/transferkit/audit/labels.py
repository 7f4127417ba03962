"""Label issues: out-of-fold probabilities of the linear probe on cached features, then confident learning.

The probe is the head ``transferkit train`` fits (:func:`~transferkit.heads.probe.fit_probe`); each item's
probabilities come from a head that never saw it (K stratified folds), as cleanlab asks. Its L2 strength is
chosen once, inside the first fold's training items, and kept for the other folds: choosing it per fold gave
the same flags at K times the cost. Confident learning itself is cleanlab's (``find_label_issues`` with its
default ``prune_by_noise_rate``, ranked by self-confidence), not a re-implementation; of its flags, those the
probe, calibrated by a temperature, is sure of are reported, and those it only doubts are kept apart for training
to leave out (see :func:`find_label_issues`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from threadpoolctl import threadpool_limits

from transferkit.audit.duplicates import principal_axes
from transferkit.errors import TransferkitError
from transferkit.heads.probe import fit_probe
from transferkit.selection.crossval import fold_count, stratified_folds

# 10 folds on sets up to 5,000 items, 5 above: on hymenoptera (5% flipped, 6 seeds) 10 folds gave precision / recall
# 0.865 / 0.847 against 0.858 / 0.819 with 5; a large set loses little training data per fold, and each fold costs
FOLDS_SMALL, FOLDS_LARGE, SMALL = 10, 5, 5000
PROBE_DIMS = 256
TEMPERATURE_RANGE = (-3.0, 3.0)  # log T searched: T from 0.05 to 20


@dataclass
class LabelIssue:
    index: int  # into the audited items
    given: int
    suggested: int
    quality: float  # cleanlab's self-confidence label quality: the probability of the given label, lower is worse


def principal(features: np.ndarray, dims: int | None, standardize: bool) -> np.ndarray:
    """The features scaled as the probe scales them (per feature, or one scale for normalised embeddings), on
    their ``dims`` principal axes (all of them when None or fewer). Label-free: no fold learns another's labels."""
    x = features.astype(np.float32) - features.mean(axis=0, dtype=np.float64).astype(np.float32)
    std = x.std(axis=0) if standardize else np.full(x.shape[1], float(np.sqrt(x.var(axis=0).mean())))
    x /= np.maximum(std, 0.1 * float(np.median(std)) + 1e-6)  # the probe's floor (heads/probe.py)
    return x if dims is None or x.shape[1] <= dims else principal_axes(x, dims, 8192)


def out_of_fold_proba(features: np.ndarray, labels: np.ndarray, n_classes: int, standardize: bool,
                      seed: int = 0, folds: int | None = None, dims: int | None = PROBE_DIMS) -> np.ndarray:
    """[n, classes] probabilities, each row from a probe fitted on the other folds."""
    y = np.asarray(labels, dtype=np.int64)
    features = principal(features, dims, standardize)
    folds = folds or (FOLDS_SMALL if len(y) <= SMALL else FOLDS_LARGE)
    fold_of = stratified_folds(y, fold_count(y, folds), seed)
    proba = np.zeros((len(y), n_classes))
    l2 = None
    with threadpool_limits(1, user_api="blas"):  # see selection/rank.py: threaded BLAS was 10-20x slower here
        for fold in np.unique(fold_of):
            test, train = fold_of == fold, fold_of != fold
            x_train, y_train = features[train], y[train]
            if l2 is None:  # chosen on one stratified fold of the first fold's training items
                inner = stratified_folds(y_train, fold_count(y_train, folds), seed + 1) == 0
                chooser = fit_probe(x_train[~inner], y_train[~inner], n_classes, x_train[inner], y_train[inner],
                                    standardize=False)
                l2 = chooser.l2
            head = fit_probe(x_train, y_train, n_classes, l2=l2, standardize=False)
            proba[test] = head.predict_proba(features[test])
    return proba


def calibrated(proba: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """``proba`` at the temperature T that minimises the log-loss of the given labels (Guo et al. 2017: one number,
    so no item's predicted class changes). The probe's L2 strength is chosen for accuracy, not calibration: its
    out-of-fold probabilities were under-confident on CIFAR-10 (T = 0.82: items at 0.35 confidence were 44% right)
    and trec (0.87), over-confident on hymenoptera (0.6 to 1.7 by seed)."""
    from scipy.optimize import minimize_scalar

    logits = np.log(np.maximum(proba, 1e-300))  # softmax(log p) = p: log-probabilities are logits
    rows, y = np.arange(len(labels)), np.asarray(labels, dtype=np.int64)

    def log_proba(log_t: float) -> np.ndarray:
        scaled = logits / np.exp(log_t)
        scaled -= scaled.max(axis=1, keepdims=True)
        return scaled - np.log(np.exp(scaled).sum(axis=1, keepdims=True))

    best = minimize_scalar(lambda log_t: -float(log_proba(log_t)[rows, y].mean()), bounds=TEMPERATURE_RANGE,
                           method="bounded")
    return np.exp(log_proba(float(best.x)))


def find_label_issues(labels: np.ndarray, proba: np.ndarray) -> tuple[list[LabelIssue], list[LabelIssue]]:
    """(flagged, doubtful): the items confident learning flags whose given label the calibrated probe rates under
    1/K^2 (a person's review list), and those under 1/(2K) but not 1/K^2 (left out of training with them); each
    worst first (lowest probability of the given label)."""
    try:
        from cleanlab.filter import find_label_issues as confident_learning
        from cleanlab.rank import get_label_quality_scores
    except ImportError:
        raise TransferkitError("transferkit audit needs cleanlab for label issues: pip install "
                               "'transferkit[audit]'") from None

    y = np.asarray(labels, dtype=np.int64)
    present = np.unique(y)
    if len(present) < 2:
        return [], []
    # cleanlab wants labels 0..K-1 all present: audit the classes that have items, in their own numbering
    column = {int(c): i for i, c in enumerate(present)}
    compact_y = np.asarray([column[int(c)] for c in y])
    compact_p = proba[:, present] / np.maximum(proba[:, present].sum(axis=1, keepdims=True), 1e-12)
    ranked = confident_learning(compact_y, compact_p, return_indices_ranked_by="self_confidence", n_jobs=1)
    # Confident learning flags about as many items as the probe gets wrong: its per-class thresholds cannot tell a
    # wrong label from a hard item (CIFAR-10, probe 76% right: 1,400 flags for 500 flipped labels). Of its flags,
    # only those where the calibrated probe gives the given label under a K-th of chance (1/K^2 of K classes:
    # 0.25 of 2, 0.01 of 10; a probability shared by more classes leaves a wrong label less) are reported.
    # Confident learning reads the probe's own probabilities: its per-class thresholds are averages of the same
    # probabilities, and a softening temperature (a tiny set whose few wrong labels dominate the log-loss) lifts
    # a wrong label's probability above its class's threshold. Seeded bench (5% flipped, 3 seeds; precision /
    # recall): hymenoptera 0.81/0.81, trec 0.86/0.65, CIFAR-10 0.88/0.61; on the uncalibrated probabilities
    # 0.85/0.81, 0.91/0.60, 0.94/0.52.
    quality = get_label_quality_scores(compact_y, calibrated(compact_p, compact_y), method="self_confidence")
    flag_line, doubt_line = 1.0 / len(present) ** 2, 0.5 / len(present)
    # Training takes the looser line, under half of chance (the same line for two classes): leaving a right label
    # out costs one example of thousands, keeping a wrong one pulls the head. CIFAR-10 10k, 5% flipped, seeds 0-9,
    # the probe's test accuracy against the noisy labels' (the noise cost 0.34 points): without the flagged items
    # +0.14 +-0.10, without the items under 2/K^2 +0.25 +-0.09, under 1/(2K) +0.50 +-0.14 (precision 0.59, recall
    # 0.78: it also takes out right but ambiguous items, which the probe does better without), under 1/K +0.48
    # +-0.20. bench/audit.py measures the chosen line on other seeds.
    doubted = sorted((i for i in ranked if quality[i] < doubt_line), key=lambda i: quality[i])

    def issue(i: int) -> LabelIssue:
        return LabelIssue(int(i), int(y[i]), int(present[compact_p[i].argmax()]), round(float(quality[i]), 6))

    return ([issue(i) for i in doubted if quality[i] < flag_line],
            [issue(i) for i in doubted if quality[i] >= flag_line])
