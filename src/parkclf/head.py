"""A linear classifier on features, in NumPy: multinomial logistic regression with its L2 strength chosen by k-fold
cross-validation, and the same folds' held-out logits for the metrics and the calibration.

This is scikit-learn's ``LogisticRegression(C=C)`` (multinomial, L2 on the weights, the intercept unpenalised, the
lbfgs solver), written out because scikit-learn and SciPy would add about 195 MB to the serving install, a quarter
of it, for one small convex fit (docs/results.md); a test holds it to scikit-learn's answer. The features are
standardised for the solver and the scaling folded back into the weights, so the result is a plain ``nn.Linear``.

Used by ``parkclf teach`` (:mod:`parkclf.teach`) and by ``parkclf train --freeze-backbone``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# C (inverse L2 strength, scikit-learn's convention) tried by cross-validation, on standardised features
C_GRID = (0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0)
MAX_FOLDS = 5
CV_TOL = 1e-4  # scikit-learn's default tol: enough to rank the grid (the final fit goes to 1e-6)


@dataclass
class Fit:
    """A fitted linear head and how it did on photos it was not fitted on."""

    weight: np.ndarray  # (classes, features) float32, as nn.Linear stores it
    bias: np.ndarray  # (classes,) float32
    C: float  # the regularisation picked
    heldout_logits: np.ndarray  # (n, classes): each photo scored by the model of the fold that left it out
    folds: int  # k of the k-fold cross-validation


def _loss_grad(theta: np.ndarray, x: np.ndarray, onehot: np.ndarray, C: float) -> tuple[float, np.ndarray]:
    """C * summed cross-entropy + |W|^2 / 2, and its gradient; theta is (features + 1, classes), bias last."""
    w, b = theta[:-1], theta[-1]
    z = x @ w + b
    z -= z.max(axis=1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    p = np.exp(logp)
    loss = -C * float((onehot * logp).sum()) + 0.5 * float((w * w).sum())
    d = C * (p - onehot)
    grad = np.empty_like(theta)
    grad[:-1] = x.T @ d + w
    grad[-1] = d.sum(axis=0)
    return loss, grad


def _lbfgs(f, theta: np.ndarray, *, gtol: float, memory: int = 10, max_iter: int = 1000) -> np.ndarray:
    """Minimise a smooth convex f (returning loss and gradient) by L-BFGS with a backtracking (Armijo) line search,
    until the largest gradient entry is at most ``gtol``."""
    loss, grad = f(theta)
    s_hist, y_hist = [], []
    for _ in range(max_iter):
        if np.abs(grad).max() <= gtol:
            break
        q = grad.copy()  # two-loop recursion: q becomes H @ grad
        alphas = []
        for s, y in reversed(list(zip(s_hist, y_hist, strict=True))):
            a = (s * q).sum() / (y * s).sum()
            alphas.append(a)
            q -= a * y
        if s_hist:
            q *= (s_hist[-1] * y_hist[-1]).sum() / (y_hist[-1] * y_hist[-1]).sum()
        else:  # first step: a unit step along the gradient's direction
            q /= max(1.0, float(np.sqrt((q * q).sum())))
        for (s, y), a in zip(zip(s_hist, y_hist, strict=True), reversed(alphas), strict=True):
            q += s * (a - (y * q).sum() / (y * s).sum())
        direction, step, slope = -q, 1.0, -(grad * q).sum()
        while True:
            new = theta + step * direction
            new_loss, new_grad = f(new)
            if new_loss <= loss + 1e-4 * step * slope or step < 1e-10:
                break
            step *= 0.5
        s, y = new - theta, new_grad - grad
        if (s * y).sum() > 1e-12:
            s_hist, y_hist = [*s_hist[-memory + 1:], s], [*y_hist[-memory + 1:], y]
        theta, loss, grad = new, new_loss, new_grad
    return theta


def fit_logistic(x: np.ndarray, y: np.ndarray, n_classes: int, C: float, *, tol: float = 1e-6,
                 start: np.ndarray | None = None) -> np.ndarray:
    """theta (features + 1, classes), bias last, of multinomial logistic regression on ``x`` (already scaled).
    ``tol`` bounds the gradient of the mean loss plus |W|^2 / (2 C n), scikit-learn's scale for its ``tol``."""
    onehot = np.eye(n_classes)[y]
    theta = np.zeros((x.shape[1] + 1, n_classes)) if start is None else start
    return _lbfgs(lambda t: _loss_grad(t, x, onehot, C), theta, gtol=tol * C * len(y))


def stratified_folds(y: np.ndarray, k: int, seed: int = 0) -> np.ndarray:
    """A fold number per sample: each class's samples shuffled and dealt round the k folds in turn."""
    rng = np.random.default_rng(seed)
    fold = np.empty(len(y), np.int64)
    offset = 0
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        fold[idx] = (np.arange(len(idx)) + offset) % k
        offset += len(idx)  # the next class starts where this one stopped, so fold sizes stay even
    return fold


def _logits(theta: np.ndarray, x: np.ndarray) -> np.ndarray:
    return x @ theta[:-1] + theta[-1]


def _log_loss(logits: np.ndarray, y: np.ndarray) -> float:
    z = logits - logits.max(axis=1, keepdims=True)
    return float(-(z[np.arange(len(y)), y] - np.log(np.exp(z).sum(axis=1))).mean())


def fit_head(features: np.ndarray, y: np.ndarray, n_classes: int, *, grid=C_GRID, seed: int = 0) -> Fit:
    """Pick C by k-fold cross-validated log-loss (k = 5, or the smallest class's size when that is less; classes
    need 2 samples each), then fit on all samples with it. Each fold warm-starts along the grid.

    BLAS runs on one thread here: these products are small, and on a busy machine (the app serving while it
    teaches, other processes on the cores) OpenBLAS's threads wait on each other, 15-25x slower (docs/results.md)."""
    from threadpoolctl import threadpool_limits

    x = np.asarray(features, np.float64)
    y = np.asarray(y)
    counts = np.bincount(y, minlength=n_classes)
    if counts.min() < 2:
        raise ValueError(f"every class needs at least 2 samples to cross-validate; counts {counts.tolist()}")
    mean, std = x.mean(axis=0), x.std(axis=0)
    std[std == 0] = 1.0
    xs = (x - mean) / std
    k = int(min(MAX_FOLDS, counts.min()))
    fold = stratified_folds(y, k, seed)
    heldout = np.zeros((len(grid), len(y), n_classes))
    with threadpool_limits(1, user_api="blas"):
        for f in range(k):
            train, test = fold != f, fold == f
            theta = None
            for g, C in enumerate(grid):
                theta = fit_logistic(xs[train], y[train], n_classes, C, tol=CV_TOL, start=theta)
                heldout[g, test] = _logits(theta, xs[test])
        best = int(np.argmin([_log_loss(h, y) for h in heldout]))
        theta = fit_logistic(xs, y, n_classes, grid[best])
    w = theta[:-1] / std[:, None]  # fold the standardisation into the weights: logits = x @ w + b on raw features
    b = theta[-1] - mean @ w
    return Fit(weight=np.ascontiguousarray(w.T, np.float32), bias=b.astype(np.float32), C=float(grid[best]),
               heldout_logits=heldout[best].astype(np.float32), folds=k)


def report(y_true: np.ndarray, y_pred: np.ndarray, labels: list[str]) -> dict:
    """accuracy, macro_f1, per_class {label: precision, recall, f1, support} and the confusion matrix (rows = true)."""
    n = len(labels)
    confusion = np.zeros((n, n), np.int64)
    np.add.at(confusion, (np.asarray(y_true), np.asarray(y_pred)), 1)
    tp = np.diag(confusion).astype(np.float64)
    support, predicted = confusion.sum(axis=1), confusion.sum(axis=0)
    precision = np.divide(tp, predicted, out=np.zeros(n), where=predicted > 0)
    recall = np.divide(tp, support, out=np.zeros(n), where=support > 0)
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros(n), where=precision + recall > 0)
    return {"accuracy": float(tp.sum() / max(1, confusion.sum())), "macro_f1": float(f1.mean()),
            "per_class": {label: {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]),
                                  "support": int(support[i])} for i, label in enumerate(labels)},
            "confusion": confusion.tolist()}
