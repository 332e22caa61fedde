"""HMC-QU reader (Kaggle release): the label sheet, the videos, one annotated cardiac cycle per video.

Layout (``root`` is the download folder)::

    root/A4C.xlsx                       one row per recording: ECHO, SEG1, SEG2, SEG3, SEG5, SEG6, SEG7
                                        (MI / non-MI), the annotated cycle's start and end frames
                                        (1-based, inclusive), a mask-availability column ("ü" = mask)
    root/HMC-QU/A4C/<ECHO>.avi          ECHO ids contain a space, e.g. "ES0001 _4CH_1"

Older versions name the sheet ``HMC_QU.xlsx`` and the folder ``HMC-QU Echos/HMC-QU Echos/``; both are
found. Header texts differ between releases, so columns are found by tolerant names (``ECHO``;
``SEG<k>``; start: "Reference Frame" / "One cardiac-cycle frames" / "start"; end: "End of Cycle" /
"end"; mask: "mask" / "segmentation" / "available"; a header may span two rows). A sheet without a
header row is read by position (ECHO, six segments, start, end, mask = columns 1-10); with a header
row, a field no header names falls back to its position only when no other field claimed that
column, and all six segment columns (SEG1, SEG2, SEG3, SEG5, SEG6, SEG7) must be there: a missing one
is an error naming it (the label would change without it). :attr:`HmcQuDataset.columns` records
where each field was found; the dataset's report and ``preparation_report.json`` list it.

Label: a video is MI when any of the six segments is MI (other ``SEG<k>`` columns, e.g. the apical
cap SEG4, are not read, as in the paper's reference [21]). The default subset is the videos with a
mask (109 of 162 A4C, 72 MI / 37 normal, the paper's set) and the default split the five stratified
folds shipped with this package (``hmcqu_folds/hmcfoldm.csv``; ``hmcfold.csv`` covers all 162).

The cycle's frames: :meth:`HmcQuRecord.frame_indices` (``"ref21"``: [21]'s ``mi/a4c/cycle.py``, the
end frame excluded; ``"inclusive"``: start to end frame).

Bad input raises :class:`HmcQuError` naming the file (a sheet missing a needed column, duplicate ids,
a fold file naming unknown videos); one bad video among many (no video file, a cycle outside its
frames, an unreadable row) is skipped and listed in :attr:`HmcQuDataset.skipped` with
``on_error="skip"``, or raises with ``on_error="raise"``.
"""

from __future__ import annotations

import csv
import dataclasses
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from coreecho_jax.data.records import NamedRecords, OnError, Skipped, check_on_error
from coreecho_jax.data.transfer.folds import Fold, folds_from_assignment, stratified_folds
from coreecho_jax.errors import ConfigError, DataError

PathLike = str | os.PathLike

VIEWS = ("A4C", "A2C")
#: The A4C segment columns of the sheet (SEG4, the apical cap, is not labelled).
A4C_SEGMENT_COLUMNS = ("SEG1", "SEG2", "SEG3", "SEG5", "SEG6", "SEG7")
#: Folder of the shipped fold files (package data).
FOLDS_DIR = Path(__file__).resolve().parent / "hmcqu_folds"
#: Shipped folds of the videos with masks (109 rows) and of all A4C videos (162 rows).
SHIPPED_FOLDS = {"masks": FOLDS_DIR / "hmcfoldm.csv", "all": FOLDS_DIR / "hmcfold.csv"}
Subset = Literal["masks", "all"]

#: ``HmcQuRecord.frame_indices`` selections: [21]'s frames, or the sheet's cycle with both ends.
CYCLE_FRAMES = ("ref21", "inclusive")
#: [21]'s ``cycle.py`` reads a recording whose name contains this at every other frame (the reason is
#: not stated there; of the 162 A4C recordings only "ES00071 N_4CH_3" matches, not among the 109).
REF21_STEP2_NAME = "ES00071"
#: Sheet fields besides the segments: what each is, for messages.
FIELD_NAMES = {
    "echo": "ECHO",
    "start": "start frame (Reference Frame / One cardiac-cycle frames)",
    "end": "end frame (End of Cycle)",
    "mask": "mask availability",
}
_POSITIONS = {"echo": 0, "start": 7, "end": 8, "mask": 9}

_MI = {"mi", "1", "1.0", "true", "yes", "y"}
_NON_MI = {"non mi", "nonmi", "non", "0", "0.0", "false", "no", "n", "normal"}
_NO_MASK = {"", "0", "0.0", "no", "n", "false", "-", "none"}
_HEADER_SCAN_ROWS = 10


class HmcQuError(DataError):
    """An HMC-QU file is missing, unreadable or not in the expected layout (the message names it)."""


def _norm(text: Any) -> str:
    """Header text -> lower case words: "One cardiac-cycle frames" -> "one cardiac cycle frames"."""
    return " ".join(re.sub(r"[^0-9a-z]+", " ", str(text).lower()).split()) if text is not None else ""


@dataclasses.dataclass(frozen=True)
class Column:
    """Where a field was found in the sheet: 0-based column, its header text, ``"name"``/``"position"``."""

    index: int
    header: str
    how: str


@dataclasses.dataclass(frozen=True)
class HmcQuRecord:
    """One recording and its annotated cycle (frames are decoded on demand by :meth:`cycle`).

    Attributes:
        echo: the ECHO id (with its space), e.g. ``"ES0001 _4CH_1"``.
        video: the AVI file.
        segments: ``{"SEG1": True, ...}``, True = MI.
        start_frame, end_frame: the annotated cycle, 1-based and inclusive, as in the sheet.
        has_mask: the sheet marks an LV-wall mask for this video.
        row: the sheet row (1-based, as Excel shows it).
    """

    echo: str
    video: Path
    segments: dict[str, bool]
    start_frame: int
    end_frame: int
    has_mask: bool
    row: int

    @property
    def mi(self) -> bool:
        """Myocardial infarction: any segment MI."""
        return any(self.segments.values())

    @property
    def label(self) -> int:
        """1 = MI, 0 = normal."""
        return int(self.mi)

    @property
    def num_frames(self) -> int:
        """Frames of the annotated cycle, both ends included."""
        return self.end_frame - self.start_frame + 1

    def frame_indices(self, selection: str = "inclusive") -> np.ndarray:
        """0-based indices into the video of the cycle's frames, in order.

        ``"inclusive"``: ``start_frame - 1 .. end_frame - 1``, the sheet's cycle with both ends.
        ``"ref21"``: as [21]'s ``mi/a4c/cycle.py``: ``length = end_frame - start_frame`` frames
        ``start_frame - 1 + i``, ``i = 0 .. length - 1`` (the end frame is not read); a recording whose
        name contains ``"ES00071"`` is read at every other frame, ``i = 0, 2, ..`` below ``length - 1``
        (a quirk of [21], mirrored; its reason is not stated there).
        """
        first = self.start_frame - 1
        if selection == "inclusive":
            return np.arange(first, self.end_frame, dtype=np.int64)
        if selection != "ref21":
            raise ConfigError(f"data.cycle_frames must be one of {CYCLE_FRAMES}, got {selection!r}")
        length, step = self.end_frame - self.start_frame, 1
        if REF21_STEP2_NAME in self.echo:
            length, step = length - 1, 2
        return first + np.arange(0, length, step, dtype=np.int64)

    def cycle(self, selection: str = "inclusive", *, color: bool = False) -> np.ndarray:
        """The cycle's frames (:meth:`frame_indices`): uint8 grey ``[T, H, W]`` (OpenCV's luma) or, with
        ``color``, RGB ``[T, H, W, 3]``."""
        from coreecho_jax.data.video.video_io import read_video

        indices = self.frame_indices(selection)
        if len(indices) == 0:
            raise HmcQuError(f"{self.video}: the cycle {self.start_frame}..{self.end_frame} selects no frame")
        try:
            frames = read_video(self.video, color=color).frames
        except ValueError as e:
            raise HmcQuError(f"{self.video}: cannot read the video ({e})") from e
        if indices[-1] >= len(frames):
            raise HmcQuError(
                f"{self.video}: the cycle {self.start_frame}..{self.end_frame} (1-based) lies outside its "
                f"{len(frames)} frames"
            )
        return frames[indices]


# ----------------------------------------------------------------------------------------------
# The label sheet
# ----------------------------------------------------------------------------------------------


def _find_columns(headers: list[str], header_row: bool) -> tuple[dict[str, Column], dict[str, Column]]:
    """(fields ``echo/start/end/mask`` -> Column, segment name -> Column) from header texts.

    Without a header row every field is taken by position. With one, a field no header names takes
    its position only when that column is not claimed by another field (so a deleted column is
    reported missing instead of its neighbour's values being read); the segments are all found by
    name or, when none is named, all by position."""
    norm = [_norm(h) for h in headers]
    found: dict[str, Column] = {}
    segments: dict[str, Column] = {}
    if header_row:
        for i, t in enumerate(norm):
            m = re.search(r"\bseg(?:ment)? ?(\d)\b", t)
            if m:
                name = f"SEG{m.group(1)}"
                if name in A4C_SEGMENT_COLUMNS and name not in segments:
                    segments[name] = Column(i, headers[i], "name")
            elif "echo" not in found and t.split(" ")[0] == "echo":
                found["echo"] = Column(i, headers[i], "name")
            elif "end" not in found and re.search(r"\bend\b", t):
                found["end"] = Column(i, headers[i], "name")
            elif "start" not in found and re.search(r"\b(reference|start|one cardiac|first)\b", t):
                found["start"] = Column(i, headers[i], "name")
            elif "mask" not in found and re.search(r"\b(mask|masks|segmentation|available)\b", t):
                found["mask"] = Column(i, headers[i], "name")
    claimed = {c.index for c in (*found.values(), *segments.values())}
    if not segments:
        spots = range(1, 1 + len(A4C_SEGMENT_COLUMNS))
        if all(i < len(headers) and i not in claimed for i in spots):
            segments = {s: Column(i, headers[i], "position") for s, i in zip(A4C_SEGMENT_COLUMNS, spots)}
            claimed |= set(spots)
    for field, pos in _POSITIONS.items():
        if field not in found and pos < len(headers) and pos not in claimed:
            found[field] = Column(pos, headers[pos], "position")
            claimed.add(pos)
    return found, {s: segments[s] for s in A4C_SEGMENT_COLUMNS if s in segments}


def _describe(field: str, column: Column) -> str:
    """``"column SEG1"`` / ``"end frame (column 9 'Mask', taken by position: no header names it)"``."""
    what = f"column {field}" if field.startswith("SEG") else FIELD_NAMES[field].split(" (")[0]
    if column.how == "name":
        return what
    head = f" {column.header!r}" if column.header else ""
    return f"{what} (column {column.index + 1}{head}, taken by position: no header names it)"


def _segment_value(value: Any, where: str) -> bool:
    t = _norm(value)
    if t in _MI:
        return True
    if t in _NON_MI:
        return False
    raise HmcQuError(f"{where}: expected MI or non-MI, got {value!r}")


def _frame_value(value: Any, where: str) -> int:
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise HmcQuError(f"{where}: expected a frame number, got {value!r}") from None
    if not x.is_integer() or x < 1:
        raise HmcQuError(f"{where}: expected a 1-based frame number, got {value!r}")
    return int(x)


@dataclasses.dataclass(frozen=True)
class SheetRow:
    """One data row of the label sheet, parsed (``error`` set when the row itself is bad)."""

    row: int
    echo: str
    segments: dict[str, bool]
    start_frame: int
    end_frame: int
    has_mask: bool
    error: str | None = None


def read_sheet(path: PathLike, view: str = "A4C") -> tuple[list[SheetRow], dict[str, Column]]:
    """Reads an HMC-QU label sheet with openpyxl: its rows and the columns used.

    The sheet named like ``view`` is read when the workbook has one, else the first sheet. The
    header row is the first of the first 10 rows with a cell named ``ECHO``; a second header row
    (sub-headers under a merged cell) is joined to it. Without an ``ECHO`` header, data start at the
    first row whose first cell looks like an ECHO id (``ES...``) and every column is taken by position.

    Returns:
        (rows, columns): columns maps ``echo``, ``start``, ``end``, ``mask`` and the six segments
        ``SEG1, SEG2, SEG3, SEG5, SEG6, SEG7`` to a :class:`Column` (module doc: by name, else by
        position). A row with a bad value gets ``error`` (the caller skips or raises); a value read
        from a column taken by position says so.

    Raises:
        HmcQuError: the file is missing or not an xlsx workbook, or a needed column (ECHO, start, end,
            any of the six segments) is missing; the message names each and the headers found.
    """
    import openpyxl

    path = Path(path)
    if not path.is_file():
        raise HmcQuError(f"{path}: label sheet not found")
    try:
        book = openpyxl.load_workbook(path, read_only=True, data_only=True)
    except Exception as e:  # openpyxl raises several types (zipfile, KeyError, InvalidFileException)
        raise HmcQuError(f"{path}: not a readable xlsx workbook ({type(e).__name__}: {e})") from e
    try:
        names = [n for n in book.sheetnames if view.lower() in n.lower()]
        sheet = book[names[0]] if names else book[book.sheetnames[0]]
        table = [list(r) for r in sheet.iter_rows(values_only=True)]
    finally:
        book.close()
    width = max((len(r) for r in table), default=0)
    table = [r + [None] * (width - len(r)) for r in table]
    head = next(
        (i for i, r in enumerate(table[:_HEADER_SCAN_ROWS]) if any(_norm(c) == "echo" for c in r)), None
    )
    is_id = lambda r: bool(re.match(r"\s*ES\d", str(r[0] or "")))
    if head is None:
        first = next((i for i, r in enumerate(table[: _HEADER_SCAN_ROWS + 1]) if is_id(r)), None)
        if first is None:
            raise HmcQuError(f"{path}: no ECHO header and no ECHO ids (ES...) in the first column")
        headers = [""] * width
    else:
        first = head + 1
        while (
            first < len(table)
            and first <= head + 2
            and not is_id(table[first])
            and table[first][0] in (None, "")
        ):
            first += 1  # sub-header rows: the ECHO column is empty there
        parts = [[str(c).strip() for c in col if c not in (None, "")] for col in zip(*table[head:first])]
        headers = [" / ".join(p) for p in parts]
    columns, segments = _find_columns(headers, header_row=head is not None)
    missing = [f for f in ("echo", "start", "end") if f not in columns]
    missing += [s for s in A4C_SEGMENT_COLUMNS if s not in segments]
    if missing:
        wanted = "; ".join(f"{m}: {FIELD_NAMES.get(m, 'MI / non-MI')}" for m in missing)
        raise HmcQuError(
            f"{path}: missing column(s) {missing} ({wanted}); headers found: {[h for h in headers if h]}"
        )
    rows = []
    for i in range(first, len(table)):
        r = table[i]
        echo = str(r[columns["echo"].index] or "").strip()
        if not echo:
            continue
        where = f"{path} row {i + 1} ({echo})"
        try:
            seg = {s: _segment_value(r[c.index], f"{where} {_describe(s, c)}") for s, c in segments.items()}
            start = _frame_value(r[columns["start"].index], f"{where} {_describe('start', columns['start'])}")
            end = _frame_value(r[columns["end"].index], f"{where} {_describe('end', columns['end'])}")
            if end <= start:
                raise HmcQuError(f"{where}: the cycle end frame {end} is not after its start frame {start}")
            error = None
        except HmcQuError as e:
            seg, start, end, error = {}, 0, 0, str(e)
        mask = columns.get("mask")
        has_mask = mask is not None and str(r[mask.index] or "").strip().lower() not in _NO_MASK
        rows.append(SheetRow(i + 1, echo, seg, start, end, has_mask, error))
    ids = [r.echo for r in rows]
    dup = sorted({x for x in ids if ids.count(x) > 1})
    if dup:
        raise HmcQuError(f"{path}: ECHO ids listed twice: {dup[:3]}")
    return rows, {**columns, **segments}


# ----------------------------------------------------------------------------------------------
# Dataset and folds
# ----------------------------------------------------------------------------------------------


def read_fold_file(path: PathLike) -> dict[str, int]:
    """``{ECHO id: fold (1-based)}`` from a fold CSV with columns ``name`` (or ``ECHO``) and ``Fold``."""
    path = Path(path)
    if not path.is_file():
        raise HmcQuError(f"{path}: fold file not found")
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        fields = {_norm(h): h for h in reader.fieldnames or []}
        name_key, fold_key = fields.get("name") or fields.get("echo"), fields.get("fold")
        if name_key is None or fold_key is None:
            raise HmcQuError(f"{path}: needs columns name (or ECHO) and Fold, has {reader.fieldnames}")
        out = {}
        for k, row in enumerate(reader, start=2):
            try:
                out[row[name_key].strip()] = int(float(row[fold_key]))
            except (TypeError, ValueError):
                raise HmcQuError(
                    f"{path} line {k}: Fold must be a whole number, got {row[fold_key]!r}"
                ) from None
    return out


@dataclasses.dataclass(frozen=True)
class HmcQuDataset(NamedRecords[HmcQuRecord]):
    """The readable videos of an HMC-QU download in one subset, and the ones left out.

    Attributes:
        root: the folder given.
        view: ``"A4C"`` or ``"A2C"``.
        subset: ``"masks"`` (videos with a mask; the paper's 109) or ``"all"``.
        records: readable videos in sheet order.
        skipped: videos of the subset left out and why.
        columns: where each field was found in the sheet (see :func:`read_sheet`).
        sheet: the label sheet read.
        video_dir: the folder of the videos.
    """

    NAME_FIELD = "echo"  # dataset[name] looks records up by this attribute

    root: Path
    view: str
    subset: str
    records: tuple[HmcQuRecord, ...]
    skipped: tuple[Skipped, ...]
    columns: dict[str, Column]
    sheet: Path
    video_dir: Path

    def folds(
        self, scheme: str = "shipped", *, fold_file: PathLike | None = None, n_folds: int = 5, seed: int = 0
    ) -> list[Fold]:
        """Cross-validation folds (``test`` = the held-out fold, no separate ``val``).

        Args:
            scheme: ``"shipped"``: the fold file (``fold_file``, default the shipped one of this
                subset); fold ``k`` in the file (1-based) is ``Fold(k - 1)``. ``"stratified"``: seeded
                stratified folds on the MI label (:func:`stratified_folds`).
            fold_file: a fold CSV (``name``, ``Fold`` columns), for ``scheme="shipped"``.
            n_folds, seed: for ``scheme="stratified"``.

        Raises:
            HmcQuError: the fold file names a video not in this subset of the sheet, or misses one of
                the readable videos. Skipped videos are removed from the folds.
        """
        skipped = {s.name for s in self.skipped}
        if scheme == "stratified":
            folds = stratified_folds(
                [r.echo for r in self.records], [r.label for r in self.records], n_folds, seed
            )
        elif scheme == "shipped":
            path = Path(fold_file) if fold_file is not None else SHIPPED_FOLDS[self.subset]
            assignment = read_fold_file(path)
            known = {r.echo for r in self.records} | skipped
            unknown = sorted(set(assignment) - known)
            if unknown:
                raise HmcQuError(
                    f"{path}: names {len(unknown)} videos not in {self.sheet.name} (subset {self.subset!r}), e.g. "
                    f"{unknown[:3]}"
                )
            missing = sorted({r.echo for r in self.records} - set(assignment))
            if missing:
                raise HmcQuError(
                    f"{path}: has no fold for {len(missing)} videos, e.g. {missing[:3]}; use scheme='stratified'"
                )
            n = max(assignment.values())
            if min(assignment.values()) < 1:
                raise HmcQuError(f"{path}: Fold must count from 1, got {min(assignment.values())}")
            folds = folds_from_assignment({k: v - 1 for k, v in assignment.items()}, n)
        else:
            raise ConfigError(f"HMC-QU fold scheme must be 'shipped' or 'stratified', got {scheme!r}")
        return [f.without(skipped) for f in folds]

    def column_mapping(self) -> dict[str, str]:
        """Where each field was read: ``{"end": "column 9 'End of Cycle' (by name)", ...}``."""
        return {
            k: f"column {c.index + 1}" + (f" {c.header!r}" if c.header else "") + f" (by {c.how})"
            for k, c in self.columns.items()
        }

    def report(self, unreadable: Sequence[Skipped] = ()) -> str:
        """A few lines: videos read (MI / normal), the columns used, each skipped video with its reason.

        ``unreadable``: videos whose frames failed later (when the clips were prepared); they count as
        skipped in the first line and are listed with the others."""
        lost = {u.name for u in unreadable}
        kept = [r for r in self.records if r.echo not in lost]
        mi = sum(r.mi for r in kept)
        cols = ", ".join(f"{k}={v}" for k, v in self.column_mapping().items())
        skipped = (*self.skipped, *unreadable)
        lines = [
            f"HMC-QU {self.view} at {self.root} (subset {self.subset}): {len(kept)} videos read "
            f"({mi} MI, {len(kept) - mi} normal), {len(skipped)} skipped",
            f"  columns of {self.sheet.name}: {cols}",
        ]
        lines += [f"  skipped {s.name}: {s.reason}" for s in skipped]
        return "\n".join(lines)


def _first_existing(paths: Sequence[Path], what: str, root: Path) -> Path:
    for p in paths:
        if p.exists():
            return p
    raise HmcQuError(f"{root}: no {what} (looked for {', '.join(str(p.relative_to(root)) for p in paths)})")


def read_hmcqu(
    root: PathLike,
    view: str = "A4C",
    *,
    subset: Subset = "masks",
    sheet: PathLike | None = None,
    video_dir: PathLike | None = None,
    on_error: OnError = "skip",
    check_frames: bool = True,
) -> HmcQuDataset:
    """Reads an HMC-QU download (layout in the module doc).

    Args:
        root: the download folder.
        view: ``"A4C"`` (the paper's) or ``"A2C"``.
        subset: ``"masks"``: the videos whose mask column is marked (the paper's); ``"all"``.
        sheet, video_dir: override the label sheet / video folder found under ``root``.
        on_error: ``"skip"`` leaves a bad video out and lists it in ``skipped``; ``"raise"`` raises.
        check_frames: check each cycle against the video's frame count (from its header; counted by
            decoding when the header says too few); :meth:`HmcQuRecord.cycle` checks the decoded frames.

    Raises:
        HmcQuError: missing sheet or video folder, a sheet missing a needed column, no readable video
            in the subset, or (``on_error="raise"``) the first bad video.
    """
    from coreecho_jax.data.video.video_io import probe_video

    check_on_error(on_error)
    view = str(view).upper()
    if view not in VIEWS:
        raise ConfigError(f"HMC-QU view must be one of {VIEWS}, got {view!r}")
    if subset not in SHIPPED_FOLDS:
        raise ConfigError(f"HMC-QU subset must be one of {tuple(SHIPPED_FOLDS)}, got {subset!r}")
    root = Path(root)
    if not root.is_dir():
        raise HmcQuError(f"{root}: HMC-QU root folder not found")
    sheet_path = (
        Path(sheet)
        if sheet is not None
        else _first_existing(
            [root / f"{view}.xlsx", root / "HMC-QU" / f"{view}.xlsx", root / "HMC_QU.xlsx"],
            "label sheet",
            root,
        )
    )
    vdir = (
        Path(video_dir)
        if video_dir is not None
        else _first_existing(
            [
                root / "HMC-QU" / view,
                root / view,
                root / "HMC-QU Echos" / "HMC-QU Echos",
                root / "HMC-QU Echos",
            ],
            "video folder",
            root,
        )
    )
    rows, columns = read_sheet(sheet_path, view)
    if subset == "masks" and "mask" not in columns:
        raise HmcQuError(
            f"{sheet_path}: no mask-availability column, needed for subset='masks' (or use 'all')"
        )
    videos = (
        {p.stem.lower(): p for p in vdir.iterdir() if p.suffix.lower() == ".avi"} if vdir.is_dir() else {}
    )
    records, skipped = [], []
    for row in rows:
        if subset == "masks" and not row.has_mask:
            continue
        video = vdir / f"{row.echo}.avi"
        try:
            if row.error:
                raise HmcQuError(row.error)
            if not video.is_file():
                video = videos.get(row.echo.lower(), video)
            if not video.is_file():
                raise HmcQuError(
                    f"{sheet_path} row {row.row}: ECHO id {row.echo!r} has no video (expected {video})"
                )
            if check_frames:
                try:
                    count = probe_video(video).num_frames
                    if row.end_frame > count or count <= 0:  # the header may be wrong: count them
                        count = probe_video(video, exact=True).num_frames
                except ValueError as e:
                    raise HmcQuError(f"{video}: cannot read the video ({e})") from e
                if row.end_frame > count:
                    raise HmcQuError(
                        f"{sheet_path} row {row.row}: the cycle {row.start_frame}..{row.end_frame} (1-based) lies "
                        f"outside the {count} frames of {video}"
                    )
            records.append(
                HmcQuRecord(
                    row.echo, video, row.segments, row.start_frame, row.end_frame, row.has_mask, row.row
                )
            )
        except HmcQuError as e:
            if on_error == "raise":
                raise
            skipped.append(Skipped(row.echo, str(video), str(e)))
    if not records:
        first = f"; first problem: {skipped[0].reason}" if skipped else ""
        raise HmcQuError(f"{sheet_path}: no readable video in subset {subset!r}{first}")
    return HmcQuDataset(root, view, subset, tuple(records), tuple(skipped), columns, sheet_path, vdir)
