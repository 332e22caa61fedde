"""One corpus file -> the video a prepared record stores, and the facts it keeps. No TensorFlow.

:func:`read_corpus_file` is the task a guarded child runs per file (:mod:`.guard`). It prepares the
video as single-file prediction does (:func:`~coreecho_jax.inference.video_clips.clips_for_video`):
:func:`~coreecho_jax.data.video.video_io.load_echo_video` (crop to the image region or sector, pad to a
square, resize to ``size``; the frame rate kept as the file says, never resampled), then
:func:`~coreecho_jax.data.video.echo_loop.check_echo_loop` (a still image or a loop too short for a
cardiac cycle is refused; a frame rate far from the training data's is flagged). For a DICOM file it
first makes prediction's header check (:func:`~coreecho_jax.data.video.dicom.cine_facts`: what is not
DICOM or is damaged, what is no ultrasound cine, a transfer syntax this install cannot decode), before any
pixel is decoded.

Every refusal raises a :class:`CorpusFileError` whose ``kind`` classes it in the report
(:data:`KINDS`).
"""

from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path
from typing import Any

from coreecho_jax.data.clips import ClipSpec
from coreecho_jax.data.echonet_layout import FRAME_SIZE
from coreecho_jax.data.video import dicom
from coreecho_jax.data.video.echo_loop import check_echo_loop
from coreecho_jax.data.video.video_io import load_echo_video
from coreecho_jax.data.video.video_types import NotAnEchoVideoError, VideoNotFoundError, VideoReadError
from coreecho_jax.errors import DataError

#: The classes of refused files in a preparation report, besides the guard's ``timeout``,
#: ``worker_died`` and ``memory``.
KINDS = {
    "not_found": "the file listed does not exist",
    "not_cine": "a DICOM object that is no ultrasound cine (a report, another modality)",
    "no_decoder": "a transfer syntax this install cannot decode",
    "unreadable": "not a readable DICOM or video file, or its pixel data does not decode (damaged)",
    "not_echo_loop": "a still image (a single frame, or frames all the same) or a loop too short for a "
    "cardiac cycle",
}


class CorpusFileError(DataError):
    """One corpus file refused; ``kind`` is one of :data:`KINDS`."""

    def __init__(self, message: str, kind: str):
        super().__init__(message)
        self.kind = kind


def _region_rows(regions: list[dicom.UltrasoundRegion]) -> list[list[int]]:
    """``[[x0, y0, x1, y1, spatial_format, data_type], ...]`` (half-open box; -1 for a missing tag)."""
    return [
        [
            *r.box,
            -1 if r.spatial_format is None else r.spatial_format,
            -1 if r.data_type is None else r.data_type,
        ]
        for r in regions
    ]


def dicom_record_facts(path: Path) -> dict[str, Any]:
    """The header facts a record keeps of a DICOM file (:func:`~coreecho_jax.data.video.dicom.cine_facts`).

    Raises:
        CorpusFileError: ``not_found``, ``unreadable``, ``not_cine`` or ``no_decoder``.
    """
    try:
        facts = dicom.cine_facts(path)
    except VideoNotFoundError as err:
        raise CorpusFileError(str(err), "not_found") from None
    except NotAnEchoVideoError as err:
        raise CorpusFileError(str(err), "not_cine") from None
    except dicom.NoDecoderError as err:
        raise CorpusFileError(str(err), "no_decoder") from None
    except VideoReadError as err:
        raise CorpusFileError(str(err), "unreadable") from None
    return {
        "study_uid": facts.study_uid or "",
        "series_uid": facts.series_uid or "",
        "sop_uid": facts.sop_uid or "",
        "transfer_syntax": facts.transfer_syntax or "",
        "photometric_interpretation": facts.photometric_interpretation or "",
        "notes": [facts.fps_note] if facts.fps_note else [],
    }


def _no_dicom_facts() -> dict[str, Any]:
    return {
        "study_uid": "",
        "series_uid": "",
        "sop_uid": "",
        "transfer_syntax": "",
        "photometric_interpretation": "",
        "notes": [],
    }


def read_corpus_file(path: str, size: int, crop: str, channels: int) -> tuple[dict[str, Any], bytes]:
    """Prepares one file as prediction does: ``(facts, frames)`` (the guarded task; module doc).

    Args:
        path: a DICOM or video file.
        size: side of the stored square frames (pixels).
        crop: ``load_echo_video``'s crop mode (``"auto"``: the DICOM region or the sector).
        channels: 3 = RGB frames, 1 = grey.

    Returns:
        ``facts``: ``shape`` (``[F, S, S]`` or ``[F, S, S, 3]``), ``fps`` (None if unknown),
        ``fps_source``, ``fps_far`` (far from the training data's rate), ``notes``, ``regions``,
        ``crop_mode``, ``crop_box`` ``[x0, y0, x1, y1]``, ``source_shape`` ``[F, H, W]``, the DICOM
        UIDs, transfer syntax and photometric interpretation (``''`` for a video file); and the
        uint8 frames as bytes (C order).

    Raises:
        CorpusFileError: the file is refused (its ``kind`` says why).
    """
    file = Path(path)
    is_dicom = dicom.is_dicom_path(file)
    facts = dicom_record_facts(file) if is_dicom else _no_dicom_facts()
    if not is_dicom and not file.exists():
        raise CorpusFileError(f"{file}: file not found", "not_found")
    try:
        video = load_echo_video(file, size=size, crop=crop, channels=channels)
    except VideoNotFoundError as err:
        raise CorpusFileError(str(err), "not_found") from None
    except DataError as err:
        raise CorpusFileError(str(err), "unreadable") from None
    spec = dataclasses.replace(ClipSpec(), channels=channels)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            notes = check_echo_loop(video, spec)
    except NotAnEchoVideoError as err:
        raise CorpusFileError(str(err), "not_echo_loop") from None
    meta = video.metadata
    if meta.get("crop_note"):
        notes.append(meta["crop_note"])
    facts.update(
        shape=list(video.frames.shape),
        fps=video.fps,
        fps_source=str(meta.get("fps_source", "")),
        fps_far=bool(caught),  # check_echo_loop warns only for a rate far from the training data's
        notes=facts["notes"] + notes,
        regions=_region_rows(meta.get("ultrasound_regions") or []),
        crop_mode=str(meta["crop_mode"]),
        crop_box=list(meta["crop_box"]),
        source_shape=list(meta["source_shape"][:3]),
    )
    return facts, video.frames.tobytes()


def warm_up() -> None:
    """Prepares a tiny in-memory-made DICOM cine once, so that the guarded child loads the decoders and
    OpenCV's buffers before its memory limit is set (:mod:`.guard`)."""
    import tempfile

    import numpy as np
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, UltrasoundMultiFrameImageStorage

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = UltrasoundMultiFrameImageStorage
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = "1.2.3.4"
    ds.Modality, ds.FrameTime = "US", "20"
    ds.Rows, ds.Columns, ds.NumberOfFrames = 32, 32, 24
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = (np.arange(24 * 32 * 32) % 251).astype(np.uint8).tobytes()
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "warm_up.dcm"
        ds.save_as(path, enforce_file_format=True)
        read_corpus_file(str(path), FRAME_SIZE, "auto", 3)
