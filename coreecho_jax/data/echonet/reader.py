"""EchoNet-Dynamic reader: ``FileList.csv`` (+ ``VolumeTracings.csv``) -> per-video records (pandas, no TF).

The layout (file names, columns, split names) is :mod:`coreecho_jax.data.echonet_layout`. ``FileName``
in FileList.csv has no extension (``.avi`` is accepted too); in VolumeTracings.csv it has ``.avi``.
``Split`` is TRAIN/VAL/TEST (any case). ``EF`` (percent, in (0, 100)) is required; ``EDV``/``ESV``
(mL), ``FPS`` and ``NumberOfFrames`` are optional (NaN / -1 when absent).

Faithful to the official loaders (echonet/dynamic ``Echo``, CoReEcho ``EchoNet``): when
VolumeTracings.csv is present and ``drop_untraced=True``, videos with fewer than 2 distinct traced
frames (including videos absent from the tracings) are dropped; the drop is counted and reported.
A video listed in FileList.csv but missing from ``Videos/`` is an error, as in echonet/dynamic.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import pandas as pd

from coreecho_jax.data import echonet_layout as layout
from coreecho_jax.data import ef_labels
from coreecho_jax.data.echonet_layout import LAYOUT, SPLITS
from coreecho_jax.errors import DataError, shown

PathLike = str | os.PathLike

log = logging.getLogger(__name__)


class EchoNetLayoutError(DataError):
    """The EchoNet-Dynamic folder or its CSV files do not have the expected layout or values."""


class EchoNetNotFoundError(DataError, FileNotFoundError):
    """The EchoNet-Dynamic folder, one of its CSV files or a listed video is missing."""


@dataclasses.dataclass(frozen=True)
class EchoNetRecord:
    """One video of FileList.csv.

    Attributes:
        filename: file name without extension (e.g. ``0X100CF05D141FF143``).
        path: ``<root>/Videos/<filename>.avi``.
        ef: ejection fraction in percent.
        edv: end-diastolic volume in mL (NaN if absent).
        esv: end-systolic volume in mL (NaN if absent).
        split: ``train``, ``val`` or ``test``.
        num_frames: NumberOfFrames from FileList.csv (-1 if absent; the decoded count is authoritative).
        fps: frames per second from FileList.csv (NaN if absent).
    """

    filename: str
    path: Path
    ef: float
    edv: float
    esv: float
    split: str
    num_frames: int
    fps: float

    @property
    def avi_name(self) -> str:
        """File name with ``.avi``, the key form of VolumeTracings.csv and start-index files."""
        return layout.avi_name(self.filename)


@dataclasses.dataclass(frozen=True)
class EchoNetIndex:
    """Records of one EchoNet-Dynamic folder after filtering.

    Attributes:
        root: the dataset folder.
        records: kept videos, in FileList.csv order.
        dropped_untraced: file names (no extension) dropped for having < 2 traced frames.
        has_tracings: whether VolumeTracings.csv was found.
    """

    root: Path
    records: tuple[EchoNetRecord, ...]
    dropped_untraced: tuple[str, ...]
    has_tracings: bool

    def split(self, name: str) -> list[EchoNetRecord]:
        """Records of one split (``train``/``val``/``test``, any case); error if empty."""
        key = _split_key(name)
        out = [r for r in self.records if r.split == key]
        if not out:
            raise EchoNetLayoutError(
                f"{self.root / 'FileList.csv'}: split {key!r} has no videos"
                f"{' after dropping untraced videos' if self.dropped_untraced else ''}. "
                f"{LAYOUT}"
            )
        return out


def _split_key(name: str) -> str:
    key = str(name).strip().lower()
    if key not in SPLITS:
        raise ValueError(f"unknown split {name!r}; expected one of {SPLITS}")
    return key


def _check_values(
    path: Path, df: pd.DataFrame, names: pd.Series, column: str, bad: pd.Series, expected: str
) -> None:
    """Raises EchoNetLayoutError naming the first 10 rows flagged ``bad`` (CSV line numbers, FileName
    and the ``column`` value as read from ``df``) when any is."""
    if bad.any():
        rows = [
            f"row {i + 2} (FileName {names.iat[i]}, {column} {df[column].iat[i]!r})"
            for i in bad.to_numpy().nonzero()[0][:10]
        ]
        raise EchoNetLayoutError(
            f"{path}: {column} must be {expected}; {int(bad.sum())} bad value(s): {'; '.join(rows)}"
        )


def read_filelist(root: PathLike) -> pd.DataFrame:
    """Reads and validates ``<root>/FileList.csv``.

    Returns:
        A DataFrame with columns FileName (no extension), EF, EDV, ESV (float, NaN if absent),
        NumberOfFrames (int, -1 if absent), FPS (float), Split (lower case), in file order.

    Raises:
        EchoNetNotFoundError (a FileNotFoundError): ``root`` or FileList.csv is missing.
        EchoNetLayoutError: missing columns, duplicate names, unknown split values, or an EF that is
            missing, NaN or outside (0, 100) (the message names the row and FileName), or EFs that
            are all within 0-1 (fractions instead of percent).
    """
    root = Path(root)
    if not root.is_dir():
        raise EchoNetNotFoundError(f"EchoNet-Dynamic folder not found: {root}. {LAYOUT}")
    path = root / layout.FILELIST
    if not path.is_file():
        raise EchoNetNotFoundError(f"FileList.csv not found in {root}. {LAYOUT}")
    try:
        df = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise EchoNetLayoutError(f"{path}: not a readable CSV ({err}). {LAYOUT}") from err
    df.columns = [str(c).strip() for c in df.columns]
    missing = [c for c in layout.REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise EchoNetLayoutError(f"{path}: missing column(s) {missing}; found {list(df.columns)}. {LAYOUT}")
    if df.empty:
        raise EchoNetLayoutError(f"{path}: has no rows. {LAYOUT}")

    out = pd.DataFrame({"FileName": df["FileName"].astype(str).map(lambda n: layout.stem(n.strip()))})
    ef = pd.to_numeric(df["EF"], errors="coerce")
    _check_values(
        path, df, out["FileName"], "EF", ef.isna() | (ef <= 0) | (ef >= 100), "a number in (0, 100) percent"
    )
    problem = ef_labels.fractions_problem(ef)
    if problem:
        raise EchoNetLayoutError(f"{path}: {problem}; multiply the column by 100")
    out["EF"] = ef.astype(float)
    for col in ("EDV", "ESV", "FPS"):
        out[col] = pd.to_numeric(df[col], errors="coerce").astype(float) if col in df.columns else math.nan
    if "NumberOfFrames" in df.columns:
        out["NumberOfFrames"] = pd.to_numeric(df["NumberOfFrames"], errors="coerce").fillna(-1).astype(int)
    else:
        out["NumberOfFrames"] = -1
    split = df["Split"].astype(str).str.strip().str.lower()
    _check_values(path, df, out["FileName"], "Split", ~split.isin(SPLITS), "TRAIN, VAL or TEST")
    out["Split"] = split
    dup = out["FileName"].duplicated(keep=False)
    if dup.any():
        raise EchoNetLayoutError(f"{path}: duplicate FileName(s): {sorted(set(out['FileName'][dup]))[:10]}")
    return out


def traced_frame_counts(root: PathLike) -> dict[str, int] | None:
    """Distinct traced frames per video (no extension) from ``VolumeTracings.csv``; None if absent.

    Raises:
        EchoNetLayoutError: the header is not exactly ``FileName,X1,Y1,X2,Y2,Frame``.
    """
    path = Path(root) / layout.TRACINGS
    if not path.is_file():
        return None
    try:
        df = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise EchoNetLayoutError(f"{path}: not a readable CSV ({err}). {LAYOUT}") from err
    if tuple(str(c).strip() for c in df.columns) != layout.TRACING_COLUMNS:
        raise EchoNetLayoutError(
            f"{path}: header must be exactly {','.join(layout.TRACING_COLUMNS)}, "
            f"found {','.join(map(str, df.columns))}. {LAYOUT}"
        )
    names = df["FileName"].astype(str).map(lambda n: layout.stem(n.strip()))
    return pd.DataFrame({"n": names, "f": df["Frame"]}).groupby("n")["f"].nunique().astype(int).to_dict()


def read_echonet(
    root: PathLike,
    *,
    drop_untraced: bool = True,
    check_videos: bool = True,
    required_splits: Sequence[str] = SPLITS,
) -> EchoNetIndex:
    """Reads an EchoNet-Dynamic folder into records, applying the official filtering.

    Args:
        root: folder holding FileList.csv, Videos/ and optionally VolumeTracings.csv.
        drop_untraced: when VolumeTracings.csv exists, drop videos with fewer than 2 distinct
            traced frames (official behaviour; logged with the count per split).
        check_videos: error if a kept video file is missing from ``Videos/``.
        required_splits: splits that must hold at least one video after filtering.

    Raises:
        EchoNetNotFoundError (a FileNotFoundError): missing folder, FileList.csv, Videos/ or video files (names them).
        EchoNetLayoutError: see :func:`read_filelist`; or a split left empty.
    """
    root = Path(root)
    df = read_filelist(root)
    counts = traced_frame_counts(root)
    dropped: list[str] = []
    if counts is not None and drop_untraced:
        keep = df["FileName"].map(lambda n: counts.get(n, 0) >= 2)
        dropped = df["FileName"][~keep].tolist()
        if dropped:
            per_split = df[~keep].groupby("Split").size().to_dict()
            log.warning(
                "EchoNet %s: dropped %d video(s) with fewer than 2 traced frames in "
                "VolumeTracings.csv (per split: %s)",
                root,
                len(dropped),
                per_split,
            )
        df = df[keep]
    videos = root / layout.VIDEO_DIR
    records = tuple(
        EchoNetRecord(
            filename=row.FileName,
            path=videos / layout.avi_name(row.FileName),
            ef=float(row.EF),
            edv=float(row.EDV),
            esv=float(row.ESV),
            split=row.Split,
            num_frames=int(row.NumberOfFrames),
            fps=float(row.FPS),
        )
        for row in df.itertuples(index=False)
    )
    index = EchoNetIndex(
        root=root, records=records, dropped_untraced=tuple(dropped), has_tracings=counts is not None
    )
    for split in required_splits:
        index.split(split)  # raises on an empty split
    if check_videos:
        check_video_files(records, root)
    return index


def check_video_files(records: Iterable[EchoNetRecord], root: PathLike) -> None:
    """Raises FileNotFoundError naming the videos of ``records`` missing from ``<root>/Videos``."""
    videos = Path(root) / layout.VIDEO_DIR
    if not videos.is_dir():
        raise EchoNetNotFoundError(f"Videos folder not found: {videos}. {LAYOUT}")
    present = {p.name for p in videos.iterdir()}
    missing = [r.avi_name for r in records if r.avi_name not in present]
    if missing:
        raise EchoNetNotFoundError(
            f"{len(missing)} video(s) listed in FileList.csv are missing from {videos}: {shown(missing)}. {LAYOUT}"
        )
