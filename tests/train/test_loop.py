"""Loop pieces that need no training: metric reads, the non-finite guard, stage parsing, batch-size
preflight, the results table."""

import types

import ml_collections
import numpy as np
import pytest

from coreecho_jax.errors import ConfigError
from coreecho_jax.train import loop, preflight
from coreecho_jax.train import mesh as mesh_lib

SETTINGS = loop.StageSettings(1, 2, 2, 1e-4, 1e-4, None, 1.0, views=2)


def _stub(tmp_path, batches, log_every=1):
    config = ml_collections.ConfigDict({"run": {"log_every": log_every}})
    data = types.SimpleNamespace(train_batches=lambda *a, **k: iter(batches))
    logged = []
    stub = types.SimpleNamespace(
        config=config,
        data=data,
        mesh=mesh_lib.make_mesh(1),
        workdir=tmp_path,
        _log=lambda step, scalars, **ctx: logged.append((step, scalars)),
    )
    return stub, logged


def _batch():
    return {"video": np.zeros((2, 2, 1, 1, 1, 3), np.float32), "ef": np.array([50.0, 60.0], np.float32)}


class DeviceScalar:
    """Stands for a step metric on the device: records the step count whenever the host reads it."""

    def __init__(self, value: float, calls: list, reads: list):
        self.value, self.calls, self.reads = value, calls, reads

    def __float__(self) -> float:
        self.reads.append(len(self.calls))
        return self.value

    def __array__(self, dtype=None, copy=None):
        self.reads.append(len(self.calls))
        return np.asarray(self.value, dtype)


def _lazy_step(losses):
    calls, reads = [], []

    def run_step(batch):
        calls.append(1)
        return {"loss": DeviceScalar(next(losses), calls, reads)}

    return run_step, reads


def test_non_finite_loss_stops_the_run_naming_the_step(tmp_path):
    stub, logged = _stub(tmp_path, [_batch()] * 3)
    run_step, _ = _lazy_step(iter([1.0, float("nan"), 1.0]))
    # the second epoch (index 1; epochs are counted from 1 wherever a person reads them)
    with pytest.raises(FloatingPointError, match=r"stage 1, epoch 2, step 5.*checkpoint"):
        loop.Trainer.train_epoch(stub, run_step, SETTINGS, 1, 2, 3)
    assert [s for s, _ in logged] == [4]  # the good step was logged, the bad one stopped the run


def test_host_reads_metrics_every_log_every_steps_and_at_the_epoch_end(tmp_path):
    stub, logged = _stub(tmp_path, [_batch()] * 7, log_every=3)
    run_step, reads = _lazy_step(iter([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]))
    out = loop.Trainer.train_epoch(stub, run_step, SETTINGS, 0, 2, 7)
    assert sorted(set(reads)) == [3, 6, 7]  # no read (no device sync) between the log points
    assert [(s, m["train/loss"]) for s, m in logged] == [(3, 2.0), (6, 5.0), (7, 7.0)]  # window means
    assert out["loss"] == 4.0 and out["steps"] == 7


def test_non_finite_loss_inside_a_window_names_its_step(tmp_path):
    stub, logged = _stub(tmp_path, [_batch()] * 4, log_every=4)
    run_step, _ = _lazy_step(iter([1.0, 1.0, float("inf"), 1.0]))
    with pytest.raises(FloatingPointError, match=r"stage 1, epoch 1, step 3\b"):
        loop.Trainer.train_epoch(stub, run_step, SETTINGS, 0, 2, 4)
    assert logged == []


def test_train_epoch_averages_and_stops_at_steps_per_epoch(tmp_path):
    stub, _ = _stub(tmp_path, [_batch()] * 5)
    losses = iter([1.0, 3.0, 100.0])
    out = loop.Trainer.train_epoch(stub, lambda b: {"loss": next(losses)}, SETTINGS, 0, 2, 2)
    assert out["loss"] == 2.0 and out["steps"] == 2


def _batch_config(stage1: int, stage2: int, evaluation: int) -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(
        {
            "stage1": {"batch_size": stage1},
            "stage2": {"batch_size": stage2},
            "eval": {"batch_size": evaluation},
        }
    )


def _check(config, *, stages=(1, 2), devices=2, processes=1, train_videos=10):
    preflight.check_batch_sizes(
        config,
        stages=stages,
        num_devices=devices,
        num_processes=processes,
        num_train_batches=lambda batch: train_videos // batch,
        train_videos=train_videos,
    )


def test_preflight_names_every_bad_batch_size_and_its_valid_values():
    with pytest.raises(ConfigError) as error:
        _check(_batch_config(stage1=3, stage2=1, evaluation=3))
    message = str(error.value)
    assert "stage1.batch_size=3 does not divide over 2 devices; use a multiple of 2 (2, 4, 6, ...)" in message
    assert "stage2.batch_size=1 must be an integer >= 2; use a multiple of 2 (2, 4, 6, ...)" in message
    assert "eval.batch_size=3 does not divide over 2 devices; use a multiple of 2 (2, 4, 6, ...)" in message


def test_preflight_checks_the_train_split_and_processes():
    with pytest.raises(ConfigError) as error:
        _check(_batch_config(stage1=12, stage2=4, evaluation=6), devices=4, processes=2)
    message = str(error.value)
    assert "stage1.batch_size=12 is larger than the training split (10 videos)" in message
    assert "use a multiple of 4 up to 8 (4, 8)" in message
    assert "eval.batch_size=6 does not divide over 4 devices and 2 processes" in message
    assert "stage2" not in message


def test_preflight_checks_only_the_stages_that_run():
    _check(_batch_config(stage1=3, stage2=4, evaluation=2), stages=(2,))
    _check(_batch_config(stage1=3, stage2=3, evaluation=2), stages=())
    with pytest.raises(ConfigError, match="eval.batch_size=1 does not divide"):
        _check(_batch_config(stage1=2, stage2=2, evaluation=1), stages=())


def test_results_table_shows_cis_and_the_mean_baseline():
    results = {
        "mae": 3.9,
        "mae_ci_low": 3.7,
        "mae_ci_high": 4.1,
        "rmse": 5.13,
        "rmse_ci_low": 4.9,
        "rmse_ci_high": 5.4,
        "r2": 0.82,
        "r2_ci_low": 0.8,
        "r2_ci_high": 0.84,
        "r2_x100": 82.0,
        "mae_of_predicting_train_mean": 9.8,
        "n": 1276,
        "clips_per_video": 3,
    }
    table = loop.format_results(results)
    assert "MAE (EF %)                             3.900   [3.700, 4.100]" in table
    assert "R2 x 100                              82.000   [80.000, 84.000]" in table
    assert "MAE of predicting the train mean" in table and "1276" in table


def test_stage_settings_read_each_stage_section():
    config = ml_collections.ConfigDict(
        {
            "stage1": {
                "epochs": 3,
                "batch_size": 8,
                "lr": 1e-3,
                "weight_decay": 1e-4,
                "lr_decay_epoch": 2,
                "lr_decay_rate": 0.5,
            },
            "stage2": {"epochs": 1, "batch_size": 4, "lr": 1e-2, "weight_decay": 0.0},
            "loss": {"temperature": 2.0, "rnc_weight": 1.0, "implementation": "sorted"},
        }
    )
    one, two = loop.stage_settings(config, 1), loop.stage_settings(config, 2)
    assert (one.stage, one.epochs, one.batch_size, one.lr, one.weight_decay) == (1, 3, 8, 1e-3, 1e-4)
    assert (one.decay_epoch, one.decay_rate, one.views) == (2, 0.5, 2)
    assert (one.step, one.step_args) == (loop.steps.stage1_step, (loop.loss_spec(config),))
    assert (two.stage, two.epochs, two.batch_size, two.lr, two.weight_decay) == (2, 1, 4, 1e-2, 0.0)
    assert (two.decay_epoch, two.decay_rate, two.views, two.step_args) == (None, 1.0, 1, ())
    assert (two.step, two.wrt) == (loop.steps.stage2_step, loop.steps.HEAD_PARAMS)
    with pytest.raises(ConfigError, match="stage must be 1 or 2"):
        loop.stage_settings(config, 3)
