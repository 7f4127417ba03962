"""Linear probe: multinomial logistic regression on frozen features, its L2 strength chosen on validation.

Full-batch L-BFGS (scipy) on standardised features (or raw ones, for embeddings that are already
normalised), warm-started along the regularisation path from strong to weak. The standardisation is folded
back into the weights so the head is one plain linear layer.
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


def _fit_one(x: np.ndarray, y: np.ndarray, n_classes: int, l2: float, sample_weight: np.ndarray,
             init: np.ndarray | None, max_iter: int) -> np.ndarray:
    from scipy.optimize import minimize

    n, d = x.shape
    rows = np.arange(n)
    sw = sample_weight / sample_weight.sum()

    def loss_and_grad(flat: np.ndarray) -> tuple[float, np.ndarray]:
        params = flat.reshape(d + 1, n_classes)
        weight = params[:d]
        logits = x @ weight
        logits += params[d]
        logits -= logits.max(axis=1, keepdims=True)
        proba = np.exp(logits)
        norm = proba.sum(axis=1)
        proba /= norm[:, None]
        # cross-entropy of the true class only: log p_y = logit_y - log(sum exp)
        loss = -(sw * (logits[rows, y] - np.log(norm))).sum() + 0.5 * l2 * float(np.vdot(weight, weight))
        proba[rows, y] -= 1.0
        proba *= sw[:, None]
        grad = np.empty_like(params)
        grad[:d] = x.T @ proba + l2 * weight
        grad[d] = proba.sum(axis=0)
        return float(loss), grad.ravel()

    start = init if init is not None else np.zeros((d + 1) * n_classes)
    # Tolerances are those that stop changing predictions, not the optimum's last digits: most of the
    # evaluations a tight tolerance buys go into the weakly regularised, ill-conditioned end of the path.
    result = minimize(loss_and_grad, start, jac=True, method="L-BFGS-B",
                      options={"maxiter": max_iter, "gtol": 1e-5, "ftol": 1e-9})
    return result.x


def fit_probe(train_x: np.ndarray, train_y: np.ndarray, n_classes: int, val_x: np.ndarray | None = None,
              val_y: np.ndarray | None = None, l2: float | None = None, grid: tuple[float, ...] = DEFAULT_L2_GRID,
              class_weight: str | None = None, max_iter: int = 500, refit: bool = False,
              patience: int = 3, standardize: bool = True) -> ProbeHead:
    """Fit the head; ``l2=None`` picks it on (val_x, val_y) by accuracy, ties broken by log-loss.

    The grid is walked from strong to weak regularisation and left once validation accuracy has fallen
    below its best for ``patience`` points in a row. With ``refit`` (validation split off the training data),
    the chosen strength is refitted on train + validation, as scikit-learn's ``GridSearchCV(refit=True)``
    does; ``val_proba`` keeps the train-only head's held-out probabilities for honest reporting.
    Without validation data and no ``l2``, scikit-learn's default strength (C=1, i.e. l2 = 1/n) is used.
    ``standardize=False`` centres the features and scales them all by one number instead of one per feature:
    better for L2-normalised sentence embeddings, whose directions carry the meaning.
    """
    from threadpoolctl import threadpool_limits

    # These matrices are skinny (features x classes): multi-threaded BLAS spends more time waking its threads
    # between L-BFGS steps than it saves (3.5x slower on 2 cores), so the fit runs single-threaded.
    with threadpool_limits(1, user_api="blas"):
        return _fit_probe(train_x, train_y, n_classes, val_x, val_y, l2, grid, class_weight, max_iter, refit,
                          patience, standardize)


def _fit_probe(train_x: np.ndarray, train_y: np.ndarray, n_classes: int, val_x: np.ndarray | None,
               val_y: np.ndarray | None, l2: float | None, grid: tuple[float, ...], class_weight: str | None,
               max_iter: int, refit: bool, patience: int, standardize: bool) -> ProbeHead:
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
    xs = (x - mean) / std
    sample_weight = (class_balance_weights(y, n_classes)[y] if class_weight in ("auto", "balanced")
                     else np.ones(len(y)))
    have_val = val_x is not None and val_y is not None and len(val_y) > 0
    if l2 is not None:
        candidates = (l2,)
    elif have_val:
        candidates = tuple(sorted(grid, reverse=True))
    else:
        candidates = (1.0 / len(y),)
    d = x.shape[1]
    best, best_key, path, params, val_proba, worse = None, None, [], None, None, 0
    if have_val:
        vx = (val_x.astype(np.float64) - mean) / std
        vy = np.asarray(val_y, dtype=np.int64)
    for strength in candidates:
        params = _fit_one(xs, y, n_classes, strength, sample_weight, params, max_iter)
        if not have_val:
            best = (strength, params)
            break
        weights = params.reshape(d + 1, n_classes)
        proba = softmax(vx @ weights[:d] + weights[d])
        accuracy = float((proba.argmax(axis=1) == vy).mean())
        log_loss = float(-np.log(np.clip(proba[np.arange(len(vy)), vy], 1e-12, None)).mean())
        path.append({"l2": strength, "val_accuracy": accuracy, "val_log_loss": log_loss})
        key = (accuracy, -log_loss)
        if best_key is None or key > best_key:
            best_key, best, val_proba = key, (strength, params.copy()), proba
        worse = worse + 1 if accuracy < best_key[0] else 0
        if worse >= patience:
            break
    strength, params = best
    if refit and have_val:
        x_all = np.vstack([xs, vx])
        y_all = np.concatenate([y, vy])
        weight_all = (class_balance_weights(y_all, n_classes)[y_all] if class_weight in ("auto", "balanced")
                      else np.ones(len(y_all)))
        params = _fit_one(x_all, y_all, n_classes, strength, weight_all, params, max_iter)
    weights = params.reshape(d + 1, n_classes)
    # Fold the standardisation into the layer: W' = W / std, b' = b - (mean / std) W.
    weight = (weights[:d] / std[:, None]).T
    bias = weights[d] - (mean / std) @ weights[:d]
    return ProbeHead(weight.astype(np.float32), bias.astype(np.float32), strength, path, val_proba,
                     refit and have_val)
