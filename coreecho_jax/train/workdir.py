"""One run per workdir, resumed only under the config it started with.

``claim(workdir, config)`` is the guard ``coreecho train`` runs inside:

* it holds an exclusive lock on ``<workdir>/.lock`` (:class:`coreecho_jax.locks.HolderLock`, an
  ``fcntl.flock``; the file names the holder's pid, host and start time). A second run into the same
  workdir stops at once with a :class:`WorkdirLockedError` naming that pid. The kernel drops the lock
  when its process dies, so the lock file of a killed run is stale: the next run takes it over and
  logs whose it was.
* a new run writes ``<workdir>/config.json``; a run that finds one resumes only when the two configs
  agree on every field that changes results (all but :data:`RESULT_NEUTRAL_FIELDS`). Otherwise a
  :class:`ConfigMismatchError` lists each differing field as ``old -> new``. With
  ``allow_config_change=True`` the run goes on and each accepted change is appended to
  ``<workdir>/config_changes.jsonl``; ``config.json`` itself is written once and never rewritten, with
  one exception: a workdir that holds nothing computed yet (:func:`holds_results`: no checkpoint file,
  no fold result, no ``results.json``) was left by a start that failed (a bad batch size, a typo in a
  path, ...), and takes the new config, which replaces ``config.json`` (the differences are logged).

``fcntl.flock`` is advisory and local: it holds between processes of one machine and on file systems
that pass flock through (local disks, most NFSv4 and Lustre mounts).
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import ml_collections
from absl import logging

from coreecho_jax.errors import WorkdirError
from coreecho_jax.locks import HolderLock, LockBusy, describe_holder, now

LOCK_FILE = ".lock"
CONFIG_FILE = "config.json"
CHANGES_FILE = "config_changes.jsonl"
RESULTS_FILE = "results.json"  # written by the loop when a run has finished

#: Fields that may differ between the saved and the current config: paths, logging and machine
#: settings that leave every number of the run unchanged (the depthwise and attention implementations
#: and remat compute the same function; eval batching does not change eval-mode predictions).
RESULT_NEUTRAL_FIELDS = frozenset(
    {
        "data.root",
        "data.data_dir",
        "model.depthwise",
        "model.attention",
        "model.remat",
        "eval.batch_size",
        "run.stages",
        "run.log_every",
        "run.distributed",
        "run.coordinator",  # per job and per process (multi-host settings)
        "run.num_processes",
        "run.process_id",
        "transfer.folds",  # a transfer run may add folds into the same workdir
        "transfer.probe_random_encoder",  # a permission: the run is the same with or without it
    }
)


#: Fields added after runs were saved without them: a saved config that lacks one ran with this value
#: (the official behaviour), so an old workdir resumes without ``--allow_config_change``.
ABSENT_MEANS = {
    "data.augment": True,
    "data.independent_views": True,
    # transfer clips before [21]'s HMC-QU preprocessing (coreecho_jax.data.transfer.cycles)
    "data.spatial": "area",
    "data.time_sampling": "ends",
    "data.cycle_frames": "inclusive",
    "eval.threshold_inclusive": True,  # transfer runs predicted MI when the probability was >= threshold
    "eval.interval_level": 0.9,  # EF intervals (evaluation.conformal): a resumed old run calibrates at 90 %
}


#: Fields a transfer config of one task held for the other before each dataset's config kept only its own
#: (configs/transfer.py): the task's code never read them, so a saved config that holds one, compared
#: with a current config without it, resumes.
OTHER_TASK_FIELDS = {
    "camus": frozenset({"data.subset", "data.fold_file", "data.fold_seed"}),
    "hmcqu": frozenset({"data.split_dir"}),
}


class WorkdirLockedError(WorkdirError):
    """Another live process holds the workdir's lock."""


class ConfigMismatchError(WorkdirError):
    """The workdir holds a run whose config differs from the current one on fields that change results."""


class WorkdirLock:
    """An exclusive, non-blocking lock on ``<workdir>/.lock`` (:class:`coreecho_jax.locks.HolderLock`):
    a second holder gets :class:`WorkdirLockedError` naming the first; a stale lock is taken over."""

    def __init__(self, workdir: str | Path):
        self.path = Path(workdir) / LOCK_FILE
        self._lock = HolderLock(self.path)

    def acquire(self) -> None:
        """Takes the lock or raises WorkdirLockedError naming the holder; takes over a stale lock."""
        try:
            previous = self._lock.acquire()
        except LockBusy as e:
            raise WorkdirLockedError(
                f"{self.path.parent} is in use by another run ({describe_holder(e.holder)}); wait for it "
                "to end, stop it, or pass another --workdir"
            ) from None
        if previous:  # a holder that released cleanly empties the file; this one died holding it
            logging.warning(
                "%s: taking over the stale lock of a run that ended without releasing it (%s)",
                self.path,
                describe_holder(previous),
            )

    def release(self) -> None:
        """Empties the lock file (a clean end) and drops the lock. The file stays: see ``acquire``."""
        self._lock.release()

    def __enter__(self) -> WorkdirLock:
        self.acquire()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()


# ------------------------------------------------------------------------------------ config checks
def config_record(config: ml_collections.ConfigDict) -> dict:
    """``config`` as the JSON object ``config.json`` holds (tuples as lists, as a reload sees them)."""
    return json.loads(config.to_json_best_effort())


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"stage1": {"lr": 1e-4}}`` -> ``{"stage1.lr": 1e-4}``."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


def config_differences(saved: Mapping[str, Any], current: Mapping[str, Any]) -> dict[str, tuple]:
    """``{field: (old, new)}`` for each field that changes results and differs (absent: ``"(absent)"``).

    A saved field of :data:`OTHER_TASK_FIELDS` that the current config lacks is not compared."""
    old, new = flatten(saved), flatten(current)
    unread = OTHER_TASK_FIELDS.get(new.get("task"), frozenset()) - set(new)
    diffs = {}
    for name in sorted(set(old) | set(new)):
        if name in RESULT_NEUTRAL_FIELDS or name in unread:
            continue
        a = old.get(name, ABSENT_MEANS.get(name, "(absent)"))
        b = new.get(name, ABSENT_MEANS.get(name, "(absent)"))
        if a != b:
            diffs[name] = (a, b)
    return diffs


def holds_results(workdir: str | Path) -> bool:
    """True when ``workdir`` holds something a run computed: ``results.json``, a file under a
    ``checkpoints`` folder (CoReEcho training's, or a transfer fold's), or a fold's ``result.json``.
    Checkpoint managers create their (empty) folders before the first save, which do not count."""
    workdir = Path(workdir)
    if (workdir / RESULTS_FILE).exists() or any(workdir.glob("folds/*/result.json")):
        return True
    folders = [workdir / "checkpoints", *workdir.glob("folds/*/checkpoints")]
    return any(d.is_dir() and any(p.is_file() for p in d.rglob("*")) for d in folders)


def check_config_against_saved(
    workdir: str | Path,
    config: ml_collections.ConfigDict,
    *,
    allow_config_change: bool = False,
    write: bool = True,
) -> dict[str, tuple]:
    """Writes ``config.json`` for a new run, or checks the current config against the saved one.

    Returns the accepted differences (empty for a new run or a match). ``write=False`` (the non-primary
    processes of a multi-host run) only checks. A workdir with checkpoints but no ``config.json``
    cannot be checked and counts as a mismatch. A saved config in a workdir that holds no results
    (:func:`holds_results`) is replaced by the current one.
    """
    workdir = Path(workdir)
    path = workdir / CONFIG_FILE
    current = config_record(config)
    if not path.exists():
        if (workdir / "checkpoints").exists():
            diffs = {CONFIG_FILE: ("(absent, but checkpoints exist)", "the current config")}
        else:
            if write:
                _write_atomic(path, json.dumps(current, indent=2))
            return {}
    else:
        try:
            saved = json.loads(path.read_text())
        except ValueError as e:
            raise WorkdirError(f"{path}: not valid JSON ({e}); move it away to start a new run") from None
        diffs = config_differences(saved, current)
    if not diffs:
        return {}
    lines = [f"  {name}: {old!r} -> {new!r}" for name, (old, new) in diffs.items()]
    if path.exists() and not holds_results(workdir):
        logging.warning(
            "%s: config.json of an earlier start that computed nothing (no checkpoint, no result) is replaced "
            "by the current config:\n%s",
            workdir,
            "\n".join(lines),
        )
        if write:
            _write_atomic(path, json.dumps(current, indent=2))
        return {}
    finished = (workdir / RESULTS_FILE).exists()
    state = "a finished run" if finished else "a run"
    if not allow_config_change:
        raise ConfigMismatchError(
            f"{workdir} holds {state} whose config differs on {len(diffs)} field(s) that change results:\n"
            + "\n".join(lines)
            + "\nuse another --workdir for a new run, or pass --allow_config_change to "
            + ("rerun its test under the new config" if finished else "resume it under the new config")
        )
    logging.warning("%s: resuming %s under a changed config:\n%s", workdir, state, "\n".join(lines))
    if write:
        entry = {"time": now(), "pid": os.getpid(), "changes": {k: list(v) for k, v in diffs.items()}}
        with open(workdir / CHANGES_FILE, "a") as f:
            f.write(json.dumps(entry) + "\n")
    return diffs


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


@contextlib.contextmanager
def claim(
    workdir: str | Path,
    config: ml_collections.ConfigDict,
    *,
    allow_config_change: bool = False,
    primary: bool = True,
) -> Iterator[Path]:
    """Holds the workdir for one training run (see the module docstring); yields the workdir.

    ``primary=False`` (processes other than 0 of a multi-host run, which share the workdir) takes no
    lock and writes nothing, but still refuses a config that contradicts the saved one.
    """
    workdir = Path(workdir)
    if not primary:
        check_config_against_saved(workdir, config, allow_config_change=allow_config_change, write=False)
        yield workdir
        return
    with WorkdirLock(workdir):
        check_config_against_saved(workdir, config, allow_config_change=allow_config_change)
        yield workdir
