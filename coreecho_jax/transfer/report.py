"""The transfer tables: per-fold metrics, mean +- std over folds, pooled values, trivial baselines, the
paper's rows.

CAMUS (Table 4): Pearson correlation and MAE (EF %) for Good + Medium ("G&M") and Poor image quality
separately, and for all patients. A correlation needs at least :data:`MIN_CORR_PATIENTS` patients in
its group (two points always give +-1); with fewer it is undefined (NaN, with a note) and left out of
the fold mean. HMC-QU (Table 5): sensitivity, specificity, precision, F1, accuracy (%, MI = positive)
and AUROC of the probability. A video is predicted MI when its probability is > ``threshold`` (0.5),
as the paper's reference [21] does it; ``inclusive=True`` makes it >=. A ratio with an empty
denominator (precision of a fold that predicts no MI, sensitivity of a fold with no MI, ...) counts as
0, as [21]'s metric library does, and is marked in ``notes``; AUROC of a fold with one class is
undefined (NaN, with a note).

[21] is BioMedIA-MBZUAI/mi-classification. ``mi/a4c/models.py`` (``validation_step``) predicts
``torch.round(torch.sigmoid(logit))``: round half to even, so 0.5 -> 0 and MI means p > 0.5; its
``validation_epoch_end`` computes ``torchmetrics.Specificity / F1 / Precision / Recall / Accuracy``
of those 0/1 predictions over the fold, with torchmetrics 0.6.1 (``requirements.txt``), whose
``_reduce_stat_scores`` (``torchmetrics/functional/classification/stat_scores.py``) replaces a zero
denominator by ``zero_division=0`` and whose F-beta sets a 0 precision + recall denominator to 1
(``functional/classification/f_beta.py``): every such ratio is 0. ``mi/a4c/train.py`` reports the
mean of the five folds' values.

Each fold's metrics come from its held-out patients only; the table shows the mean and the sample
standard deviation (ddof = 1) over the folds where the metric is defined (the count of folds is kept
beside each value) and, for CAMUS, the value pooled over every cross-validated patient.

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


#: Fewest patients of a quality group for its Pearson correlation; with fewer it is undefined. Two
#: points always give +-1, and three are the fewest whose correlation is not fixed by their count.
MIN_CORR_PATIENTS = 3

#: Why each ratio metric's denominator can be empty (for the note beside a 0/0 counted as 0).
EMPTY_DENOMINATOR = {
    "sensitivity": "no MI among the tested videos",
    "specificity": "no normal video among the tested videos",
    "precision": "no video predicted MI",
    "f1": "no MI tested and none predicted",
    "accuracy": "no tested video",
}

#: Which of our CAMUS rows the paper's are set against, and why (results.json and table.md say it).
CAMUS_COMPARISON = (
    "The paper does not say whether its CAMUS numbers are means over the 10 folds or values pooled over "
    "all patients. We compare them with our mean over folds, because the paper's HMC-QU protocol follows "
    "its reference [21], whose code reports the mean of per-fold metrics. The pooled row (one r and one "
    "MAE over every cross-validated patient) is printed beside it: it is the steadier value where a fold "
    "holds few patients of a group (Poor: about 10 per fold of 50)."
)

#: The same for HMC-QU.
HMCQU_COMPARISON = (
    "The paper's HMC-QU numbers follow its reference [21], whose code reports the mean of the five folds' "
    "metrics; the table's fold means are compared with them."
)


def regression_metrics(labels: np.ndarray, predictions: np.ndarray, groups: Sequence[str]) -> dict[str, Any]:
    """``{"<group>/n", "<group>/corr", "<group>/mae", "<group>/rmse"}`` for each quality group (EF %),
    and ``notes``: ``{metric: why it is undefined}`` for each NaN.

    The correlation of a group with fewer than :data:`MIN_CORR_PATIENTS` patients is NaN.
    """
    labels = np.asarray(labels, np.float64)
    predictions = np.asarray(predictions, np.float64)
    groups = np.asarray(groups)
    out: dict[str, Any] = {}
    notes: dict[str, str] = {}
    for group, members in QUALITY_GROUPS.items():
        sel = np.isin(groups, members)
        y, p = labels[sel], predictions[sel]
        n = int(sel.sum())
        out[f"{group}/n"] = n
        if n >= MIN_CORR_PATIENTS:
            out[f"{group}/corr"] = metrics.pearson(y, p)
            if not math.isfinite(out[f"{group}/corr"]):
                notes[f"{group}/corr"] = metrics.undefined_reason("pearson", y, p)
        else:
            out[f"{group}/corr"] = math.nan
            notes[f"{group}/corr"] = f"{n} patient(s): a correlation needs at least {MIN_CORR_PATIENTS}"
        out[f"{group}/mae"] = metrics.mae(y, p) if n else math.nan
        out[f"{group}/rmse"] = metrics.rmse(y, p) if n else math.nan
        if not n:
            notes[f"{group}/mae"] = notes[f"{group}/rmse"] = "no patient of this group"
    out["notes"] = notes
    return out


def predict_mi(probabilities: np.ndarray, threshold: float, inclusive: bool = False) -> np.ndarray:
    """0/1 predictions: MI when the probability is > ``threshold`` ([21]), or >= with ``inclusive``."""
    probabilities = np.asarray(probabilities, np.float64)
    above = probabilities >= threshold if inclusive else probabilities > threshold
    return above.astype(int)


def classification_metrics(
    labels: np.ndarray, probabilities: np.ndarray, threshold: float, *, inclusive: bool = False
) -> dict[str, Any]:
    """Sensitivity ... accuracy (%) of :func:`predict_mi`, AUROC, the confusion counts and ``notes``.

    A ratio with an empty denominator is 0 (as [21], module doc) and noted; AUROC without both classes
    is NaN and noted.
    """
    labels = np.asarray(labels).astype(int)
    probabilities = np.asarray(probabilities, np.float64)
    predicted = predict_mi(probabilities, threshold, inclusive)
    tp, fp, tn, fn = metrics.classification_counts(labels, predicted)
    out: dict[str, Any] = {"n": len(labels), "tp": tp, "fp": fp, "tn": tn, "fn": fn}
    notes: dict[str, str] = {}
    for name in CLASSIFICATION_METRICS[:-1]:
        value = getattr(metrics, name)(labels, predicted)
        if math.isnan(value):  # 0/0
            value = 0.0
            notes[name] = f"0/0 ({EMPTY_DENOMINATOR[name]}): counted as 0, as [21]"
        out[name] = value
    out["auroc"] = metrics.auroc(labels, probabilities)
    if math.isnan(out["auroc"]):
        notes["auroc"] = (
            f"undefined: only {'MI' if tp + fn else 'normal'} videos among the {len(labels)} tested"
        )
    out["notes"] = notes
    return out


def fold_metrics(
    task: str,
    labels: np.ndarray,
    outputs: np.ndarray,
    groups: Sequence[str],
    *,
    train_labels: np.ndarray,
    threshold: float = 0.5,
    inclusive: bool = False,
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
        "model": classification_metrics(labels, outputs, threshold, inclusive=inclusive),
        "baseline": classification_metrics(
            labels, np.full(len(labels), majority), threshold, inclusive=inclusive
        ),
        "majority_class": int(majority),
    }


def summarize_folds(folds: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, float]]:
    """``{metric: {"mean", "std", "folds"}}`` over the folds where the metric is finite (std: ddof 1);
    ``counted_as_zero`` is added where some folds' value is a 0/0 counted as 0."""
    out = {}
    for key in folds[0]:
        if key == "notes":
            continue
        values = np.array([math.nan if f[key] is None else f[key] for f in folds], np.float64)
        zeroed = sum(key in f.get("notes", {}) and _finite(f[key]) for f in folds)
        values = values[np.isfinite(values)]
        out[key] = {
            "mean": float(values.mean()) if values.size else math.nan,
            "std": float(values.std(ddof=1)) if values.size >= 2 else math.nan,
            "folds": int(values.size),
        }
        if zeroed:
            out[key]["counted_as_zero"] = int(zeroed)
    return out


def _finite(value: float | None) -> bool:
    """A number (a NaN read back from JSON is None)."""
    return value is not None and math.isfinite(value)


def as_row(values: Mapping[str, Any], n_folds: int) -> dict[str, dict[str, float]]:
    """One value per metric (e.g. pooled over the folds) in the shape :func:`format_table` prints."""
    return {
        k: {"mean": float(v), "std": math.nan, "folds": n_folds} for k, v in values.items() if k != "notes"
    }


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
    if summary.get("counted_as_zero"):
        text += f" (0/0 = 0 in {summary['counted_as_zero']}/{n_folds} folds)"
    return text


def _paper_cell(value: float | None, column: str) -> str:
    if value is None:
        return "-"
    return f"{value:.3f}" if column.endswith("corr") else f"{value:.2f}"


def format_table(task: str, rows: Mapping[str, Mapping[str, Mapping[str, float]]], n_folds: int) -> str:
    """A Markdown table: our rows (``{label: summarize_folds(...)}`` or :func:`as_row`), then the
    paper's rows."""
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
