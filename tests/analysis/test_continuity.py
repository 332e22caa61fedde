"""Continuity numbers on constructed embeddings whose answer is known."""

import numpy as np
import pytest

from coreecho_jax.analysis import continuity
from coreecho_jax.errors import DataError


def _line(n: int, seed: int):
    """EF spread over 10..80 %, embedded on a line in 8-D (distance = |EF difference| x 0.1)."""
    ef = np.random.default_rng(seed).uniform(10.0, 80.0, n)
    direction = np.arange(1.0, 9.0) / np.linalg.norm(np.arange(1.0, 9.0))  # one line for every set
    return 0.1 * ef[:, None] * direction[None, :], ef


def test_embeddings_on_a_line_of_ef_are_perfectly_continuous():
    x, ef = _line(60, seed=0)
    train_x, train_ef = _line(200, seed=1)
    result = continuity.analyse(x, ef, train_x, train_ef, k=5)
    assert result["distance_spearman"] == pytest.approx(1.0, abs=1e-9)
    assert result["local_ordering"] == pytest.approx(1.0)
    assert result["knn_mae"] < 1.0  # neighbours 0.35 EF points apart on average
    assert result["knn_mae_of_predicting_index_mean"] > 10.0
    assert result["n_train"] == 200 and result["n_test"] == 60 and result["knn_k"] == 5


def test_random_embeddings_carry_no_ef():
    rng = np.random.default_rng(3)
    ef = rng.uniform(10.0, 80.0, 300)
    train_ef = rng.uniform(10.0, 80.0, 300)
    result = continuity.analyse(rng.normal(size=(300, 16)), ef, rng.normal(size=(300, 16)), train_ef)
    assert abs(result["distance_spearman"]) < 0.05
    assert result["local_ordering"] == pytest.approx(0.5, abs=0.06)  # chance
    # the mean of 5 random train EFs is a noisy mean-predictor: no better than predicting the mean
    assert result["knn_mae"] > 0.95 * result["knn_mae_of_predicting_index_mean"]


def test_neighbours_far_in_ef_score_below_chance():
    # EF alternates low/high along the embedding line: every nearest neighbour is EF-far.
    ef = np.tile([20.0, 70.0], 20) + np.linspace(0, 1, 40)
    x = np.arange(40, dtype=float)[:, None]
    assert continuity.local_ordering(x, ef, k=2) < 0.1


def test_k_is_clamped_and_tiny_sets_give_nan():
    x, ef = _line(4, seed=0)
    assert continuity.knn_mae(x, ef, x, ef, k=50)["knn_k"] == 4
    assert np.isnan(continuity.distance_spearman(x[:2], ef[:2]))
    assert np.isnan(continuity.local_ordering(x[:2], ef[:2]))
    with pytest.raises(DataError, match=r"expected embeddings \[N, D\] and EF \[N\]"):
        continuity.distance_spearman(x, ef[:3])


def test_analysis_records_the_neighbours_each_number_used():
    # 5 test videos leave 4 neighbours each; the 3 training videos are the kNN index
    x, ef = _line(5, seed=0)
    train_x, train_ef = _line(3, seed=1)
    result = continuity.analyse(x, ef, train_x, train_ef, k=5)
    assert result["local_ordering_k"] == 4 and result["knn_k"] == 3
    assert result["local_ordering"] == continuity.local_ordering(x, ef, k=4)
    assert continuity.analyse(x, ef, k=2)["local_ordering_k"] == 2
    tiny = continuity.analyse(x[:2], ef[:2], k=5)
    assert tiny["local_ordering_k"] == 0 and np.isnan(tiny["local_ordering"])
