"""The transfer tables: mean +- std over folds, pooled values, trivial baselines, the paper's rows.

Each fold's metrics come from its held-out videos only (:mod:`coreecho_jax.evaluation.transfer`: per
quality group for CAMUS, at the [21] threshold with 0/0 counted as 0 for HMC-QU); the table shows the
mean and the sample standard deviation (ddof = 1) over the folds where the metric is defined (the count
of folds is kept beside each value) and, where the task's record asks for it (CAMUS), the value pooled
over every cross-validated patient. The columns, the baseline's label and the paper's rows are the
task's (:mod:`coreecho_jax.transfer.tasks`).

Trivial baselines, per fold, from the training patients only: predict the training mean EF (CAMUS;
its correlation is undefined), predict the majority class (HMC-QU).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from coreecho_jax.transfer import tasks


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


def _digits(column: str) -> int:
    return 3 if column.endswith("corr") or column == "auroc" else 2


def _cell(summary: Mapping[str, float] | None, column: str, n_folds: int) -> str:
    if summary is None or not math.isfinite(summary["mean"]):
        return "-"
    digits = _digits(column)
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


def format_table(
    task: str | tasks.Task, rows: Mapping[str, Mapping[str, Mapping[str, float]]], n_folds: int
) -> str:
    """A Markdown table of the task's columns: our rows (``{label: summarize_folds(...)}`` or
    :func:`as_row`), then the paper's rows."""
    task = tasks.get(task)
    columns = list(task.columns)
    lines = [
        "| Setting | " + " | ".join(task.columns.values()) + " |",
        "|---|" + "---|" * len(columns),
    ]
    for label, summary in rows.items():
        lines.append(f"| {label} | " + " | ".join(_cell(summary.get(c), c, n_folds) for c in columns) + " |")
    for label, values in task.paper_rows.items():
        cells = [_paper_cell(values.get(c), c) for c in columns]
        lines.append(f"| paper: {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def table_rows(
    task: str | tasks.Task,
    label: str,
    model: Mapping[str, Any],
    baseline: Mapping[str, Any],
    pooled: tuple[Mapping[str, Any], Mapping[str, Any]],
    n_folds: int,
) -> dict[str, Mapping[str, Any]]:
    """Our rows of the table: the model's fold summary (row ``label``) and the baseline's, each followed by
    its pooled values when the task's record shows them."""
    task = tasks.get(task)
    rows: dict[str, Mapping[str, Any]] = {}
    for row, summary, values in ((label, model, pooled[0]), (task.baseline_label, baseline, pooled[1])):
        rows[row] = summary
        if task.pooled_rows:
            rows[f"{row}, pooled"] = as_row(values, n_folds)
    return rows
