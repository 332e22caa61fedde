"""The transfer datasets (CAMUS EF, HMC-QU MI) read, cut into folds and prepared once as clips.

``prepare(data_config, workdir)`` reads the download with :func:`coreecho_jax.data.camus.read_camus` or
:func:`coreecho_jax.data.hmcqu.read_hmcqu`, turns each record's cycle into a stored clip
(:func:`coreecho_jax.data.cycles.cycle_to_clip`; the fields ``data.frames``, ``image_size``,
``crop_fraction``, ``spatial``, ``time_sampling`` and, for HMC-QU, ``cycle_frames`` choose how) and
caches the result in
``<workdir>/prepared/<task>-<key>.npz``. The key covers the preprocessing settings and every source
file's size and modification time, so an edited download or a changed setting prepares again, and a
rerun does not. A record whose pixels cannot be read is left out and listed in the report (or raises
with ``data.on_error = "raise"``) and counted in the headline; the report is written to
``<workdir>/preparation_report.json`` with, for HMC-QU, the sheet column each field was read from.

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
from tqdm import tqdm

from coreecho_jax.data import camus, cycles, hmcqu
from coreecho_jax.data.folds import Fold, Skipped
from coreecho_jax.errors import ConfigError, DataError

TASKS = ("camus", "hmcqu")
#: Bump when the stored clips change for the same settings.
FORMAT_VERSION = 1
REPORT_FILE = "preparation_report.json"


@dataclasses.dataclass(frozen=True)
class PreparedSet:
    """Every readable video of a transfer dataset as one clip, with its label and folds.

    Attributes:
        task: ``"camus"`` (label: EF in %) or ``"hmcqu"`` (label: 1 = MI, 0 = normal).
        names: patient (CAMUS) or ECHO id (HMC-QU) per row, sorted.
        clips: ``[N, T, S, S]`` grey clips, uint8 or float32 on the 0..255 scale
            (:mod:`coreecho_jax.data.cycles`, ``data.spatial``).
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


def synthetic_root(data_config: Any, workdir: Path) -> Path:
    return Path(data_config.root) if data_config.root else workdir / "synthetic"


def download_root(task: str, data_config: Any, workdir: str | Path) -> Path:
    """The download :func:`prepare` reads: ``data.root``, or the synthetic one it writes (:func:`synthetic_root`).

    Raises:
        ConfigError: ``data.root`` is empty and the data is not synthetic.
    """
    if data_config.synthetic.enabled:
        return synthetic_root(data_config, Path(workdir))
    if not data_config.root:
        raise ConfigError(f"data.root is empty: pass --config.data.root=<the {task} download>")
    return Path(data_config.root)


def write_synthetic(task: str, data_config: Any, workdir: Path) -> Path:
    """Writes (once) the synthetic download of ``task`` and returns its root."""
    root = synthetic_root(data_config, workdir)
    s = data_config.synthetic
    if task == "camus":
        from coreecho_jax.data.synthetic.camus import write_camus_dataset

        return write_camus_dataset(root, n_patients=int(s.n_videos), seed=int(s.seed), size=int(s.size))
    from coreecho_jax.data.synthetic.hmcqu import write_hmcqu_dataset

    return write_hmcqu_dataset(
        root,
        n_videos=int(s.n_videos),
        seed=int(s.seed),
        size=int(s.size),
        mi_segments=tuple(int(k) for k in s.mi_segments),
        mi_segment_motion=float(s.mi_segment_motion),
    )


def _identity(paths: list[Path]) -> list:
    out = []
    for p in sorted(set(paths)):
        st = p.stat()
        out.append([str(p), st.st_size, st.st_mtime_ns])
    return out


def _read(task: str, data_config: Any, root: Path) -> tuple[Any, list[Fold], list[Path]]:
    """The dataset, its folds and the files the clips depend on."""
    on_error = str(data_config.on_error)
    if task == "camus":
        ds = camus.read_camus(root, str(data_config.view), on_error=on_error)
        split_dir = str(data_config.split_dir) or None
        folds = ds.folds(str(data_config.folds), n_folds=int(data_config.n_folds), split_dir=split_dir)
        files = [p for r in ds.records for p in (r.path, r.cfg_path, r.path.with_suffix(".raw"))]
        return ds, folds, [p for p in files if p.exists()]
    ds = hmcqu.read_hmcqu(root, str(data_config.view), subset=str(data_config.subset), on_error=on_error)
    fold_file = str(data_config.fold_file) or None
    if fold_file is None and data_config.synthetic.enabled and data_config.folds == "shipped":
        from coreecho_jax.data.synthetic.hmcqu import FOLD_FILE

        fold_file = str(root / FOLD_FILE)  # the synthetic set's own stratified folds
    folds = ds.folds(
        str(data_config.folds),
        fold_file=fold_file,
        n_folds=int(data_config.n_folds),
        seed=int(data_config.fold_seed),
    )
    return ds, folds, [ds.sheet, *(r.video for r in ds.records)]


def _label_and_group(task: str, record: Any) -> tuple[float, str]:
    if task == "camus":
        return float(record.ef), str(record.quality)
    return float(record.label), "MI" if record.mi else "normal"


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


def cycle_frames(data_config: Any) -> str:
    """HMC-QU's frame selection (``data.cycle_frames``; :meth:`HmcQuRecord.frame_indices`)."""
    value = str(data_config.get("cycle_frames", "inclusive"))
    if value not in hmcqu.CYCLE_FRAMES:
        raise ConfigError(f"data.cycle_frames must be one of {hmcqu.CYCLE_FRAMES}, got {value!r}")
    return value


def _frames(task: str, record: Any, selection: str) -> np.ndarray:
    """CAMUS: grey ``[F, H, W]`` ED -> ES; HMC-QU: RGB ``[F, H, W, 3]`` (``cycle_to_clip`` takes the grey)."""
    return record.frames() if task == "camus" else record.cycle(selection, color=True)


def prepare(task: str, data_config: Any, workdir: str | Path, *, progress: bool = True) -> PreparedSet:
    """Reads, folds and prepares (or loads the cached) clips of ``task`` (``"camus"`` | ``"hmcqu"``).

    Raises:
        ConfigError: an unknown task or fold scheme; DataError (CamusError, HmcQuError): the download
        is missing, unreadable or inconsistent (the message names the file).
    """
    if task not in TASKS:
        raise ConfigError(f"task must be one of {TASKS}, got {task!r}")
    workdir = Path(workdir)
    if data_config.synthetic.enabled:
        write_synthetic(task, data_config, workdir)
    root = download_root(task, data_config, workdir)
    spec = cycle_spec(data_config)
    selection = cycle_frames(data_config) if task == "hmcqu" else ""
    ds, folds, files = _read(task, data_config, root)
    key_fields = {
        "format_version": FORMAT_VERSION,
        "task": task,
        "view": ds.view,
        "spec": dataclasses.asdict(spec),
        "cycle_frames": selection,
        "names": sorted(getattr(r, ds.NAME_FIELD) for r in ds.records),
        "files": _identity(files),
    }
    key = hashlib.sha1(json.dumps(key_fields, sort_keys=True).encode()).hexdigest()[:16]
    cache = workdir / "prepared" / f"{task}-{key}.npz"
    skipped = list(ds.skipped)
    if cache.is_file():
        with np.load(cache, allow_pickle=False) as z:
            names, clips, labels = tuple(str(n) for n in z["names"]), z["clips"], z["labels"]
            groups, source_frames = tuple(str(g) for g in z["groups"]), z["source_frames"]
            skipped += [Skipped(*row) for row in json.loads(str(z["skipped"]))]
    else:
        names, clip_list, label_list, group_list, counts, unreadable = [], [], [], [], [], []
        records = sorted(ds.records, key=lambda r: getattr(r, ds.NAME_FIELD))
        for r in tqdm(records, desc=f"preparing {task} clips", disable=not progress, leave=False):
            name = getattr(r, ds.NAME_FIELD)
            try:
                frames = _frames(task, r, selection)
                clip = cycles.cycle_to_clip(frames, spec)
            except DataError as e:
                if data_config.on_error == "raise":
                    raise
                unreadable.append(Skipped(name, str(getattr(r, "path", getattr(r, "video", ""))), str(e)))
                continue
            label, group = _label_and_group(task, r)
            names.append(name)
            clip_list.append(clip)
            label_list.append(label)
            group_list.append(group)
            counts.append(len(frames))
        if not names:
            raise DataError(
                f"{root}: no {task} video could be prepared; first problem: {unreadable[0].reason}"
            )
        clips = np.stack(clip_list)
        labels = np.asarray(label_list, np.float32)
        groups, source_frames = tuple(group_list), np.asarray(counts, np.int64)
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_name(cache.name + f".tmp{os.getpid()}.npz")
        np.savez(
            tmp,
            names=np.array(names),
            clips=clips,
            labels=labels,
            groups=np.array(groups),
            source_frames=source_frames,
            skipped=json.dumps([list(s) for s in unreadable]),
        )
        os.replace(tmp, cache)
        names = tuple(names)
        skipped += unreadable
    dropped = {s.name for s in skipped}
    folds = tuple(f.without(dropped) for f in folds)
    headline = ds.report(skipped[len(ds.skipped) :]).splitlines()[0]
    source = f"{headline}; {len(names)} clips of {spec.frames} x {spec.size} x {spec.size}"
    columns = ds.column_mapping() if task == "hmcqu" else {}
    prepared = PreparedSet(
        task, names, clips, labels, groups, source_frames, folds, tuple(skipped), source, columns
    )
    write_report(prepared, workdir / REPORT_FILE)
    return prepared


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
