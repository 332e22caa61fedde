"""The transfer wing's data step: a dataset read, cut into folds and prepared once as clips.

``prepare(task, data_config, workdir)`` reads the download with the task's reader
(:mod:`coreecho_jax.transfer.tasks`: :func:`coreecho_jax.data.transfer.camus.read_camus`,
:func:`coreecho_jax.data.transfer.hmcqu.read_hmcqu`, ...), turns each record's cycle into a stored clip
(:func:`coreecho_jax.data.transfer.cycles.cycle_to_clip`; the fields ``data.frames``, ``image_size``,
``crop_fraction``, ``spatial``, ``time_sampling`` and, for HMC-QU, ``cycle_frames`` choose how) and
caches the result in ``<workdir>/prepared/<task>-<key>.npz``. The key covers the preprocessing settings
and every source file's size and modification time, so an edited download or a changed setting
prepares again, and a rerun does not. A record whose pixels cannot be read is left out and listed in
the report (or raises with ``data.on_error = "raise"``) and counted in the headline; the report is
written to ``<workdir>/preparation_report.json`` with, for HMC-QU, the sheet column each field was
read from.

With ``data.synthetic.enabled`` a synthetic download in the real layout is written first (into
``data.root``, or ``<workdir>/synthetic`` when that is empty); its HMC-QU fold file is the default.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from coreecho_jax import logs
from coreecho_jax.data.records import Skipped
from coreecho_jax.data.transfer import cycles
from coreecho_jax.data.transfer.folds import Fold
from coreecho_jax.errors import ConfigError, DataError
from coreecho_jax.transfer import tasks

#: Bump when the stored clips change for the same settings.
FORMAT_VERSION = 1
REPORT_FILE = "preparation_report.json"


@dataclasses.dataclass(frozen=True)
class PreparedSet:
    """Every readable video of a transfer dataset as one clip, with its label and folds.

    Attributes:
        task: the task's name (:mod:`coreecho_jax.transfer.tasks`), e.g. ``"camus"`` (label: EF in %)
            or ``"hmcqu"`` (label: 1 = MI, 0 = normal).
        names: patient (CAMUS) or ECHO id (HMC-QU) per row, sorted.
        clips: ``[N, T, S, S]`` grey clips, uint8 or float32 on the 0..255 scale
            (:mod:`coreecho_jax.data.transfer.cycles`, ``data.spatial``).
        labels: float32 ``[N]``.
        groups: per row, CAMUS ``ImageQuality`` (Good / Medium / Poor) or HMC-QU ``MI`` / ``normal``.
        source_frames: int ``[N]``, frames of the cycle before resampling.
        folds: the cross-validation folds (names).
        skipped: videos left out, and why.
        source: what was read, in a line (for logs and results).
        columns: HMC-QU: where each sheet field was read (:meth:`HmcQuDataset.column_mapping`); CAMUS: {}.
    """

    task: str
    names: tuple[str, ...]
    clips: np.ndarray
    labels: np.ndarray
    groups: tuple[str, ...]
    source_frames: np.ndarray
    folds: tuple[Fold, ...]
    skipped: tuple[Skipped, ...]
    source: str
    columns: dict[str, str] = dataclasses.field(default_factory=dict)

    def rows(self, names: tuple[str, ...]) -> np.ndarray:
        """Row indices of ``names`` (in that order)."""
        index = {n: i for i, n in enumerate(self.names)}
        return np.array([index[n] for n in names], np.int64)


@dataclasses.dataclass(frozen=True)
class _Clips:
    """The prepared clips of a set's readable records (what the cache stores)."""

    names: tuple[str, ...]
    clips: np.ndarray
    labels: np.ndarray
    groups: tuple[str, ...]
    source_frames: np.ndarray
    unreadable: tuple[Skipped, ...]


def synthetic_root(data_config: Any, workdir: Path) -> Path:
    return Path(data_config.root) if data_config.root else workdir / "synthetic"


def download_root(task: str, data_config: Any, workdir: str | Path) -> Path:
    """The download :func:`prepare` reads: ``data.root`` (the field the task's record names in
    ``source_field``: a manifest task's ``data.manifest``), or the synthetic one it writes
    (:func:`synthetic_root`).

    Raises:
        ConfigError: that field is empty and the data is not synthetic.
    """
    if data_config.synthetic.enabled:
        return synthetic_root(data_config, Path(workdir))
    record = tasks.get(task)
    field = record.source_field
    if not data_config[field]:
        raise ConfigError(
            f"data.{field} is empty: pass --config.data.{field}=<the {record.name} {record.source_noun}>"
        )
    return Path(data_config[field])


def write_synthetic(task: str | tasks.Task, data_config: Any, workdir: Path) -> Path:
    """Writes (once) the synthetic download of ``task`` and returns its root."""
    return tasks.get(task).write_synthetic(synthetic_root(data_config, workdir), data_config.synthetic)


def _identity(paths: list[Path]) -> list:
    out = []
    for p in sorted(set(paths)):
        st = p.stat()
        out.append([str(p), st.st_size, st.st_mtime_ns])
    return out


def cycle_spec(data_config: Any) -> cycles.CycleSpec:
    """The :class:`CycleSpec` of a ``config.data`` (a field it lacks keeps the spec's default)."""
    defaults = cycles.CycleSpec()
    return cycles.CycleSpec(
        int(data_config.frames),
        int(data_config.image_size),
        float(data_config.crop_fraction),
        str(data_config.get("spatial", defaults.spatial)),
        str(data_config.get("time_sampling", defaults.time_sampling)),
    )


def prepare(
    task: str | tasks.Task, data_config: Any, workdir: str | Path, *, progress: bool = True
) -> PreparedSet:
    """Reads, folds and prepares (or loads the cached) clips of ``task`` (a registered name, e.g.
    ``"camus"`` | ``"hmcqu"``, or a :class:`~coreecho_jax.transfer.tasks.Task`).

    Raises:
        ConfigError: an unknown task or fold scheme.
        DataError: (CamusError, HmcQuError) the download is missing, unreadable or inconsistent (the
            message names the file).
    """
    task = tasks.get(task)
    workdir = Path(workdir)
    if data_config.synthetic.enabled:
        write_synthetic(task, data_config, workdir)
    root = download_root(task.name, data_config, workdir)
    spec = cycle_spec(data_config)
    selection = task.frame_selection(data_config)
    source = task.read(data_config, root)
    ds = source.dataset
    key_fields = {
        "format_version": FORMAT_VERSION,
        "task": task.name,
        "view": ds.view,
        "spec": dataclasses.asdict(spec),
        "cycle_frames": selection,
        "names": sorted(getattr(r, ds.NAME_FIELD) for r in ds.records),
        "files": _identity(source.files),
    }
    key = hashlib.sha1(json.dumps(key_fields, sort_keys=True).encode()).hexdigest()[:16]
    cache = workdir / "prepared" / f"{task.name}-{key}.npz"
    if cache.is_file():
        made = _load(cache)
    else:
        made = _make_clips(task, ds, spec, selection, str(data_config.on_error), progress, root)
        _save(made, cache)
    skipped = [*ds.skipped, *made.unreadable]
    dropped = {s.name for s in skipped}
    folds = tuple(f.without(dropped) for f in source.folds)
    headline = ds.report(list(made.unreadable)).splitlines()[0]
    line = f"{headline}; {len(made.names)} clips of {spec.frames} x {spec.image_size} x {spec.image_size}"
    prepared = PreparedSet(
        task.name,
        made.names,
        made.clips,
        made.labels,
        made.groups,
        made.source_frames,
        folds,
        tuple(skipped),
        line,
        source.columns,
    )
    write_report(prepared, workdir / REPORT_FILE)
    return prepared


def _make_clips(
    task: tasks.Task,
    ds: Any,
    spec: cycles.CycleSpec,
    selection: str,
    on_error: str,
    progress: bool,
    root: Path,
) -> _Clips:
    """The clip of every record of ``ds`` whose pixels can be read (in name order); the others listed."""
    names, clip_list, label_list, group_list, counts, unreadable = [], [], [], [], [], []
    records = sorted(ds.records, key=lambda r: getattr(r, ds.NAME_FIELD))
    shown = logs.progress(records, desc=f"preparing {task.name} clips", unit="video") if progress else records
    for r in shown:
        name = getattr(r, ds.NAME_FIELD)
        try:
            frames = task.frames(r, selection)
            clip = cycles.cycle_to_clip(frames, spec)
        except DataError as e:
            if on_error == "raise":
                raise
            unreadable.append(Skipped(name, str(getattr(r, "path", getattr(r, "video", ""))), str(e)))
            continue
        label, group = task.label(r)
        names.append(name)
        clip_list.append(clip)
        label_list.append(label)
        group_list.append(group)
        counts.append(len(frames))
    if not names:
        raise DataError(
            f"{root}: no {task.name} video could be prepared; first problem: {unreadable[0].reason}"
        )
    return _Clips(
        tuple(names),
        np.stack(clip_list),
        np.asarray(label_list, np.float32),
        tuple(group_list),
        np.asarray(counts, np.int64),
        tuple(unreadable),
    )


def _save(made: _Clips, cache: Path) -> None:
    """Writes the clips to ``cache`` (atomically: a temporary file, then a rename)."""
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_name(cache.name + f".tmp{os.getpid()}.npz")
    np.savez(
        tmp,
        names=np.array(made.names),
        clips=made.clips,
        labels=made.labels,
        groups=np.array(made.groups),
        source_frames=made.source_frames,
        skipped=json.dumps([list(s) for s in made.unreadable]),
    )
    os.replace(tmp, cache)


def _load(cache: Path) -> _Clips:
    with np.load(cache, allow_pickle=False) as z:
        return _Clips(
            tuple(str(n) for n in z["names"]),
            z["clips"],
            z["labels"],
            tuple(str(g) for g in z["groups"]),
            z["source_frames"],
            tuple(Skipped(*row) for row in json.loads(str(z["skipped"]))),
        )


def write_report(prepared: PreparedSet, path: Path) -> None:
    """``preparation_report.json``: what was read (HMC-QU: from which sheet columns), the fold sizes,
    every video left out and why."""
    report = {
        "source": prepared.source,
        **({"columns": prepared.columns} if prepared.columns else {}),
        "videos": len(prepared.names),
        "groups": {g: prepared.groups.count(g) for g in sorted(set(prepared.groups))},
        "source_frames": {
            "min": int(prepared.source_frames.min()),
            "max": int(prepared.source_frames.max()),
        },
        "folds": [
            {"fold": f.index, "train": len(f.train), "val": len(f.val), "test": len(f.test)}
            for f in prepared.folds
        ],
        "skipped": [s._asdict() for s in prepared.skipped],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")
