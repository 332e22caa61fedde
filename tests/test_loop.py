"""Loop pieces that need no training: the non-finite guard, stage parsing, the results table."""

import types

import ml_collections
import numpy as np
import pytest

from coreecho_jax.train import loop
from coreecho_jax.train import mesh as mesh_lib


def _stub(tmp_path, batches):
    config = ml_collections.ConfigDict({"run": {"log_every": 1}})
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


def test_non_finite_loss_stops_the_run_naming_the_step(tmp_path):
    stub, logged = _stub(tmp_path, [_batch()] * 3)
    losses = iter([1.0, float("nan"), 1.0])
    settings = loop.StageSettings(1, 2, 2, 1e-4, 1e-4, None, 1.0, views=2)
    with pytest.raises(FloatingPointError, match=r"stage 1, epoch 1, step 5.*checkpoint"):
        loop.Trainer._train_epoch(stub, lambda b: {"loss": next(losses)}, 1, 1, settings, 2, 3)
    assert [s for s, _ in logged] == [4]  # the good step was logged, the bad one stopped the run


def test_train_epoch_averages_and_stops_at_steps_per_epoch(tmp_path):
    stub, _ = _stub(tmp_path, [_batch()] * 5)
    losses = iter([1.0, 3.0, 100.0])
    settings = loop.StageSettings(1, 2, 2, 1e-4, 1e-4, None, 1.0, views=2)
    out = loop.Trainer._train_epoch(stub, lambda b: {"loss": next(losses)}, 1, 0, settings, 2, 2)
    assert out["loss"] == 2.0 and out["steps"] == 2


def test_stage_parsing():
    config = ml_collections.ConfigDict({"run": {"stages": "2, 1"}})
    assert loop._stages(config) == [1, 2]
    config.run.stages = "3"
    with pytest.raises(ValueError, match="1 and/or 2"):
        loop._stages(config)


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
