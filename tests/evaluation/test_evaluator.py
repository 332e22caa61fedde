"""The evaluator: gathering processes (simulated with threads), ordering, checks, strict results files."""

import json
import math
import threading
import types

import jax
import ml_collections
import numpy as np
import pytest
from flax import nnx

from coreecho_jax.errors import ConfigError, DataError
from coreecho_jax.evaluation import conformal, multiclip, results
from coreecho_jax.evaluation import evaluator as evaluator_lib
from coreecho_jax.train import loop
from coreecho_jax.train import mesh as mesh_lib

EVAL = ml_collections.ConfigDict({"n_clips": 3, "bootstrap": 50})


def _batch(names, ef, starts=None, k=3, batch_size=4):
    """A padded eval batch of ``names`` (rows beyond them masked)."""
    n = len(names)
    starts = np.arange(n * k).reshape(n, k) if starts is None else np.asarray(starts)
    pad = batch_size - n
    return {
        "video": np.zeros((batch_size, k, 1, 1, 1, 3), np.float32),
        "ef": np.concatenate([np.asarray(ef, np.float32), np.zeros(pad, np.float32)]),
        "mask": np.arange(batch_size) < n,
        "filename": np.array([x.encode() for x in names] + [b""] * pad, dtype=object),
        "starts": np.concatenate([starts, np.zeros((pad, k), np.int64)]),
    }


def _clip_spread(batch):
    # clip k of a video predicts label + (k - 1) / 3: the mean is the label, float64 digits are exact.
    return batch["ef"][:, None].astype(np.float64) + (np.arange(3) - 1)[None, :] / 3.0


class _Processes:
    """``n`` fake processes on threads: ``allgather`` stacks every thread's array, like process_allgather."""

    def __init__(self, n: int):
        self.n = n
        self.barrier = threading.Barrier(n, timeout=30)  # a process that skips a gather breaks it
        self.slots: list = [None] * n
        self.local = threading.local()

    def allgather(self, x):
        self.slots[self.local.index] = np.array(x)
        self.barrier.wait()
        out = np.stack(self.slots)
        self.barrier.wait()  # nobody overwrites a slot before everyone has read them
        return out

    def run(self, fn):
        """Runs ``fn(index, allgather)`` on every process; returns the results (or errors) by index."""
        out: list = [None] * self.n

        def target(i):
            self.local.index = i
            try:
                out[i] = fn(i, self.allgather)
            except Exception as e:  # returned, so the test can check every process raised the same
                out[i] = e

        threads = [threading.Thread(target=target, args=(i,)) for i in range(self.n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        return out


def test_every_process_ends_with_every_video_in_name_order():
    # Process 0 holds two videos (one long, non-ASCII name), process 1 one, process 2 only padding.
    shares = [
        [_batch(["zeta.avi", "ä-very-long-name-0123456789.avi"], [33.3, 61.7])],
        [_batch(["alpha.avi"], [47.1], starts=[[5, 9, 200]])],
        [_batch([], [])],
    ]

    def process(i, allgather):
        return evaluator_lib.Evaluator(_clip_spread, EVAL, allgather=allgather).run(shares[i])

    outs = _Processes(3).run(process)
    names = ["alpha.avi", "zeta.avi", "ä-very-long-name-0123456789.avi"]
    for result, summary in outs:
        assert result.filenames == names
        np.testing.assert_array_equal(result.labels, np.float32([47.1, 33.3, 61.7]).astype(np.float64))
        np.testing.assert_array_equal(result.clip_predictions, _clip_spread({"ef": result.labels}))
        np.testing.assert_array_equal(result.starts[0], [5, 9, 200])
        assert summary == outs[0][1] and summary["n"] == 3 and summary["mae"] == pytest.approx(0.0)


def test_a_video_on_two_processes_or_no_video_at_all_is_refused_everywhere():
    shares = [[_batch(["a.avi", "b.avi"], [50, 60])], [_batch(["b.avi"], [60])]]
    outs = _Processes(2).run(
        lambda i, g: evaluator_lib.Evaluator(_clip_spread, EVAL, allgather=g).predict(shares[i])
    )
    assert all(isinstance(e, DataError) and "b.avi" in str(e) for e in outs), outs
    outs = _Processes(2).run(
        lambda i, g: evaluator_lib.Evaluator(_clip_spread, EVAL, allgather=g).predict([_batch([], [])])
    )
    assert all(isinstance(e, DataError) and "no videos" in str(e) for e in outs), outs


def test_one_process_sorts_and_checks_the_clip_count():
    batches = [_batch(["c.avi", "a.avi", "d.avi", "b.avi"], [40, 50, 60, 70]), _batch(["e.avi"], [30])]
    result, summary = evaluator_lib.Evaluator(_clip_spread, EVAL, train_mean=55.0).run(batches)
    assert result.filenames == ["a.avi", "b.avi", "c.avi", "d.avi", "e.avi"]
    np.testing.assert_allclose(result.prediction, [50, 70, 40, 60, 30])
    assert summary["mae_ci_low"] <= summary["mae"] <= summary["mae_ci_high"]
    assert summary["mae_of_predicting_train_mean"] == pytest.approx(np.mean([5, 15, 15, 5, 25]))
    five = ml_collections.ConfigDict({"n_clips": 5, "bootstrap": 0})
    with pytest.raises(ConfigError, match="n_clips is 5 but the clip starts hold 3"):
        evaluator_lib.Evaluator(_clip_spread, five).predict(batches)


def test_validation_summary_has_no_intervals():
    _, summary = evaluator_lib.Evaluator(_clip_spread, EVAL, bootstrap=0).run([_batch(["a", "b"], [1, 2])])
    assert "mae" in summary and not any("_ci_" in k for k in summary)


def test_one_video_of_predict():
    clips = np.zeros((3, 4, 8, 8, 3), np.float32)
    batch = multiclip.video_batch(clips, [0, 10, 20], "clip.dcm")
    result = evaluator_lib.Evaluator(_clip_spread, EVAL).predict([batch])
    assert result.filenames == ["clip.dcm"] and result.clip_predictions.shape == (1, 3)
    assert np.isnan(result.labels[0]) and np.isnan(result.prediction[0])


def _strict_json(text):
    def refuse(token):
        raise AssertionError(f"non-standard JSON token {token}")

    return json.loads(text, parse_constant=refuse)


def test_constant_labels_say_why_r2_is_undefined(tmp_path):
    batches = [_batch(["a.avi", "b.avi", "c.avi"], [0.1, 0.1, 0.1])]
    _, summary = evaluator_lib.Evaluator(_clip_spread, EVAL).run(batches)
    assert np.isnan(summary["r2"]) and summary["r2_undefined"] == "labels are constant"
    table = results.format_results(summary)
    assert "R2 x 100                          undefined: labels are constant" in table
    path = results.write_json({**summary, "history": [{"val_r2": float("nan")}]}, tmp_path / "r.json")
    saved = _strict_json(path.read_text())
    assert saved["r2"] is None and saved["r2_x100"] is None and saved["r2_ci_low"] is None
    assert saved["r2_undefined"] == saved["r2_ci_undefined"] == "labels are constant"
    assert saved["history"] == [{"val_r2": None}]
    assert saved["mae"] == pytest.approx(0.0)  # defined metrics keep their values
    assert results.format_results(saved) == table  # the table reads the JSON as well
    assert loop.format_results is results.format_results  # the loop prints this table


def test_clinical_summary_adds_interval_coverage_and_categories_to_the_table(tmp_path):
    batches = [_batch(["a.avi", "b.avi", "c.avi", "d.avi"], [30.0, 45.0, 60.0, 70.0])]
    result, summary = evaluator_lib.Evaluator(_clip_spread, EVAL).run(batches)
    spread = np.std([-1 / 3, 0, 1 / 3])
    np.testing.assert_allclose(result.spread, spread)
    calibration = conformal.Calibration(
        level=0.9, n=(10, 10, 5), quantiles=(2.0, 3.0, math.inf), clips_per_video=3, source="val: 25 videos"
    )
    mae = summary["mae"]
    summary.update(multiclip.clinical_summary(result, calibration, n_resamples=0))
    assert summary["mae"] == mae  # the point metrics stay as they were
    # predictions = labels: every interval covers; the normal bin (5 videos < 9) is [0, 100]
    assert summary["interval_coverage"] == 1.0 and summary["interval_n"] == 4
    assert summary["interval_mean_width_reduced"] == pytest.approx(2 * 2.0 * (spread + 1.0))
    assert summary["interval_mean_width_mildly_reduced"] == pytest.approx(2 * 3.0 * (spread + 1.0))
    assert summary["interval_mean_width_normal"] == 100.0 and summary["interval_n_normal"] == 2
    assert summary["interval_infinite_bins"]["normal"].startswith(
        "5 calibration videos with predicted EF >= 50"
    )
    assert summary["auroc_ef_below_40"] == summary["auroc_ef_below_50"] == 1.0
    assert summary["ef_category_confusion"]["counts"] == [[1, 0, 0], [0, 1, 0], [0, 0, 2]]
    table = results.format_results(summary)
    for line in (
        "EF interval (90 %)                  coverage   width, EF %  videos",
        "all videos                           100.0 %         53.18       4",
        "  predicted EF < 40                  100.0 %          5.09       1",
        "  predicted EF >= 50                 100.0 %        100.00       2",
        "  calibrated on the val: 25 videos",
        "AUROC EF < 40                          1.000",
        "  normal (EF >= 50)                              0               0               2",
    ):
        assert line in table, (line, table)
    saved = _strict_json(results.write_json(summary, tmp_path / "r.json").read_text())
    assert results.format_results(saved) == table
    without = multiclip.clinical_summary(
        result, None, n_resamples=0, no_calibration="no calibration.json in /run"
    )
    assert without["interval_undefined"] == "no calibration.json in /run"
    assert not any(k.startswith("interval_coverage") for k in without)
    assert (
        "EF interval coverage              undefined: no calibration.json in /run"
        in results.format_results(
            {**{k: v for k, v in summary.items() if not k.startswith("interval")}, **without}
        )
    )


class _MeanModel(nnx.Module):
    """Predicts each clip's mean pixel: the answer says which row of the batch it came from."""

    def __call__(self, x, detach_embedding=True):
        return x.mean(axis=(1, 2, 3, 4)), x


def test_trainer_predictions_come_back_in_batch_order_on_four_devices():
    stub = types.SimpleNamespace(model=_MeanModel(), mesh=mesh_lib.make_mesh(4))
    assert jax.device_count() == 4
    fn = loop.Trainer.predict_fn(stub)
    batch = _batch(["a", "b", "c"], [1, 2, 3], batch_size=8)
    batch["video"] = batch["video"] + np.arange(24, dtype=np.float32).reshape(8, 3, 1, 1, 1, 1)
    np.testing.assert_array_equal(fn(batch), np.arange(24).reshape(8, 3))
