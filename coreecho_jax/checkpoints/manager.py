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

Damaged folders: Orbax lists every directory named by a step number (it skips only its own unfinished
``<step>.orbax-checkpoint-tmp-*`` folders), so a step whose files were overwritten, truncated or only
partly copied is listed like a good one. A restore therefore tries the steps newest first, logs a
warning naming each step it cannot read, and returns the newest readable one; when no step is readable
it raises :class:`~coreecho_jax.errors.CheckpointError` naming the folder and each step's failure.
Saving a step first removes that step and every later one: a resumed run rewrites the epochs after
the step it resumed from, and Orbax would otherwise skip (silently) a save older than its latest step.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp
from absl import logging
from flax import nnx

from coreecho_jax.errors import CheckpointError

MODEL_STATE = nnx.Not(nnx.RngState)  # parameters and BatchNorm statistics; dropout RNGs are reseeded

# What Orbax and TensorStore raise on damaged step folders, as measured with orbax-checkpoint 0.12.8:
# random bytes -> UnicodeDecodeError / ValueError (TensorStore DATA_LOSS), truncated files ->
# JSONDecodeError / ValueError (OUT_OF_RANGE), a step folder without an item -> KeyError, missing files
# -> FileNotFoundError (OSError).
_UNREADABLE = (OSError, ValueError, KeyError, TypeError, EOFError)


def model_state_dict(model: nnx.Module) -> dict:
    """Plain nested dict of a model's parameters and batch statistics (no RNG state)."""
    return nnx.to_pure_dict(nnx.state(model, MODEL_STATE))


def load_model_state_dict(model: nnx.Module, tree: dict) -> None:
    """Writes a ``model_state_dict`` tree back into ``model`` in place."""
    state = nnx.state(model, MODEL_STATE)
    nnx.replace_by_pure_dict(state, tree)
    nnx.update(model, state)


def optimizer_state_dict(optimizer: nnx.Optimizer) -> dict:
    """Plain nested dict of an optimizer's state (step count and optax state; tuple indices as int keys)."""
    return nnx.to_pure_dict(nnx.state(optimizer))


def load_optimizer_state_dict(optimizer: nnx.Optimizer, tree: dict) -> None:
    """Writes an ``optimizer_state_dict`` tree back into ``optimizer`` in place."""
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


def _manager(directory: Path, *, async_save: bool, read_only: bool) -> ocp.CheckpointManager:
    # Each manager of a run (stage1/latest, stage1/best, ...) gets its own barrier names: on several
    # hosts, latest and best save the same step at once and would otherwise share one barrier key.
    processes = ocp.options.MultiprocessingOptions(
        barrier_sync_key_prefix=f"{directory.parent.name}_{directory.name}"
    )
    if read_only:
        options = ocp.CheckpointManagerOptions(
            read_only=True, create=False, multiprocessing_options=processes
        )
    else:
        options = ocp.CheckpointManagerOptions(
            preservation_policy=ocp.checkpoint_managers.LatestN(1),
            enable_async_checkpointing=async_save,
            create=True,
            multiprocessing_options=processes,
        )
    return ocp.CheckpointManager(directory.absolute(), options=options, item_names=("state", "meta"))


def _reason(error: Exception) -> str:
    """One line for a log or an error message: the exception type and the start of its message."""
    text = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return f"{type(error).__name__}: {text[:200]}"


def _save(manager: ocp.CheckpointManager, step: int, state: dict, meta: dict) -> None:
    manager.wait_until_finished()
    for old in manager.all_steps():
        if old >= step:  # half-written by a killed run, or after a damaged step the restore skipped
            manager.delete(old)
    saved = manager.save(
        step,
        args=ocp.args.Composite(
            state=ocp.args.StandardSave(_stringify_keys(state)), meta=ocp.args.JsonSave(meta)
        ),
    )
    if not saved:
        raise CheckpointError(f"{manager.directory}: Orbax declined to save step {step}")


def _restore(manager: ocp.CheckpointManager, template: dict) -> tuple[dict, dict] | None:
    """(state, meta) of the newest readable step, shaped like ``template``; None when there is no step."""
    manager.wait_until_finished()
    steps = sorted(manager.all_steps(), reverse=True)
    if not steps:
        return None
    abstract = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, _stringify_keys(template))
    args = ocp.args.Composite(state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore())
    failures = []
    for step in steps:
        try:
            restored = manager.restore(step, args=args)
            state, meta = _restore_keys(template, restored["state"]), restored["meta"]
            if not isinstance(meta, dict):
                raise TypeError(f"meta is a {type(meta).__name__}, expected a JSON object")
        except _UNREADABLE as e:
            failures.append(f"step {step} ({_reason(e)})")
            continue
        if failures:
            logging.warning(
                "%s: skipped unreadable (damaged) checkpoint %s; restored step %d instead",
                manager.directory,
                "; ".join(failures),
                step,
            )
        return state, meta
    raise CheckpointError(
        f"{manager.directory}: no readable checkpoint; found steps {sorted(steps)}, none could be restored: "
        f"{'; '.join(failures)}. Restore the folder from a copy, or delete it to start this stage again"
    )


class RunCheckpoints:
    """The latest and the best checkpoint of one training stage.

    Args:
        directory: the stage's folder; ``latest/`` and ``best/`` are created under it.
        async_save: write in a background thread (``wait()`` blocks until done).
        read_only: only restore (creates no folder, saves nothing): for loading a finished run.
    """

    def __init__(self, directory: str | Path, *, async_save: bool = True, read_only: bool = False):
        self.directory = Path(directory)
        kwargs = dict(async_save=async_save, read_only=read_only)
        self._latest = _manager(self.directory / "latest", **kwargs)
        self._best = _manager(self.directory / "best", **kwargs)

    def save_latest(self, step: int, state: dict, meta: dict) -> None:
        _save(self._latest, step, state, meta)

    def save_best(self, step: int, state: dict, meta: dict) -> None:
        _save(self._best, step, state, meta)

    def restore_latest(self, template: dict) -> tuple[dict, dict] | None:
        """(state, meta) of the newest readable latest checkpoint shaped like ``template``; None when there
        is none. Damaged newer steps are skipped with a warning; all damaged: :class:`CheckpointError`."""
        return _restore(self._latest, template)

    def restore_best(self, template: dict) -> tuple[dict, dict] | None:
        """Like :meth:`restore_latest`, for the best checkpoint."""
        return _restore(self._best, template)

    def wait(self) -> None:
        self._latest.wait_until_finished()
        self._best.wait_until_finished()

    def close(self) -> None:
        self._latest.close()
        self._best.close()
