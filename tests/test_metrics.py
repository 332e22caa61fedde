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
