"""Calibrated EF intervals: split conformal, Mondrian by predicted EF category, normalised by the K-clip spread.

numpy only (no jax, no TensorFlow): ``predict`` reads ``calibration.json`` through this module.

**The interval.** A video with predicted EF ``p`` (mean of its K clip predictions, %) and K-clip spread
``s`` (standard deviation of the K clip predictions, ddof=0, %) gets ``p -/+ q_b * (s + beta)``, clipped
to [0, 100], where ``b`` is the guideline category of ``p`` (:mod:`~coreecho_jax.evaluation.categories`:
EF < 40, 40 <= EF < 50, EF >= 50) and ``q_b`` the conformal quantile of bin ``b``.

**The fit** (split conformal, Vovk et al. 2005, Lei et al. 2018; one quantile per bin: Mondrian):
``score_i = |y_i - p_i| / (s_i + beta)`` over the ``n_b`` calibration videos predicted in bin ``b``;
``q_b`` = the ``k``-th smallest score, ``k = ceil((n_b + 1) * level)``. When calibration and new videos
are exchangeable (same population, model and clip protocol), each bin's coverage
``P(y in interval | predicted bin b)`` is at least ``level``, and below ``level + 1 / (n_b + 1)`` when
scores have no ties.

Choices, and why:

* **Bins by predicted EF.** The true EF is unknown when the interval is needed, and the guarantee holds
  conditionally on what the bins are keyed on. Coverage per *true* category is not guaranteed: a truly
  reduced heart predicted at 45 gets the mildly-reduced bin's width (``coreecho evaluate`` reports the
  coverage per predicted bin, the one the method promises).
* **sigma = s + beta, beta = :data:`SPREAD_FLOOR` = 1 EF point, fixed.** The K-clip spread is 0 with
  K = 1 or when the clips agree; ``max(s, eps)`` would make those scores huge (one such calibration
  video inflates every interval) or their intervals zero-wide. A constant beta keeps the score function
  independent of the calibration data, so the guarantee stays exact (a beta fitted on the calibration
  spreads, e.g. their median, would not); with K = 1 every sigma is beta and the method is plain
  absolute-residual conformal. One point is the resolution EF is read at: spreads far below it say
  nothing about the error.
* **A bin with too few videos gets an infinite interval** ([0, 100] after clipping), not the pooled
  quantile. At ``level`` a finite quantile needs ``n_b >= level / (1 - level)`` (9 at 90 %). Errors
  depend on the EF range (reduced hearts are rarer and predicted with larger errors), so the pooled
  quantile would claim a coverage nothing backs, for exactly the patients whose category matters;
  [0, 100] says "no calibrated interval" plainly, and ``calibration.json`` says why and how many videos
  the bin needs (``quantile: null``, ``quantile_undefined``).
* **Calibration data.** Training fits on the validation split after stage 2, at clip starts drawn
  afresh (like the test protocol's). The stage-2 epoch was chosen on validation MAE, so validation
  residuals may be slightly smaller than test residuals; the demo's test coverage measures the effect
  (docs/prediction.md). ``predict`` spreads its K starts evenly instead of drawing them: its spreads may be
  distributed slightly differently from the calibration's.

**A calibration set of your own** (labelled videos of your population, as the test split of a data
root): ``coreecho evaluate`` of the trained model on them writes ``test_predictions_evaluate.csv`` and
``results_evaluate.json``; ``coreecho calibrate --workdir=EVAL_WORKDIR
--out=RUN/calibration.json [--level=0.9]`` fits on those predictions (:func:`fit_from_evaluation`; the CSV
holds them to 4 decimals, 0.0001 EF points).

**Why not crepes** (``crepes.ConformalRegressor`` does normalised Mondrian split conformal): ``import
crepes`` loads pandas, scipy and scikit-learn (``crepes.extras`` imports sklearn without declaring it),
heavy for an inference install that needs one number per bin; its fitted regressor keeps every
calibration score and has no file format, where the weights need a small strict JSON beside them; and
it takes the quantile rank in floating point (``int((1 - confidence) * (n + 1)) - 1``), which at 90 %
is one rank too high whenever ``n + 1`` is a multiple of 10 (checked with crepes 0.9.1: n = 19 gives the
largest score instead of the 18th smallest; n = 9 gives an infinite interval where the exact rule has a
finite one). The rule here is :func:`conformal_quantile`, tested against its guarantee in
``tests/evaluation/test_conformal.py``.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import math
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from coreecho_jax.errors import CheckpointError, DataError
from coreecho_jax.evaluation import categories

CALIBRATION_FILE = "calibration.json"
FORMAT = "coreecho-jax EF calibration"
VERSION = 1
DEFAULT_LEVEL = 0.9
SPREAD_FLOOR = 1.0
"""beta of ``sigma = spread + beta`` (EF points); see the module docstring."""
EF_RANGE = (0.0, 100.0)
METHOD = "split conformal, Mondrian by predicted EF category, normalised by the K-clip spread"
SCORE = "|EF - predicted EF| / (spread + spread_floor)"
SPREAD = "standard deviation (ddof=0) of the K clip predictions, EF %"
BINNED_BY = "predicted EF (the true EF is unknown at prediction time)"


class CalibrationFileError(CheckpointError):
    """A ``calibration.json`` that is not valid JSON or not in this module's format."""


def _rank(n: int, level: float) -> int:
    """``ceil((n + 1) * level)``, exact for levels given in decimals (0.9 * 20 is 18, not 18.000000000000004)."""
    return math.ceil(round((n + 1) * level, 9))


def min_calibration_size(level: float) -> int:
    """The fewest calibration videos with a finite quantile at ``level``: ``ceil((n+1) level) <= n``."""
    n = max(1, int(level / (1.0 - level)) - 1)  # the bound, less a rounding margin
    while _rank(n, level) > n:
        n += 1
    return n


def conformal_quantile(scores, level: float) -> float:
    """The ``ceil((n + 1) * level)``-th smallest of ``scores``; ``inf`` when that rank exceeds ``n``."""
    scores = np.sort(np.asarray(scores, np.float64))
    k = _rank(scores.size, level)
    return float(scores[k - 1]) if k <= scores.size else math.inf


def nonconformity(labels, predictions, spreads, spread_floor: float = SPREAD_FLOOR) -> np.ndarray:
    """``[N]`` scores ``|y - p| / (s + beta)`` of labels, predictions and K-clip spreads (EF %)."""
    y, p, s = (np.asarray(a, np.float64) for a in (labels, predictions, spreads))
    return np.abs(y - p) / (s + spread_floor)


def weights_fingerprint(arrays: Iterable[tuple[str, np.ndarray]]) -> str:
    """SHA-256 of named arrays (name, dtype, shape and bytes, in name order): which weights a
    calibration belongs to, wherever the same arrays were copied, moved or exported to."""
    digest = hashlib.sha256()
    for name, array in sorted(arrays, key=lambda item: item[0]):
        array = np.ascontiguousarray(array)
        digest.update(f"{name}|{array.dtype.str}|{array.shape}|".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def _check_level(level: float, where: str) -> float:
    if isinstance(level, bool) or not isinstance(level, int | float) or not 0.0 < level < 1.0:
        raise DataError(f"{where}: the interval level must be a number in (0, 1) (0.9 = 90 %), got {level!r}")
    return float(level)


@dataclasses.dataclass(frozen=True)
class Calibration:
    """One quantile per EF bin (by predicted EF) and what it was fitted on; ``calibration.json``'s content.

    ``quantiles[b]`` is ``inf`` for a bin with fewer than :func:`min_calibration_size` videos.
    """

    level: float
    n: tuple[int, ...]
    quantiles: tuple[float, ...]
    clips_per_video: int
    edges: tuple[float, ...] = categories.EDGES
    names: tuple[str, ...] = categories.NAMES
    spread_floor: float = SPREAD_FLOOR
    source: str = ""
    checkpoint: str = ""
    weights_sha256: str = ""
    created: str = ""

    # ------------------------------------------------------------------------------------- use
    def bins(self, predictions) -> np.ndarray:
        """``[N]`` bin index of each predicted EF (%)."""
        return categories.bin_index(predictions, self.edges)

    def interval(self, predictions, spreads) -> tuple[np.ndarray, np.ndarray]:
        """``([N], [N])`` lower and upper ends (EF %, within [0, 100]) for predicted EF and K-clip spread.

        Scalars in, 0-d arrays out (``float()`` them). A bin without a finite quantile gives [0, 100].
        """
        p = np.asarray(predictions, np.float64)
        sigma = np.asarray(spreads, np.float64) + self.spread_floor
        half = np.asarray(self.quantiles, np.float64)[self.bins(p)] * sigma  # sigma >= spread_floor > 0
        return np.clip(p - half, *EF_RANGE), np.clip(p + half, *EF_RANGE)

    def undefined_reason(self, b: int) -> str | None:
        """Why bin ``b`` has no finite quantile, or None when it has one."""
        if math.isfinite(self.quantiles[b]):
            return None
        need = min_calibration_size(self.level)
        return (
            f"{self.n[b]} calibration videos with predicted {categories.describe(b, self.edges)}; a finite "
            f"{_percent(self.level)} interval needs at least {need}: the interval is [0, 100]"
        )

    # ------------------------------------------------------------------------------------- JSON
    def to_json(self) -> dict[str, Any]:
        """The strict-JSON object of ``calibration.json`` (an infinite quantile is ``null`` with a reason)."""
        return {
            "format": FORMAT,
            "version": VERSION,
            "method": METHOD,
            "level": self.level,
            "score": SCORE,
            "spread": SPREAD,
            "spread_floor": self.spread_floor,
            "clips_per_video": self.clips_per_video,
            "binned_by": BINNED_BY,
            "bin_edges": list(self.edges),
            "bins": [
                {
                    "name": name,
                    "predicted_ef": categories.describe(b, self.edges),
                    "n": self.n[b],
                    "quantile": self.quantiles[b] if math.isfinite(self.quantiles[b]) else None,
                    **({"quantile_undefined": self.undefined_reason(b)} if self.undefined_reason(b) else {}),
                }
                for b, name in enumerate(self.names)
            ],
            "source": self.source,
            "checkpoint": self.checkpoint,
            "weights_sha256": self.weights_sha256,
            "created": self.created,
        }

    def save(self, path: str | Path) -> Path:
        """Writes :meth:`to_json` as strict JSON (``allow_nan=False``); returns the path."""
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(self.to_json(), indent=2, allow_nan=False) + "\n")
        tmp.replace(path)
        return path

    @classmethod
    def from_json(cls, data: Any, where: str = CALIBRATION_FILE) -> Calibration:
        """The inverse of :meth:`to_json`; :class:`CalibrationFileError` naming ``where`` and the field."""

        def bad(what: str) -> CalibrationFileError:
            return CalibrationFileError(
                f"{where}: {what}; refit it (--mode=evaluate on the run writes a new one) or delete it"
            )

        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise bad(f'not a calibration file (expected "format": "{FORMAT}")')
        if data.get("version") != VERSION:
            raise bad(f"version {data.get('version')!r}, this code reads version {VERSION}")
        try:
            level = _check_level(data["level"], where)
            edges = tuple(_number(e) for e in data["bin_edges"])
            bins = data["bins"]
            names = tuple(str(b["name"]) for b in bins)
            n = tuple(_count(b["n"]) for b in bins)
            quantiles = tuple(math.inf if b["quantile"] is None else _number(b["quantile"]) for b in bins)
            calibration = cls(
                level=level,
                n=n,
                quantiles=quantiles,
                clips_per_video=_count(data["clips_per_video"], low=1),
                edges=edges,
                names=names,
                spread_floor=_number(data["spread_floor"]),
                source=str(data.get("source", "")),
                checkpoint=str(data.get("checkpoint", "")),
                weights_sha256=str(data.get("weights_sha256", "")),
                created=str(data.get("created", "")),
            )
        except (KeyError, TypeError) as e:
            raise bad(f"missing or malformed field {e}") from None
        except (ValueError, DataError) as e:
            raise bad(str(e).removeprefix(f"{where}: ")) from None
        if len(bins) != len(edges) + 1 or list(edges) != sorted(set(edges)):
            raise bad(
                f"{len(bins)} bins for bin_edges {list(edges)} (expected increasing edges, one bin more)"
            )
        if calibration.spread_floor <= 0:
            raise bad(f"spread_floor must be > 0, got {calibration.spread_floor}")
        need = min_calibration_size(level)
        for b, (count, q) in enumerate(zip(n, quantiles)):
            if math.isfinite(q) != (count >= need) or q < 0:
                raise bad(f"bin {names[b]}: quantile {q} does not fit its {count} videos at level {level}")
        return calibration

    @classmethod
    def load(cls, path: str | Path) -> Calibration:
        """Reads a ``calibration.json`` (strict JSON: ``NaN``/``Infinity`` are refused)."""
        path = Path(path)

        def refuse(token: str):
            raise CalibrationFileError(f"{path}: holds {token}, not strict JSON; refit or delete it")

        try:
            data = json.loads(path.read_text(), parse_constant=refuse)
        except ValueError as e:
            if isinstance(e, CalibrationFileError):
                raise
            raise CalibrationFileError(f"{path}: not valid JSON ({e}); refit or delete it") from None
        return cls.from_json(data, str(path))


def calibration_path(checkpoint: str | Path) -> Path:
    """Where a checkpoint's calibration lives: ``<folder>/calibration.json`` for a run workdir or an
    exported folder, ``calibration.json`` beside a ``.pth`` file."""
    checkpoint = Path(checkpoint)
    return (checkpoint.parent if checkpoint.is_file() else checkpoint) / CALIBRATION_FILE


def matching(
    path: str | Path, weights_sha256: str, clips_per_video: int, level: float | None = None
) -> tuple[Calibration | None, str]:
    """The calibration at ``path`` when it was fitted for these weights, this K (and ``level``, unless
    None); else ``(None, why not)``. A damaged file raises :class:`CalibrationFileError`."""
    path = Path(path)
    if not path.is_file():
        return None, f"no {CALIBRATION_FILE} in {path.parent}"
    calibration = Calibration.load(path)
    if calibration.weights_sha256 != weights_sha256:
        return None, f"{path} was fitted for other weights ({calibration.checkpoint or 'unnamed'})"
    if calibration.clips_per_video != clips_per_video:
        return None, (
            f"{path} was fitted on {calibration.clips_per_video} clips per video, not {clips_per_video} "
            f"(eval.n_clips): the K-clip spread differs"
        )
    if level is not None and not math.isclose(calibration.level, level):
        return None, f"{path} holds {_percent(calibration.level)} intervals, not {_percent(level)}"
    return calibration, ""


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"expected a finite number, got {value!r}")
    return float(value)


def _count(value: Any, low: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"expected an integer >= {low}, got {value!r}")
    return value


def _percent(level: float) -> str:
    return f"{100 * level:g} %"


def _check_inputs(labels, predictions, spreads) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    y, p, s = (np.asarray(a, np.float64) for a in (labels, predictions, spreads))
    if not (y.ndim == p.ndim == s.ndim == 1 and y.shape == p.shape == s.shape):
        raise DataError(
            f"calibration needs [N] labels, predictions and spreads, got {y.shape}, {p.shape}, {s.shape}"
        )
    for name, a in (("labels", y), ("predictions", p), ("spreads", s)):
        if not np.all(np.isfinite(a)):
            raise DataError(f"calibration: {int(np.sum(~np.isfinite(a)))} of {a.size} {name} are not finite")
    if np.any(s < 0):
        raise DataError("calibration: spreads must be >= 0 (standard deviations of the clip predictions)")
    return y, p, s


def fit(
    labels,
    predictions,
    spreads,
    *,
    clips_per_video: int,
    level: float = DEFAULT_LEVEL,
    spread_floor: float = SPREAD_FLOOR,
    edges: Sequence[float] = categories.EDGES,
    names: Sequence[str] = categories.NAMES,
    source: str = "",
    checkpoint: str = "",
    weights_sha256: str = "",
) -> Calibration:
    """A :class:`Calibration` from ``[N]`` labels, predictions and K-clip spreads (EF %) of calibration videos.

    Bins are keyed on the *predicted* EF (see the module docstring). ``source``, ``checkpoint`` and
    ``weights_sha256`` record what it was fitted on and for (the weights' :func:`weights_fingerprint`).

    Raises:
        DataError: arrays of other shapes, a value that is not finite, a negative spread, or a level
            outside (0, 1).
    """
    level = _check_level(level, "calibration")
    y, p, s = _check_inputs(labels, predictions, spreads)
    scores = nonconformity(y, p, s, spread_floor)
    bins = categories.bin_index(p, edges)
    n = tuple(int(np.sum(bins == b)) for b in range(len(edges) + 1))
    quantiles = tuple(conformal_quantile(scores[bins == b], level) for b in range(len(edges) + 1))
    return Calibration(
        level=level,
        n=n,
        quantiles=quantiles,
        clips_per_video=int(clips_per_video),
        edges=tuple(float(e) for e in edges),
        names=tuple(names),
        spread_floor=float(spread_floor),
        source=source,
        checkpoint=checkpoint,
        weights_sha256=weights_sha256,
        created=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    )


def coverage_report(
    labels, lo, hi, bins, names: Sequence[str] = categories.NAMES
) -> dict[str, float | int | str]:
    """Empirical coverage (fraction of labels inside ``[lo, hi]``) and mean width (EF points), overall
    (``coverage``, ``mean_width``, ``n``) and per bin (``coverage_<name>``, ``mean_width_<name>``,
    ``n_<name>``; ``bins`` ``[N]`` indices into ``names``). A bin without videos has NaN values and
    ``coverage_<name>_undefined``."""
    y, lo, hi = (np.asarray(a, np.float64) for a in (labels, lo, hi))
    bins = np.asarray(bins)
    inside = (lo <= y) & (y <= hi)
    width = hi - lo
    out: dict[str, float | int | str] = {}
    for suffix, mask in [("", np.ones(y.shape, bool))] + [(f"_{n}", bins == b) for b, n in enumerate(names)]:
        count = int(mask.sum())
        out[f"n{suffix}"] = count
        out[f"coverage{suffix}"] = float(inside[mask].mean()) if count else math.nan
        out[f"mean_width{suffix}"] = float(width[mask].mean()) if count else math.nan
        if not count:
            out[f"coverage{suffix}_undefined"] = "no videos"
            out[f"mean_width{suffix}_undefined"] = "no videos"
    return out


def interval_report(calibration: Calibration, labels, predictions, spreads) -> dict[str, Any]:
    """:func:`coverage_report` of the calibration's intervals on labelled videos, keys prefixed
    ``interval_``, with ``interval_level``, the bins (by predicted EF) and where the calibration came from."""
    y, p, s = _check_inputs(labels, predictions, spreads)
    lo, hi = calibration.interval(p, s)
    report = coverage_report(y, lo, hi, calibration.bins(p), calibration.names)
    out: dict[str, Any] = {"interval_level": calibration.level}
    out.update({f"interval_{k}": v for k, v in report.items()})
    out["interval_bins"] = {
        name: f"predicted {categories.describe(b, calibration.edges)}"
        for b, name in enumerate(calibration.names)
    }
    undefined = {
        calibration.names[b]: r
        for b in range(len(calibration.names))
        if (r := calibration.undefined_reason(b))
    }
    if undefined:
        out["interval_infinite_bins"] = undefined
    out["interval_calibration"] = calibration.source
    return out


def summary_line(ef: float, interval: tuple[float, float] | None, level: float | None) -> str:
    """``EF 38 [33, 44] (90 %)`` for people: whole percent, the interval rounded outward (never narrower
    than computed); ``EF 38`` without an interval."""
    if interval is None or level is None:
        return f"EF {ef:.0f}"
    lo, hi = math.floor(interval[0]), math.ceil(interval[1])
    return f"EF {ef:.0f} [{lo}, {hi}] ({_percent(level)})"


PREDICTIONS_CSV = "test_predictions_evaluate.csv"
RESULTS_JSON = "results_evaluate.json"


def fit_from_evaluation(workdir: str | Path, level: float = DEFAULT_LEVEL) -> Calibration:
    """A calibration fitted on the videos a ``coreecho evaluate`` run predicted: ``<workdir>/``
    :data:`PREDICTIONS_CSV` (``EF``, ``EF_pred``, ``EF_pred_std``, ``EF_pred_clip_<k>``) and, for the
    weights and K it belongs to, ``<workdir>/`` :data:`RESULTS_JSON` (``weights_sha256``, ``checkpoint``).

    Raises:
        DataError: a missing file, column or field, or a value that is not a number.
    """
    workdir = Path(workdir)
    csv_path, results_path = workdir / PREDICTIONS_CSV, workdir / RESULTS_JSON
    for path in (csv_path, results_path):
        if not path.is_file():
            raise DataError(f"{path}: not found; run --mode=evaluate with --workdir={workdir} first")
    try:
        results = json.loads(results_path.read_text())
    except ValueError as e:
        raise DataError(f"{results_path}: not valid JSON ({e})") from None
    if not isinstance(results, dict) or not results.get("weights_sha256"):
        raise DataError(
            f"{results_path}: no weights_sha256 (written before EF intervals); rerun --mode=evaluate"
        )
    with open(csv_path, newline="") as f:
        rows = list(csv.DictReader(f))
    columns = ("EF", "EF_pred", "EF_pred_std")
    if not rows or any(c not in rows[0] for c in columns):
        raise DataError(f"{csv_path}: expected the columns {', '.join(columns)} and one row per video")
    try:
        y, p, s = (np.array([float(r[c]) for r in rows]) for c in columns)
    except ValueError as e:
        raise DataError(f"{csv_path}: {e}") from None
    k = sum(1 for c in rows[0] if c.startswith("EF_pred_clip_"))
    return fit(
        y,
        p,
        s,
        clips_per_video=k,
        level=level,
        source=f"{csv_path}: {len(rows)} videos, {k} clips each",
        checkpoint=str(results.get("checkpoint", "")),
        weights_sha256=str(results["weights_sha256"]),
    )
