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


def format_results(results: Mapping[str, Any]) -> str:
    """The final table: test MAE / RMSE / R2 with 95% CIs next to the predict-the-training-mean MAE,
    and the Bland-Altman bias with its 95% limits of agreement (LoA) when the results have them.

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
    return "\n".join(lines)
