"""The guideline EF categories and the classification metrics of a regression model on them (numpy only).

Reduced (EF < 40 %), mildly reduced (40 <= EF < 50 %) and normal (EF >= 50 %): the heart-failure
categories of the ESC/AHA guidelines, with the thresholds as issue 23 states them (the guidelines put
40 % itself in "reduced"; EF labels of EchoNet-Dynamic are continuous, so the two rules differ only on
the boundary). The category of a video is that of its EF; at prediction time, that of its predicted EF.

Metrics (:func:`category_metrics`): the AUROC of detecting EF < 40 and EF < 50 (as EchoNet-Dynamic
reports for heart failure) with the predicted EF as the score (lower EF = more positive), and the 3 x 3
confusion table of true against predicted category.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

from coreecho_jax.evaluation import metrics as metrics_lib

EDGES: tuple[float, ...] = (40.0, 50.0)
"""EF (%) where a category ends and the next begins: bin ``i`` is ``EDGES[i-1] <= EF < EDGES[i]``."""

NAMES: tuple[str, ...] = ("reduced", "mildly_reduced", "normal")
"""The categories, in the order of :data:`EDGES` (lowest EF first)."""

THRESHOLDS: tuple[float, ...] = (40.0, 50.0)
"""The AUROCs :func:`category_metrics` reports: detecting EF below each of these (%)."""


def bin_index(ef, edges: Sequence[float] = EDGES) -> np.ndarray:
    """``[N]`` EF (%) -> ``[N]`` bin indices ``0 .. len(edges)``, left-closed: ``edges[i-1] <= EF < edges[i]``."""
    return np.searchsorted(np.asarray(edges, np.float64), np.asarray(ef, np.float64), side="right")


def describe(index: int, edges: Sequence[float] = EDGES) -> str:
    """Bin ``index`` as words for people: ``EF < 40``, ``40 <= EF < 50``, ``EF >= 50``."""
    low = None if index == 0 else edges[index - 1]
    high = None if index == len(edges) else edges[index]
    if low is None and high is None:
        return "any EF"
    if low is None:
        return f"EF < {high:g}"
    if high is None:
        return f"EF >= {low:g}"
    return f"{low:g} <= EF < {high:g}"


def confusion(labels, predictions, edges: Sequence[float] = EDGES) -> np.ndarray:
    """``[C, C]`` video counts: row = category of the label, column = category of the prediction (EF %)."""
    c = len(edges) + 1
    table = np.zeros((c, c), np.int64)
    np.add.at(table, (bin_index(labels, edges), bin_index(predictions, edges)), 1)
    return table


def _below(threshold: float) -> Callable[[np.ndarray, np.ndarray], float]:
    def auroc_below(y, p) -> float:
        return metrics_lib.auroc(np.asarray(y, np.float64) < threshold, -np.asarray(p, np.float64))

    return auroc_below


def _auroc_undefined(threshold: float, labels: np.ndarray) -> str:
    below = int(np.sum(labels < threshold))
    if labels.size == 0:
        return "no videos"
    if below == 0:
        return f"no video has EF < {threshold:g}"
    if below == labels.size:
        return f"every video has EF < {threshold:g}"
    return "the metric is not defined on these values"


def category_metrics(
    labels, predictions, *, n_resamples: int = 1000, seed: int = 0
) -> dict[str, float | int | str | dict]:
    """AUROC of EF < 40 and of EF < 50 (``auroc_ef_below_40``, ...; in [0, 1], with bootstrap 95% CIs
    when ``n_resamples > 0``) and ``ef_category_confusion`` (rows: true category, columns: predicted).

    ``labels``, ``predictions``: ``[N]`` EF (%). An AUROC without a value (one class absent) is NaN with
    ``<name>_undefined`` saying which.
    """
    labels = np.asarray(labels, np.float64)
    predictions = np.asarray(predictions, np.float64)
    names = {f"auroc_ef_below_{t:g}": t for t in THRESHOLDS}
    fns = {name: _below(t) for name, t in names.items()}
    out = metrics_lib.summarize(labels, predictions, fns, n_resamples=n_resamples, seed=seed)
    out.pop("n")
    for name, threshold in names.items():
        if f"{name}_undefined" in out:
            out[f"{name}_undefined"] = _auroc_undefined(threshold, labels)
        if f"{name}_ci_undefined" in out and not math.isfinite(out[name]):
            out[f"{name}_ci_undefined"] = out[f"{name}_undefined"]
    out["ef_category_confusion"] = {
        "categories": list(NAMES),
        "category_ef": [describe(i) for i in range(len(NAMES))],
        "rows": "true category",
        "columns": "predicted category",
        "counts": confusion(labels, predictions).tolist(),
    }
    return out
