"""Metrics of the paper and its transfer tables, with bootstrap confidence intervals (numpy only).

Regression (EF in percent): MAE, RMSE, R2 (``torcheval.metrics.functional.r2_score``: 1 - SS_res/SS_tot,
the paper prints R2 x 100) and Pearson correlation (CAMUS). Classification (HMC-QU MI):
sensitivity, specificity, precision, F1 and accuracy, in percent as the paper prints them, and AUROC
(in [0, 1], of a score rather than 0/1 predictions).

A metric without a value (R2 or Pearson of constant labels, a ratio with an empty denominator) is NaN
here; :func:`summarize` adds ``<name>_undefined`` with the reason, so result files can say why.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import numpy as np

ArrayLike = np.ndarray


def mae(y: ArrayLike, p: ArrayLike) -> float:
    return float(np.mean(np.abs(np.asarray(p, np.float64) - np.asarray(y, np.float64))))


def rmse(y: ArrayLike, p: ArrayLike) -> float:
    return float(np.sqrt(np.mean((np.asarray(p, np.float64) - np.asarray(y, np.float64)) ** 2)))


def _constant(x: np.ndarray) -> bool:
    # Equality, not a zero variance: the mean of equal values can be off by an ulp (0.1, 0.1, 0.1).
    return x.size == 0 or bool(np.all(x == x.flat[0]))


def r2(y: ArrayLike, p: ArrayLike) -> float:
    """1 - SS_res / SS_tot; NaN when the labels are constant (SS_tot = 0)."""
    y = np.asarray(y, np.float64)
    p = np.asarray(p, np.float64)
    if _constant(y):
        return float("nan")
    return float(1.0 - np.sum((y - p) ** 2) / np.sum((y - y.mean()) ** 2))


def pearson(y: ArrayLike, p: ArrayLike) -> float:
    """Pearson correlation; NaN when labels or predictions are constant."""
    y = np.asarray(y, np.float64)
    p = np.asarray(p, np.float64)
    if _constant(y) or _constant(p):
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


def auroc(y: ArrayLike, score: ArrayLike) -> float:
    """Area under the ROC curve of 0/1 labels ``y`` ranked by ``score`` (higher = more positive), in
    [0, 1]: the Mann-Whitney probability that a random positive outranks a random negative, ties
    counting one half. NaN when either class is absent."""
    y = np.asarray(y).astype(bool)
    score = np.asarray(score, np.float64)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(score, kind="mergesort")
    ranks = np.empty(len(score), np.float64)
    sorted_scores = score[order]
    # average ranks (1-based) over runs of tied scores
    starts = np.flatnonzero(np.r_[True, sorted_scores[1:] != sorted_scores[:-1]])
    ends = np.r_[starts[1:], len(score)]
    for a, b in zip(starts, ends):
        ranks[order[a:b]] = (a + 1 + b) / 2.0
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


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


def undefined_reason(name: str, y: ArrayLike, p: ArrayLike) -> str:
    """Why the metric ``name`` of labels ``y`` and predictions ``p`` is NaN, in a few words."""
    y = np.asarray(y, np.float64)
    p = np.asarray(p, np.float64)
    if y.size == 0:
        return "no videos"
    if not np.all(np.isfinite(y)):
        return "labels are missing or not finite"
    if not np.all(np.isfinite(p)):
        return "predictions are not finite"
    if name in ("r2", "pearson") and _constant(y):
        return "labels are constant"
    if name == "auroc" and _constant(y):
        return "only one class among the labels"
    if name == "pearson" and _constant(p):
        return "predictions are constant"
    return "the metric is not defined on these values"


def summarize(
    y: ArrayLike,
    p: ArrayLike,
    metrics: Mapping[str, Callable[[ArrayLike, ArrayLike], float]] = REGRESSION_METRICS,
    *,
    n_resamples: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> dict[str, float | int | str]:
    """Each metric and ``n``; with ``n_resamples > 0`` also its bootstrap CI ``name_ci_low/high``.

    A NaN metric (or CI) comes with ``name_undefined`` (``name_ci_undefined``): the reason in words.
    """
    n = int(len(np.asarray(y)))
    out: dict[str, float | int | str] = {"n": n}
    for name, fn in metrics.items():
        value = fn(y, p)
        out[name] = value
        if not math.isfinite(value):
            out[f"{name}_undefined"] = undefined_reason(name, y, p)
        if n_resamples <= 0:
            continue
        lo, hi = bootstrap_ci(fn, y, p, n_resamples=n_resamples, level=level, seed=seed)
        out[f"{name}_ci_low"], out[f"{name}_ci_high"] = lo, hi
        if not (math.isfinite(lo) and math.isfinite(hi)):
            if n < 2:
                out[f"{name}_ci_undefined"] = "fewer than 2 videos"
            elif not math.isfinite(value):
                out[f"{name}_ci_undefined"] = out[f"{name}_undefined"]
            else:
                out[f"{name}_ci_undefined"] = "undefined in every bootstrap resample"
    return out


def bland_altman(y: ArrayLike, p: ArrayLike) -> dict[str, float | str]:
    """Bland-Altman agreement of predictions ``p`` with labels ``y`` (same units, e.g. EF %).

    ``bias``: mean of ``p - y``; ``sd``: its sample standard deviation (ddof=1); ``loa_low`` and
    ``loa_high``: the 95% limits of agreement ``bias -/+ 1.96 sd``. An undefined value (no videos, one
    video for ``sd`` and the limits, non-finite inputs) is NaN, and ``undefined`` says why.
    """
    y = np.asarray(y, np.float64)
    p = np.asarray(p, np.float64)
    if y.shape != p.shape:
        raise ValueError(f"labels {y.shape} and predictions {p.shape} differ in shape")
    nan = float("nan")
    out: dict[str, float | str] = {"bias": nan, "sd": nan, "loa_low": nan, "loa_high": nan}
    if y.size == 0 or not (np.all(np.isfinite(y)) and np.all(np.isfinite(p))):
        out["undefined"] = undefined_reason("bland_altman", y, p)
        return out
    diff = p - y
    out["bias"] = float(diff.mean())
    if diff.size < 2:
        out["undefined"] = "fewer than 2 videos"
        return out
    sd = float(diff.std(ddof=1))
    out.update(sd=sd, loa_low=out["bias"] - 1.96 * sd, loa_high=out["bias"] + 1.96 * sd)
    return out
