"""What a transfer fold was computed from, so that a rerun never reads back a fold of other data.

A fold's record (``inputs`` in ``folds/fold<k>/result.json``, and ``folds/fold<k>/inputs.json`` from the
fold's start, before its first checkpoint) holds its train / validation / test names and one digest
per video it used: SHA-1 of the name, the label (float32), the group (CAMUS quality, HMC-QU class) and
the prepared clip's bytes. The digests cover what the prepared set's cache key covers (the source files
and the preparation settings) through their result, the clips and labels themselves: an edited EF, a
patient that can no longer be read, another download under ``data.root`` or an edited fold file all
change the record, while a download copied elsewhere unchanged does not.

Settings outside the data (learning rate, epochs, normalisation, ...) are the workdir guard's
(:mod:`coreecho_jax.train.workdir`): ``config.json`` holds them for the whole run.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from coreecho_jax.data.transfer.folds import Fold
from coreecho_jax.errors import DataError, WorkdirError, shown
from coreecho_jax.transfer.data import PreparedSet

#: Hex characters kept of each video's SHA-1 (64 bits: no collision among a dataset's videos).
DIGEST_CHARS = 16
ROLES = ("train", "val", "test")
INPUTS_FILE = "inputs.json"
RESULT_FILE = "result.json"
#: Names listed in a message before "..." (the record holds them all).
SHOWN = 3


class StaleFoldError(WorkdirError):
    """A fold folder holds a result or checkpoints computed from other data than the current set."""


def video_digests(data: PreparedSet) -> dict[str, str]:
    """``{name: digest}`` of every prepared video: SHA-1 (first 16 hex) of name, label, group, clip."""
    out = {}
    for i, name in enumerate(data.names):
        h = hashlib.sha1()
        for part in (name, data.groups[i]):
            h.update(part.encode())
            h.update(b"\0")
        h.update(np.float32(data.labels[i]).tobytes())
        h.update(np.ascontiguousarray(data.clips[i]).tobytes())
        out[name] = h.hexdigest()[:DIGEST_CHARS]
    return out


def fold_inputs(fold: Fold, digests: Mapping[str, str]) -> dict[str, Any]:
    """The record of what ``fold`` is computed from: its names per role and each video's digest."""
    names = sorted({*fold.train, *fold.val, *fold.test})
    return {
        "train": list(fold.train),
        "val": list(fold.val),
        "test": list(fold.test),
        "videos": {n: digests[n] for n in names},
    }


def differences(recorded: Mapping[str, Any] | None, current: Mapping[str, Any]) -> list[str]:
    """What differs between a fold's ``recorded`` inputs and the ``current`` ones, a phrase each
    (empty: the same). ``recorded=None``: the fold folder records none (written by an older version)."""
    if not isinstance(recorded, Mapping) or not all(k in recorded for k in (*ROLES, "videos")):
        return ["it records no inputs (written before fold results recorded them), so it cannot be checked"]
    out = []
    for role in ROLES:
        old, new = set(recorded[role]), set(current[role])
        gone, added = sorted(old - new), sorted(new - old)
        if gone:
            out.append(f"{role}: {len(gone)} video(s) no longer there ({shown(gone, SHOWN)})")
        if added:
            out.append(f"{role}: {len(added)} new video(s) ({shown(added, SHOWN)})")
    old_videos, new_videos = recorded["videos"], current["videos"]
    changed = sorted(n for n in new_videos if n in old_videos and old_videos[n] != new_videos[n])
    if changed:
        out.append(f"label, group or clip of {len(changed)} video(s) changed ({shown(changed, SHOWN)})")
    return out


def read_json(path: Path) -> dict | None:
    """A JSON object from ``path``; None when the file is absent, unreadable or not an object."""
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def holds_work(fold_dir: Path) -> bool:
    """True when ``fold_dir`` holds a result or any checkpoint file (a start that failed before its
    first checkpoint leaves none: nothing to keep)."""
    if (fold_dir / RESULT_FILE).is_file():
        return True
    ckpts = fold_dir / "checkpoints"
    return ckpts.is_dir() and any(p.is_file() for p in ckpts.rglob("*"))


def recorded_inputs(fold_dir: Path) -> dict | None:
    """The inputs the fold folder records: its result's, else those its start wrote (None if neither)."""
    result = read_json(fold_dir / RESULT_FILE)
    if result is not None:
        return result.get("inputs")
    return read_json(fold_dir / INPUTS_FILE)


def stale_path(fold_dir: Path) -> Path:
    """Where a stale fold folder is moved: ``fold<k>.stale-<n>`` beside it, the first unused n >= 1."""
    n = 1
    while (fold_dir.parent / f"{fold_dir.name}.stale-{n}").exists():
        n += 1
    return fold_dir.parent / f"{fold_dir.name}.stale-{n}"


def check_tested_once(results: Iterable[Mapping[str, Any]], known: Iterable[str]) -> None:
    """Raises DataError when a video is tested in two folds or is not in the current set."""
    known = set(known)
    folds_of: dict[str, list[int]] = {}
    for r in results:
        for p in r["predictions"]:
            folds_of.setdefault(p["name"], []).append(int(r["fold"]))
    twice = sorted(n for n, ks in folds_of.items() if len(ks) > 1)
    if twice:
        example = ", ".join(f"{n} (folds {folds_of[n]})" for n in twice[:SHOWN])
        raise DataError(
            f"{len(twice)} video(s) tested in more than one fold, e.g. {example}: the pooled metrics "
            "would count them twice; the fold results come from different fold assignments"
        )
    unknown = sorted(set(folds_of) - known)
    if unknown:
        raise DataError(
            f"{len(unknown)} tested video(s) not in the current set ({shown(unknown, SHOWN)}): a fold result "
            "was computed from other data"
        )
