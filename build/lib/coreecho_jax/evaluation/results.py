"""Evaluation results for people and for programs: the results table and strict JSON files.

JSON files are strict (``allow_nan=False``): a metric without a value is ``null``, and the summary
carries the reason next to it (``"r2": null, "r2_undefined": "labels are constant"``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np


def json_ready(tree: Any) -> Any:
    """``tree`` with numpy scalars/arrays as Python values and NaN/inf floats as ``None``."""
    if isinstance(tree, Mapping):
        return {str(k): json_ready(v) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return [json_ready(v) for v in tree]
    if isinstance(tree, np.ndarray):
        return json_ready(tree.tolist())
    if isinstance(tree, np.generic):
        tree = tree.item()
    if isinstance(tree, float) and not math.isfinite(tree):
        return None
    return tree


def write_json(tree: Any, path: str | Path) -> Path:
    """Writes ``tree`` as strict JSON (indent 2); undefined numbers become ``null``. Returns the path."""
    path = Path(path)
    path.write_text(json.dumps(json_ready(tree), indent=2, allow_nan=False) + "\n")
    return path


def _value(results: Mapping[str, Any], key: str) -> float | None:
    value = results.get(key)
    if value is None or not math.isfinite(float(value)):
        return None
    return float(value)


def _agreement_line(results: Mapping[str, Any]) -> str:
    label = f"{'Bland-Altman bias (EF %)':<34}"
    bias = _value(results, "ba_bias")
    if bias is None:
        return label + f"undefined: {results.get('ba_bias_undefined', 'not a number')}"
    lo, hi = _value(results, "ba_loa_low"), _value(results, "ba_loa_high")
    if lo is None or hi is None:
        return (
            label
            + f"{bias:>10.3f}   95% LoA undefined: {results.get('ba_loa_low_undefined', 'not a number')}"
        )
    return label + f"{bias:>10.3f}   95% LoA [{lo:.3f}, {hi:.3f}]"


def _interval_lines(results: Mapping[str, Any]) -> list[str]:
    """Coverage and mean width of the EF intervals, overall and per bin of predicted EF."""
    if "interval_coverage" not in results:
        reason = results.get("interval_undefined")
        return [f"{'EF interval coverage':<34}undefined: {reason}"] if reason else []
    level = float(results["interval_level"])
    lines = [f"{f'EF interval ({100 * level:g} %)':<34}{'coverage':>10}{'width, EF %':>14}{'videos':>8}"]
    labels = [("", "all videos")] + [
        (f"_{name}", f"  {what}") for name, what in results.get("interval_bins", {}).items()
    ]
    for suffix, label in labels:
        n = int(results[f"interval_n{suffix}"])
        coverage = _value(results, f"interval_coverage{suffix}")
        if coverage is None:
            lines.append(f"{label:<34}{'-':>10}{'-':>14}{n:>8d}")
            continue
        width = _value(results, f"interval_mean_width{suffix}")
        lines.append(f"{label:<34}{100 * coverage:>8.1f} %{width:>14.2f}{n:>8d}")
    for name, reason in results.get("interval_infinite_bins", {}).items():
        lines.append(f"  {name}: {reason}")
    if results.get("interval_calibration"):
        lines.append(f"  calibrated on the {results['interval_calibration']}")
    return lines


def _category_lines(results: Mapping[str, Any]) -> list[str]:
    """AUROC of EF < 40 / < 50 with CIs, and the true x predicted category table."""
    lines = []
    for key in sorted(k for k in results if k.startswith("auroc_ef_below_") and k.count("_") == 3):
        label = f"AUROC EF < {key.rsplit('_', 1)[1]}"
        value = _value(results, key)
        if value is None:
            lines.append(f"{label:<34}undefined: {results.get(f'{key}_undefined', 'not a number')}")
            continue
        line = f"{label:<34}{value:>10.3f}"
        lo, hi = _value(results, f"{key}_ci_low"), _value(results, f"{key}_ci_high")
        if lo is not None and hi is not None:
            line += f"   [{lo:.3f}, {hi:.3f}]"
        elif f"{key}_ci_undefined" in results:
            line += f"   undefined: {results[f'{key}_ci_undefined']}"
        lines.append(line)
    table = results.get("ef_category_confusion")
    if table:
        lines.append(f"EF category: {table['rows']} (rows) x {table['columns']} (columns)")
        lines.append(" " * 34 + "".join(f"{n:>16}" for n in table["categories"]))
        for name, what, row in zip(table["categories"], table["category_ef"], table["counts"]):
            lines.append(f"  {f'{name} ({what})':<32}" + "".join(f"{c:>16d}" for c in row))
    return lines


def format_results(results: Mapping[str, Any]) -> str:
    """The final table: test MAE / RMSE / R2 with 95% CIs next to the predict-the-training-mean MAE,
    and the Bland-Altman bias with its 95% limits of agreement (LoA) when the results have them; then
    the EF interval coverage and width and the EF category metrics when the results have them.

    Works on a summary (NaN for undefined values) or on its JSON (``null``); an undefined value is
    printed as ``undefined: <reason>``.
    """
    lines = [f"{'metric':<34}{'value':>10}   95% CI"]
    for key, label, base, scale in (
        ("mae", "MAE (EF %)", "mae", 1.0),
        ("rmse", "RMSE (EF %)", "rmse", 1.0),
        ("r2_x100", "R2 x 100", "r2", 100.0),
    ):
        value = _value(results, key)
        if value is None:
            lines.append(f"{label:<34}undefined: {results.get(f'{base}_undefined', 'not a number')}")
            continue
        line = f"{label:<34}{value:>10.3f}"
        if f"{base}_ci_low" in results:
            lo, hi = _value(results, f"{base}_ci_low"), _value(results, f"{base}_ci_high")
            if lo is None or hi is None:
                line += f"   undefined: {results.get(f'{base}_ci_undefined', 'not a number')}"
            else:
                line += f"   [{lo * scale:.3f}, {hi * scale:.3f}]"
        lines.append(line)
    baseline = _value(results, "mae_of_predicting_train_mean")
    if baseline is not None:
        lines.append(f"{'MAE of predicting the train mean':<34}{baseline:>10.3f}")
    if "ba_bias" in results:  # results written before the Bland-Altman keys lack them
        lines.append(_agreement_line(results))
    lines.append(f"{'videos':<34}{int(results['n']):>10d}   ({results['clips_per_video']} clips each)")
    lines += _interval_lines(results) + _category_lines(results)  # absent from results before them
    return "\n".join(lines)
