"""Synthetic ultrasound DICOM cines in the MIMIC-IV-ECHO folder layout, with a few bad files.

::

    root/
      files/pNN/pNNNNNNNN/sNNNNNNNN/NNNNNNNN_NNNN.dcm   one cine per file (subject, study, file number)
      labels.csv            path,ef,edv,esv   (a manifest of every file, labels for the cines; paths
                            relative to root)
      synthetic.json        the generating config (marks the folder as ours, makes writing idempotent)

Each cine is the heart of :mod:`.heart` (``video_rng(seed, i)`` draws file ``i``: its frame count, frame
rate, encoding and timing tags too), drawn small (``size`` 48 px) inside a frame with a static text bar
above it and black margins beside it; its SequenceOfUltrasoundRegions names the drawn square. Most
files are native MONOCHROME2; ``jpeg_fraction`` are JPEG Baseline YBR_FULL_422 colour (MIMIC-IV-ECHO's
usual form), ``rgb_fraction`` native RGB. Most say their rate with FrameTime; others with CineRate or
RecommendedDisplayFrameRate only, and a few with a FrameTime and a RecommendedDisplayFrameRate that
disagrees. ``slow_fraction`` are recorded at 30 fps (far from the training data's 50: flagged).
UIDs are derived from the seed, so the files are the same at every write.

With ``bad_files`` the tree also holds, under subject ``p19/p19999999``, one file of each kind a corpus
preparation must refuse: a structured report (no pixel data), a single frame, a truncated cine, a file
that is not DICOM, a cine whose frames are all the same picture and a multi-frame object of another
modality (an X-ray angiography run). They are listed in labels.csv too.

``coreecho synthetic --dataset=dicom --root=DIR [--n=1000] [--seed=0] [--nobad_files]``.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import io
import math
from pathlib import Path
from typing import Any

import numpy as np

from coreecho_jax.data.synthetic import heart
from coreecho_jax.data.synthetic.camus import write_once
from coreecho_jax.errors import ConfigError

#: Bump when the written files change.
FORMAT_VERSION = 2
KIND = "dicom_corpus"
FILES_DIR = "files"
LABELS = "labels.csv"
#: Rows of the static text bar above the image, and the black columns on each side of it.
BAR_ROWS = 12
SIDE_COLUMNS = 8
#: The rate of the "slow" recordings (far from the drawing's and the training data's 50 fps).
SLOW_FPS = 30.0
#: The bad files written with ``bad_files``: name -> what it is.
BAD_FILES = {
    "59999999_9001.dcm": "structured report (no pixel data)",
    "59999999_9002.dcm": "single frame",
    "59999999_9003.dcm": "truncated cine",
    "59999999_9004.dcm": "not a DICOM file",
    "59999999_9005.dcm": "still cine (every frame the same picture)",
    "59999999_9006.dcm": "another modality (an X-ray angiography multi-frame)",
}
BAD_FOLDER = "p19/p19999999/s59999999"


@dataclasses.dataclass(frozen=True)
class DicomCorpusConfig(heart.DrawingConfig):
    """What to write: the drawing's distributions plus the corpus fields.

    Attributes:
        n_files: cines (the bad files come on top).
        seed: master seed; file ``i`` uses ``video_rng(seed, i)``.
        size: side of the drawn square (pixels); the DICOM frame is ``size + BAR_ROWS`` rows by
            ``size + 2 SIDE_COLUMNS`` columns.
        min_frames, max_frames: inclusive range of frames per cine.
        slow_fraction: share of cines recorded at :data:`SLOW_FPS`.
        jpeg_fraction, rgb_fraction: shares of JPEG Baseline colour and native RGB cines.
        bad_files: also write :data:`BAD_FILES`.
    """

    size: int = 48
    n_files: int = 1000
    seed: int = 0
    min_frames: int = 24
    max_frames: int = 40
    slow_fraction: float = 0.05
    jpeg_fraction: float = 0.1
    rgb_fraction: float = 0.1
    bad_files: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.n_files < 1:
            raise ConfigError(f"DicomCorpusConfig.n_files must be >= 1, got {self.n_files}")
        if not 2 <= self.min_frames <= self.max_frames:
            raise ConfigError(
                f"DicomCorpusConfig: need 2 <= min_frames <= max_frames, got {self.min_frames}, {self.max_frames}"
            )
        shares = (self.slow_fraction, self.jpeg_fraction, self.rgb_fraction)
        if min(shares) < 0 or self.jpeg_fraction + self.rgb_fraction > 1 or self.slow_fraction > 1:
            raise ConfigError(
                f"DicomCorpusConfig: fractions must lie in [0, 1] (jpeg + rgb <= 1), got {shares}"
            )


def _hash(*words: Any) -> int:
    return int.from_bytes(hashlib.blake2b(":".join(map(str, words)).encode(), digest_size=8).digest(), "big")


def layout(n_files: int, seed: int) -> list[str]:
    """Relative paths (under ``files/``) of the ``n_files`` cines: subjects of 1-3 studies of 1-6 files."""
    paths: list[str] = []
    subject, study = 0, 0
    while len(paths) < n_files:
        h = _hash("subject", seed, subject)
        subject_id = 10_000_000 + (subject * 104_729 + h % 97) % 8_999_999
        for _ in range(1 + h % 3):
            study_id = 50_000_000 + study * 13 + _hash("study", seed, study) % 13
            count = 1 + _hash("files", seed, study) % 6
            for j in range(count):
                paths.append(
                    f"p{subject_id // 1_000_000}/p{subject_id}/s{study_id}/{study_id}_{j + 1:04d}.dcm"
                )
            study += 1
        subject += 1
    return paths[:n_files]


def _uid(*words: Any) -> str:
    from pydicom.uid import generate_uid

    return generate_uid(entropy_srcs=[str(w) for w in words])


def _frame_image(frames: np.ndarray, mark: int) -> np.ndarray:
    """Drawn ``[T, S, S]`` -> ``[T, S + BAR_ROWS, S + 2 SIDE_COLUMNS]``: a static bar above, black beside."""
    t, s, _ = frames.shape
    image = np.zeros((t, s + BAR_ROWS, s + 2 * SIDE_COLUMNS), np.uint8)
    image[:, BAR_ROWS:, SIDE_COLUMNS : SIDE_COLUMNS + s] = frames
    for k in range(4):  # "text": blocks whose widths depend on the file
        x0 = 4 + k * 12
        image[:, 3:9, x0 : x0 + 4 + (mark >> (2 * k)) % 5] = 200
    return image


def _dataset(config: DicomCorpusConfig, key: str, sop_class: str) -> Any:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian

    subject, study = key.split("/")[1][1:], key.split("/")[2][1:]
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.file_meta.MediaStorageSOPInstanceUID = _uid(config.seed, "sop", key)
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = _uid(config.seed, "study", study)
    ds.SeriesInstanceUID = _uid(config.seed, "series", key)
    ds.PatientID, ds.StudyID, ds.Modality = subject, study, "US"
    return ds


def _region(size: int) -> Any:
    from pydicom.dataset import Dataset

    item = Dataset()
    item.RegionSpatialFormat, item.RegionDataType = 1, 1
    item.RegionLocationMinX0, item.RegionLocationMinY0 = SIDE_COLUMNS, BAR_ROWS
    item.RegionLocationMaxX1, item.RegionLocationMaxY1 = SIDE_COLUMNS + size - 1, BAR_ROWS + size - 1
    return item


def _set_timing(ds: Any, fps: float, u: float) -> None:
    """FrameTime (70%), CineRate only (15%), RecommendedDisplayFrameRate only (10%), or a FrameTime
    with a disagreeing RecommendedDisplayFrameRate (5%)."""
    if u < 0.70 or u >= 0.95:
        ds.FrameTime = f"{1000.0 / fps:.10g}"
        if u >= 0.95:
            ds.RecommendedDisplayFrameRate = round(fps * 1.5)
    elif u < 0.85:
        ds.CineRate = round(fps)
    else:
        ds.RecommendedDisplayFrameRate = round(fps)


def _jpeg_frames(rgb: np.ndarray) -> list[bytes]:
    from PIL import Image

    out = []
    for frame in rgb:
        buf = io.BytesIO()
        Image.fromarray(frame, "RGB").save(buf, format="JPEG", quality=95, subsampling=1)  # 4:2:2
        out.append(buf.getvalue())
    return out


def _set_pixels(ds: Any, image: np.ndarray, encoding: str) -> None:
    from pydicom.encaps import encapsulate
    from pydicom.uid import JPEGBaseline8Bit

    t, h, w = image.shape[:3]
    ds.Rows, ds.Columns, ds.NumberOfFrames = h, w, t
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    if encoding == "grey":
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.PixelData = np.ascontiguousarray(image).tobytes()
        return
    rgb = np.repeat(image[..., None], 3, axis=-1)
    rgb[:, 3:9, :, 0] = np.maximum(rgb[:, 3:9, :, 0], 90)  # a tinted bar: the file is colour
    ds.SamplesPerPixel, ds.PlanarConfiguration = 3, 0
    if encoding == "rgb":
        ds.PhotometricInterpretation = "RGB"
        ds.PixelData = np.ascontiguousarray(rgb).tobytes()
    else:
        ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
        ds.PhotometricInterpretation = "YBR_FULL_422"
        ds.PixelData = encapsulate(_jpeg_frames(rgb))
        ds["PixelData"].VR = "OB"


def draw_cine(config: DicomCorpusConfig, index: int) -> tuple[heart.DrawnVideo, float, str, float]:
    """File ``index``'s drawn video, frame rate, encoding (``grey``/``rgb``/``jpeg``) and timing draw."""
    rng = heart.video_rng(config.seed, index)
    fps = SLOW_FPS if rng.random() < config.slow_fraction else config.fps
    u = rng.random()
    encoding = (
        "jpeg"
        if u < config.jpeg_fraction
        else "rgb"
        if u < config.jpeg_fraction + config.rgb_fraction
        else "grey"
    )
    timing = float(rng.random())
    frames = int(rng.integers(config.min_frames, config.max_frames + 1))
    drawing = dataclasses.replace(config, fps=fps)
    return heart.draw_video(heart.sample_heart_params(rng, drawing, frames), rng), fps, encoding, timing


def write_cine(config: DicomCorpusConfig, index: int, key: str, path: Path) -> heart.DrawnVideo:
    """Draws file ``index`` and writes it as an ultrasound multi-frame DICOM at ``path``."""
    from pydicom.uid import UltrasoundMultiFrameImageStorage

    video, fps, encoding, timing = draw_cine(config, index)
    ds = _dataset(config, key, UltrasoundMultiFrameImageStorage)
    _set_timing(ds, fps, timing)
    ds.SequenceOfUltrasoundRegions = [_region(config.size)]
    _set_pixels(ds, _frame_image(video.frames, _hash("mark", config.seed, index)), encoding)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return video


def _write_bad_files(config: DicomCorpusConfig, files: Path) -> None:
    from pydicom.uid import (
        ComprehensiveSRStorage,
        UltrasoundImageStorage,
        UltrasoundMultiFrameImageStorage,
        XRayAngiographicImageStorage,
    )

    folder = files / BAD_FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    names = list(BAD_FILES)
    key = f"{BAD_FOLDER}/{names[0]}"
    report = _dataset(config, key, ComprehensiveSRStorage)
    report.Modality, report.ValueType = "SR", "CONTAINER"
    report.save_as(folder / names[0], enforce_file_format=True)
    video, fps, _, _ = draw_cine(config, config.n_files)
    single = _dataset(config, f"{BAD_FOLDER}/{names[1]}", UltrasoundImageStorage)
    _set_pixels(single, _frame_image(video.frames[:1], 1), "grey")
    single.save_as(folder / names[1], enforce_file_format=True)
    whole = folder / names[2]
    write_cine(config, config.n_files + 1, f"{BAD_FOLDER}/{names[2]}", whole)
    data = whole.read_bytes()
    whole.write_bytes(data[: len(data) * 3 // 5])
    (folder / names[3]).write_bytes(
        np.random.default_rng(config.seed).integers(0, 256, 4096, np.uint8).tobytes()
    )
    still = _dataset(config, f"{BAD_FOLDER}/{names[4]}", UltrasoundMultiFrameImageStorage)
    still.FrameTime = f"{1000.0 / fps:.10g}"
    _set_pixels(still, _frame_image(np.repeat(video.frames[:1], 30, axis=0), 5), "grey")
    still.save_as(folder / names[4], enforce_file_format=True)
    angio = _dataset(config, f"{BAD_FOLDER}/{names[5]}", XRayAngiographicImageStorage)
    angio.Modality, angio.FrameTime = "XA", f"{1000.0 / fps:.10g}"
    _set_pixels(angio, _frame_image(video.frames, 6), "grey")
    angio.save_as(folder / names[5], enforce_file_format=True)


def _label(x: float) -> str:
    return "" if math.isnan(x) else f"{x:.4f}"


def _write_files(config: DicomCorpusConfig, root: Path) -> None:
    files = root / FILES_DIR
    rows = []
    for index, key in enumerate(layout(config.n_files, config.seed)):
        video = write_cine(config, index, key, files / key)
        rows.append((key, video.ef, video.edv, video.esv))
    if config.bad_files:
        _write_bad_files(config, files)
        rows += [(f"{BAD_FOLDER}/{name}", math.nan, math.nan, math.nan) for name in BAD_FILES]
    text = "path,ef,edv,esv\n" + "".join(
        f"{FILES_DIR}/{key},{_label(ef)},{_label(edv)},{_label(esv)}\n" for key, ef, edv, esv in rows
    )
    (root / LABELS).write_text(text)


def write_dicom_corpus(
    root: str | Path, config: DicomCorpusConfig | dict[str, Any] | None = None, **overrides: Any
) -> Path:
    """Writes the synthetic corpus under ``root`` (module doc), once: idempotent for the same config,
    refuses a folder holding anything else (``DatasetExistsError``). Returns ``root``."""
    cfg = DicomCorpusConfig.resolve(config, overrides)
    return write_once(root, KIND, FORMAT_VERSION, cfg, functools.partial(_write_files, cfg))
