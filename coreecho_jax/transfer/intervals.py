"""Calibrated EF intervals for a cross-validated regression (a transfer task whose label is EF %).

The intervals are :mod:`coreecho_jax.evaluation.conformal`'s: split conformal, one quantile per
predicted EF category (EF < 40, 40-49, >= 50; a category with fewer calibration videos than the level
needs, 9 at 90 %, gets [0, 100]), clipped to [0, 100]. The transfer wing predicts one clip per video,
so the K-clip spread is 0 and the score is ``|EF - predicted EF| / spread_floor``: plain
absolute-residual conformal.

What each fold's intervals are fitted on:

* **the fold's validation videos**, when it has some (a manifest's ``split`` column, CAMUS's split
  files): the predictions of the model the fold tests. That model's epoch was chosen on the same
  videos, so their residuals may be a little smaller than the test videos' (the coverage reported
  below measures it);
* else **the other folds' tested videos** (cross-fitted): the out-of-fold residuals of the folds run
  beside it, each from a model that never trained on its video. Those come from other models than the
  one the fold tests (trained on most of the same videos), so the guarantee is approximate, not exact;
* else none: one fold run and no validation set leaves nothing to fit on (said in the summary).

The coverage and mean width (EF points) over every tested video with an interval, overall and per
predicted category, go to ``results.json`` (``intervals``) and a line of ``table.md``; each video's
ends to ``predictions.csv`` (``lower``, ``upper``).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from coreecho_jax.evaluation import conformal

VALIDATION = "fitted on the fold's validation videos"
CROSS_FITTED = "cross-fitted on the other folds' tested videos"


@dataclasses.dataclass(frozen=True)
class Intervals:
    """The intervals of a cross-validation: ``summary`` for results.json, ``bounds`` ``{name: (lo, hi)}``
    (EF %) for each tested video that has one."""

    summary: dict[str, Any]
    bounds: dict[str, tuple[float, float]]

    def line(self) -> str:
        """The sentence for table.md."""
        s = self.summary
        level = f"{100 * s['level']:g} %"
        if not self.bounds:
            return f"No {level} EF intervals: {s['why_none']}."
        text = (
            f"{level} EF intervals (split conformal per predicted EF category, {s['fitted_on']}): coverage "
            f"{s['interval_coverage']:.2f}, mean width {s['interval_mean_width']:.1f} EF points over "
            f"{s['interval_n']} tested videos"
        )
        if s["unbounded"]:
            few = ", ".join(s["interval_infinite_bins"])
            text += (
                f"; {s['unbounded']} of them [0, 100], predicted in a category with too few calibration "
                f"videos ({few})"
            )
        if s["without_interval"]:
            text += f"; {s['without_interval']} without an interval ({s['why_none']})"
        return text + "."


def _arrays(predictions: Sequence[Mapping[str, Any]]) -> tuple[np.ndarray, np.ndarray]:
    labels = np.array([p["label"] for p in predictions], np.float64)
    outputs = np.array([p["output"] for p in predictions], np.float64)
    return labels, outputs


def _calibration(result: Mapping[str, Any], results: Sequence[Mapping[str, Any]], level: float):
    """(calibration or None, what it was fitted on, why none) for one fold's ``result``."""
    validation = result.get("val_predictions") or []
    if validation:
        pool, source = validation, VALIDATION
    else:
        pool = [p for r in results if r is not result for p in r["predictions"]]
        source = CROSS_FITTED
    if not pool:
        if result.get("sizes", {}).get("val"):
            why = "its result records no validation predictions (written before intervals)"
        else:
            why = "the fold has no validation videos"
        return None, None, why + " and no other fold was run"
    labels, outputs = _arrays(pool)
    calibration = conformal.fit(
        labels,
        outputs,
        np.zeros_like(outputs),
        clips_per_video=1,
        level=level,
        source=f"fold {result['fold']}: {source} ({len(pool)})",
    )
    return calibration, source, None


def _fold_entry(result: Mapping[str, Any], calibration, source: str | None, why: str | None) -> dict:
    entry: dict[str, Any] = {"fold": result["fold"]}
    if calibration is None:
        entry["why_none"] = why
        return entry
    entry["fitted_on"] = source
    entry["calibration_videos"] = {n: c for n, c in zip(calibration.names, calibration.n)}
    entry["quantiles"] = {
        n: (q if math.isfinite(q) else None) for n, q in zip(calibration.names, calibration.quantiles)
    }
    return entry


def cross_validated(
    results: Sequence[Mapping[str, Any]], level: float = conformal.DEFAULT_LEVEL
) -> Intervals:
    """The intervals of every tested video of the folds' ``results`` (the loop's fold results: each with
    ``predictions`` and, when the fold has a validation set, ``val_predictions``; module doc).

    ``summary``: ``level``, ``method``, ``fitted_on``, ``per_fold`` (what each fold's calibration was
    fitted on, its videos and quantile per category, or ``why_none``), ``without_interval`` (tested
    videos without one) and ``why_none``, ``unbounded`` (tested videos whose interval is [0, 100]: their
    predicted category had too few calibration videos) and, over the videos with an interval,
    :func:`~coreecho_jax.evaluation.conformal.coverage_report`'s keys prefixed ``interval_`` (coverage and
    mean width, overall and per predicted category) and ``interval_infinite_bins``."""
    bounds: dict[str, tuple[float, float]] = {}
    per_fold, covered, sources, whys = [], [], set(), []
    unbounded = 0
    for r in results:
        calibration, source, why = _calibration(r, results, level)
        per_fold.append(_fold_entry(r, calibration, source, why))
        if calibration is None:
            whys.append(f"fold {r['fold']}: {why}")
            continue
        sources.add(source)
        labels, outputs = _arrays(r["predictions"])
        lo, hi = calibration.interval(outputs, np.zeros_like(outputs))
        for p, a, b in zip(r["predictions"], lo, hi):
            bounds[p["name"]] = (float(a), float(b))
        unbounded += int(np.sum(~np.isfinite(np.asarray(calibration.quantiles)[calibration.bins(outputs)])))
        covered.append((labels, outputs, calibration))
    summary: dict[str, Any] = {
        "level": level,
        "method": conformal.METHOD + "; one clip per video (spread 0): |EF - predicted EF| / spread_floor",
        "fitted_on": " / ".join(sorted(sources)) if sources else None,
        "per_fold": per_fold,
        "without_interval": sum(len(r["predictions"]) for r in results) - len(bounds),
        "unbounded": unbounded,
    }
    if whys:
        summary["why_none"] = "; ".join(whys)
    if covered:
        summary.update(_coverage(covered))
    return Intervals(summary, bounds)


def _coverage(covered: Sequence[tuple[np.ndarray, np.ndarray, conformal.Calibration]]) -> dict[str, Any]:
    """interval_report's keys over every fold's tested videos (each fold with its own calibration)."""
    labels = np.concatenate([y for y, _, _ in covered])
    lo, hi, bins = [], [], []
    infinite: set[str] = set()
    for _, outputs, calibration in covered:
        a, b = calibration.interval(outputs, np.zeros_like(outputs))
        lo.append(a)
        hi.append(b)
        bins.append(calibration.bins(outputs))
        infinite |= {
            calibration.names[k] for k in range(len(calibration.names)) if calibration.undefined_reason(k)
        }
    names = covered[0][2].names
    report = conformal.coverage_report(
        labels, np.concatenate(lo), np.concatenate(hi), np.concatenate(bins), names
    )
    out: dict[str, Any] = {f"interval_{k}": v for k, v in report.items()}
    if infinite:
        out["interval_infinite_bins"] = sorted(infinite, key=names.index)
    return out
