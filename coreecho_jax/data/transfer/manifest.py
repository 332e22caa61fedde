"""Your own cohort: a manifest CSV of videos and labels, checked row by row, and its folds.

The manifest (UTF-8 CSV, a header row, one row per video; column names are matched without case or
surrounding spaces)::

    path,label,group,fold,start_frame,end_frame
    videos/p001_a4c.avi,38.5,P001,0,12,41
    videos/p001_a4c_2.dcm,38.5,P001,0,,
    /archive/p002/IM_0004,61.2,P002,1,,

``path`` (required): the video (AVI/MP4/MOV/MKV, or DICOM recognised by content), relative to the
manifest's folder or absolute. Its text, as written, names the video in every report
(``predictions.csv``, the fold records).

``label`` (required): a number. A regression's label is EF in percent (0..100: the quantity the
encoder was trained on, its intervals clipped to 0..100 and binned by the EF categories); a
classification's is 1 (the positive class) or 0 (the negative class).

``fold`` or ``split`` (optional, one of them): ``fold`` is the 0-based fold that holds the row out
(fold k trains on every other fold's rows); ``split`` is ``train``, ``val`` or ``test`` (one fold,
whose epochs are chosen on the ``val`` rows and whose ``test`` rows are reported). Without either,
seeded stratified folds (:meth:`ManifestDataset.folds`: by class, or by EF category).

``group`` (optional): rows that share a group (e.g. a patient's videos) are always in the same fold,
so no patient is trained on and tested at once; a fold or split column must already keep them
together (checked). Empty: the row is a group of its own.

``start_frame``, ``end_frame`` (optional, both or neither in a row): the cardiac cycle to use,
0-based frame numbers of the video with both ends included (``0, 29``: its first 30 frames). A row
without them uses the whole video. Either way the frames become one clip of ``data.frames`` frames by
:func:`~coreecho_jax.data.transfer.cycles.cycle_to_clip`, the same resampling as a CAMUS half cycle or
an HMC-QU cycle. Why the whole loop resampled, not a fixed-stride clip as EchoNet's (36 frames every
4th): one clip per video is what the transfer wing stores, tests and reports; the whole loop keeps
every beat and both ED and ES in that one clip, where a fixed-stride window covers a span set by the
frame rate from a start that must be chosen, and needs several clips per video to see the loop. The
cost: a loop of several beats resampled to ``data.frames`` keeps fewer frames of each beat (at the
default 36 frames, a 3-beat loop keeps 12 a beat): give a cycle's frames where you have them.

Other columns are ignored (the report lists them).

**A bad manifest** raises :class:`ManifestError` with one line per problem, each naming the row (as a
spreadsheet numbers it: the header is row 1) and its path, whatever ``data.on_error`` says: a missing
column, a path that is not a file, a label that is not a number, a duplicate path (two rows naming one
file), a class with one member, mixed tasks, a bad fold, split or frame number, a group split over
folds. **Mixed tasks**, precisely: a classification row whose label is a number other than 0 and 1 (an
EF in a classification manifest); a regression row whose label is exactly 0 or 1 (a class label in an
EF manifest; an EF of 1 % or less is no real heart's), or a regression manifest whose labels all lie
within 0..1 (fractions, not percent). A video that is there but cannot be decoded, or whose cycle lies
outside its frames, is found when the clips are prepared: left out and listed
(``preparation_report.json``) or raised, as ``data.on_error`` says.
"""

from __future__ import annotations

import csv
import dataclasses
import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np

from coreecho_jax.data import ef_labels
from coreecho_jax.data.records import NamedRecords, Skipped
from coreecho_jax.data.transfer.folds import Fold, folds_from_assignment, stratified_folds
from coreecho_jax.errors import ConfigError, DataError

PathLike = str | os.PathLike

#: The manifest's file name inside a folder given as ``data.manifest`` (and the synthetic demo's).
MANIFEST_FILE = "manifest.csv"
REQUIRED = ("path", "label")
OPTIONAL = ("split", "fold", "group", "start_frame", "end_frame")
#: What the label of each task kind is (the record's ``kind``).
KINDS = ("regression", "classification")
#: ``split`` values (lower case) and the fold role each names.
SPLITS = {"train": "train", "val": "val", "validation": "val", "test": "test"}
#: ``data.folds``: the manifest's fold or split column when it has one, else stratified; or stratified always.
FOLD_SCHEMES = ("auto", "stratified")
#: The classes of a classification: label 1, label 0 (the positive class first, as the evaluator's).
CLASSES = ("positive (1)", "negative (0)")
#: Problems listed in one error before "... and N more".
MAX_LINES = 20


class ManifestError(DataError):
    """A manifest that cannot be used as it is: one line per problem, each naming its row."""


class Strata(NamedTuple):
    """What seeded stratified folds balance, and the report counts: ``of(label) -> stratum`` (one of
    ``names``, in the report's order), called ``name`` in words."""

    name: str
    of: Callable[[float], str]
    names: tuple[str, ...]


def class_name(label: float) -> str:
    """A classification label's class: :data:`CLASSES` ``[0]`` for 1, ``[1]`` for 0."""
    return CLASSES[0] if label == 1 else CLASSES[1]


#: A classification's strata: its two classes.
BY_CLASS = Strata("class", class_name, CLASSES)
#: A regression's strata unless told others (the transfer record passes the EF categories): none.
UNSTRATIFIED = Strata("nothing (one stratum)", lambda label: "all", ("all",))


@dataclasses.dataclass(frozen=True)
class ManifestRecord:
    """One row of a manifest.

    Attributes:
        name: the ``path`` cell as written (the video's name in every report).
        path: the file, resolved against the manifest's folder.
        label: EF in percent (regression) or 1 / 0 (classification).
        row: the row number as a spreadsheet shows it (the header is row 1).
        group: the ``group`` cell, or ``name`` when the manifest has none (a group of its own).
        start_frame, end_frame: the cycle, 0-based with both ends included; None: the whole video.
        split: the ``split`` cell (``train`` / ``val`` / ``test``), None without that column.
        fold: the ``fold`` cell, None without that column.
    """

    name: str
    path: Path
    label: float
    row: int
    group: str
    start_frame: int | None = None
    end_frame: int | None = None
    split: str | None = None
    fold: int | None = None

    @property
    def where(self) -> str:
        return f"row {self.row} ({self.name})"

    def frames(self, crop: str = "auto") -> np.ndarray:
        """The video's frames, or its cycle's: uint8 RGB ``[F, H, W, 3]``, cropped to the image (``crop``:
        :func:`~coreecho_jax.data.video.video_io.load_echo_video`'s modes) and padded to a square at its
        own resolution. Raises DataError (the video cannot be read, or the cycle lies outside it)."""
        from coreecho_jax.data.video.video_io import load_echo_video

        frames = load_echo_video(self.path, size=None, crop=crop, channels=3).frames
        if self.start_frame is None:
            return frames
        if self.end_frame >= len(frames):
            raise ManifestError(
                f"{self.where}: the cycle {self.start_frame}..{self.end_frame} (0-based) lies outside the "
                f"video's {len(frames)} frames"
            )
        return frames[self.start_frame : self.end_frame + 1]


@dataclasses.dataclass(frozen=True)
class ManifestDataset(NamedRecords[ManifestRecord]):
    """The rows of a checked manifest (:func:`read_manifest`).

    Attributes:
        manifest: the CSV read.
        kind: ``"regression"`` (EF %) or ``"classification"`` (1 / 0).
        records: one per row, in row order.
        columns: ``{field: where it was read}``, and ``ignored``: the columns not read.
        strata: what stratified folds balance (:class:`Strata`).
        skipped: always empty (a bad row raises); the readers' interface.
    """

    NAME_FIELD = "name"

    manifest: Path
    kind: str
    records: tuple[ManifestRecord, ...]
    columns: dict[str, str]
    strata: Strata = UNSTRATIFIED
    skipped: tuple[Skipped, ...] = ()

    @property
    def view(self) -> str:
        """What the set is (the readers' ``view``; part of the prepared clips' cache key)."""
        return f"manifest {self.kind}"

    def has(self, column: str) -> bool:
        return column in self.columns

    def folds(self, scheme: str = "auto", *, n_folds: int = 5, seed: int = 0) -> tuple[list[Fold], str]:
        """The cross-validation folds and how they were made, in words.

        ``"auto"``: the ``fold`` column (fold k holds out the rows of fold k; the numbers must run
        0..K-1 with K >= 2), or the ``split`` column (one fold: train, val, test), or, without either,
        the stratified folds below. ``"stratified"``: seeded stratified folds even when the manifest
        has a fold or split column: ``n_folds`` folds dealt per stratum
        (:func:`~coreecho_jax.data.transfer.folds.stratified_folds`, seed ``seed``), the strata being
        :attr:`strata` (the class; the transfer record's regression passes the EF categories, EF < 40,
        40-49, >= 50), and the units dealt the groups (a group's stratum is its first row's), so a
        group's videos share a fold.

        Raises:
            ConfigError: an unknown scheme.
            ManifestError: fold numbers with a gap, one fold only, a split without train or test rows,
                fewer groups than folds.
        """
        if scheme not in FOLD_SCHEMES:
            raise ConfigError(f"data.folds must be one of {FOLD_SCHEMES}, got {scheme!r}")
        if scheme == "auto" and self.has("fold"):
            return self._column_folds()
        if scheme == "auto" and self.has("split"):
            return self._split_fold()
        return self._stratified_folds(n_folds, seed)

    def _column_folds(self) -> tuple[list[Fold], str]:
        numbers = sorted({r.fold for r in self.records})
        k = numbers[-1] + 1
        problems = [
            f"fold {f} has no row: the fold numbers must run 0..{k - 1}" for f in range(k) if f not in numbers
        ]
        if k < 2:
            problems.append(f"every row is in fold {numbers[0]}: cross-validation needs at least 2 folds")
        _raise(self.manifest, problems)
        folds = folds_from_assignment({r.name: r.fold for r in self.records}, k)
        return folds, f"the manifest's fold column ({k} folds)"

    def _split_fold(self) -> tuple[list[Fold], str]:
        roles = {
            role: tuple(r.name for r in self.records if r.split == role) for role in ("train", "val", "test")
        }
        _raise(self.manifest, [f"no row has split = {role}" for role in ("train", "test") if not roles[role]])
        sizes = ", ".join(f"{role} {len(names)}" for role, names in roles.items())
        return [
            Fold(0, roles["train"], roles["test"], roles["val"])
        ], f"the manifest's split column ({sizes})"

    def _stratified_folds(self, n_folds: int, seed: int) -> tuple[list[Fold], str]:
        first: dict[str, ManifestRecord] = {}
        for r in self.records:
            first.setdefault(r.group, r)
        units = list(first)
        if len(units) < n_folds:
            what = "groups" if self.has("group") else "videos"
            _raise(self.manifest, [f"{len(units)} {what} cannot fill data.n_folds = {n_folds} folds"])
        strata = [self.stratum(first[g].label) for g in units]
        unit_folds = stratified_folds(units, strata, n_folds, seed)
        fold_of = {g: f.index for f in unit_folds for g in f.test}
        folds = folds_from_assignment({r.name: fold_of[r.group] for r in self.records}, n_folds)
        by = self.strata.name
        grouped = f", {len(units)} groups kept whole" if self.has("group") else ""
        note = (
            " (the manifest's fold / split column is not used)"
            if self.has("fold") or self.has("split")
            else ""
        )
        how = f"seeded stratified folds by {by} ({n_folds} folds, data.fold_seed = {seed}{grouped}){note}"
        return folds, how

    def stratum(self, label: float) -> str:
        """What stratified folds balance of a label (:attr:`strata`)."""
        return self.strata.of(label)

    def report(self, unreadable: Sequence[Skipped] = ()) -> str:
        """A few lines: the videos read (per class, or per EF category), each one left out and why."""
        lost = {u.name for u in unreadable}
        kept = [r for r in self.records if r.name not in lost]
        strata = [self.stratum(r.label) for r in kept]
        what = ", ".join(f"{strata.count(s)} {s}" for s in self.strata.names if s in strata)
        lines = [
            f"cohort manifest {self.manifest} ({self.kind}): {len(kept)} of {len(self.records)} videos read "
            f"({what}), {len(unreadable)} skipped"
        ]
        lines += [f"  skipped {s.name}: {s.reason}" for s in unreadable]
        return "\n".join(lines)


def _raise(manifest: Path, problems: Sequence[str]) -> None:
    """Raises ManifestError: the first :data:`MAX_LINES` problems, one line each, prefixed by the file."""
    if not problems:
        return
    lines = [f"{manifest} {p}" if p.startswith("row ") else f"{manifest}: {p}" for p in problems[:MAX_LINES]]
    if len(problems) > MAX_LINES:
        lines.append(f"{manifest}: ... and {len(problems) - MAX_LINES} more problems")
    raise ManifestError("\n".join(lines))


def _header(manifest: Path, fields: Sequence[str] | None) -> dict[str, str]:
    """``{field: the header text naming it}`` for the known fields; raises on a missing or ambiguous one."""
    found: dict[str, str] = {}
    problems = []
    for text in fields or []:
        key = text.strip().lower()
        if key in found:
            problems.append(f"row 1 (the header): two columns named {key!r}")
        found[key] = text
    missing = [c for c in REQUIRED if c not in found]
    if missing:
        problems.append(
            f"row 1 (the header): no column {', '.join(map(repr, missing))}; the manifest needs columns path "
            f"and label (found: {', '.join(repr(f) for f in fields or []) or 'none'})"
        )
    if "split" in found and "fold" in found:
        problems.append("row 1 (the header): both a split and a fold column; keep one")
    if ("start_frame" in found) != ("end_frame" in found):
        problems.append("row 1 (the header): start_frame and end_frame come together; one of them is missing")
    _raise(manifest, problems)
    return found


def _whole(text: str) -> int | None:
    """A whole number >= 0 from a cell ("3", "3.0"), else None."""
    try:
        value = float(text)
    except ValueError:
        return None
    return int(value) if math.isfinite(value) and value.is_integer() and value >= 0 else None


def _label(text: str, kind: str) -> tuple[float | None, str | None]:
    """(label, problem) of a label cell for ``kind`` (the module doc's rules)."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        what = "1 or 0" if kind == "classification" else "EF in percent"
        return None, f"label {text!r} is not a number (expected {what})"
    if kind == "classification" and value not in (0.0, 1.0):
        return None, (
            f"label {text} is not a class: a classification's labels are 1 or 0 (mixed tasks: an EF belongs "
            "in a regression manifest, task = custom_regression)"
        )
    if kind == "regression" and value in (0.0, 1.0):
        return None, (
            f"label {text} is a class label, not an EF in percent (mixed tasks: 1 / 0 labels belong in a "
            "classification manifest, task = custom_classification)"
        )
    if kind == "regression" and not 0.0 <= value <= 100.0:
        return None, f"label {text} is not an EF in percent (0..100)"
    return value, None


def _frames(cells: dict[str, str]) -> tuple[int | None, int | None, str | None]:
    """(start, end, problem) of the start_frame / end_frame cells."""
    start_text, end_text = cells.get("start_frame", ""), cells.get("end_frame", "")
    if not start_text and not end_text:
        return None, None, None
    if not start_text or not end_text:
        return (
            None,
            None,
            "start_frame and end_frame come together: give both, or neither for the whole video",
        )
    start, end = _whole(start_text), _whole(end_text)
    if start is None or end is None:
        return (
            None,
            None,
            f"start_frame {start_text!r} / end_frame {end_text!r}: expected 0-based frame numbers",
        )
    if end <= start:
        return None, None, f"end_frame {end} is not after start_frame {start}"
    return start, end, None


def _row(
    manifest: Path, row: int, cells: dict[str, str], kind: str, problems: list[str]
) -> ManifestRecord | None:
    """One row checked: its record, or None with its problems appended (one line each)."""
    name = cells.get("path", "")
    where = f"row {row} ({name})" if name else f"row {row}"
    before = len(problems)
    if not name:
        problems.append(f"{where}: path is empty")
        path = None
    else:
        path = Path(name) if Path(name).is_absolute() else manifest.parent / name
        if not path.is_file():
            problems.append(f"{where}: no such file ({path})")
    label, problem = _label(cells.get("label", ""), kind)
    if problem:
        problems.append(f"{where}: {problem}")
    start, end, problem = _frames(cells)
    if problem:
        problems.append(f"{where}: {problem}")
    split = fold = None
    if "split" in cells:
        split = SPLITS.get(cells["split"].lower())
        if split is None:
            problems.append(f"{where}: split {cells['split']!r} must be train, val or test")
    if "fold" in cells:
        fold = _whole(cells["fold"])
        if fold is None:
            problems.append(f"{where}: fold {cells['fold']!r} must be a whole number >= 0 (0-based)")
    if len(problems) > before:
        return None
    group = cells.get("group", "") or name
    return ManifestRecord(name, path, label, row, group, start, end, split, fold)


def _set_problems(records: Sequence[ManifestRecord], kind: str, *, every_row: bool) -> list[str]:
    """What only the rows together show: duplicate files, groups split over folds and, when ``every_row``
    was read (the counts are then the manifest's), classes and EF fractions."""
    problems = []
    seen: dict[Path, ManifestRecord] = {}
    for r in records:
        key = r.path.resolve()
        if key in seen:
            problems.append(f"{r.where}: the same file as row {seen[key].row} (a duplicate path)")
        seen.setdefault(key, r)
    problems += _group_problems(records)
    if not every_row or not records:
        return problems
    if kind == "classification":
        for value, name in ((1.0, CLASSES[0]), (0.0, CLASSES[1])):
            members = [r for r in records if r.label == value]
            if len(members) == 1:
                problems.append(
                    f"{members[0].where}: the only video of class {name}; each class needs at least 2 videos "
                    "(one to train on, one to test)"
                )
            elif not members:
                problems.append(f"no video of class {name}: a classifier needs both classes")
    else:
        fractions = ef_labels.fractions_problem(r.label for r in records)
        if fractions:
            problems.append(f"{records[0].where}: {fractions}")
    return problems


def _group_problems(records: Sequence[ManifestRecord]) -> list[str]:
    """A group whose rows lie in different folds or splits (its patient would be trained on and tested)."""
    problems = []
    first: dict[str, ManifestRecord] = {}
    for r in records:
        other = first.setdefault(r.group, r)
        for column, value, was in (("fold", r.fold, other.fold), ("split", r.split, other.split)):
            if value != was:
                problems.append(
                    f"{r.where}: group {r.group!r} is in {column} {value} here but in {column} {was} at row "
                    f"{other.row}; a group's videos must share one {column}"
                )
    return problems


def _read_rows(manifest: Path) -> tuple[dict[str, str], list[tuple[int, dict]]]:
    """The header (:func:`_header`) and ``(row number, {header text: cell})`` of each row that is not
    empty. Raises ManifestError for a file that is not UTF-8 CSV text."""
    try:
        with open(manifest, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            header = _header(manifest, reader.fieldnames)
            rows = [
                (reader.line_num, row)
                for row in reader
                if any(v.strip() for v in row.values() if isinstance(v, str))  # a row of empty cells
            ]
    except UnicodeDecodeError as e:
        raise ManifestError(
            f"{manifest}: not UTF-8 text ({e.reason} at byte {e.start}); save it as CSV UTF-8"
        ) from None
    except csv.Error as e:
        raise ManifestError(f"{manifest}: not a readable CSV ({e})") from None
    return header, rows


def read_manifest(path: PathLike, kind: str, *, strata: Strata | None = None) -> ManifestDataset:
    """Reads and checks a manifest (format and rules in the module doc).

    Args:
        path: the CSV, or a folder holding :data:`MANIFEST_FILE`.
        kind: ``"regression"`` (labels: EF %) or ``"classification"`` (labels: 1 / 0).
        strata: what stratified folds balance; default :data:`BY_CLASS` for a classification,
            :data:`UNSTRATIFIED` for a regression (the transfer record passes the EF categories).

    Raises:
        ConfigError: an unknown ``kind``.
        ManifestError: the file is missing or empty, or any row is bad (one line per problem, each naming
            its row and path).
    """
    if kind not in KINDS:
        raise ConfigError(f"the manifest's kind must be one of {KINDS}, got {kind!r}")
    manifest = Path(path)
    if manifest.is_dir():
        manifest = manifest / MANIFEST_FILE
    if not manifest.is_file():
        raise ManifestError(f"{manifest}: manifest not found (expected a CSV with columns path, label, ...)")
    header, rows = _read_rows(manifest)
    known = {c: header[c] for c in (*REQUIRED, *OPTIONAL) if c in header}
    if not rows:
        raise ManifestError(f"{manifest}: no data rows below the header")
    rows = [(i, {c: (row.get(text) or "").strip() for c, text in known.items()}) for i, row in rows]
    problems: list[str] = []
    records = [r for i, cells in rows if (r := _row(manifest, i, cells, kind, problems)) is not None]
    problems += _set_problems(records, kind, every_row=len(records) == len(rows))
    _raise(manifest, problems)
    columns = {c: f"column {text!r}" for c, text in known.items()}
    ignored = [text for key, text in header.items() if key not in known]
    if ignored:
        columns["ignored"] = ", ".join(map(repr, ignored))
    strata = strata or (BY_CLASS if kind == "classification" else UNSTRATIFIED)
    return ManifestDataset(manifest, kind, tuple(records), columns, strata)
