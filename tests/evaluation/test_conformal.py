"""Conformal EF intervals and EF categories: the finite-sample rule, its guarantee on exchangeable data,
bins by predicted EF, the small-bin rule, strict calibration.json, clipping, reports and category metrics."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from configs import demo
from coreecho_jax import cli, config_check
from coreecho_jax.errors import CheckpointError, ConfigError, DataError
from coreecho_jax.evaluation import categories, conformal, multiclip
from coreecho_jax.evaluation.conformal import Calibration, CalibrationFileError
from tests.conftest import run_python

# ------------------------------------------------------------------------------- the quantile rule


def test_quantile_is_the_ceil_n_plus_1_level_th_smallest_score():
    scores = np.arange(19, 0, -1, dtype=float)  # 19 .. 1, unsorted on purpose
    assert conformal.conformal_quantile(scores, 0.9) == 18.0  # ceil(20 * 0.9) = 18 (crepes 0.9.1: 19)
    assert conformal.conformal_quantile(np.arange(1.0, 100.0), 0.9) == 90.0  # ceil(100 * 0.9) = 90
    assert conformal.conformal_quantile(np.arange(1.0, 10.0), 0.9) == 9.0  # n = 9: finite at 90 %
    assert conformal.conformal_quantile(np.arange(1.0, 9.0), 0.9) == math.inf  # n = 8: rank 9 > n
    assert conformal.conformal_quantile([], 0.9) == math.inf
    assert conformal.conformal_quantile([3.0, 1.0, 2.0], 0.5) == 2.0  # ceil(4 * 0.5) = 2


@pytest.mark.parametrize(("level", "n"), [(0.5, 1), (0.8, 4), (0.9, 9), (0.95, 19), (0.99, 99)])
def test_min_calibration_size(level, n):
    assert conformal.min_calibration_size(level) == n
    assert math.isfinite(conformal.conformal_quantile(np.ones(n), level))
    assert conformal.conformal_quantile(np.ones(n - 1), level) == math.inf


# ---------------------------------------------------------------------- the guarantee, by simulation


def _draw(rng: np.random.Generator, n: int):
    """Exchangeable (label, prediction, spread) triples with EF-dependent, spread-dependent errors:
    a reduced heart's error is 3x a normal one's, so one pooled quantile under-covers the reduced bin."""
    low = rng.random(n) < 0.25
    label = np.where(low, rng.uniform(10, 45, n), rng.normal(60, 7, n))
    spread = rng.gamma(2.0, 1.0, n)
    scale = np.where(label < 45, 3.0, 1.0) * (0.5 + spread)
    prediction = label + scale * rng.standard_normal(n)
    return label, prediction, spread


def _coverage_over_splits(level: float, n_cal: int, n_test: int, trials: int, pooled: bool = False):
    """Mean coverage over ``trials`` random calibration/test splits, overall and per predicted bin."""
    rng = np.random.default_rng(0)
    covered = np.zeros(4)
    counts = np.zeros(4)
    cal_sizes = np.zeros(3)
    for _ in range(trials):
        y, p, s = _draw(rng, n_cal + n_test)
        edges = () if pooled else categories.EDGES
        names = ("all",) if pooled else categories.NAMES
        calibration = conformal.fit(
            y[:n_cal], p[:n_cal], s[:n_cal], clips_per_video=3, level=level, edges=edges, names=names
        )
        lo, hi = calibration.interval(p[n_cal:], s[n_cal:])
        inside = (lo <= y[n_cal:]) & (y[n_cal:] <= hi)
        bins = categories.bin_index(p[n_cal:])
        covered[0] += inside.mean()
        counts[0] += 1
        for b in range(3):
            if np.any(bins == b):  # per-bin coverage: each test video of the bin counts once
                covered[1 + b] += inside[bins == b].sum()
                counts[1 + b] += np.sum(bins == b)
        if not pooled:
            cal_sizes += calibration.n
    return covered / counts, cal_sizes / trials


def test_coverage_guarantee_holds_on_exchangeable_residuals_overall_and_per_predicted_bin():
    level, n_cal, trials = 0.9, 400, 1500
    coverage, mean_n = _coverage_over_splits(level, n_cal, 200, trials)
    # >= level (the guarantee), < level + 1/(n_b + 1) (no ties), +- ~3 standard errors of the mean
    assert level - 0.004 <= coverage[0] <= level + 1 / (n_cal + 1) + 0.004, coverage
    for b in range(3):
        upper = level + 1 / (mean_n[b] + 1) + 0.01
        assert level - 0.006 <= coverage[1 + b] <= upper, (b, coverage, mean_n)
    assert mean_n.min() >= 30  # every bin well populated by the predicted EF
    # One pooled quantile keeps the marginal coverage but misses the reduced bin: why bins are Mondrian.
    pooled, _ = _coverage_over_splits(level, n_cal, 200, 300, pooled=True)
    assert pooled[0] >= level - 0.01 and pooled[1] < level - 0.05, pooled


# -------------------------------------------------------------------------------------- the fit


def test_bins_are_keyed_on_the_predicted_ef_left_closed():
    np.testing.assert_array_equal(
        categories.bin_index([39.999, 40.0, 49.999, 50.0, -5, 120]), [0, 1, 1, 2, 0, 2]
    )
    # true EF 30 predicted 55: a "normal" calibration video, whatever its label says
    labels = np.r_[np.full(9, 30.0), np.full(9, 45.0)]
    predictions = np.r_[np.full(9, 55.0), np.full(9, 45.0)]
    calibration = conformal.fit(labels, predictions, np.zeros(18), clips_per_video=3)
    assert calibration.n == (0, 9, 9)
    assert calibration.quantiles[2] == 25.0 and calibration.quantiles[1] == 0.0  # |30 - 55| / (0 + 1)
    lo, hi = calibration.interval([55.0, 45.0, 30.0], [0.0, 0.0, 0.0])
    np.testing.assert_array_equal(lo, [30.0, 45.0, 0.0])  # predicted 30: the empty reduced bin
    np.testing.assert_array_equal(hi, [80.0, 45.0, 100.0])


def test_half_width_is_quantile_times_spread_plus_floor():
    rng = np.random.default_rng(1)
    y = rng.uniform(60, 80, 50)
    p = y + rng.normal(0, 2, 50)
    s = rng.uniform(0, 3, 50)
    calibration = conformal.fit(y, p, s, clips_per_video=3)
    q = calibration.quantiles[2]
    assert calibration.n == (0, 0, 50)
    assert q == conformal.conformal_quantile(np.abs(y - p) / (s + 1.0), 0.9)
    lo, hi = calibration.interval(60.0, 0.0)  # a spread of 0: the floor (1 EF point) keeps it finite
    assert float(hi) - 60.0 == pytest.approx(q * 1.0) and 60.0 - float(lo) == pytest.approx(q)
    lo, hi = calibration.interval(60.0, 2.5)
    assert float(hi) - float(lo) == pytest.approx(2 * q * 3.5)


def test_small_bin_gets_an_infinite_interval_and_says_why():
    # 8 reduced (one short of 9 at 90 %), 9 mildly reduced (just enough), 20 normal
    p = np.r_[np.full(8, 30.0), np.full(9, 45.0), np.full(20, 60.0)]
    y = p + np.r_[np.arange(8.0), np.arange(9.0), np.arange(20.0)]
    calibration = conformal.fit(y, p, np.zeros_like(p), clips_per_video=3)
    assert calibration.n == (8, 9, 20)
    assert calibration.quantiles[0] == math.inf
    assert calibration.quantiles[1] == 8.0  # the 9th smallest of 0..8: the largest
    assert calibration.quantiles[2] == 18.0  # ceil(21 * 0.9) = 19th smallest of 0..19
    lo, hi = calibration.interval([30.0, 45.0], [1.0, 1.0])
    np.testing.assert_array_equal(lo, [0.0, 45.0 - 16.0])
    np.testing.assert_array_equal(hi, [100.0, 45.0 + 16.0])
    assert calibration.undefined_reason(0) == (
        "8 calibration videos with predicted EF < 40; a finite 90 % interval needs at least 9: "
        "the interval is [0, 100]"
    )
    assert calibration.undefined_reason(1) is None
    saved = calibration.to_json()["bins"][0]
    assert saved["quantile"] is None and saved["quantile_undefined"] == calibration.undefined_reason(0)


def test_interval_is_clipped_to_0_100():
    calibration = Calibration(level=0.9, n=(10, 10, 10), quantiles=(5.0, 5.0, 5.0), clips_per_video=3)
    lo, hi = calibration.interval([3.0, 97.0, 60.0, 104.0], [1.0, 1.0, 1.0, 0.0])
    np.testing.assert_array_equal(lo, [0.0, 87.0, 50.0, 99.0])
    np.testing.assert_array_equal(hi, [13.0, 100.0, 70.0, 100.0])


def test_fit_refuses_bad_inputs():
    with pytest.raises(DataError, match="calibration: 1 of 3 labels are not finite"):
        conformal.fit([50.0, np.nan, 60.0], [50.0, 55.0, 60.0], [1.0, 1.0, 1.0], clips_per_video=3)
    with pytest.raises(DataError, match="spreads must be >= 0"):
        conformal.fit([50.0], [50.0], [-1.0], clips_per_video=3)
    with pytest.raises(DataError, match=r"\[N\] labels, predictions and spreads, got \(2,\), \(3,\)"):
        conformal.fit([50.0, 1.0], [50.0, 1.0, 2.0], [1.0, 1.0, 1.0], clips_per_video=3)
    with pytest.raises(DataError, match=r"level must be a number in \(0, 1\).*got 90"):
        conformal.fit([50.0], [50.0], [1.0], clips_per_video=3, level=90)


@pytest.mark.parametrize("level", [90, 1.0, 0.0])
def test_config_check_refuses_a_level_outside_0_1(level):
    config = demo.get_config("quick")
    config.eval.interval_level = 0.5
    config_check.check_config(config)
    config.eval.interval_level = level
    with pytest.raises(
        ConfigError, match=r"eval.interval_level = .*: must be in \(0, 1\), e.g. 0.9: 90 % intervals"
    ):
        config_check.check_config(config)


# ------------------------------------------------------------------------------- calibration.json


def _calibration() -> Calibration:
    p = np.r_[np.full(5, 30.0), np.linspace(41, 49, 12), np.linspace(50, 80, 30)]
    y = p + np.sin(np.arange(p.size)) * 4
    return conformal.fit(
        y, p, np.abs(np.cos(np.arange(p.size))), clips_per_video=3, source="validation", weights_sha256="ab12"
    )


def _strict(text: str):
    def refuse(token):
        raise AssertionError(f"non-standard JSON token {token}")

    return json.loads(text, parse_constant=refuse)


def test_calibration_json_round_trip_is_strict(tmp_path):
    calibration = _calibration()
    assert calibration.quantiles[0] == math.inf  # 5 reduced videos: the null case is in the file
    path = calibration.save(tmp_path / conformal.CALIBRATION_FILE)
    data = _strict(path.read_text())
    assert data["level"] == 0.9 and data["bin_edges"] == [40.0, 50.0] and data["clips_per_video"] == 3
    assert [b["n"] for b in data["bins"]] == [5, 12, 30] and data["bins"][0]["quantile"] is None
    assert data["spread_floor"] == 1.0 and data["weights_sha256"] == "ab12" and data["source"] == "validation"
    assert "predicted EF" in data["binned_by"] and "ddof=0" in data["spread"]
    assert Calibration.load(path) == calibration
    assert not list(tmp_path.glob("*.tmp"))


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d.update(level=float("nan")), "holds NaN, not strict JSON"),
        (lambda d: d.update(format="other"), "not a calibration file"),
        (lambda d: d.update(version=2), "version 2, this code reads version 1"),
        (lambda d: d.pop("clips_per_video"), "missing or malformed field 'clips_per_video'"),
        (lambda d: d.update(level=1.5), r"level must be a number in \(0, 1\)"),
        (lambda d: d["bins"][0].update(quantile=2.0), "bin reduced: quantile 2.0 does not fit its 5 videos"),
        (lambda d: d["bins"][1].update(quantile=None), "bin mildly_reduced: quantile inf does not fit"),
        (lambda d: d.update(bin_edges=[50.0, 40.0]), "expected increasing edges"),
        (lambda d: d.update(spread_floor=0.0), "spread_floor must be > 0"),
    ],
)
def test_damaged_calibration_json_is_refused_naming_the_file(tmp_path, edit, message):
    path = _calibration().save(tmp_path / conformal.CALIBRATION_FILE)
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))  # allow_nan: the NaN case writes a bare NaN token
    with pytest.raises(CalibrationFileError, match=message) as info:
        Calibration.load(path)
    assert str(path) in str(info.value) and isinstance(info.value, CheckpointError)
    assert "\n" not in str(info.value)


def test_not_json_is_refused(tmp_path):
    path = tmp_path / conformal.CALIBRATION_FILE
    path.write_text("{")
    with pytest.raises(CalibrationFileError, match=r"calibration.json: not valid JSON"):
        Calibration.load(path)


def test_matching_checks_weights_clips_and_level(tmp_path):
    calibration = _calibration()
    assert conformal.calibration_path(tmp_path) == tmp_path / "calibration.json"
    pth = tmp_path / "best.pth"
    pth.write_bytes(b"")
    assert conformal.calibration_path(pth) == tmp_path / "calibration.json"  # beside a .pth file
    found, why = conformal.matching(tmp_path / "calibration.json", "ab12", 3)
    assert found is None and why == f"no calibration.json in {tmp_path}"
    path = calibration.save(tmp_path / "calibration.json")
    assert conformal.matching(path, "ab12", 3) == (calibration, "")
    assert conformal.matching(path, "ab12", 3, 0.9) == (calibration, "")
    assert "fitted for other weights" in conformal.matching(path, "ff00", 3)[1]
    assert "fitted on 3 clips per video, not 5 (eval.n_clips)" in conformal.matching(path, "ab12", 5)[1]
    assert conformal.matching(path, "ab12", 3, 0.8)[1] == f"{path} holds 90 % intervals, not 80 %"


def test_weights_fingerprint_depends_on_values_names_and_shapes_not_order():
    a, b = np.arange(6, dtype=np.float32), np.ones((2, 3), np.float32)
    reference = conformal.weights_fingerprint([("a", a), ("b", b)])
    assert conformal.weights_fingerprint([("b", b), ("a", a)]) == reference
    changed = a.copy()
    changed[3] = np.nextafter(changed[3], np.float32(10))  # one ulp
    assert conformal.weights_fingerprint([("a", changed), ("b", b)]) != reference
    assert conformal.weights_fingerprint([("c", a), ("b", b)]) != reference
    assert conformal.weights_fingerprint([("a", a.reshape(2, 3)), ("b", b)]) != reference


# ------------------------------------------------------------------------------------ the reports


def test_coverage_report_overall_and_per_bin():
    labels = [30.0, 45.0, 47.0, 60.0, 70.0]
    lo = [25.0, 40.0, 48.0, 55.0, 50.0]
    hi = [35.0, 50.0, 52.0, 60.0, 60.0]
    report = conformal.coverage_report(labels, lo, hi, [1, 1, 1, 2, 2])
    assert report["n"] == 5 and report["coverage"] == pytest.approx(3 / 5)  # 47 and 70 are out; 60 = hi is in
    assert report["mean_width"] == pytest.approx(np.mean([10, 10, 4, 5, 10]))
    assert report["n_mildly_reduced"] == 3 and report["coverage_mildly_reduced"] == pytest.approx(2 / 3)
    assert report["coverage_normal"] == pytest.approx(0.5) and report["mean_width_normal"] == 7.5
    assert report["n_reduced"] == 0 and math.isnan(report["coverage_reduced"])
    assert report["coverage_reduced_undefined"] == "no videos"


def test_interval_report_uses_bins_of_the_predicted_ef():
    calibration = Calibration(level=0.9, n=(10, 10, 10), quantiles=(2.0, 3.0, 4.0), clips_per_video=3)
    report = conformal.interval_report(calibration, [38.0, 52.0], [42.0, 48.0], [0.0, 1.0])
    # predicted 42 (mildly reduced): 42 -/+ 3; predicted 48: 48 -/+ 6: contains 52
    assert report["interval_n_mildly_reduced"] == 2 and report["interval_n_reduced"] == 0
    assert report["interval_coverage"] == 0.5 and report["interval_mean_width"] == pytest.approx(9.0)
    assert report["interval_level"] == 0.9
    assert report["interval_bins"]["reduced"] == "predicted EF < 40"
    assert "interval_infinite_bins" not in report


def test_category_metrics_auroc_and_confusion():
    labels = np.array([30.0, 35.0, 45.0, 55.0, 65.0, 48.0])
    predictions = np.array([33.0, 44.0, 41.0, 52.0, 60.0, 38.0])
    out = categories.category_metrics(labels, predictions, n_resamples=0)
    # EF < 40: positives 30, 35 (scores -33, -44); negatives -41, -52, -60, -38: 35 (-44) ranks below 41
    # (-41) and 38 (-38), 30 (-33) above all: (4 + 2) / 8
    assert out["auroc_ef_below_40"] == pytest.approx(6 / 8)
    # EF < 50: positives 30, 35, 45, 48; negatives 55, 65: every positive's prediction is lower
    assert out["auroc_ef_below_50"] == 1.0
    table = out["ef_category_confusion"]
    assert table["categories"] == ["reduced", "mildly_reduced", "normal"]
    assert table["category_ef"] == ["EF < 40", "40 <= EF < 50", "EF >= 50"]
    assert table["counts"] == [[1, 1, 0], [1, 1, 0], [0, 0, 2]]  # rows true, columns predicted
    assert not any(k.endswith("_ci_low") for k in out)
    with_ci = categories.category_metrics(labels, predictions, n_resamples=50, seed=0)
    assert (
        with_ci["auroc_ef_below_40_ci_low"]
        <= with_ci["auroc_ef_below_40"]
        <= with_ci["auroc_ef_below_40_ci_high"]
    )


def test_category_auroc_without_one_class_says_which():
    out = categories.category_metrics([55.0, 60.0, 45.0], [50.0, 62.0, 47.0], n_resamples=10)
    assert math.isnan(out["auroc_ef_below_40"])
    assert out["auroc_ef_below_40_undefined"] == "no video has EF < 40"
    assert out["auroc_ef_below_40_ci_undefined"] == "no video has EF < 40"
    out = categories.category_metrics([30.0, 35.0], [50.0, 62.0], n_resamples=0)
    assert out["auroc_ef_below_50_undefined"] == "every video has EF < 50"


def test_summary_line_rounds_the_interval_outward():
    assert conformal.summary_line(38.2, (33.4, 43.2), 0.9) == "EF 38 [33, 44] (90 %)"
    assert conformal.summary_line(61.7, (0.0, 100.0), 0.95) == "EF 62 [0, 100] (95 %)"
    assert conformal.summary_line(38.2, None, None) == "EF 38"


def test_calibration_from_an_evaluate_workdir(tmp_path, capsys):
    rng = np.random.default_rng(3)
    labels = rng.uniform(20, 75, 40)
    clips = labels[:, None] + rng.normal(0, 3, (40, 3))
    result = multiclip.VideoPredictions(
        [f"v{i}.avi" for i in range(40)], labels, clips, np.zeros((40, 3), int)
    )
    multiclip.write_csv(result, tmp_path / conformal.PREDICTIONS_CSV)
    out = tmp_path / "weights" / "calibration.json"
    out.parent.mkdir()
    with pytest.raises(SystemExit) as exit_info:  # no results_evaluate.json yet
        cli.main(["calibrate", f"--workdir={tmp_path}", f"--out={out}"])
    assert exit_info.value.code == 1
    assert capsys.readouterr().err == (
        f"error: {tmp_path / conformal.RESULTS_JSON}: not found; run --mode=evaluate with --workdir={tmp_path} first\n"
    )
    results = {"weights_sha256": "cd34", "checkpoint": "runs/x/checkpoints/stage2/best (epoch 4)"}
    (tmp_path / conformal.RESULTS_JSON).write_text(json.dumps(results))
    assert cli.main(["calibrate", f"--workdir={tmp_path}", f"--out={out}", "--level=0.8"]) == 0
    saved = Calibration.load(out)
    # the CSV's 4 decimals, read back
    p, s = np.round(result.prediction, 4), np.round(result.spread, 4)
    expected = conformal.fit(labels.round(4), p, s, clips_per_video=3, level=0.8)
    assert saved.quantiles == expected.quantiles and saved.n == expected.n and saved.level == 0.8
    assert saved.weights_sha256 == "cd34" and saved.checkpoint == results["checkpoint"]
    assert saved.clips_per_video == 3 and saved.source.endswith("40 videos, 3 clips each")
    assert f"wrote {out}" in capsys.readouterr().out


def test_the_conformal_module_loads_neither_jax_nor_tensorflow():
    done = run_python(
        "import sys, coreecho_jax.evaluation.conformal, coreecho_jax.evaluation.categories\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('jax', 'tensorflow', 'flax')))"
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
