"""The transfer tables: per-fold metrics, mean +- std over folds, trivial baselines, the paper's rows.

CAMUS (Table 4): Pearson correlation and MAE (EF %) for Good + Medium ("G&M") and Poor image quality
separately, and for all patients. HMC-QU (Table 5): sensitivity, specificity, precision, F1, accuracy
(%, MI = positive, predicted MI when the probability >= ``threshold``, 0.5 by default) and AUROC of the
probability. Each fold's metrics come from its held-out patients only; the table shows the mean and the
sample standard deviation (ddof = 1) over the folds where the metric is defined (a fold with fewer than
two Poor patients has no Poor correlation; the count of folds is kept beside each value).

Trivial baselines, per fold, from the training patients only: predict the training mean EF (CAMUS;
its correlation is undefined), predict the majority class (HMC-QU).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from coreecho_jax.evaluation import metrics

#: CAMUS quality groups of the paper's table (and all patients).
QUALITY_GROUPS = {"good_medium": ("Good", "Medium"), "poor": ("Poor",), "all": ("Good", "Medium", "Poor")}
GROUP_TITLES = {"good_medium": "G&M", "poor": "P", "all": "all"}
CLASSIFICATION_METRICS = ("sensitivity", "specificity", "precision", "f1", "accuracy", "auroc")
METRIC_TITLES = {
    "corr": "corr",
    "mae": "MAE",
    "sensitivity": "Sens.",
    "specificity": "Spec.",
    "precision": "Prec.",
    "f1": "F1",
    "accuracy": "Acc.",
    "auroc": "AUROC",
}

#: The paper's own rows (Tables 4 and 5), for the table printed beside ours.
PAPER_ROWS = {
    "camus": {
        "Scratch": {"good_medium/corr": 0.714, "good_medium/mae": 6.20, "poor/corr": 0.538, "poor/mae": 8.28},
        "MLP probing, CoReEcho": {
            "good_medium/corr": 0.730,
            "good_medium/mae": 6.28,
            "poor/corr": 0.570,
            "poor/mae": 8.42,
        },
        "Fine-tuning, CoReEcho": {
            "good_medium/corr": 0.807,
            "good_medium/mae": 5.29,
            "poor/corr": 0.693,
            "poor/mae": 6.81,
        },
    },
    "hmcqu": {
        "Scratch": dict(zip(CLASSIFICATION_METRICS, (95.81, 38.57, 75.99, 84.36, 76.31))),
        "MLP probing, CoReEcho": dict(zip(CLASSIFICATION_METRICS, (93.05, 69.64, 87.20, 89.55, 85.18))),
        "Fine-tuning, K400": dict(zip(CLASSIFICATION_METRICS, (93.14, 64.64, 85.05, 88.25, 83.52))),
        "Fine-tuning, CoReEcho": dict(zip(CLASSIFICATION_METRICS, (92.95, 86.07, 93.55, 92.91, 90.64))),
    },
}


def regression_metrics(
    labels: np.ndarray, predictions: np.ndarray, groups: Sequence[str]
) -> dict[str, float]:
    """``{"<group>/n", "<group>/corr", "<group>/mae", "<group>/rmse"}`` for each quality group (EF %)."""
    labels = np.asarray(labels, np.float64)
    predictions = np.asarray(predictions, np.float64)
    groups = np.asarray(groups)
    out: dict[str, float] = {}
    for group, members in QUALITY_GROUPS.items():
        sel = np.isin(groups, members)
        y, p = labels[sel], predictions[sel]
        out[f"{group}/n"] = int(sel.sum())
        out[f"{group}/corr"] = metrics.pearson(y, p) if len(y) >= 2 else math.nan
        out[f"{group}/mae"] = metrics.mae(y, p) if len(y) else math.nan
        out[f"{group}/rmse"] = metrics.rmse(y, p) if len(y) else math.nan
    return out


def classification_metrics(
    labels: np.ndarray, probabilities: np.ndarray, threshold: float
) -> dict[str, float]:
    """Sensitivity ... accuracy (%) at ``threshold``, AUROC, and the confusion counts."""
    labels = np.asarray(labels).astype(int)
    probabilities = np.asarray(probabilities, np.float64)
    predicted = (probabilities >= threshold).astype(int)
    tp, fp, tn, fn = metrics.classification_counts(labels, predicted)
    out: dict[str, float] = {"n": len(labels), "tp": tp, "fp": fp, "tn": tn, "fn": fn}
    for name in CLASSIFICATION_METRICS[:-1]:
        out[name] = getattr(metrics, name)(labels, predicted)
    out["auroc"] = metrics.auroc(labels, probabilities)
    return out


def fold_metrics(
    task: str,
    labels: np.ndarray,
    outputs: np.ndarray,
    groups: Sequence[str],
    *,
    train_labels: np.ndarray,
    threshold: float = 0.5,
) -> dict[str, Any]:
    """One fold's metrics and its trivial baseline (``{"model": {...}, "baseline": {...}}``).

    ``outputs``: EF predictions (CAMUS) or MI probabilities (HMC-QU) of the held-out patients.
    """
    train_labels = np.asarray(train_labels, np.float64)
    if task == "camus":
        baseline = np.full(len(labels), train_labels.mean())
        return {
            "model": regression_metrics(labels, outputs, groups),
            "baseline": regression_metrics(labels, baseline, groups),
            "train_mean_ef": float(train_labels.mean()),
        }
    majority = float(train_labels.mean() >= 0.5)  # ties go to MI, the larger class of HMC-QU
    return {
        "model": classification_metrics(labels, outputs, threshold),
        "baseline": classification_metrics(labels, np.full(len(labels), majority), threshold),
        "majority_class": int(majority),
    }


def summarize_folds(folds: Sequence[Mapping[str, float]]) -> dict[str, dict[str, float]]:
    """``{metric: {"mean", "std", "folds"}}`` over the folds where the metric is finite (std: ddof 1)."""
    out = {}
    for key in folds[0]:
        values = np.array([f[key] for f in folds], np.float64)
        values = values[np.isfinite(values)]
        out[key] = {
            "mean": float(values.mean()) if values.size else math.nan,
            "std": float(values.std(ddof=1)) if values.size >= 2 else math.nan,
            "folds": int(values.size),
        }
    return out


def table_columns(task: str) -> list[str]:
    if task == "camus":
        return [f"{g}/{m}" for g in QUALITY_GROUPS for m in ("corr", "mae")]
    return list(CLASSIFICATION_METRICS)


def _title(column: str) -> str:
    if "/" in column:
        group, metric = column.split("/")
        return f"{GROUP_TITLES[group]} {METRIC_TITLES[metric]}"
    return METRIC_TITLES[column]


def _cell(summary: Mapping[str, float] | None, column: str, n_folds: int) -> str:
    if summary is None or not math.isfinite(summary["mean"]):
        return "-"
    digits = 3 if column.endswith("corr") or column == "auroc" else 2
    text = f"{summary['mean']:.{digits}f}"
    if math.isfinite(summary["std"]):
        text += f" ± {summary['std']:.{digits}f}"
    if summary["folds"] < n_folds:
        text += f" ({summary['folds']}/{n_folds} folds)"
    return text


def _paper_cell(value: float | None, column: str) -> str:
    if value is None:
        return "-"
    return f"{value:.3f}" if column.endswith("corr") else f"{value:.2f}"


def format_table(task: str, rows: Mapping[str, Mapping[str, Mapping[str, float]]], n_folds: int) -> str:
    """A Markdown table: our rows (``{label: summarize_folds(...)}``), then the paper's rows."""
    columns = table_columns(task)
    lines = [
        "| Setting | " + " | ".join(_title(c) for c in columns) + " |",
        "|---|" + "---|" * len(columns),
    ]
    for label, summary in rows.items():
        lines.append(f"| {label} | " + " | ".join(_cell(summary.get(c), c, n_folds) for c in columns) + " |")
    for label, values in PAPER_ROWS[task].items():
        cells = [_paper_cell(values.get(c), c) for c in columns]
        lines.append(f"| paper: {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
