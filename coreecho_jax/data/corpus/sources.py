"""Which files a corpus holds: a folder tree or a manifest CSV -> keyed entries. No TensorFlow.

* A **folder tree** (e.g. MIMIC-IV-ECHO's ``files/pNN/pNNNNNNNN/sNNNNNNNN/NNNNNNNN_NNNN.dcm``): every
  file whose suffix is a DICOM one (``.dcm``, ``.dicom``, ``.dic``) or a video one (:data:`VIDEO_SUFFIXES`),
  and every suffix-less file that starts with the DICOM magic, walked in sorted order. Other files are
  counted as ignored (and listed in the report); hidden files and folders (``.name``) are not looked at.
  One split, :data:`DEFAULT_SPLIT`; no labels.
* A **manifest** (``.csv``): a ``path`` column (relative to the manifest's folder, or absolute) and
  optional ``ef`` (%), ``edv``, ``esv`` (mL) and ``split`` columns; blank labels are NaN.

Each entry's **key** is its path relative to the corpus folder (the tree, or the manifest's folder), in
POSIX form (an absolute path for a manifest row outside that folder). Keys are what TFDS orders and
de-duplicates records by, so the prepared output is the same whatever the number of workers, and a
rerun never duplicates a record.
"""

from __future__ import annotations

import collections
import csv
import dataclasses
import hashlib
import json
import math
import os
import re
from collections.abc import Iterator
from pathlib import Path

from coreecho_jax.data.video.dicom import DICOM_SUFFIXES, is_dicom_file
from coreecho_jax.errors import DataError, shown

#: Video containers a corpus may hold besides DICOM (read with OpenCV's FFmpeg).
VIDEO_SUFFIXES = (".avi", ".mp4", ".mov", ".mkv")
#: The split of a folder tree, and of a manifest without a ``split`` column.
DEFAULT_SPLIT = "corpus"
#: The manifest's path column, and its optional label columns.
PATH_COLUMN = "path"
LABEL_COLUMNS = ("ef", "edv", "esv")
SPLIT_COLUMN = "split"


class CorpusSourceError(DataError):
    """The corpus path holds no DICOM or video file, or its manifest is malformed."""


@dataclasses.dataclass(frozen=True)
class CorpusEntry:
    """One file of a corpus.

    Attributes:
        key: the record's key (module doc).
        path: absolute path of the file.
        split: the split it goes to.
        ef, edv, esv: labels (%, mL, mL), NaN when not given.
    """

    key: str
    path: str
    split: str = DEFAULT_SPLIT
    ef: float = math.nan
    edv: float = math.nan
    esv: float = math.nan


@dataclasses.dataclass(frozen=True)
class CorpusSource:
    """A listed corpus.

    Attributes:
        location: the folder or manifest, absolute.
        kind: ``'tree'`` or ``'manifest'``.
        entries: the files, sorted by key.
        ignored: tree files that are neither DICOM nor video (keys), sorted.
    """

    location: str
    kind: str
    entries: tuple[CorpusEntry, ...]
    ignored: tuple[str, ...] = ()

    @property
    def splits(self) -> list[str]:
        return sorted({e.split for e in self.entries})

    def identity(self) -> str:
        """SHA-1 of every entry (key, path, split, labels) with its file's size and modification time."""
        digest = hashlib.sha1()
        for e in self.entries:
            try:
                stat = os.stat(e.path)
                seen = [stat.st_size, stat.st_mtime_ns]
            except OSError:
                seen = None
            row = [*dataclasses.astuple(e), seen]
            digest.update(json.dumps(row).encode() + b"\n")
        return digest.hexdigest()


def _walk(root: Path) -> Iterator[Path]:
    """Files under ``root`` in sorted order, hidden files and folders left out."""
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if not name.startswith("."):
                yield Path(folder) / name


def _is_corpus_file(path: Path) -> bool:
    suffix = path.suffix.lower()
    if suffix in DICOM_SUFFIXES or suffix in VIDEO_SUFFIXES:
        return True
    return suffix == "" and is_dicom_file(path)


def list_tree(root: Path) -> CorpusSource:
    """The DICOM and video files under a folder (module doc).

    Raises:
        CorpusSourceError: the folder holds none.
    """
    entries, ignored = [], []
    for path in _walk(root):
        key = path.relative_to(root).as_posix()
        if _is_corpus_file(path):
            entries.append(CorpusEntry(key, str(path)))
        else:
            ignored.append(key)
    if not entries:
        other = f"; {len(ignored)} other file(s) found: {shown(ignored)}" if ignored else " (it is empty)"
        raise CorpusSourceError(
            f"{root}: no DICOM or video file in this folder tree (looked for {', '.join(DICOM_SUFFIXES)}, "
            f"suffix-less files starting with the DICOM magic, and {', '.join(VIDEO_SUFFIXES)}){other}"
        )
    return CorpusSource(str(root), "tree", tuple(entries), tuple(ignored))


def _label(value: str, column: str, where: str) -> float:
    if value is None or not value.strip():
        return math.nan
    try:
        return float(value)
    except ValueError:
        raise CorpusSourceError(
            f"{where}: column {column!r} must be a number or blank, got {value!r}"
        ) from None


def _split_name(value: str, where: str) -> str:
    name = (value or "").strip().lower() or DEFAULT_SPLIT
    if not re.fullmatch(r"[a-z0-9_]+", name) or name == "all":
        raise CorpusSourceError(
            f"{where}: split {value!r} must be letters, digits or '_' (and not 'all', which TFDS reserves)"
        )
    return name


def _key(path: Path, folder: Path) -> str:
    try:
        return path.relative_to(folder).as_posix()
    except ValueError:
        return path.as_posix()


def read_manifest(manifest: Path) -> CorpusSource:
    """The files a manifest CSV lists (module doc).

    Raises:
        CorpusSourceError: no ``path`` column, a blank path, a label that is not a number, a bad
            split name, a path listed twice, or no row at all.
    """
    folder = manifest.parent
    with open(manifest, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        columns = [c.strip() for c in reader.fieldnames or []]
        if PATH_COLUMN not in columns:
            raise CorpusSourceError(
                f"{manifest}: no {PATH_COLUMN!r} column (found {columns or 'no header'}); a manifest needs a "
                f"{PATH_COLUMN!r} column of file paths (relative to its folder, or absolute) and may add "
                f"{', '.join(LABEL_COLUMNS)} and {SPLIT_COLUMN}"
            )
        reader.fieldnames = columns
        entries = []
        for row in reader:
            where = f"{manifest}, line {reader.line_num}"
            text = (row.get(PATH_COLUMN) or "").strip()
            if not text:
                raise CorpusSourceError(f"{where}: the {PATH_COLUMN!r} column is blank")
            path = Path(os.path.normpath(folder / text))
            labels = {c: _label(row.get(c), c, where) for c in LABEL_COLUMNS}
            split = _split_name(row.get(SPLIT_COLUMN) or "", where)
            entries.append(CorpusEntry(_key(path, folder), str(path), split, **labels))
    if not entries:
        raise CorpusSourceError(f"{manifest}: the manifest lists no file")
    twice = sorted(k for k, n in collections.Counter(e.key for e in entries).items() if n > 1)
    if twice:
        raise CorpusSourceError(f"{manifest}: {len(twice)} path(s) listed more than once: {shown(twice)}")
    return CorpusSource(str(manifest), "manifest", tuple(sorted(entries, key=lambda e: e.key)))


def list_corpus(source: str | os.PathLike) -> CorpusSource:
    """A folder tree or a manifest ``.csv`` -> :class:`CorpusSource` (module doc).

    Raises:
        CorpusSourceError: the path does not exist, is neither a folder nor a ``.csv``, holds no
            DICOM or video file, or its manifest is malformed.
    """
    path = Path(source).expanduser().resolve()
    if path.is_dir():
        return list_tree(path)
    if path.is_file() and path.suffix.lower() == ".csv":
        return read_manifest(path)
    what = "does not exist" if not path.exists() else "is neither a folder nor a manifest .csv"
    raise CorpusSourceError(
        f"{path}: the corpus path {what}; give a folder tree of DICOM/video files or a manifest CSV "
        f"with a {PATH_COLUMN!r} column"
    )
