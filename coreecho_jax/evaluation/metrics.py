"""Metrics of the paper and its transfer tables, with bootstrap confidence intervals (numpy only).

Regression (EF in percent): MAE, RMSE, R2 (``torcheval.metrics.functional.r2_score``: 1 - SS_res/SS_tot,
the paper prints R2 x 100) and Pearson correlation (CAMUS). Classification (HMC-QU MI):
sensitivity, specificity, precision, F1 and accuracy, in percent as the paper prints them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np

ArrayLike = np.ndarray


def mae(y: ArrayLike, p: ArrayLike) -> float:
    return float(np.mean(np.abs(np.asarray(p, np.float64) - np.asarray(y, np.float64))))


def rmse(y: ArrayLike, p: ArrayLike) -> float:
    return float(np.sqrt(np.mean((np.asarray(p, np.float64) - np.asarray(y, np.float64)) ** 2)))


def r2(y: ArrayLike, p: ArrayLike) -> float:
    y = np.asarray(y, np.float64)
    p = np.asarray(p, np.float64)
    ss_tot = np.sum((y - y.mean()) ** 2)
    if ss_tot == 0:
        return float("nan")
    return float(1.0 - np.sum((y - p) ** 2) / ss_tot)


def pearson(y: ArrayLike, p: ArrayLike) -> float:
    y = np.asarray(y, np.float64)
    p = np.asarray(p, np.float64)
    if y.std() == 0 or p.std() == 0:
        return float("nan")
    return float(np.corrcoef(y, p)[0, 1])


REGRESSION_METRICS: Mapping[str, Callable[[ArrayLike, ArrayLike], float]] = {
    "mae": mae,
    "rmse": rmse,
    "r2": r2,
    "pearson": pearson,
}


def classification_counts(y: ArrayLike, p: ArrayLike) -> tuple[int, int, int, int]:
    """(tp, fp, tn, fn) of 0/1 labels ``y`` and 0/1 predictions ``p``."""
    y = np.asarray(y).astype(bool)
    p = np.asarray(p).astype(bool)
    return int(np.sum(y & p)), int(np.sum(~y & p)), int(np.sum(~y & ~p)), int(np.sum(y & ~p))


def _ratio(a: float, b: float) -> float:
    return float(100.0 * a / b) if b else float("nan")


def sensitivity(y, p):
    tp, _, _, fn = classification_counts(y, p)
    return _ratio(tp, tp + fn)


def specificity(y, p):
    _, fp, tn, _ = classification_counts(y, p)
    return _ratio(tn, tn + fp)


def precision(y, p):
    tp, fp, _, _ = classification_counts(y, p)
    return _ratio(tp, tp + fp)


def f1(y, p):
    tp, fp, _, fn = classification_counts(y, p)
    return _ratio(2 * tp, 2 * tp + fp + fn)


def accuracy(y, p):
    tp, fp, tn, fn = classification_counts(y, p)
    return _ratio(tp + tn, tp + fp + tn + fn)


CLASSIFICATION_METRICS: Mapping[str, Callable[[ArrayLike, ArrayLike], float]] = {
    "sensitivity": sensitivity,
    "specificity": specificity,
    "precision": precision,
    "f1": f1,
    "accuracy": accuracy,
}


def bootstrap_ci(
    metric: Callable[[ArrayLike, ArrayLike], float],
    y: ArrayLike,
    p: ArrayLike,
    *,
    n_resamples: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of ``metric`` over videos resampled with replacement."""
    y = np.asarray(y)
    p = np.asarray(p)
    if len(y) != len(p):
        raise ValueError(f"labels ({len(y)}) and predictions ({len(p)}) differ in length")
    if len(y) < 2 or n_resamples <= 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(y), size=(n_resamples, len(y)))
    values = np.array([metric(y[i], p[i]) for i in idx])
    values = values[np.isfinite(values)]
    if values.size == 0:
        return float("nan"), float("nan")
    alpha = (1.0 - level) / 2.0
    lo, hi = np.quantile(values, [alpha, 1.0 - alpha])
    return float(lo), float(hi)


def summarize(
    y: ArrayLike,
    p: ArrayLike,
    metrics: Mapping[str, Callable[[ArrayLike, ArrayLike], float]] = REGRESSION_METRICS,
    *,
    n_resamples: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> dict[str, float]:
    """Each metric with its bootstrap CI: ``{name, name_ci_low, name_ci_high}``, plus ``n``."""
    out: dict[str, float] = {"n": int(len(np.asarray(y)))}
    for name, fn in metrics.items():
        out[name] = fn(y, p)
        lo, hi = bootstrap_ci(fn, y, p, n_resamples=n_resamples, level=level, seed=seed)
        out[f"{name}_ci_low"], out[f"{name}_ci_high"] = lo, hi
    return out
