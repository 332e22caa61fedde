"""Agreement plots and training curves: files, non-blank pictures, axes, the Bland-Altman numbers."""

import math

import numpy as np
import pytest
from PIL import Image

from coreecho_jax.errors import DataError
from coreecho_jax.evaluation import metrics, multiclip, plots
from coreecho_jax.evaluation.results import format_results, json_ready
from tests.conftest import run_python

LABELS = np.array([30.0, 45.0, 55.0, 60.0, 70.0])
PREDS = np.array([34.0, 43.0, 57.0, 66.0, 69.0])  # differences p - y: 4, -2, 2, 6, -1


def _legend_texts(fig) -> list[str]:
    return [t.get_text() for legend in fig.legends for t in legend.get_texts()]


def _horizontal_lines(ax) -> dict[str, float]:
    """``{label: y}`` of the lines drawn across the axes (axhline: y constant, x in axes coordinates)."""
    out = {}
    for line in ax.get_lines():
        ys = np.asarray(line.get_ydata(), np.float64)
        if ys.size == 2 and ys[0] == ys[1]:
            out[line.get_label()] = float(ys[0])
    return out


def _assert_real_picture(path) -> None:
    """A PNG larger than 200 x 200 pixels that is not blank: spread-out grey levels, many colours."""
    assert path.is_file(), path
    with Image.open(path) as image:
        assert image.format == "PNG"
        assert image.width > 200 and image.height > 200, image.size
        pixels = np.asarray(image.convert("RGB"))
    assert pixels.std() > 20.0, pixels.std()
    colours = np.unique(pixels.reshape(-1, 3), axis=0)
    assert len(colours) > 20, len(colours)
    # blue points, red/green lines, black text: more than a grey scale
    assert np.any(np.ptp(pixels.astype(int), axis=2) > 100)


def test_bland_altman_numbers_by_hand():
    out = metrics.bland_altman(LABELS, PREDS)
    d = [4.0, -2.0, 2.0, 6.0, -1.0]
    bias = sum(d) / 5  # 1.8
    sd = math.sqrt(sum((x - bias) ** 2 for x in d) / 4)  # sample SD, ddof = 1
    assert out["bias"] == pytest.approx(1.8)
    assert out["sd"] == pytest.approx(sd)
    assert out["loa_low"] == pytest.approx(1.8 - 1.96 * sd)
    assert out["loa_high"] == pytest.approx(1.8 + 1.96 * sd)
    assert "undefined" not in out


def test_bland_altman_of_too_few_or_bad_values_is_nan_with_a_reason():
    one = metrics.bland_altman([50.0], [53.0])
    assert one["bias"] == 3.0 and math.isnan(one["sd"]) and math.isnan(one["loa_low"])
    assert one["undefined"] == "fewer than 2 videos"
    none = metrics.bland_altman([], [])
    assert math.isnan(none["bias"]) and none["undefined"] == "no videos"
    bad = metrics.bland_altman([50.0, 60.0], [np.nan, 60.0])
    assert math.isnan(bad["bias"]) and bad["undefined"] == "predictions are not finite"
    with pytest.raises(ValueError, match="differ in shape"):
        metrics.bland_altman([1.0, 2.0], [1.0])


def _result(labels, preds) -> multiclip.VideoPredictions:
    n = len(labels)
    clips = np.asarray(preds, np.float64)[:, None] + np.array([-0.5, 0.0, 0.5])
    return multiclip.VideoPredictions(
        [f"{i}.avi" for i in range(n)], np.asarray(labels, np.float64), clips, np.zeros((n, 3))
    )


def test_summary_and_results_table_carry_the_limits_of_agreement():
    summary = multiclip.summarize(_result(LABELS, PREDS), n_resamples=0)
    expected = metrics.bland_altman(LABELS, PREDS)
    assert summary["ba_bias"] == pytest.approx(expected["bias"])
    assert summary["ba_loa_low"] == pytest.approx(expected["loa_low"])
    assert summary["ba_loa_high"] == pytest.approx(expected["loa_high"])
    table = format_results(json_ready(summary))
    line = next(x for x in table.splitlines() if x.startswith("Bland-Altman bias (EF %)"))
    assert f"{expected['bias']:.3f}" in line
    assert f"95% LoA [{expected['loa_low']:.3f}, {expected['loa_high']:.3f}]" in line


def test_summary_of_one_video_says_why_the_limits_are_missing():
    summary = multiclip.summarize(_result([50.0], [52.0]), n_resamples=0)
    assert summary["ba_bias"] == pytest.approx(2.0)
    assert math.isnan(summary["ba_loa_low"]) and summary["ba_loa_low_undefined"] == "fewer than 2 videos"
    line = next(x for x in format_results(json_ready(summary)).splitlines() if x.startswith("Bland-Altman"))
    assert "2.000" in line and "LoA undefined: fewer than 2 videos" in line


def test_scatter_has_axes_identity_line_and_r2():
    fig = plots.scatter_figure(LABELS, PREDS, title="test (final)", units="EF (%)")
    (ax,) = fig.axes
    assert ax.get_xlabel() == "true EF (%)" and ax.get_ylabel() == "predicted EF (%)"
    r2 = metrics.r2(LABELS, PREDS)
    assert f"R2 = {r2:.3f}" in ax.get_title() and "test (final)" in ax.get_title()
    assert any(f"R2 = {r2:.3f}" in t for t in _legend_texts(fig))
    identity = next(line for line in ax.get_lines() if line.get_label().startswith("identity"))
    np.testing.assert_array_equal(identity.get_xdata(), identity.get_ydata())
    lo, hi = ax.get_xlim()
    assert lo < LABELS.min() and hi > PREDS.max()  # every point inside


def test_bland_altman_figure_draws_the_bias_and_limits_at_their_values():
    fig = plots.bland_altman_figure(LABELS, PREDS)
    (ax,) = fig.axes
    assert ax.get_xlabel() == "mean of true and predicted EF (%)"
    assert ax.get_ylabel() == "predicted - true EF (%)"
    ba = metrics.bland_altman(LABELS, PREDS)
    lines = _horizontal_lines(ax)
    assert lines["bias: +1.80"] == pytest.approx(ba["bias"])
    assert lines[f"bias + 1.96 SD: {ba['loa_high']:+.2f}"] == pytest.approx(ba["loa_high"])
    assert lines[f"bias - 1.96 SD: {ba['loa_low']:+.2f}"] == pytest.approx(ba["loa_low"])
    assert f"bias + 1.96 SD: {ba['loa_high']:+.2f}" in _legend_texts(fig)
    # the points: x the mean of the pair, y the difference
    offsets = ax.collections[0].get_offsets()
    np.testing.assert_allclose(offsets[:, 0], (LABELS + PREDS) / 2)
    np.testing.assert_allclose(offsets[:, 1], PREDS - LABELS)


def test_write_agreement_plots_writes_real_pictures(tmp_path):
    paths = plots.write_agreement_plots(LABELS, PREDS, tmp_path / "out", "test_final", title="test")
    assert paths == {
        "scatter": tmp_path / "out" / "test_final_scatter.png",
        "bland_altman": tmp_path / "out" / "test_final_bland_altman.png",
    }
    for path in paths.values():
        _assert_real_picture(path)


@pytest.mark.parametrize(
    "labels, preds",
    [([50.0], [52.0]), ([50.0, 50.0], [52.0, 49.0]), ([40.0, 60.0], [41.0, 61.0]), ([], [])],
    ids=["one video", "constant labels", "two videos, constant difference", "no video"],
)
def test_tiny_and_constant_sets_do_not_crash(tmp_path, labels, preds):
    paths = plots.write_agreement_plots(labels, preds, tmp_path, "tiny")
    for path in paths.values():
        assert path.is_file()
    scatter = plots.scatter_figure(labels, preds)
    if len(labels) < 2 or labels[0] == labels[-1]:
        assert "R2 undefined (" in scatter.axes[0].get_title()


def test_non_finite_pairs_are_left_out_and_counted():
    fig = plots.bland_altman_figure([50.0, 60.0, 70.0], [51.0, np.nan, 69.0])
    ax = fig.axes[0]
    assert len(ax.collections[0].get_offsets()) == 2
    assert "1 video(s) with a non-finite label or prediction left out" in ax.get_title()
    with pytest.raises(DataError, match="3 labels but 2 predictions"):
        plots.scatter_figure([1.0, 2.0, 3.0], [1.0, 2.0])


HISTORY = [  # epochs numbered from 1, as Trainer.run_stage's records
    {"stage": 1, "epoch": 1, "loss": 3.0, "val_mae": 10.0, "steps": 4},
    {"stage": 1, "epoch": 2, "loss": 2.5, "val_mae": 9.0, "steps": 4},
    {"stage": 1, "epoch": 3, "loss": 2.0, "val_mae": None, "steps": 4},  # NaN saved as JSON null
    {"stage": 2, "epoch": 1, "loss": 1.0, "val_mae": 8.0, "steps": 4},
]


def test_training_curves_one_line_per_stage_in_each_panel(tmp_path):
    fig = plots.training_curves_figure(HISTORY)
    ax_loss, ax_mae = fig.axes
    assert ax_loss.get_ylabel() == "train loss" and ax_mae.get_ylabel() == "validation MAE, EF (%)"
    assert ax_loss.get_xlabel() == ax_mae.get_xlabel() == "epoch (within its stage)"
    for ax, key in ((ax_loss, "loss"), (ax_mae, "val_mae")):
        lines = {line.get_label(): line for line in ax.get_lines()}
        assert sorted(lines) == ["stage 1", "stage 2"]
        assert lines["stage 1"].get_color() != lines["stage 2"].get_color()
        np.testing.assert_array_equal(lines["stage 1"].get_xdata(), [1, 2, 3])
        expected = [np.nan if r[key] is None else r[key] for r in HISTORY[:3]]
        np.testing.assert_array_equal(lines["stage 1"].get_ydata(), expected)
    path = plots.write_training_curves(HISTORY, tmp_path / "training_curves.png")
    _assert_real_picture(path)


def test_training_curves_of_no_epochs_and_bad_records(tmp_path):
    assert plots.write_training_curves([], tmp_path / "none.png").is_file()
    with pytest.raises(DataError, match="record 1 lacks val_mae"):
        plots.training_curves_figure([HISTORY[0], {"stage": 1, "epoch": 1, "loss": 2.0}])


def test_drawing_needs_no_display_and_no_pyplot(tmp_path):
    """No pyplot: the global backend a caller chose (e.g. a notebook's) is never switched."""
    code = f"""
import os, sys
os.environ.pop("DISPLAY", None)
from coreecho_jax.evaluation import plots
plots.write_agreement_plots([40.0, 60.0], [42.0, 57.0], {str(tmp_path)!r}, "x")
plots.write_training_curves([], {str(tmp_path / "curves.png")!r})
print("pyplot loaded:", "matplotlib.pyplot" in sys.modules)
"""
    done = run_python(code)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "pyplot loaded: False"
    assert (tmp_path / "x_scatter.png").is_file() and (tmp_path / "curves.png").is_file()
