"""CAMUS reader: the 2023 NIfTI release and the 2019 MHD release, one record per patient and view.

Layouts read (``root`` may be any of the folders shown, or the folder holding them)::

    2023:  CAMUS_public/database_nifti/patientNNNN/patientNNNN_4CH_half_sequence.nii.gz
                                                 patientNNNN_4CH_half_sequence_gt.nii.gz  (optional: the
                                                                LV cavity per frame, :meth:`CamusRecord.lv_masks`)
                                                 Info_4CH.cfg   ED, ES, NbFrame, Sex, Age, ImageQuality, EF,
                                                                FrameRate
           CAMUS_public/database_split/subgroup_{training,validation,testing}.txt   (optional)
    2019:  training/patientNNNN/patientNNNN_4CH_sequence.mhd (+ .raw)
                                Info_4CH.cfg   ED, ES, NbFrame, Sex, Age, ImageQuality, LVedv, LVesv, LVef
           testing/patientNNNN/...            (read too; patients without LVef are skipped and listed)

``Info_<view>.cfg`` holds ``Key: value`` lines. Sequences are read with SimpleITK: the array is
``[T, H, W]`` (SimpleITK's ``[z, y, x]``, no reorientation) and the pixel spacing comes from the image
header. The stored sequence runs from ED to ES or, for some patients, from ES to ED (``ED == NbFrame``,
``ES == 1``); :meth:`CamusRecord.frames` always returns ED -> ES.

Bad patients (missing or unreadable sequence, a truncated one, a cfg without ``EF``/``LVef`` or with
an unknown ``ImageQuality``, ``ED``/``ES`` inconsistent with ``NbFrame`` or with the image) raise a
:class:`CamusError` naming the file, or with ``on_error="skip"`` are left out and listed in
:attr:`CamusDataset.skipped` (never dropped silently). A truncated file is found before decoding:
SimpleITK fills what a cut ``.nii.gz`` stream lacks with zeros and reads a cut 2019 ``.raw`` as "No
such file", so the image data's length (decompressed for ``.gz``) is checked against the header's
voxel count. EFs given as fractions (every EF within 0-1) are refused, as for EchoNet-Dynamic.
"""

from __future__ import annotations

import dataclasses
import os
import re
import struct
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from coreecho_jax.data import ef_labels
from coreecho_jax.data.records import NamedRecords, OnError, Skipped, check_on_error
from coreecho_jax.data.transfer.folds import Fold, contiguous_folds
from coreecho_jax.errors import ConfigError, DataError

PathLike = str | os.PathLike

#: The image-quality labels of ``ImageQuality`` (the paper reports Good+Medium and Poor separately).
QUALITIES = ("Good", "Medium", "Poor")
#: Views: the paper uses the apical four-chamber view; the two-chamber view is a switch.
VIEWS = ("4CH", "2CH")
#: Sequence file names per release (``{patient}_{view}`` prefixed).
NIFTI_SEQUENCE = "half_sequence.nii.gz"
MHD_SEQUENCE = "sequence.mhd"
#: The 2023 release's segmentation of every frame of the half sequence (``{patient}_{view}`` prefixed):
#: labels 0 background, 1 LV cavity, 2 myocardium, 3 left atrium. The 2019 release segments ED and ES only.
NIFTI_SEQUENCE_GT = "half_sequence_gt.nii.gz"
#: The LV cavity's label in CAMUS segmentations.
LV_LABEL = 1
#: Official CoReEcho normalisation of CAMUS intensities (``CAMUSTransferLearning`` in ``coreecho/dataset.py``).
CAMUS_MEAN = 40.94405
CAMUS_STD = 54.723774
#: The 2023 release's split files, in ``database_split/``, and the ten-fold variant of some toolkits.
SPLIT_FILES = {
    "train": "subgroup_training.txt",
    "val": "subgroup_validation.txt",
    "test": "subgroup_testing.txt",
}
_SUBGROUP_FILE = re.compile(r"subgroup(\d+)_(training|validation|testing)\.txt", re.IGNORECASE)
_SPLIT_ROLE = {"training": "train", "validation": "val", "testing": "test"}
_PATIENT_DIR = re.compile(r"patient\d+")
#: Bytes per voxel of the scalar pixel types SimpleITK reports (``ImageFileReader.GetPixelID``).
_PIXEL_BYTES = {
    "8-bit unsigned integer": 1,
    "8-bit signed integer": 1,
    "16-bit unsigned integer": 2,
    "16-bit signed integer": 2,
    "32-bit unsigned integer": 4,
    "32-bit signed integer": 4,
    "64-bit unsigned integer": 8,
    "64-bit signed integer": 8,
    "32-bit float": 4,
    "64-bit float": 8,
}
_CHUNK = 1 << 20


class CamusError(DataError):
    """A CAMUS file is missing, unreadable or inconsistent (the message names the file)."""


def normalize_view(view: str) -> str:
    """``"4CH"``/``"A4C"`` -> ``"4CH"``, ``"2CH"``/``"A2C"`` -> ``"2CH"`` (case-insensitive)."""
    v = str(view).upper()
    v = {"A4C": "4CH", "A2C": "2CH"}.get(v, v)
    if v not in VIEWS:
        raise ConfigError(f"CAMUS view must be one of {VIEWS} (or A4C/A2C), got {view!r}")
    return v


def read_cfg(path: PathLike) -> dict[str, str]:
    """``Key: value`` lines of an ``Info_*.cfg`` -> ``{key: value}`` (both stripped; blank lines ignored)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as e:
        raise CamusError(f"{path}: cannot read the info file ({e})") from e
    out = {}
    for line in text.splitlines():
        if ":" in line:
            key, value = line.split(":", 1)
            out[key.strip()] = value.strip()
    return out


def _field(cfg: Mapping[str, str], path: Path, *keys: str, required: bool = True) -> str | None:
    lower = {k.lower(): v for k, v in cfg.items()}
    for key in keys:
        if key.lower() in lower and lower[key.lower()] != "":
            return lower[key.lower()]
    if required:
        raise CamusError(f"{path}: no {' or '.join(keys)} line (expected 'Key: value' lines)")
    return None


def _number(text: str | None, path: Path, key: str) -> float | None:
    if text is None:
        return None
    try:
        return float(text)
    except ValueError:
        raise CamusError(f"{path}: {key} must be a number, got {text!r}") from None


def _frame_number(cfg: Mapping[str, str], path: Path, key: str) -> int:
    value = _number(_field(cfg, path, key), path, key)
    if value is None or not value.is_integer():
        raise CamusError(f"{path}: {key} must be a whole frame number, got {value}")
    return int(value)


@dataclasses.dataclass(frozen=True)
class CamusRecord:
    """One patient's sequence in one view (pixels are read on demand by :meth:`frames`).

    Attributes:
        patient: folder name, e.g. ``"patient0001"``.
        view: ``"4CH"`` or ``"2CH"``.
        path: the sequence file (``.nii.gz`` or ``.mhd``).
        cfg_path: the ``Info_<view>.cfg`` file.
        release: ``"2023-nifti"`` or ``"2019-mhd"``.
        subset: ``"training"``/``"testing"`` for the 2019 layout's folders, else None.
        ef: ejection fraction in % (``EF``, or ``LVef`` in 2019; CAMUS's EF is the biplane
            Simpson value of both views, the same number in both cfg files).
        quality: ``"Good"``, ``"Medium"`` or ``"Poor"``.
        ed_frame, es_frame: 1-based ED and ES frames of the stored sequence, as in the cfg.
        nb_frames: frames stored (``NbFrame``, checked against the image).
        fps: ``FrameRate`` (frames per second) or None (the 2019 cfg has none).
        sex, age: as in the cfg (``age`` in years), None when absent.
        edv_ml, esv_ml: ``LVedv``/``LVesv`` in mL when given (2019), else None.
        spacing_mm: (row, column) pixel spacing from the image header, i.e. (y, x); CAMUS pixels are
            anisotropic.
        height, width: image size in pixels.
    """

    patient: str
    view: str
    path: Path
    cfg_path: Path
    release: str
    subset: str | None
    ef: float
    quality: str
    ed_frame: int
    es_frame: int
    nb_frames: int
    fps: float | None
    sex: str | None
    age: float | None
    edv_ml: float | None
    esv_ml: float | None
    spacing_mm: tuple[float, float]
    height: int
    width: int

    @property
    def stored_es_first(self) -> bool:
        """True when the file stores the sequence from ES to ED (it is reversed on reading)."""
        return self.es_frame < self.ed_frame

    @property
    def num_frames(self) -> int:
        """Frames from ED to ES inclusive (the length of :meth:`frames`)."""
        return abs(self.es_frame - self.ed_frame) + 1

    def frames(self) -> np.ndarray:
        """The sequence from ED (index 0) to ES (index -1): uint8 ``[T, H, W]``."""
        array = _read_pixels(self.path)
        if array.shape[0] != self.nb_frames:
            raise CamusError(
                f"{self.path}: {array.shape[0]} frames decoded, {self.cfg_path} says {self.nb_frames}"
            )
        return self._ed_to_es(array)

    def _ed_to_es(self, array: np.ndarray) -> np.ndarray:
        lo, hi = sorted((self.ed_frame, self.es_frame))
        array = array[lo - 1 : hi]
        return np.ascontiguousarray(array[::-1] if self.stored_es_first else array)

    @property
    def gt_path(self) -> Path:
        """The per-frame segmentation of the 2023 release (:data:`NIFTI_SEQUENCE_GT`), beside the sequence."""
        return self.path.with_name(f"{self.patient}_{self.view}_{NIFTI_SEQUENCE_GT}")

    def lv_masks(self) -> np.ndarray:
        """The LV cavity (label :data:`LV_LABEL`) of every frame from ED to ES: bool ``[T, H, W]``, aligned
        with :meth:`frames`.

        Raises:
            CamusError: no :attr:`gt_path` (the 2019 release segments ED and ES only), a truncated or
                unreadable one, or one of another size than the sequence.
        """
        if not self.gt_path.is_file():
            raise CamusError(
                f"{self.gt_path}: no per-frame segmentation of the half sequence (the 2023 release ships "
                f"it; the 2019 release segments ED and ES only)"
            )
        size, _ = _read_header(self.gt_path)
        if tuple(size) != (self.width, self.height, self.nb_frames):
            raise CamusError(
                f"{self.gt_path}: {size[2]} frames of {size[0]} x {size[1]} px, the sequence has "
                f"{self.nb_frames} of {self.width} x {self.height}"
            )
        return self._ed_to_es(_read_pixels(self.gt_path) == LV_LABEL)


def _sitk_reason(e: RuntimeError) -> str:
    """The informative line of a SimpleITK error (its ``ITK ERROR`` line rather than a bare "Reason")."""
    lines = [line.strip() for line in str(e).strip().splitlines() if line.strip()]
    err = [line.split("ITK ERROR:", 1)[1].strip() for line in lines if "ITK ERROR:" in line]
    return err[-1] if err else lines[-1] if lines else type(e).__name__


def _read_pixels(path: Path) -> np.ndarray:
    import SimpleITK as sitk

    try:
        array = sitk.GetArrayFromImage(sitk.ReadImage(str(path)))
    except RuntimeError as e:
        raise CamusError(f"{path}: SimpleITK cannot read the sequence ({_sitk_reason(e)})") from e
    if array.ndim == 4 and array.shape[1] == 1:  # x, y, z = 1, t
        array = array[:, 0]
    if array.ndim != 3:
        raise CamusError(f"{path}: expected a 2-D + time sequence [T, H, W], got array shape {array.shape}")
    if array.dtype != np.uint8:
        if array.size and (array.min() < 0 or array.max() > 255 or not np.all(np.mod(array, 1) == 0)):
            raise CamusError(f"{path}: pixel values must be whole numbers in 0..255, got {array.dtype}")
        array = array.astype(np.uint8)
    return array


def _inflated(path: Path, keep: int) -> tuple[int, bytes]:
    """(decompressed length, its first ``keep`` bytes) of a gzip or zlib file, read in chunks; a cut
    stream gives the length of what it holds (SimpleITK would fill the rest with zeros)."""
    new = lambda: zlib.decompressobj(zlib.MAX_WBITS | 32)  # gzip or zlib header, detected
    total, head, d = 0, b"", new()
    try:
        with open(path, "rb") as f:
            data = f.read(_CHUNK)
            while data:
                out = d.decompress(data, _CHUNK)
                total += len(out)
                head += out[: max(keep - len(head), 0)]
                if d.unconsumed_tail:
                    data = d.unconsumed_tail
                elif d.eof:  # another gzip member may follow; other trailing bytes are not image data
                    data = d.unused_data or f.read(_CHUNK)
                    if not data.startswith(b"\x1f\x8b"):
                        break
                    d = new()
                else:
                    data = f.read(_CHUNK)
    except zlib.error as e:
        raise CamusError(f"{path}: damaged compressed data after {total} bytes ({e})") from e
    return total, head


def _nifti_data_offset(head: bytes) -> int:
    """Byte offset of the voxels in an (uncompressed) NIfTI-1/2 stream from its header, or 0 if unknown."""
    for order in ("<", ">"):
        if len(head) >= 112 and struct.unpack(order + "i", head[:4])[0] == 348:  # NIfTI-1
            return int(struct.unpack(order + "f", head[108:112])[0])
        if len(head) >= 176 and struct.unpack(order + "i", head[:4])[0] == 540:  # NIfTI-2
            return int(struct.unpack(order + "q", head[168:176])[0])
    return 0


def _mhd_fields(path: Path) -> dict[str, str]:
    """``Key = value`` lines of a MetaImage header (keys as written)."""
    fields = {}
    for line in path.read_text(errors="replace").splitlines():
        if "=" in line:
            key, value = line.split("=", 1)
            fields[key.strip()] = value.strip()
    return fields


def _check_complete(path: Path, voxel_bytes: int, what: str) -> None:
    """Raises CamusError when the image data of ``path`` is shorter than the header's ``voxel_bytes``.

    ``.nii.gz``: the decompressed stream against the data offset + voxels; ``.mhd``: its pixel file
    (``ElementDataFile``, decompressed when ``CompressedData``) against the voxels (a ``LOCAL`` or
    listed pixel file is not checked)."""
    if path.suffix.lower() == ".mhd":
        fields = _mhd_fields(path)
        name = fields.get("ElementDataFile", "")
        if name in ("", "LOCAL", "LIST") or " " in name or "%" in name:
            return
        data = path.parent / name
        skip = max(int(fields.get("HeaderSize", "0") or 0), 0)
        if fields.get("CompressedData", "False").lower() == "true":
            got = _inflated(data, 0)[0]
        else:
            got = data.stat().st_size
        if got < skip + voxel_bytes:
            raise CamusError(
                f"{path}: its pixel file {data} holds {got} bytes, the header needs {skip + voxel_bytes} "
                f"({what}): the file is truncated"
            )
        return
    if path.name.lower().endswith(".gz"):
        got, head = _inflated(path, 544)
        need = _nifti_data_offset(head) + voxel_bytes
        stream = "decompresses to"
    else:
        got = path.stat().st_size
        with open(path, "rb") as f:
            need = _nifti_data_offset(f.read(544)) + voxel_bytes
        stream = "holds"
    if got < need:
        raise CamusError(
            f"{path}: {stream} {got} bytes, the header needs {need} ({what}): the file is truncated "
            "(a reader would fill the missing frames with black)"
        )


def _read_header(path: Path) -> tuple[tuple[int, ...], tuple[float, ...]]:
    """(size (x, y, t), spacing (x, y, t)) from the image header, without decoding the pixels; the
    image data's length is checked against it (:func:`_check_complete`).

    A 4-D image with one slice (x, y, 1, t) is taken as x, y, t."""
    import SimpleITK as sitk

    if not path.is_file():
        raise CamusError(f"{path}: sequence file not found")
    if path.suffix.lower() == ".mhd":
        match = re.search(r"^\s*ElementDataFile\s*=\s*(.+?)\s*$", path.read_text(errors="replace"), re.M)
        if match and match.group(1) != "LOCAL" and not (path.parent / match.group(1)).is_file():
            raise CamusError(f"{path}: its pixel file {path.parent / match.group(1)} is missing")
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as e:
        raise CamusError(f"{path}: SimpleITK cannot read the header ({_sitk_reason(e)})") from e
    if reader.GetNumberOfComponents() != 1:
        raise CamusError(f"{path}: expected grey pixels, got {reader.GetNumberOfComponents()} components")
    full_size = tuple(reader.GetSize())
    size, spacing = full_size, tuple(reader.GetSpacing())
    if len(size) == 4 and size[2] == 1:  # x, y, z = 1, t
        size, spacing = size[:2] + size[3:], spacing[:2] + spacing[3:]
    if len(size) != 3:
        raise CamusError(f"{path}: expected a 2-D + time image (x, y, t), got size {size}")
    pixel = sitk.GetPixelIDValueAsString(reader.GetPixelID())
    if pixel in _PIXEL_BYTES:
        voxels = int(np.prod(full_size))
        what = f"{' x '.join(map(str, full_size))} voxels of {_PIXEL_BYTES[pixel]} byte(s)"
        _check_complete(path, voxels * _PIXEL_BYTES[pixel], what)
    return size, spacing


def read_record(folder: PathLike, view: str = "4CH", subset: str | None = None) -> CamusRecord:
    """The record of one ``patientNNNN`` folder (header and cfg checked, pixels not decoded).

    Raises:
        CamusError: naming the file: no sequence, unreadable header, cfg without ``EF``/``LVef`` or
            with an unknown ``ImageQuality``, ``ED``/``ES`` outside ``1..NbFrame`` or equal, or
            ``NbFrame`` different from the image's frame count.
    """
    folder = Path(folder)
    view = normalize_view(view)
    patient = folder.name
    cfg_path = folder / f"Info_{view}.cfg"
    if not cfg_path.is_file():
        raise CamusError(f"{cfg_path}: info file not found")
    candidates = [
        (folder / f"{patient}_{view}_{NIFTI_SEQUENCE}", "2023-nifti"),
        (folder / f"{patient}_{view}_{MHD_SEQUENCE}", "2019-mhd"),
    ]
    found = [(p, r) for p, r in candidates if p.exists()]
    if not found:
        raise CamusError(
            f"{folder}: no {view} sequence (expected {candidates[0][0].name} or {candidates[1][0].name})"
        )
    path, release = found[0]
    cfg = read_cfg(cfg_path)
    ef = _number(_field(cfg, cfg_path, "EF", "LVef"), cfg_path, "EF")
    if not 0 <= ef <= 100:
        raise CamusError(f"{cfg_path}: EF must be a percentage in [0, 100], got {ef}")
    quality = _field(cfg, cfg_path, "ImageQuality")
    known = {q.lower(): q for q in QUALITIES}
    if quality.lower() not in known:
        raise CamusError(f"{cfg_path}: ImageQuality must be one of {QUALITIES}, got {quality!r}")
    ed, es, nb = (_frame_number(cfg, cfg_path, k) for k in ("ED", "ES", "NbFrame"))
    if not (1 <= ed <= nb and 1 <= es <= nb and ed != es):
        raise CamusError(f"{cfg_path}: ED={ed} and ES={es} must be distinct frames in 1..NbFrame={nb}")
    size, spacing = _read_header(path)
    if size[2] != nb:
        raise CamusError(f"{cfg_path}: NbFrame={nb} but {path.name} holds {size[2]} frames")
    age = _field(cfg, cfg_path, "Age", required=False)
    return CamusRecord(
        patient=patient,
        view=view,
        path=path,
        cfg_path=cfg_path,
        release=release,
        subset=subset,
        ef=ef,
        quality=known[quality.lower()],
        ed_frame=ed,
        es_frame=es,
        nb_frames=nb,
        fps=_number(_field(cfg, cfg_path, "FrameRate", required=False), cfg_path, "FrameRate"),
        sex=_field(cfg, cfg_path, "Sex", required=False),
        age=_number(age, cfg_path, "Age"),
        edv_ml=_number(_field(cfg, cfg_path, "LVedv", required=False), cfg_path, "LVedv"),
        esv_ml=_number(_field(cfg, cfg_path, "LVesv", required=False), cfg_path, "LVesv"),
        spacing_mm=(float(spacing[1]), float(spacing[0])),
        height=int(size[1]),
        width=int(size[0]),
    )


def _patient_dirs(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_dir() and _PATIENT_DIR.fullmatch(p.name))


def find_patient_folders(root: PathLike) -> list[tuple[Path, str | None]]:
    """``[(patientNNNN folder, subset)]`` of a CAMUS download, sorted by patient.

    Looks in ``root`` itself, else ``root/CAMUS_public/database_nifti``, ``root/database_nifti``
    (2023) and ``root/training``, ``root/testing`` (2019; subset = the folder name).
    """
    root = Path(root)
    if not root.is_dir():
        raise CamusError(f"{root}: CAMUS root folder not found")
    if _patient_dirs(root):
        return [(p, None) for p in _patient_dirs(root)]
    found: list[tuple[Path, str | None]] = []
    for sub, subset in (
        ("CAMUS_public/database_nifti", None),
        ("database_nifti", None),
        ("training", "training"),
        ("testing", "testing"),
    ):
        found += [(p, subset) for p in _patient_dirs(root / sub)]
    names = [p.name for p, _ in found]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise CamusError(f"{root}: patient folders found twice ({dup[:3]}); pass the release folder as root")
    if not found:
        raise CamusError(
            f"{root}: no patientNNNN folders (expected CAMUS_public/database_nifti/, database_nifti/, "
            "training/ or testing/ holding them, or the patient folders themselves)"
        )
    return sorted(found, key=lambda item: item[0].name)


def find_split_dir(root: PathLike) -> Path | None:
    """The 2023 release's ``database_split`` folder next to the patients, if there is one."""
    root = Path(root)
    for d in (
        root / "CAMUS_public" / "database_split",
        root / "database_split",
        root.parent / "database_split",
    ):
        if d.is_dir():
            return d
    return None


def _read_name_list(path: Path) -> list[str]:
    """Patient names of a split file: one per line (a bare number ``N`` means ``patientNNNN``)."""
    names = []
    for line in path.read_text(errors="replace").splitlines():
        name = line.strip()
        if name:
            names.append(f"patient{int(name):04d}" if name.isdigit() else name)
    return names


def read_split_files(folder: PathLike, known: set[str] | None = None) -> list[Fold]:
    """The CAMUS team's split files in ``folder`` as folds.

    ``subgroup_{training,validation,testing}.txt`` (2023 release) give one fold (``test`` = the
    testing list, ``val`` = the validation list); ``subGroup{k}_{training,validation,testing}.txt``
    (the ten-fold variant) give one fold per ``k``. Each file lists one patient per line.

    Raises:
        CamusError: no split file, a fold lacking its training or testing file, or (with ``known``)
            a file naming a patient that is not in the dataset.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise CamusError(f"{folder}: split folder not found")
    groups: dict[int, dict[str, Path]] = {}
    if (folder / SPLIT_FILES["train"]).is_file():
        groups[0] = {role: folder / name for role, name in SPLIT_FILES.items() if (folder / name).is_file()}
    else:
        for p in folder.iterdir():
            m = _SUBGROUP_FILE.fullmatch(p.name)
            if m:
                groups.setdefault(int(m.group(1)), {})[_SPLIT_ROLE[m.group(2).lower()]] = p
    if not groups:
        raise CamusError(
            f"{folder}: no split files (expected {SPLIT_FILES['train']} etc. or subGroupK_training.txt etc.)"
        )
    folds = []
    for index, key in enumerate(sorted(groups)):
        files = groups[key]
        missing = [r for r in ("train", "test") if r not in files]
        if missing:
            raise CamusError(f"{folder}: split {key} has no {' / '.join(missing)} file")
        lists = {role: _read_name_list(p) for role, p in files.items()}
        if known is not None:
            for role, names in lists.items():
                unknown = sorted(set(names) - known)
                if unknown:
                    raise CamusError(
                        f"{files[role]}: names {len(unknown)} patients not in the dataset, e.g. {unknown[:3]}"
                    )
        folds.append(Fold(index, lists["train"], lists["test"], lists.get("val", ())))
    return folds


@dataclasses.dataclass(frozen=True)
class CamusDataset(NamedRecords[CamusRecord]):
    """The readable patients of a CAMUS download in one view, and the ones left out.

    Attributes:
        root: the folder given.
        view: ``"4CH"`` or ``"2CH"``.
        records: readable patients, sorted by name.
        skipped: patients left out and why (``on_error="skip"``).
        patients: every patient folder found (readable or not), sorted; the official folds are cut
            from this list so that a skipped patient does not shift the others' folds.
        split_dir: the ``database_split`` folder when the download has one.
    """

    NAME_FIELD = "patient"  # dataset[name] looks records up by this attribute

    root: Path
    view: str
    records: tuple[CamusRecord, ...]
    skipped: tuple[Skipped, ...]
    patients: tuple[str, ...]
    split_dir: Path | None

    def folds(
        self, scheme: str = "official", *, n_folds: int = 10, split_dir: PathLike | None = None
    ) -> list[Fold]:
        """Cross-validation folds over the readable patients.

        Args:
            scheme: ``"official"``: CoReEcho's folds, contiguous blocks of the sorted patient list
                (fold k holds out ``[50k, 50k + 50)`` of 500; for ``n`` patients the blocks are
                ``[floor(k n / n_folds), floor((k + 1) n / n_folds))``), no separate validation set.
                ``"split_files"``: the CAMUS team's split files (``split_dir`` or the download's
                ``database_split``), see :func:`read_split_files`.
            n_folds: folds of the official scheme.
            split_dir: folder of the split files.

        Skipped patients are removed from the folds after they are cut.
        """
        if scheme == "official":
            folds = contiguous_folds(self.patients, n_folds)
        elif scheme == "split_files":
            folder = Path(split_dir) if split_dir is not None else self.split_dir
            if folder is None:
                raise CamusError(f"{self.root}: no database_split folder; pass split_dir")
            folds = read_split_files(folder, known=set(self.patients))
        else:
            raise ConfigError(f"CAMUS fold scheme must be 'official' or 'split_files', got {scheme!r}")
        return [f.without(s.name for s in self.skipped) for f in folds]

    def report(self, unreadable: Sequence[Skipped] = ()) -> str:
        """A few lines: how many patients were read, per quality, and each skipped one with its reason.

        ``unreadable``: patients whose pixels failed later (when the clips were prepared); they count
        as skipped in the first line and are listed with the others."""
        lost = {u.name for u in unreadable}
        kept = [r for r in self.records if r.patient not in lost]
        counts = {q: sum(r.quality == q for r in kept) for q in QUALITIES}
        skipped = (*self.skipped, *unreadable)
        lines = [
            f"CAMUS {self.view} at {self.root}: {len(kept)} of {len(self.patients)} patients read "
            f"({', '.join(f'{q} {n}' for q, n in counts.items())}), {len(skipped)} skipped"
        ]
        lines += [f"  skipped {s.name}: {s.reason}" for s in skipped]
        return "\n".join(lines)


def read_camus(root: PathLike, view: str = "4CH", *, on_error: OnError = "skip") -> CamusDataset:
    """Reads every patient of a CAMUS download (either release, see the module doc) in ``view``.

    Args:
        root: the download (or its ``CAMUS_public``, ``database_nifti``, ``training`` folder).
        view: ``"4CH"`` (the paper's) or ``"2CH"`` (``A4C``/``A2C`` accepted).
        on_error: ``"skip"`` leaves a bad patient out and lists it in ``skipped``; ``"raise"`` raises.

    Raises:
        CamusError: no patient folders, no readable patient at all, EFs given as fractions (every EF
            within 0-1, whatever ``on_error``), or (``on_error="raise"``) the first bad patient.
    """
    check_on_error(on_error)
    view = normalize_view(view)
    folders = find_patient_folders(root)
    records, skipped = [], []
    for folder, subset in folders:
        try:
            records.append(read_record(folder, view, subset))
        except CamusError as e:
            if on_error == "raise":
                raise
            skipped.append(Skipped(folder.name, str(folder), str(e)))
    if not records:
        raise CamusError(
            f"{root}: none of {len(folders)} patient folders is readable in view {view}; first problem: "
            f"{skipped[0].reason}"
        )
    problem = ef_labels.fractions_problem(r.ef for r in records)
    if problem:
        raise CamusError(
            f"{root}: the {len(records)} Info_{view}.cfg files read: {problem}; multiply each EF by 100 "
            f"(e.g. in {records[0].cfg_path})"
        )
    return CamusDataset(
        root=Path(root),
        view=view,
        records=tuple(records),
        skipped=tuple(skipped),
        patients=tuple(p.name for p, _ in folders),
        split_dir=find_split_dir(root),
    )
