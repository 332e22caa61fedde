"""Train/eval modes at the loop level, with a real Trainer on a tiny synthetic set.

Stage 1 trains every module in train mode in every epoch, even after a validation left the model in
eval mode. Stage 2 (official ``train_second_stage.py``: ``model.eval(); regressor.train()``, encoder
under ``no_grad``) leaves the encoder's parameters and BatchNorm statistics bit-identical while the
head's BatchNorm statistics move: after stage 1, and with ``run.stages=2`` alone from a stage-1 run.
"""

from pathlib import Path

import chex
import jax
import numpy as np
import pytest
from flax import nnx

from configs import demo
from coreecho_jax.checkpoints.manager import model_state_dict
from coreecho_jax.data import synthetic
from coreecho_jax.train import loop

pytestmark = pytest.mark.slow  # three short trainings (compiling both steps and the predict step)

# The demo's quick variant, cut further: 24 videos (18 train, 3 val, 3 test), 4-frame clips, 2 + 1
# epochs of at most 2 steps, no bootstrap.
OVERRIDES = {
    "data.synthetic.n_videos": 24,
    "data.frames": 4,
    "stage1.epochs": 2,
    "eval.bootstrap": 0,
    "run.max_steps_per_epoch": 2,
}


def tiny_config(root: Path, **extra):
    config = demo.get_config("quick")
    config.data.root = str(root)
    config.update_from_flattened_dict({**OVERRIDES, **extra})
    return config


def _copy(tree):
    return jax.tree_util.tree_map(np.array, tree)


def _batch_stats(module: nnx.Module) -> dict:
    return _copy(nnx.to_pure_dict(nnx.state(module, nnx.BatchStat)))


def _assert_all_moved(before: dict, after: dict) -> None:
    pairs = zip(jax.tree_util.tree_leaves(before), jax.tree_util.tree_leaves(after))
    assert all(not np.array_equal(a, b) for a, b in pairs)


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("synthetic")
    synthetic.write_echonet_dataset(path, n_videos=24, seed=0, progress=False)
    return path


@pytest.fixture(scope="module")
def two_stage_run(root, tmp_path_factory):
    """Validate first (eval mode), stage 1 (BatchNorm statistics at each validation), then stage 2."""
    workdir = tmp_path_factory.mktemp("run")
    config = tiny_config(root)
    trainer = loop.Trainer(config, workdir, write_metrics=False)
    validate = trainer.validate
    trainer.validate(0)  # leaves the model in eval mode
    seen = [_batch_stats(trainer.model.encoder)]

    def recording_validate(epoch):
        seen.append(_batch_stats(trainer.model.encoder))
        return validate(epoch)

    trainer.validate = recording_validate
    trainer.run_stage(loop.stage_settings(config, 1))
    trainer.validate = validate
    after_stage1 = _copy(model_state_dict(trainer.model))
    trainer.run_stage(loop.stage_settings(config, 2))
    return {
        "workdir": workdir,
        "epoch_stats": seen,
        "after_stage1": after_stage1,
        "after_stage2": _copy(model_state_dict(trainer.model)),
    }


def _assert_probing(before: dict, after: dict) -> None:
    chex.assert_trees_all_equal(before["encoder"], after["encoder"])  # parameters and BatchNorm stats
    for norm in ("norm1", "norm2"):
        for stat in ("mean", "var"):
            assert not np.array_equal(before["head"][norm][stat], after["head"][norm][stat]), (norm, stat)


def test_stage1_trains_in_train_mode_in_every_epoch_after_a_validation(two_stage_run):
    stats = two_stage_run["epoch_stats"]
    assert len(stats) == 3  # before training, after epoch 0, after epoch 1
    for epoch in range(2):  # every encoder BatchNorm statistic moved during each epoch
        _assert_all_moved(stats[epoch], stats[epoch + 1])


def test_stage2_after_stage1_freezes_the_encoder_and_trains_the_head_batchnorm(two_stage_run):
    _assert_probing(two_stage_run["after_stage1"], two_stage_run["after_stage2"])


def test_stage2_alone_from_a_stage1_run_freezes_the_encoder(root, two_stage_run, tmp_path):
    config = tiny_config(root, **{"run.stages": "2", "model.init_from": str(two_stage_run["workdir"])})
    trainer = loop.Trainer(config, tmp_path / "stage2", write_metrics=False)
    before = _copy(model_state_dict(trainer.model))
    trainer.run_stage(loop.stage_settings(config, 2))
    _assert_probing(before, _copy(model_state_dict(trainer.model)))
