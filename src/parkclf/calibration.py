"""Temperature scaling and the abstain rule, fitted on validation and stored in the model config.

Serving reads them back from ``config.json``: ``calibration_temperature``, ``abstain_threshold`` and
``out_of_scope_label`` (the class trained on negative photos, if any). The in-scope score of a
photo is the calibrated probability of its best real class; below the threshold the app abstains.
"""

from __future__ import annotations

import numpy as np


def softmax(logits, temperature: float = 1.0) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64) / temperature
    z -= z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return (e / e.sum(axis=-1, keepdims=True)).astype(np.float32)


def fit_temperature(logits, labels) -> float:
    """Guo et al. 2017: one scalar T minimising validation NLL of softmax(logits / T), T in [0.05, 20]. NumPy only,
    so teaching fits it without torch. The NLL is convex in 1/T, so its slope in 1/T rises monotonically: bisection
    on that slope finds the minimum to float precision."""
    z = np.asarray(logits, dtype=np.float64)
    y = np.asarray(labels)
    true = z[np.arange(len(y)), y]

    def slope(beta: float) -> float:  # d NLL / d beta = mean(E_p[z] - z_true), p = softmax(beta z)
        p = softmax(z, 1.0 / beta).astype(np.float64)
        return float(((p * z).sum(axis=-1) - true).mean())

    lo, hi = 1 / 20.0, 1 / 0.05
    if slope(lo) >= 0:
        return 20.0
    if slope(hi) <= 0:
        return 0.05
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if slope(mid) < 0 else (lo, mid)
    return float(1.0 / ((lo + hi) / 2))


def real_indices(labels: list[str], out_of_scope_label: str | None) -> list[int]:
    """Positions of the real classes: every label but the out-of-scope one."""
    return [i for i, n in enumerate(labels) if n != out_of_scope_label]


def in_scope_scores(logits, labels: list[str], temperature: float,
                    out_of_scope_label: str | None) -> tuple[np.ndarray, np.ndarray]:
    """(calibrated probability of each real class, in-scope score) for each row.

    The probabilities come from the softmax over all classes, the out-of-scope class included, and are not
    renormalised: they sum to 1 minus the probability that the photo is none of the classes. The in-scope
    score is the probability of the best real class, so the confidence the app reports for its answer is
    exactly the number the abstain threshold is compared with.
    """
    probs = softmax(logits, temperature)
    if out_of_scope_label in labels:
        probs = probs[:, real_indices(labels, out_of_scope_label)]
    return probs, probs.max(axis=-1)


def in_scope_mask(y: np.ndarray, labels: list[str], out_of_scope_label: str | None) -> np.ndarray:
    return y != labels.index(out_of_scope_label) if out_of_scope_label in labels else np.ones_like(y, bool)


def fit(val_logits, val_labels, labels: list[str], out_of_scope_label: str | None,
        keep_rate: float = 0.95, threshold: float | None = None) -> dict:
    """Temperature from validation NLL; the threshold is given, or answers ``keep_rate`` of in-scope validation
    photos."""
    t = fit_temperature(val_logits, val_labels)
    if threshold is None:
        _, score = in_scope_scores(val_logits, labels, t, out_of_scope_label)
        ins = in_scope_mask(np.asarray(val_labels), labels, out_of_scope_label)
        threshold = float(np.quantile(score[ins], 1 - keep_rate)) if ins.any() else 0.5
    return {"calibration_temperature": t, "abstain_threshold": threshold, "out_of_scope_label": out_of_scope_label}


def evaluate(logits, y, labels: list[str], config) -> dict:
    """Keep-rate on in-scope photos, abstain-rate and AUROC on out-of-scope ones (when the split has them)."""
    from sklearn.metrics import roc_auc_score

    ood = getattr(config, "out_of_scope_label", None)
    probs, score = in_scope_scores(logits, labels, config.calibration_temperature, ood)
    y = np.asarray(y)
    ins = in_scope_mask(y, labels, ood)
    kept = score >= config.abstain_threshold
    # accuracy of the closest real class on in-scope photos: what /predict's "label" gets right
    closest = np.asarray(real_indices(labels, ood))[probs.argmax(-1)]
    out = {"in_scope_keep_rate": float(kept[ins].mean()) if ins.any() else None, "n_in_scope": int(ins.sum()),
           "in_scope_accuracy": float((closest[ins] == y[ins]).mean()) if ins.any() else None}
    if (~ins).any():
        out.update(out_of_scope_abstain_rate=float((~kept[~ins]).mean()), n_out_of_scope=int((~ins).sum()),
                   auroc=float(roc_auc_score(ins.astype(int), score)))
    return out
