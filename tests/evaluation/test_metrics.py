"""Metrics against closed-form values and scikit-style definitions."""

import numpy as np
import pytest

from coreecho_jax.evaluation import metrics


def test_regression_metrics_closed_form():
    y = np.array([50.0, 60.0, 70.0, 40.0])
    p = np.array([52.0, 57.0, 70.0, 45.0])
    assert metrics.mae(y, p) == pytest.approx((2 + 3 + 0 + 5) / 4)
    assert metrics.rmse(y, p) == pytest.approx(np.sqrt((4 + 9 + 0 + 25) / 4))
    ss_tot = np.sum((y - y.mean()) ** 2)
    assert metrics.r2(y, p) == pytest.approx(1 - 38 / ss_tot)
    assert metrics.r2(y, y) == 1.0
    assert metrics.r2(y, np.full_like(y, y.mean())) == pytest.approx(0.0)
    assert metrics.pearson(y, 2 * y + 3) == pytest.approx(1.0)


def test_classification_metrics():
    y = np.array([1, 1, 1, 0, 0, 1, 0, 1])
    p = np.array([1, 0, 1, 0, 1, 1, 0, 1])
    # tp=4 fn=1 fp=1 tn=2
    assert metrics.classification_counts(y, p) == (4, 1, 2, 1)
    assert metrics.sensitivity(y, p) == pytest.approx(80.0)
    assert metrics.specificity(y, p) == pytest.approx(200 / 3)
    assert metrics.precision(y, p) == pytest.approx(80.0)
    assert metrics.f1(y, p) == pytest.approx(80.0)
    assert metrics.accuracy(y, p) == pytest.approx(75.0)


def test_bootstrap_ci_brackets_estimate_and_is_seeded():
    rng = np.random.default_rng(0)
    y = rng.uniform(20, 80, 300)
    p = y + rng.normal(0, 5, 300)
    lo, hi = metrics.bootstrap_ci(metrics.mae, y, p, n_resamples=300, seed=1)
    assert lo < metrics.mae(y, p) < hi
    assert (lo, hi) == metrics.bootstrap_ci(metrics.mae, y, p, n_resamples=300, seed=1)
    assert (lo, hi) != metrics.bootstrap_ci(metrics.mae, y, p, n_resamples=300, seed=2)
    summary = metrics.summarize(y, p, n_resamples=50)
    assert summary["n"] == 300
    assert summary["r2_ci_low"] <= summary["r2"] <= summary["r2_ci_high"]


def test_bootstrap_rejects_mismatched_lengths():
    with pytest.raises(ValueError, match="differ in length"):
        metrics.bootstrap_ci(metrics.mae, np.zeros(3), np.zeros(4))


@pytest.mark.parametrize("value", [0.1, 55.3])
def test_constant_labels_leave_r2_and_pearson_undefined(value):
    # The mean of equal values can be off by an ulp: a variance test gave R2 = -1e30 for 0.1.
    y = np.full(7, value)
    p = np.linspace(40.0, 60.0, 7)
    assert np.isnan(metrics.r2(y, p)) and np.isnan(metrics.pearson(y, p))
    assert np.isnan(metrics.pearson(p, y))
    assert metrics.undefined_reason("r2", y, p) == "labels are constant"
    assert metrics.undefined_reason("pearson", p, y) == "predictions are constant"


def test_summary_says_why_a_metric_is_undefined():
    y = np.full(5, 50.0)
    summary = metrics.summarize(y, y + 1.0, n_resamples=20)
    assert summary["mae"] == pytest.approx(1.0) and "mae_undefined" not in summary
    assert np.isnan(summary["r2"]) and summary["r2_undefined"] == "labels are constant"
    assert np.isnan(summary["r2_ci_low"]) and summary["r2_ci_undefined"] == "labels are constant"
    one = metrics.summarize(np.array([50.0]), np.array([52.0]), n_resamples=20)
    assert one["mae"] == 2.0 and one["mae_ci_undefined"] == "fewer than 2 videos"
    assert set(metrics.summarize(y, y, n_resamples=0)) == {"n", "mae", "rmse", "r2", "pearson"} | {
        "r2_undefined",
        "pearson_undefined",
    }
