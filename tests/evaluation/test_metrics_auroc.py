"""AUROC against its definition: the share of (positive, negative) pairs ranked correctly, ties 1/2."""

import itertools

import numpy as np
import pytest

from coreecho_jax.evaluation import metrics


def _pairwise_auroc(y, s):
    pos = [v for v, t in zip(s, y) if t]
    neg = [v for v, t in zip(s, y) if not t]
    wins = sum(1.0 if a > b else 0.5 if a == b else 0.0 for a, b in itertools.product(pos, neg))
    return wins / (len(pos) * len(neg))


@pytest.mark.parametrize("seed", range(5))
def test_auroc_equals_the_pairwise_definition_with_ties(seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, 40)
    y[:2] = [0, 1]
    s = rng.integers(0, 6, 40).astype(float)  # many ties
    assert metrics.auroc(y, s) == pytest.approx(_pairwise_auroc(y, s), abs=1e-12)


def test_auroc_extremes_and_undefined():
    assert metrics.auroc([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9]) == 1.0
    assert metrics.auroc([0, 0, 1, 1], [0.9, 0.8, 0.2, 0.1]) == 0.0
    assert np.isnan(metrics.auroc([1, 1, 1], [0.1, 0.2, 0.3]))
    out = metrics.summarize([1, 1], [0.2, 0.3], {"auroc": metrics.auroc}, n_resamples=0)
    assert out["auroc_undefined"] == "only one class among the labels"
