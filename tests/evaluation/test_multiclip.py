"""Multi-clip evaluation: padded rows dropped, per-video averaging, CSV and summary keys."""

import csv

import numpy as np
import pytest

from coreecho_jax.evaluation import multiclip


def _batches():
    # 5 videos, batch 4, K=3: the second batch has 3 padded rows.
    names = [b"a.avi", b"b.avi", b"c.avi", b"d.avi", b"e.avi", b"", b"", b""]
    ef = np.array([50, 60, 70, 40, 30, 0, 0, 0], np.float32)
    mask = np.array([1, 1, 1, 1, 1, 0, 0, 0], bool)
    starts = np.arange(24).reshape(8, 3)
    for lo in (0, 4):
        sl = slice(lo, lo + 4)
        yield {
            "video": np.zeros((4, 3, 1)),
            "ef": ef[sl],
            "mask": mask[sl],
            "filename": names[sl],
            "starts": starts[sl],
            "offset": np.full(4, lo),
        }


def _predict(batch):
    # clip k of video i predicts label + (k - 1): mean equals the label, spread is known.
    return batch["ef"][:, None] + np.array([-1.0, 0.0, 1.0])[None, :]


def test_predict_videos_drops_padding_and_averages(tmp_path):
    result = multiclip.predict_videos(_predict, _batches())
    assert result.filenames == ["a.avi", "b.avi", "c.avi", "d.avi", "e.avi"]
    np.testing.assert_allclose(result.prediction, [50, 60, 70, 40, 30])
    assert result.clip_predictions.shape == (5, 3)
    np.testing.assert_array_equal(result.starts[4], [12, 13, 14])
    summary = multiclip.summarize(result, train_mean=55.0, n_resamples=20)
    assert summary["mae"] == 0.0 and summary["r2_x100"] == 100.0 and summary["n"] == 5
    assert summary["mae_of_predicting_train_mean"] == pytest.approx(np.mean([5, 5, 15, 15, 25]))
    multiclip.write_csv(result, tmp_path / "p.csv")
    with open(tmp_path / "p.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["FileName"] for r in rows] == result.filenames
    assert float(rows[2]["EF_pred_clip_2"]) == 71.0


def test_predict_videos_of_a_process_without_videos_is_empty():
    batch = next(_batches())
    batch["mask"] = np.zeros(4, bool)
    result = multiclip.predict_videos(_predict, [batch])
    assert len(result) == 0 and result.clip_predictions.shape == (0, 3)
    assert len(multiclip.predict_videos(_predict, [])) == 0


def test_predict_videos_checks_the_prediction_shape():
    with pytest.raises(ValueError, match=r"\[B, K\] = \[4, K\].*\(4,\)"):
        multiclip.predict_videos(lambda b: np.ones(4), _batches())
