"""Linear probe: multinomial logistic regression on frozen features, its L2 strength chosen on validation.

Full-batch L-BFGS (scipy) on standardised features, warm-started along the regularisation path from strong
to weak. The standardisation is folded back into the weights so the head is one plain linear layer.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

# L2 strengths tried (per-sample mean loss + l2/2 ||W||^2); scikit-learn's default C=1 is l2 = 1/n_samples.
DEFAULT_L2_GRID = (10.0, 3.0, 1.0, 0.3, 0.1, 3e-2, 1e-2, 3e-3, 1e-3, 3e-4, 1e-4, 3e-5)


@dataclass
class ProbeHead:
    weight: np.ndarray  # [classes, features]
    bias: np.ndarray  # [classes]
    l2: float
    path: list[dict[str, float]] = field(default_factory=list)  # validation scores along the L2 grid

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
    onehot = np.zeros((n, n_classes))
    onehot[np.arange(n), y] = 1.0
    sw = sample_weight[:, None] / sample_weight.sum()

    def loss_and_grad(flat: np.ndarray) -> tuple[float, np.ndarray]:
        params = flat.reshape(d + 1, n_classes)
        weight, bias = params[:d], params[d]
        logits = x @ weight + bias
        logits -= logits.max(axis=1, keepdims=True)
        log_norm = np.log(np.exp(logits).sum(axis=1, keepdims=True))
        log_p = logits - log_norm
        loss = -(sw * onehot * log_p).sum() + 0.5 * l2 * (weight**2).sum()
        delta = sw * (np.exp(log_p) - onehot)
        grad = np.vstack([x.T @ delta + l2 * weight, delta.sum(axis=0, keepdims=True)])
        return float(loss), grad.ravel()

    start = init if init is not None else np.zeros((d + 1) * n_classes)
    result = minimize(loss_and_grad, start, jac=True, method="L-BFGS-B",
                      options={"maxiter": max_iter, "gtol": 1e-6, "ftol": 1e-10})
    return result.x


def fit_probe(train_x: np.ndarray, train_y: np.ndarray, n_classes: int, val_x: np.ndarray | None = None,
              val_y: np.ndarray | None = None, l2: float | None = None, grid: tuple[float, ...] = DEFAULT_L2_GRID,
              class_weight: str | None = None, max_iter: int = 500) -> ProbeHead:
    """Fit the head; ``l2=None`` picks it on (val_x, val_y) by accuracy, ties broken by log-loss.

    Without validation data and no ``l2``, scikit-learn's default strength (C=1, i.e. l2 = 1/n) is used.
    """
    x = train_x.astype(np.float64)
    y = np.asarray(train_y, dtype=np.int64)
    mean, std = x.mean(axis=0), x.std(axis=0)
    # Floor the spread at a tenth of the typical one: a feature that barely varies on a small training set
    # would otherwise get a huge folded weight (W / std), harmless while the backbone is frozen but explosive
    # once fine-tuning (gradual / LP-FT starts from this head) moves that feature.
    std = np.maximum(std, 0.1 * float(np.median(std)) + 1e-6)
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
    best, best_key, path, params = None, None, [], None
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
            best_key, best = key, (strength, params.copy())
    strength, params = best
    weights = params.reshape(d + 1, n_classes)
    # Fold the standardisation into the layer: W' = W / std, b' = b - (mean / std) W.
    weight = (weights[:d] / std[:, None]).T
    bias = weights[d] - (mean / std) @ weights[:d]
    return ProbeHead(weight.astype(np.float32), bias.astype(np.float32), strength, path)
