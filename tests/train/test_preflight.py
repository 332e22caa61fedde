"""A batch size that cannot run stops ``train_and_evaluate`` right after data preparation, before any step."""

from pathlib import Path

import pytest

from coreecho_jax.data import synthetic
from coreecho_jax.errors import ConfigError
from coreecho_jax.train import loop
from coreecho_jax.train import mesh as mesh_lib
from tests.train.test_stage_modes import tiny_config


@pytest.fixture()
def two_devices(monkeypatch):
    """The run's mesh spans 2 of the 4 virtual CPU devices (tests/conftest.py)."""
    make_mesh = mesh_lib.make_mesh
    monkeypatch.setattr(mesh_lib, "make_mesh", lambda num_devices=None: make_mesh(2))


def test_bad_batch_sizes_stop_the_run_before_any_training(two_devices, tmp_path: Path):
    root = tmp_path / "synthetic"
    synthetic.write_echonet_dataset(root, n_videos=24, seed=0, progress=False)
    config = tiny_config(root, **{"stage2.batch_size": 3, "eval.batch_size": 3})
    workdir = tmp_path / "run"
    with pytest.raises(ConfigError) as error:
        loop.train_and_evaluate(config, workdir)
    message = str(error.value)
    assert "stage2.batch_size=3 does not divide over 2 devices; use a multiple of 2 (2, 4, 6, ...)" in message
    assert "eval.batch_size=3 does not divide over 2 devices" in message
    assert "stage1" not in message
    assert not (workdir / "checkpoints").exists() and not (workdir / "metrics.jsonl").exists()
