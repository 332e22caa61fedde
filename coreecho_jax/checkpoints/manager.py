"""Run checkpoints behind one module: Orbax v0 ``CheckpointManager`` s for *latest* and *best*.

A training stage keeps two managers under ``<directory>``:

* ``latest/``: the state after the last finished epoch (model + optimizer + epoch + history); a run
  that is killed and started again with the same command resumes from it.
* ``best/``: the state of the epoch with the lowest validation MAE. A tie goes to the later epoch,
  like the official ``if mae <= best`` (so it cannot be an Orbax ``BestN`` policy, whose tie order is
  unspecified).

Each checkpoint holds an array tree (``state``) and a JSON dict (``meta``). Saving is asynchronous;
``wait()`` blocks until the files are on disk. Step numbers are completed epochs (epoch index + 1).
Dropout randomness is not saved: the loop reseeds it from (seed, stage, epoch), so a resumed epoch
draws the same masks as an uninterrupted one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from flax import nnx

MODEL_STATE = nnx.Not(nnx.RngState)  # parameters and BatchNorm statistics; dropout RNGs are reseeded


def model_state_dict(model: nnx.Module) -> dict:
    """Plain nested dict of a model's parameters and batch statistics (no RNG state)."""
    return nnx.to_pure_dict(nnx.state(model, MODEL_STATE))


def load_model_state_dict(model: nnx.Module, tree: dict) -> None:
    """Writes a ``model_state_dict`` tree back into ``model`` in place."""
    state = nnx.state(model, MODEL_STATE)
    nnx.replace_by_pure_dict(state, tree)
    nnx.update(model, state)


def optimizer_state_dict(optimizer: nnx.Optimizer) -> dict:
    return nnx.to_pure_dict(nnx.state(optimizer))


def load_optimizer_state_dict(optimizer: nnx.Optimizer, tree: dict) -> None:
    state = nnx.state(optimizer)
    nnx.replace_by_pure_dict(state, tree)
    nnx.update(optimizer, state)


def _stringify_keys(tree: Any) -> Any:
    """Orbax stores dict keys as strings; optax tuples appear as int keys in NNX pure dicts."""
    if isinstance(tree, dict):
        return {str(k): _stringify_keys(v) for k, v in tree.items()}
    return tree


def _restore_keys(template: Any, tree: Any) -> Any:
    if isinstance(template, dict):
        return {k: _restore_keys(v, tree[str(k)]) for k, v in template.items()}
    return tree


def _manager(directory: Path, async_save: bool) -> ocp.CheckpointManager:
    options = ocp.CheckpointManagerOptions(
        preservation_policy=ocp.checkpoint_managers.LatestN(1),
        enable_async_checkpointing=async_save,
        create=True,
    )
    return ocp.CheckpointManager(directory.absolute(), options=options, item_names=("state", "meta"))


class RunCheckpoints:
    """The latest and the best checkpoint of one training stage."""

    def __init__(self, directory: str | Path, *, async_save: bool = True):
        self.directory = Path(directory)
        self._latest = _manager(self.directory / "latest", async_save)
        self._best = _manager(self.directory / "best", async_save)

    @staticmethod
    def _save(manager: ocp.CheckpointManager, step: int, state: dict, meta: dict) -> None:
        manager.wait_until_finished()
        if step in manager.all_steps():
            manager.delete(step)  # a resumed epoch re-saves the step it had half-written
        manager.save(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(_stringify_keys(state)), meta=ocp.args.JsonSave(meta)
            ),
        )

    def save_latest(self, step: int, state: dict, meta: dict) -> None:
        self._save(self._latest, step, state, meta)

    def save_best(self, step: int, state: dict, meta: dict) -> None:
        self._save(self._best, step, state, meta)

    @staticmethod
    def _restore(manager: ocp.CheckpointManager, template: dict) -> tuple[dict, dict] | None:
        manager.wait_until_finished()
        step = manager.latest_step()
        if step is None:
            return None
        abstract = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, _stringify_keys(template))
        restored = manager.restore(
            step,
            args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()),
        )
        return _restore_keys(template, restored["state"]), dict(restored["meta"])

    def restore_latest(self, template: dict) -> tuple[dict, dict] | None:
        """(state, meta) of the latest checkpoint shaped like ``template``, or None when there is none."""
        return self._restore(self._latest, template)

    def restore_best(self, template: dict) -> tuple[dict, dict] | None:
        return self._restore(self._best, template)

    def best_meta(self) -> dict | None:
        self._best.wait_until_finished()
        step = self._best.latest_step()
        if step is None:
            return None
        return dict(self._best.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"])

    def wait(self) -> None:
        self._latest.wait_until_finished()
        self._best.wait_until_finished()

    def close(self) -> None:
        self._latest.close()
        self._best.close()


def as_numpy(tree: Any) -> Any:
    return jax.tree_util.tree_map(np.asarray, tree)
