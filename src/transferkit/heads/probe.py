"""Linear probe: multinomial logistic regression on frozen features, its L2 strength chosen on validation.

Full-batch L-BFGS (scipy) on standardised features (or centred ones with one scale, for embeddings that are
already normalised), rotated onto their principal axes and preconditioned per axis, warm-started along the
regularisation path from strong to weak. Rotation and standardisation are folded back into the weights, so
the head is one plain linear layer.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

# L2 strengths tried (per-sample mean loss + l2/2 ||W||^2); scikit-learn's default C=1 is l2 = 1/n_samples.
DEFAULT_L2_GRID = (10.0, 3.0, 1.0, 0.3, 0.1, 3e-2, 1e-2, 3e-3, 1e-3, 3e-4, 1e-4, 3e-5, 1e-5)


@dataclass
class ProbeHead:
    weight: np.ndarray  # [classes, features]
    bias: np.ndarray  # [classes]
    l2: float
    path: list[dict[str, float]] = field(default_factory=list)  # validation scores along the L2 grid
    val_proba: np.ndarray | None = None  # held-out probabilities of the head fitted on train only
    refit: bool = False  # True: this head was refitted on train + validation with the chosen L2

    def logits(self, features: np.ndarray) -> np.ndarray:
        return features @ self.weight.T + self.bias

    def predict_proba(self, features: np.ndarray) -> np.ndarray:
        return softmax(self.logits(features))


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)


def class_balance_weights(labels: np.ndarray, n_classes: int) -> np.ndarray:
    """Per-class weights inversely proportional to frequency, averaging 1 over the samples."""
    counts = np.bincount(labels, minlength=n_classes).astype(np.float64)
    weights = np.where(counts > 0, len(labels) / (n_classes * np.maximum(counts, 1)), 0.0)
    return weights


# Tolerances at which predictions stop changing (in the preconditioned coordinates): 1e-5 / 1e-9 took twice
# as long on trec for the same validation path and test accuracy.
GTOL, FTOL = 1e-4, 1e-8


def _fit_one(x: np.ndarray, y: np.ndarray, n_classes: int, l2: float, sample_weight: np.ndarray,
             init: np.ndarray | None, max_iter: int, penalty: np.ndarray) -> np.ndarray:
    """Weights [features + 1, classes] (bias last) minimising weighted cross-entropy + l2/2 sum(penalty w^2)."""
    from scipy.optimize import minimize

    n, d = x.shape
    rows = np.arange(n)
    sw = sample_weight / sample_weight.sum()
    penalty = penalty.reshape(d, 1)

    def loss_and_grad(flat: np.ndarray) -> tuple[float, np.ndarray]:
        params = flat.reshape(d + 1, n_classes)
        weight = params[:d]
        logits = (x @ weight.astype(x.dtype)).astype(np.float64)  # float32 features halve the memory traffic
        logits += params[d]
        logits -= logits.max(axis=1, keepdims=True)
        proba = np.exp(logits)
        norm = proba.sum(axis=1)
        proba /= norm[:, None]
        # cross-entropy of the true class only: log p_y = logit_y - log(sum exp)
        penalised = penalty * weight
        loss = -(sw * (logits[rows, y] - np.log(norm))).sum() + 0.5 * l2 * float(np.vdot(weight, penalised))
        proba[rows, y] -= 1.0
        proba *= sw[:, None]
        grad = np.empty_like(params)
        grad[:d] = x.T @ proba.astype(x.dtype) + l2 * penalised
        grad[d] = proba.sum(axis=0)
        return float(loss), grad.ravel()

    start = init if init is not None else np.zeros((d + 1) * n_classes)
    result = minimize(loss_and_grad, start, jac=True, method="L-BFGS-B",
                      options={"maxiter": max_iter, "gtol": GTOL, "ftol": FTOL})
    return result.x


def fit_probe(train_x: np.ndarray, train_y: np.ndarray, n_classes: int, val_x: np.ndarray | None = None,
              val_y: np.ndarray | None = None, l2: float | None = None, grid: tuple[float, ...] = DEFAULT_L2_GRID,
              class_weight: str | None = None, max_iter: int = 500, refit: bool = False,
              patience: int = 3, standardize: bool = True) -> ProbeHead:
    """Fit the head; ``l2=None`` picks it on (val_x, val_y) by accuracy, ties broken by log-loss.

    The grid is walked from strong to weak regularisation and left once ``patience`` points in a row have
    not beaten the best so far. With ``refit`` (validation split off the training data), the chosen strength
    is refitted on train + validation, as scikit-learn's ``GridSearchCV(refit=True)`` does; ``val_proba``
    keeps the train-only head's held-out probabilities for honest reporting. Without validation data and no
    ``l2``, scikit-learn's default strength (C=1, i.e. l2 = 1/n) is used.
    ``standardize=False`` centres the features and scales them all by one number instead of one per feature:
    better for L2-normalised sentence embeddings, whose directions carry the meaning.
    """
    from threadpoolctl import threadpool_limits

    x = train_x.astype(np.float64)
    y = np.asarray(train_y, dtype=np.int64)
    if standardize:
        mean, std = x.mean(axis=0), x.std(axis=0)
        # Floor the spread at a tenth of the typical one: a feature that barely varies on a small training set
        # would otherwise get a huge folded weight (W / std), harmless while the backbone is frozen but
        # explosive once fine-tuning (gradual / LP-FT starts from this head) moves that feature.
        std = np.maximum(std, 0.1 * float(np.median(std)) + 1e-6)
    else:  # one scale for all features: the grid keeps its meaning and the geometry stays as it is
        mean = x.mean(axis=0)
        std = np.full(x.shape[1], float(np.sqrt(x.var(axis=0).mean())) + 1e-12)
    xs = ((x - mean) / std).astype(np.float32)  # float32 from here on: half the memory traffic, same head
    have_val = val_x is not None and val_y is not None and len(val_y) > 0
    refit = refit and have_val
    vs = ((val_x.astype(np.float64) - mean) / std).astype(np.float32) if have_val else None
    # Principal axes: the L2 penalty is the same in any rotated basis, and on these axes the curvature of
    # the loss is about CURVATURE * variance + l2, which _Path evens out. Correlated features (several layers
    # of one encoder) otherwise cost L-BFGS thousands of steps at weak regularisation.
    variance, axes = _principal_axes(np.vstack([xs, vs]) if refit else xs)
    xs = xs @ axes.astype(np.float32)
    val = (vs.astype(np.float64) @ axes, np.asarray(val_y, dtype=np.int64)) if have_val else None
    def weights_for(labels: np.ndarray) -> np.ndarray:
        balanced = class_weight in ("auto", "balanced")
        return class_balance_weights(labels, n_classes)[labels] if balanced else np.ones(len(labels))

    if l2 is not None:
        candidates: tuple[float, ...] = (l2,)
    elif have_val:
        candidates = tuple(sorted(grid, reverse=True))
    else:
        candidates = (1.0 / len(y),)
    path = _Path(variance, n_classes, max_iter)
    # These products are skinny (samples x features times features x classes): multi-threaded BLAS spends
    # more time waking (and spinning) its threads between L-BFGS steps than it saves: 3.5x slower on 2 cores
    # for image features, 1.6x for trec's 4,362 x 1,536 text features. The fat products above keep threads.
    with threadpool_limits(1, user_api="blas"):
        strength, params, scores, val_proba = path.select(xs, y, weights_for(y), candidates, val, patience)
        if refit:
            y_all = np.concatenate([y, val[1]])
            params = path.solve(np.vstack([xs, val[0]]), y_all, weights_for(y_all), strength, params)
    # Back from the principal axes, then fold the standardisation into the layer: W' = W / std,
    # b' = b - (mean / std) W.
    rank = axes.shape[1]
    rotated = axes @ params[:rank]
    weight = (rotated / std[:, None]).T
    bias = params[rank] - (mean / std) @ rotated
    return ProbeHead(weight.astype(np.float32), bias.astype(np.float32), strength, scores, val_proba, refit)


def _principal_axes(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(variance per axis, axes [features, rank]) of centred rows ``x``.

    With fewer rows than features the weights of an L2-regularised linear model lie in the span of the rows
    (any other component only adds to the penalty), so the axes of a thin SVD lose nothing and the problem
    shrinks: hymenoptera's 245 x 1,280 fits in 245 dimensions, faster than a 1,280 x 1,280 eigensolve."""
    n, d = x.shape
    if n < d:
        _, singular, vt = np.linalg.svd(x.astype(np.float64), full_matrices=False)
        return singular ** 2 / n, vt.T
    variance, axes = np.linalg.eigh((x.T @ x).astype(np.float64) / n)
    return np.clip(variance, 0.0, None), axes


# Curvature of the cross-entropy per unit of feature variance, for the preconditioner in _Path; the true
# value (p(1 - p) averaged over samples) is ~0.25 at the start and less once the classes separate. 0.3 took
# the fewest steps on trec (0.1: 5.9 s, 0.3: 5.1 s for the path).
CURVATURE = 0.3


@dataclass
class _Path:
    """Fits along the L2 path on principal-axis features, each in preconditioned coordinates: axis i is scaled
    by 1 / sqrt(CURVATURE * variance_i + l2), so L-BFGS sees an even curvature."""

    variance: np.ndarray
    n_classes: int
    max_iter: int

    def solve(self, features: np.ndarray, labels: np.ndarray, weights: np.ndarray, strength: float,
              start: np.ndarray | None) -> np.ndarray:
        """Weights [features + 1, classes] on the principal axes (bias last)."""
        d = len(self.variance)
        scale = 1.0 / np.sqrt(CURVATURE * self.variance + strength)
        full = np.append(scale, 1.0)[:, None]
        init = None if start is None else (start / full).ravel()
        fitted = _fit_one(features * scale.astype(np.float32), labels, self.n_classes, strength, weights, init,
                          self.max_iter, penalty=scale ** 2)
        return fitted.reshape(d + 1, self.n_classes) * full

    def select(self, features: np.ndarray, labels: np.ndarray, weights: np.ndarray, candidates: tuple[float, ...],
               val: tuple[np.ndarray, np.ndarray] | None, patience: int,
               ) -> tuple[float, np.ndarray, list[dict[str, float]], np.ndarray | None]:
        """(l2, weights, validation scores along the path, held-out probabilities) of the best candidate."""
        d = len(self.variance)
        best, best_key, scores, params, val_proba, worse = None, None, [], None, None, 0
        for strength in candidates:
            params = self.solve(features, labels, weights, strength, params)
            if val is None:
                return strength, params, scores, None
            vx, vy = val
            proba = softmax(vx @ params[:d] + params[d])
            accuracy = float((proba.argmax(axis=1) == vy).mean())
            log_loss = float(-np.log(np.clip(proba[np.arange(len(vy)), vy], 1e-12, None)).mean())
            scores.append({"l2": strength, "val_accuracy": accuracy, "val_log_loss": log_loss})
            key = (accuracy, -log_loss)
            if best_key is None or key > best_key:
                best_key, best, val_proba, worse = key, (strength, params.copy()), proba, 0
            else:  # weaker regularisation costs more steps: leave once it has stopped helping
                worse += 1
                if worse >= patience:
                    break
        strength, params = best
        return strength, params, scores, val_proba
