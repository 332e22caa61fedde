"""The distribution-shift score on constructed embeddings, the synthetic shifts, and their report."""

import chex
import numpy as np
import pytest

from coreecho_jax.analysis import shift
from coreecho_jax.analysis.shift_eval import shift_report
from coreecho_jax.data import clips
from coreecho_jax.errors import DataError
from coreecho_jax.evaluation.multiclip import VideoPredictions
from coreecho_jax.inference.embeddings import Embeddings
from coreecho_jax.inference.shift import ShiftIndex


def _cloud(n: int, seed: int, offset: float = 0.0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, 6)) + offset


def test_far_points_score_higher_and_in_distribution_points_are_calibrated():
    index = ShiftIndex(_cloud(400, 0), k=5)
    near, far = index.score(_cloud(200, 1)), index.score(_cloud(20, 2, offset=8.0))
    chex.assert_shape([near["shift_distance"], near["shift_percentile"]], (200,))
    assert far["shift_distance"].min() > near["shift_distance"].max()
    np.testing.assert_array_equal(far["shift_percentile"], 100.0)
    # same distribution as the training cloud: percentiles spread over 0..100 (median near 50)
    assert 35.0 < np.median(near["shift_percentile"]) < 65.0
    assert near["shift_percentile"].min() < 10.0


def test_leave_one_out_excludes_each_training_video_itself():
    # Two training points 3 apart: each one's nearest *other* point is 3 away, not itself (0).
    index = ShiftIndex(np.array([[0.0], [3.0]]), k=1)
    np.testing.assert_array_equal(index.train_distances, [3.0, 3.0])
    np.testing.assert_array_equal(index.percentile(np.array([2.9, 3.0])), [0.0, 100.0])
    own = index.score()  # the training videos' own scores, themselves left out
    np.testing.assert_array_equal(own["shift_distance"], [3.0, 3.0])
    np.testing.assert_array_equal(own["shift_percentile"], [100.0, 100.0])
    with pytest.raises(DataError, match="width 2"):
        index.distance(np.zeros((1, 2)))


def _clip(seed: int = 0) -> np.ndarray:
    """Normalised clips ``[B, K, T, H, W, 3]`` as the eval pipeline makes them."""
    pixels = np.random.default_rng(seed).integers(0, 200, size=(2, 3, 4, 16, 16, 3)).astype(np.float32)
    return clips.normalise(pixels)


@pytest.mark.parametrize("name", list(shift.SHIFTS))
def test_each_shift_keeps_the_layout_and_changes_the_clip(name):
    x = _clip()
    y = shift.SHIFTS[name](x)
    chex.assert_shape(y, x.shape)
    assert np.isfinite(y).all()
    assert np.abs(y - x).mean() > 0.05


def test_neutral_settings_leave_the_clip_unchanged():
    x = _clip()
    np.testing.assert_allclose(shift.gain(x, 1.0), x, atol=1e-5)
    np.testing.assert_allclose(shift.zoom(x, 1.0), x, atol=1e-5)
    np.testing.assert_array_equal(shift.frame_rate(x, 1), x)
    np.testing.assert_allclose(shift.rotate(x, 0.0), x, atol=1e-4)
    # frame rate x2: frames 0, 0, 1, 1 of the clip
    np.testing.assert_array_equal(shift.frame_rate(x, 2)[:, :, 1], x[:, :, 0])


def _embeddings(embedding: np.ndarray, error: np.ndarray) -> Embeddings:
    n = len(embedding)
    ef = np.linspace(20.0, 70.0, n)
    videos = VideoPredictions(
        [f"v{i:03d}.avi" for i in range(n)], ef, (ef + error)[:, None], np.zeros((n, 1), np.int64)
    )
    return Embeddings(videos, embedding[:, None, :], "test")


def test_report_of_an_obvious_shift_has_auroc_one_and_error_growing_with_the_score():
    index = ShiftIndex(_cloud(300, 0))
    clean = _embeddings(_cloud(50, 1), np.full(50, 2.0))
    moved = _embeddings(_cloud(50, 1, offset=6.0), np.full(50, 15.0))
    same = _embeddings(_cloud(50, 1), np.full(50, 2.0))
    report = shift_report(index, clean, {"moved": moved, "same": same})
    assert report["moved"]["auroc"] == pytest.approx(1.0)
    assert report["moved"]["spearman_abs_error"] > 0.8
    assert report["moved"]["mae"] == pytest.approx(15.0) and report["moved"]["mae_clean"] == pytest.approx(
        2.0
    )
    assert report["moved"]["median_percentile"] == 100.0
    assert report["same"]["auroc"] == pytest.approx(0.5)  # identical embeddings: all ties
    assert report["clean"]["n"] == 50
