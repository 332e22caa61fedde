"""Run checkpoints behind one module: Orbax v0 ``CheckpointManager`` s for *latest* and *best*.

A training stage keeps two managers under ``<directory>``:

* ``latest/``: the state after the last finished epoch (model + optimizer + epoch + history); a run
  that is killed and started again with the same command resumes from it.
* ``best/``: the state of the epoch with the lowest validation MAE. A tie goes to the later epoch,
  like the official ``if mae <= best`` (so it cannot be an Orbax ``BestN`` policy, whose tie order is
  unspecified).

Each checkpoint holds an array tree (``state``) and a JSON dict (``meta``). Saving is asynchronous;
``wait()`` blocks until the files are on disk. Step numbers are completed epochs: the epoch's number,
counted from 1, which a training's meta (:mod:`coreecho_jax.train.epochs`) also holds as ``"epoch"``.
Metas written before epochs were numbered from 1 (``"epoch"`` one less than the step, in a meta with
a ``"history"``) are read as the new numbering (:func:`numbered_from_one`), so old runs resume.
Dropout randomness is not saved: the loop reseeds it from (seed, stage, epoch), so a resumed epoch
draws the same masks as an uninterrupted one.

Damaged folders: Orbax lists every directory named by a step number (it skips only its own unfinished
``<step>.orbax-checkpoint-tmp-*`` folders), so a step whose files were overwritten, truncated or only
partly copied is listed like a good one. A restore therefore tries the steps newest first and reads
each one completely (metadata and every array: damage inside the OCDBT array data shows while the
arrays are read, not later), logs a warning naming each step it cannot read and why, and returns the
newest readable one; when no step is readable it raises :class:`~coreecho_jax.errors.CheckpointError`
naming the folder and each step's failure, in one line. A readable step whose arrays do not fit the
template (another model, e.g. another ``model.preset``) is not damage: before reading its arrays, the
shapes its metadata records are compared with the template's, and a misfit is a ``KeyMapError`` naming
both architectures and the setting that selects the checkpoint's (:mod:`.architecture`).
Saving a step first removes that step and every later one: a resumed run rewrites the epochs after
the step it resumed from, and Orbax would otherwise skip (silently) a save older than its latest step.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp
from absl import logging
from flax import nnx

from coreecho_jax import logs
from coreecho_jax.checkpoints.saved_config import RUN_CONFIG_FILE
from coreecho_jax.errors import CheckpointError

MODEL_STATE = nnx.Not(nnx.RngState)  # parameters and BatchNorm statistics; dropout RNGs are reseeded

# What Orbax and TensorStore raise on damaged step folders, as measured with orbax-checkpoint 0.12.8 and
# tensorstore 0.1.86: random bytes -> UnicodeDecodeError / ValueError (TensorStore DATA_LOSS), truncated
# files -> JSONDecodeError / ValueError (OUT_OF_RANGE), a step folder without an item -> KeyError, missing
# files -> FileNotFoundError (OSError). Damage inside the array data (random bytes in or a deleted OCDBT
# data file, a step copied without its data) surfaces while the arrays are read, as a bare ``Exception``
# ("Encountered error while reading array index") raised from TensorStore's ValueError (FAILED_PRECONDITION
# / NOT_FOUND): an error counts as damage when it or an error it was raised from is one of these.
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
    if read_only:  # save_interval_steps=0: what Orbax sets (with a warning) for a read-only manager
        options = ocp.CheckpointManagerOptions(
            read_only=True, create=False, save_interval_steps=0, multiprocessing_options=processes
        )
        with logs.hidden("Given directory is read only"):  # Orbax's warning on the option we chose
            return ocp.CheckpointManager(directory.absolute(), options=options, item_names=("state", "meta"))
    options = ocp.CheckpointManagerOptions(
        preservation_policy=ocp.checkpoint_managers.LatestN(1),
        enable_async_checkpointing=async_save,
        create=True,
        multiprocessing_options=processes,
    )
    return ocp.CheckpointManager(directory.absolute(), options=options, item_names=("state", "meta"))


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


def damage_reason(error: BaseException, folder: Any = None) -> str | None:
    """One line saying why a checkpoint could not be read, when ``error`` is a sign of damage (it, or an
    error it was raised from, is one of ``_UNREADABLE``: the innermost such is named); None otherwise (a
    bug, or the device out of memory: not damage, to be raised as it is). Paths inside ``folder`` are
    given relative to it, and TensorStore's spec dump is left out."""
    cause, seen = None, set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, _UNREADABLE):
            cause = current
        current = current.__cause__
    if cause is None:
        return None
    text = str(cause).strip().splitlines()[0] if str(cause).strip() else ""
    text = re.sub(r' in OCDBT database at local file "[^"]*"', "", text)  # the step folder is named already
    text = re.sub(r" \[tensorstore_spec=.*", "", text)
    if folder is not None:
        text = text.replace(f"{folder}/", "")
    return f"{type(cause).__name__}: {text[:300]}"


# Leftovers of an abandoned read: Orbax stops a restore at the first array it cannot read, and the reads
# of the other arrays end later in TensorStore's threads, or are dropped with their event loop. Python
# prints each through ``sys.unraisablehook`` as a traceback after the warning has said it all.
_ABANDONED_READ = "_read_array_index_and_device_put"  # orbax/checkpoint/_src/serialization/serialization.py


def quiet_abandoned_reads() -> None:
    """Filters exactly those leftovers out of ``sys.unraisablehook`` (once installed, it stays: they can
    arrive after the restore has returned); every other unraisable error goes to the hook as before."""
    previous = sys.unraisablehook
    if getattr(previous, "quiets_abandoned_reads", False):
        return

    def hook(unraisable: Any) -> None:
        closed_loop = isinstance(unraisable.exc_value, RuntimeError) and str(unraisable.exc_value) == (
            "Event loop is closed"
        )
        code = getattr(unraisable.object, "cr_code", None)
        if closed_loop or getattr(code, "co_name", None) == _ABANDONED_READ:
            return
        previous(unraisable)

    hook.quiets_abandoned_reads = True
    sys.unraisablehook = hook


def _flat_shapes(tree: Any) -> dict[str, tuple[int, ...]]:
    """``{"model.encoder.blocks1.0.attn.kernel": shape}`` for the leaves of a tree of arrays, shape structs
    or Orbax ``ArrayMetadata``."""
    return {
        jax.tree_util.keystr(path, simple=True, separator="."): tuple(getattr(leaf, "shape", ()))
        for path, leaf in jax.tree_util.tree_leaves_with_path(tree)
    }


def _stored_shapes(manager: ocp.CheckpointManager, step: int) -> dict[str, tuple[int, ...]]:
    """The array shapes a step's ``state`` item records (its metadata only: no array data is read)."""
    handler = ocp.StandardCheckpointHandler()
    try:  # the manager names step folders by the bare step number (the default step name format)
        return _flat_shapes(handler.metadata(Path(manager.directory) / str(step) / "state").tree)
    finally:
        handler.close()


def _listed(keys: list[str], limit: int = 3) -> str:
    return ", ".join(keys[:limit]) + (f" and {len(keys) - limit} more" if len(keys) > limit else "")


def _misfit(expected: dict[str, tuple], stored: dict[str, tuple]) -> str | None:
    """How a stored tree differs from the expected one (paths and shapes); None when it fits."""
    missing = [k for k in expected if k not in stored]
    unexpected = [k for k in stored if k not in expected]
    reshaped = [f"{k} {stored[k]} (expected {v})" for k, v in expected.items() if stored.get(k, v) != v]
    parts = [
        f"{what} ({len(keys)}): {_listed(keys)}"
        for what, keys in (
            ("missing arrays", missing),
            ("unexpected arrays", unexpected),
            ("arrays of another shape", reshaped),
        )
        if keys
    ]
    return "; ".join(parts) or None


def _mismatch_error(directory: Any, step: int, expected: dict, stored: dict, misfit: str) -> CheckpointError:
    """The error for a readable step that does not fit the model: another architecture (named, with the
    setting that selects it) or another tree. Never advice to delete it."""
    from coreecho_jax.checkpoints import architecture  # imports the models: only on this path
    from coreecho_jax.checkpoints.key_map import KeyMapError

    found, wanted = architecture.from_nnx_shapes(stored), architecture.from_nnx_shapes(expected)
    if found is not None and wanted is not None and not architecture.same_architecture(found, wanted):
        return architecture.ArchitectureMismatchError(
            architecture.mismatch_message(
                f"{directory}: step {step} holds a model of architecture", found, wanted
            )
        )
    return KeyMapError(
        f"{directory}: step {step} is readable but does not fit the model: {misfit}. It was written for "
        f"another model or optimizer than the config builds (the run's {RUN_CONFIG_FILE} lists its "
        f"settings); restore it with that config, or use another workdir for this one"
    )


def numbered_from_one(meta: dict, step: int) -> dict:
    """``meta`` of step ``step`` in today's numbering: a training's meta written before epochs were
    numbered from 1 (a ``"history"``, ``"epoch"`` = ``step - 1``) gets ``"epoch"`` = ``step`` and each
    history record's ``"epoch"`` one more; any other meta comes back as it is."""
    if "history" not in meta or meta.get("epoch") != step - 1:
        return meta
    history = [
        {**r, "epoch": r["epoch"] + 1} if isinstance(r.get("epoch"), int) else r for r in meta["history"]
    ]
    return {**meta, "epoch": step, "history": history}


def _restore(manager: ocp.CheckpointManager, template: dict) -> tuple[dict, dict] | None:
    """(state, meta) of the newest readable step, shaped like ``template``; None when there is no step.

    Each step's recorded shapes are compared with ``template`` before its arrays are read: a readable
    step of another structure is a :class:`KeyMapError` (an :class:`ArchitectureMismatchError` naming both
    architectures), not damage. Any read error that :func:`damage_reason` recognises skips the step."""
    manager.wait_until_finished()
    steps = sorted(manager.all_steps(), reverse=True)
    if not steps:
        return None
    quiet_abandoned_reads()  # before any read: a leftover can come while the restore still runs
    expected = _flat_shapes(_stringify_keys(template))
    abstract = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, _stringify_keys(template))
    args = ocp.args.Composite(state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore())
    failures = []
    for step in steps:
        try:
            stored = _stored_shapes(manager, step)
            misfit = _misfit(expected, stored)
            if misfit is None:
                restored = manager.restore(step, args=args)
                state, meta = _restore_keys(template, restored["state"]), restored["meta"]
                if not isinstance(meta, dict):
                    raise TypeError(f"meta is a {type(meta).__name__}, expected a JSON object")
                meta = numbered_from_one(meta, step)
        except Exception as e:  # damage_reason decides; anything else is re-raised
            reason = damage_reason(e, Path(manager.directory) / str(step))
            if reason is None:
                raise
            failures.append(f"step {step} ({reason})")
            continue
        if misfit is not None:
            error = _mismatch_error(manager.directory, step, expected, stored, misfit)
            if failures:  # the newer, damaged steps are named too: they are not what to fix
                error.args = (f"{error} (newer steps, damaged: {'; '.join(failures)})",)
            raise error
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
