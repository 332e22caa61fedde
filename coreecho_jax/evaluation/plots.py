"""Pictures of a model's agreement with the labels and of its training, written as PNG files.

* predicted-vs-true scatter with the identity line and R2,
* Bland-Altman plot: difference (predicted - true) against the mean of the two, with the bias and the
  95% limits of agreement (bias -/+ 1.96 SD, :func:`metrics.bland_altman`),
* training curves: mean train loss and validation MAE per epoch, one colour per stage.

Generic: numpy arrays (or the loop's per-epoch records) in, files out. The figures are drawn with
matplotlib's object-oriented API on the Agg canvas, without ``pyplot``: no display is needed, and the
backend a caller chose for its own plots (e.g. in a notebook) is left alone. The ``*_figure`` functions
return the :class:`~matplotlib.figure.Figure`, so callers (and tests) can read or extend it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from coreecho_jax.errors import DataError
from coreecho_jax.evaluation import metrics as metrics_lib

DPI = 100
HISTORY_KEYS = ("stage", "epoch", "loss", "val_mae")  # what each per-epoch record must have


def _new_figure(width: float, height: float) -> Figure:
    """A figure of ``width`` x ``height`` inches on its own Agg canvas (no pyplot, no display)."""
    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _pairs(labels, predictions) -> tuple[np.ndarray, np.ndarray, int]:
    """``[N]`` labels and predictions where both are finite, and how many pairs were left out."""
    y = np.asarray(labels, np.float64).reshape(-1)
    p = np.asarray(predictions, np.float64).reshape(-1)
    if y.shape != p.shape:
        raise DataError(f"agreement plot: {y.size} labels but {p.size} predictions; expected one per video")
    keep = np.isfinite(y) & np.isfinite(p)
    return y[keep], p[keep], int(np.sum(~keep))


def _title(*parts: str) -> str:
    return "\n".join(part for part in parts if part)


def _left_out(dropped: int) -> str:
    return f"{dropped} video(s) with a non-finite label or prediction left out" if dropped else ""


def _square_limits(values: np.ndarray) -> tuple[float, float]:
    """Axis limits holding every value with a 5% margin (1 unit around a single value; 0..1 if none)."""
    if values.size == 0:
        return 0.0, 1.0
    lo, hi = float(values.min()), float(values.max())
    pad = 0.05 * (hi - lo) if hi > lo else 1.0
    return lo - pad, hi + pad


def r2_text(labels, predictions) -> str:
    """``"R2 = 0.823"``, or ``"R2 undefined (labels are constant)"`` when R2 has no value."""
    y, p, _ = _pairs(labels, predictions)
    value = metrics_lib.r2(y, p)
    if math.isfinite(value):
        return f"R2 = {value:.3f}"
    return f"R2 undefined ({metrics_lib.undefined_reason('r2', y, p)})"


def scatter_figure(labels, predictions, *, title: str = "", units: str = "EF (%)") -> Figure:
    """Predicted (y axis) against true (x axis) per video, the identity line, R2 in legend and title."""
    y, p, dropped = _pairs(labels, predictions)
    r2 = r2_text(y, p)
    fig = _new_figure(5.5, 5.5)
    ax = fig.add_subplot()
    lo, hi = _square_limits(np.concatenate([y, p]))
    ax.plot(
        [lo, hi], [lo, hi], color="0.3", linestyle="--", linewidth=1.0, label="identity (predicted = true)"
    )
    ax.scatter(y, p, s=18, alpha=0.7, color="C0", edgecolors="none", label=f"videos (n={y.size}), {r2}")
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_aspect("equal")
    ax.set_xlabel(f"true {units}")
    ax.set_ylabel(f"predicted {units}")
    ax.set_title(_title(title, r2, _left_out(dropped)))
    ax.grid(alpha=0.3)
    _legend_below(fig, ax)
    return fig


def bland_altman_figure(labels, predictions, *, title: str = "", units: str = "EF (%)") -> Figure:
    """Difference (predicted - true) against the mean of the two per video, with horizontal lines at
    the bias and the 95% limits of agreement, each labelled with its value in the legend."""
    y, p, dropped = _pairs(labels, predictions)
    agreement = metrics_lib.bland_altman(y, p)
    fig = _new_figure(6.5, 5.0)
    ax = fig.add_subplot()
    ax.scatter(
        (y + p) / 2.0, p - y, s=18, alpha=0.7, color="C0", edgecolors="none", label=f"videos (n={y.size})"
    )
    bias, lo, hi = agreement["bias"], agreement["loa_low"], agreement["loa_high"]
    summary = f"bias {bias:+.2f}" if math.isfinite(bias) else f"bias undefined ({agreement['undefined']})"
    if math.isfinite(bias):
        ax.axhline(bias, color="C3", linewidth=1.5, label=f"bias: {bias:+.2f}")
    if math.isfinite(lo) and math.isfinite(hi):
        ax.axhline(hi, color="C2", linestyle="--", linewidth=1.2, label=f"bias + 1.96 SD: {hi:+.2f}")
        ax.axhline(lo, color="C2", linestyle="--", linewidth=1.2, label=f"bias - 1.96 SD: {lo:+.2f}")
        summary += f", 95% limits of agreement [{lo:+.2f}, {hi:+.2f}]"
    elif math.isfinite(bias):
        summary += f"\n95% limits of agreement undefined ({agreement['undefined']})"
    ax.set_xlabel(f"mean of true and predicted {units}")
    ax.set_ylabel(f"predicted - true {units}")
    ax.set_title(_title(title, summary, _left_out(dropped)))
    ax.grid(alpha=0.3)
    _legend_below(fig, ax)
    return fig


def _legend_below(fig: Figure, ax) -> None:
    """The legend of ``ax`` under the axes (``fig.legends[0]``), where it hides no point or line."""
    fig.legend(*ax.get_legend_handles_labels(), loc="outside lower center", ncols=2, fontsize="small")


def _save(fig: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=DPI, bbox_inches="tight")  # "tight": long legends stay whole
    return path


def write_agreement_plots(
    labels, predictions, out_dir: str | Path, prefix: str, *, title: str = "", units: str = "EF (%)"
) -> dict[str, Path]:
    """Writes ``<out_dir>/<prefix>_scatter.png`` and ``<out_dir>/<prefix>_bland_altman.png``.

    ``labels`` and ``predictions``: ``[N]`` per-video values in ``units``. Pairs with a non-finite value
    are left out (the title says how many). Returns ``{"scatter": path, "bland_altman": path}``.
    """
    out_dir = Path(out_dir)
    return {
        "scatter": _save(
            scatter_figure(labels, predictions, title=title, units=units), out_dir / f"{prefix}_scatter.png"
        ),
        "bland_altman": _save(
            bland_altman_figure(labels, predictions, title=title, units=units),
            out_dir / f"{prefix}_bland_altman.png",
        ),
    }


def _number(value: Any) -> float:
    """A record's value as a float; ``None`` (a NaN written as JSON ``null``) as NaN."""
    return float("nan") if value is None else float(value)


def _check_history(history: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    records = list(history)
    for i, record in enumerate(records):
        if not isinstance(record, Mapping):
            raise DataError(f"training history record {i}: expected a mapping, got {type(record).__name__}")
        missing = [k for k in HISTORY_KEYS if k not in record]
        if missing:
            raise DataError(
                f"training history record {i} lacks {', '.join(missing)}; expected keys {', '.join(HISTORY_KEYS)}"
            )
    return records


def training_curves_figure(history: Iterable[Mapping[str, Any]], *, units: str = "EF (%)") -> Figure:
    """Two panels, mean train loss and validation MAE per epoch (1-based, within each stage), one
    colour per stage. ``history``: per-epoch records with ``stage``, ``epoch`` (from 1), ``loss``,
    ``val_mae`` (``None`` or NaN leaves a gap), as ``Trainer.run_stage`` returns them."""
    records = _check_history(history)
    fig = _new_figure(10.0, 4.0)
    ax_loss, ax_mae = fig.subplots(1, 2)
    stages = sorted({int(r["stage"]) for r in records})
    for i, stage in enumerate(stages):
        rows = sorted((r for r in records if int(r["stage"]) == stage), key=lambda r: int(r["epoch"]))
        epochs = [int(r["epoch"]) for r in rows]
        for ax, key in ((ax_loss, "loss"), (ax_mae, "val_mae")):
            values = [_number(r[key]) for r in rows]
            ax.plot(epochs, values, marker="o", markersize=4, color=f"C{i}", label=f"stage {stage}")
    ax_loss.set_title("training loss (mean over the epoch)")
    ax_loss.set_ylabel("train loss")
    ax_mae.set_title("validation MAE")
    ax_mae.set_ylabel(f"validation MAE, {units}")
    for ax in (ax_loss, ax_mae):
        ax.set_xlabel("epoch (within its stage)")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        if stages:
            ax.legend(fontsize="small")
        else:
            ax.text(0.5, 0.5, "no training epochs", ha="center", va="center", transform=ax.transAxes)
    return fig


def write_training_curves(
    history: Iterable[Mapping[str, Any]], out_path: str | Path, *, units: str = "EF (%)"
) -> Path:
    """Writes :func:`training_curves_figure` of ``history`` as a PNG to ``out_path``; returns the path."""
    return _save(training_curves_figure(history, units=units), Path(out_path))
