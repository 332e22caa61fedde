"""Ultrasound DICOM (single- or multi-frame) -> uint8 frames, fps and image regions.

Decoding goes through pydicom 3's pixel backend (``pydicom.pixels``):

* native (uncompressed) MONOCHROME1/2, RGB, YBR_FULL(_422), PALETTE COLOR;
* RLE Lossless (pydicom's own numpy decoder, no extra package);
* JPEG Baseline 8-bit (1.2.840.10008.1.2.4.50) through Pillow. pydicom 3 decodes
  with ``as_rgb=True`` by default, i.e. YBR_FULL / YBR_FULL_422 pixel data comes
  back already converted to RGB (checked: its decoder reports PhotometricInterpretation
  RGB afterwards); we convert ourselves only when the decoder reports YCbCr.
* other JPEG flavours (lossless, JPEG-LS, JPEG 2000) work when the matching pydicom
  plugin (pylibjpeg-*, gdcm) is installed; otherwise the error names the file, the
  transfer syntax and pydicom's list of missing packages.
* MPEG-2 / MPEG-4 AVC (H.264) / HEVC video transfer syntaxes, which pydicom cannot
  decode: :meth:`DicomFile.video_stream` hands the encapsulated bitstream to
  :mod:`~coreecho_jax.data.video.video_io`, which decodes it with OpenCV's FFmpeg (checked with MPEG-2;
  H.264/HEVC rely on the FFmpeg decoders bundled with opencv-python-headless).

Frames are decoded one at a time (:meth:`DicomFile.iter_frames`), so a caller that shrinks each
frame never holds the full-resolution video. Pixel data that is not 8-bit is scaled to uint8
(unsigned: value * 255 / (2**BitsStored - 1); signed: the representable range
-2**(BitsStored-1) .. 2**(BitsStored-1) - 1, the same for every frame). MONOCHROME1 is inverted;
PALETTE COLOR goes through its LUT.

Frame rate, in order (:data:`FPS_TAGS`, the first usable one wins): FrameTime (ms/frame, fps =
1000/FrameTime: the acquisition timing of the frames stored), CineRate (the rate the modality meant the
loop to be replayed at, usually the acquisition rate), RecommendedDisplayFrameRate (a display hint), mean
of FrameTimeVector (ms, first entry skipped because it is the 0 offset of frame 0). If none is present,
fps is ``None``. Tags that disagree by more than 5% are named by :func:`fps_disagreement` (a note, the
winner is kept). The rate is never re-timed here.

What a DICOM object is, from its header alone (no pixel decoded): :func:`dicom_facts` (SOP class,
modality, study/series/SOP instance UIDs for joins, frames, transfer syntax, photometric interpretation,
regions, a timing-tag disagreement). :func:`cine_facts` is the one check that prediction
(:mod:`coreecho_jax.inference.quality`) and corpus preparation (:mod:`coreecho_jax.data.corpus.reading`)
share: a file that is not DICOM or whose image object lost its pixel data (damaged) is unreadable; an
object without pixel data (a structured report, a key object, a DICOMDIR) or of another modality than
ultrasound is no echo cine (:func:`cine_refusal`); a transfer syntax no installed plugin decodes is refused
naming what to install (:func:`decoder_of`, the one decoder table; :func:`transfer_syntax_support` lists
it for every syntax pydicom knows). A single frame is refused once decoded, as any still image
(:func:`~coreecho_jax.data.video.echo_loop.check_echo_loop`).

Layouts: ``[T, H, W]`` uint8 grayscale, ``[T, H, W, 3]`` uint8 RGB.
No TensorFlow here.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from coreecho_jax.data.video.video_types import (
    CropBox,
    NotAnEchoVideoError,
    VideoNotFoundError,
    VideoReadError,
    to_channels,
)

#: File name suffixes taken as DICOM without looking inside (files without one are recognised by
#: the 'DICM' magic).
DICOM_SUFFIXES = (".dcm", ".dicom", ".dic")

#: RegionSpatialFormat (0018,6012) value of a 2-D tissue/flow image region.
REGION_FORMAT_2D = 1

#: Timing tags in the order :func:`dicom_fps` trusts them (the first usable one wins).
FPS_TAGS = ("FrameTime", "CineRate", "RecommendedDisplayFrameRate", "FrameTimeVector")
#: Timing tags whose rates differ by more than this factor get a note (:func:`fps_disagreement`).
FPS_DISAGREE_RATIO = 1.05


class UltrasoundRegion(NamedTuple):
    """One item of SequenceOfUltrasoundRegions (0018,6011).

    ``box`` uses half-open pixel bounds: DICOM's RegionLocationMaxX1/MaxY1 are
    inclusive, so ``box.x1 = MaxX1 + 1``.
    """

    box: CropBox
    spatial_format: int | None  # 1 = 2D, 2 = M-mode, 3 = spectral, 4 = waveform, 5 = graphics
    data_type: int | None  # RegionDataType (0018,6014): 1 = tissue, 2 = colour flow, ...


def is_dicom_file(path: str | os.PathLike) -> bool:
    """True if ``path`` starts with the DICOM preamble magic 'DICM' at byte 128."""
    try:
        with open(path, "rb") as f:
            f.seek(128)
            return f.read(4) == b"DICM"
    except OSError:
        return False


def is_dicom_path(path: str | os.PathLike) -> bool:
    """True for a .dcm/.dicom/.dic suffix or the 'DICM' magic at byte 128."""
    return Path(path).suffix.lower() in DICOM_SUFFIXES or is_dicom_file(path)


def _read_dataset(path: Path, *, stop_before_pixels: bool = False, defer_size: int | None = None):
    import pydicom  # local import: pydicom is only needed for DICOM input
    from pydicom.errors import InvalidDicomError

    if not path.exists():
        raise VideoNotFoundError(f"{path}: file not found (expected a DICOM file)")
    try:
        return pydicom.dcmread(
            path, stop_before_pixels=stop_before_pixels, defer_size=defer_size, force=not is_dicom_file(path)
        )
    except (InvalidDicomError, OSError, ValueError, EOFError, KeyError) as e:
        raise VideoReadError(f"{path}: not a readable DICOM file ({type(e).__name__}: {e})") from e


def _transfer_syntax(ds: Any) -> Any:
    meta = getattr(ds, "file_meta", None)
    return None if meta is None else meta.get("TransferSyntaxUID", None)


def _positive(value: Any) -> float | None:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if np.isfinite(v) and v > 0 else None


def dicom_fps_candidates(ds: Any) -> dict[str, float]:
    """The fps every usable timing tag gives, in :data:`FPS_TAGS` order (``{}`` when none is usable)."""
    out = {}
    frame_time = _positive(ds.get("FrameTime"))
    if frame_time is not None:
        out["FrameTime"] = 1000.0 / frame_time
    for keyword in ("CineRate", "RecommendedDisplayFrameRate"):
        rate = _positive(ds.get(keyword))
        if rate is not None:
            out[keyword] = rate
    vector = ds.get("FrameTimeVector")
    if vector is not None:
        try:
            values = np.atleast_1d(np.asarray(vector, dtype=np.float64))
        except (TypeError, ValueError):
            values = np.zeros(0)
        # Entry 0 is the time offset of frame 0 (normally 0 ms); the rest are increments.
        increments = values[1:] if values.size > 1 else values
        increments = increments[np.isfinite(increments) & (increments > 0)]
        if increments.size:
            out["FrameTimeVector"] = 1000.0 / float(increments.mean())
    return out


def dicom_fps(ds: Any) -> tuple[float | None, str]:
    """Frames per second from a DICOM dataset and the tag it came from (the first of :data:`FPS_TAGS`).

    Returns:
        ``(fps, source)``; ``(None, reason)`` when no timing tag is usable.
    """
    candidates = dicom_fps_candidates(ds)
    if candidates:
        keyword = next(iter(candidates))
        return candidates[keyword], keyword
    return None, ("no FrameTime, CineRate, RecommendedDisplayFrameRate or FrameTimeVector: fps unknown")


def fps_disagreement(ds: Any) -> str | None:
    """A note when the timing tags give rates more than :data:`FPS_DISAGREE_RATIO` apart, else None."""
    candidates = dicom_fps_candidates(ds)
    if len(candidates) < 2 or max(candidates.values()) <= FPS_DISAGREE_RATIO * min(candidates.values()):
        return None
    (winner, fps), *_ = candidates.items()
    given = ", ".join(f"{k} {v:.2f} fps" for k, v in candidates.items())
    return f"the timing tags disagree ({given}); {winner} wins: {fps:.2f} fps"


def read_header(path: str | os.PathLike) -> Any:
    """The pydicom dataset of a file with its large values (pixel data) left unread.

    Values over 4 KiB are read only when accessed, so ``"PixelData" in ds`` answers without reading
    the pixels.

    Raises:
        VideoNotFoundError / VideoReadError: missing, or not a readable DICOM file.
    """
    return _read_dataset(Path(path), defer_size=4096)


def dicom_regions(ds: Any) -> list[UltrasoundRegion]:
    """Regions of SequenceOfUltrasoundRegions as written (not clipped to the image); [] if absent.

    A region may reach past the image, e.g. when a file was downscaled and its region tags were
    kept; :func:`~coreecho_jax.data.video.video_io.load_echo_video` then does not trust it.
    """
    regions = []
    for item in ds.get("SequenceOfUltrasoundRegions", None) or []:
        try:
            x0 = int(item.RegionLocationMinX0)
            y0 = int(item.RegionLocationMinY0)
            x1 = int(item.RegionLocationMaxX1) + 1
            y1 = int(item.RegionLocationMaxY1) + 1
        except (AttributeError, TypeError, ValueError):
            continue
        if x1 <= x0 or y1 <= y0:
            continue
        fmt = item.get("RegionSpatialFormat")
        dtype = item.get("RegionDataType")
        regions.append(
            UltrasoundRegion(
                CropBox(x0, y0, x1, y1),
                None if fmt is None else int(fmt),
                None if dtype is None else int(dtype),
            )
        )
    return regions


def largest_2d_region(regions: list[UltrasoundRegion]) -> UltrasoundRegion | None:
    """The largest region with RegionSpatialFormat 2D; if none is 2D, the largest overall."""
    if not regions:
        return None
    two_d = [r for r in regions if r.spatial_format == REGION_FORMAT_2D]
    return max(two_d or regions, key=lambda r: r.box.area)


def _to_uint8(arr: np.ndarray, ds: Any) -> np.ndarray:
    """Scales non-uint8 pixel data to uint8 (unsigned: by BitsStored; else by data range)."""
    if arr.dtype == np.uint8:
        return arr
    if np.issubdtype(arr.dtype, np.unsignedinteger):
        bits = int(ds.get("BitsStored", 8 * arr.dtype.itemsize) or 8 * arr.dtype.itemsize)
        scaled = arr.astype(np.float32) * (255.0 / float(2**bits - 1))
    else:
        bits = int(ds.get("BitsStored", 8 * arr.dtype.itemsize) or 8 * arr.dtype.itemsize)
        lo = -float(2 ** (bits - 1))
        scaled = (arr.astype(np.float32) - lo) * (255.0 / float(2**bits - 1))
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


#: Container suffix that lets FFmpeg probe each encapsulated video transfer syntax.
#: (FFmpeg probes the content anyway; the suffix is a hint.)
_VIDEO_SUFFIX = {
    "1.2.840.10008.1.2.4.100": ".mpg",  # MPEG-2 MP@ML
    "1.2.840.10008.1.2.4.101": ".mpg",  # MPEG-2 MP@HL
    "1.2.840.10008.1.2.4.102": ".h264",  # MPEG-4 AVC/H.264 HP@4.1
    "1.2.840.10008.1.2.4.103": ".h264",  # ... BD-compatible
    "1.2.840.10008.1.2.4.104": ".h264",  # ... for 2D video
    "1.2.840.10008.1.2.4.105": ".h264",  # ... for 3D video
    "1.2.840.10008.1.2.4.106": ".h264",  # ... stereo
    "1.2.840.10008.1.2.4.107": ".hevc",  # HEVC/H.265 Main
    "1.2.840.10008.1.2.4.108": ".hevc",  # HEVC/H.265 Main 10
}


class DicomFile:
    """An opened (multi-frame) ultrasound DICOM: header facts now, pixels frame by frame on demand.

    Attributes:
        path: the file.
        ds: the pydicom dataset (pixel data still encoded).
        fps: from the timing tags, or ``None``; ``metadata["fps_source"]`` says which tag.
        height, width, num_frames: Rows, Columns, NumberOfFrames.
        metadata: ``format, transfer_syntax, photometric_interpretation, fps_source,
            ultrasound_regions`` (and ``decoded_photometric_interpretation`` once a frame is decoded).

    Raises:
        VideoReadError: missing/unreadable file, no PixelData, no TransferSyntaxUID.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        ds = _read_dataset(self.path)
        if "PixelData" not in ds:
            kinds = [k for k in ("FloatPixelData", "DoubleFloatPixelData") if k in ds]
            extra = f" (it has {', '.join(kinds)}, which is not supported)" if kinds else ""
            raise VideoReadError(
                f"{self.path}: DICOM file has no PixelData (7FE0,0010); expected an image or "
                f"multi-frame ultrasound object{extra}"
            )
        self.tsyntax = _transfer_syntax(ds)
        if self.tsyntax is None:
            raise VideoReadError(f"{self.path}: DICOM file has no TransferSyntaxUID (0002,0010)")
        self.ds = ds
        self.fps, fps_source = dicom_fps(ds)
        self.height = int(ds.get("Rows", 0) or 0)
        self.width = int(ds.get("Columns", 0) or 0)
        self.num_frames = int(ds.get("NumberOfFrames", 1) or 1)
        self.metadata: dict[str, Any] = {
            "format": "dicom",
            "transfer_syntax": str(self.tsyntax),
            "photometric_interpretation": str(ds.get("PhotometricInterpretation", "")),
            "fps_source": fps_source,
            "ultrasound_regions": dicom_regions(ds),
        }

    @property
    def is_video_stream(self) -> bool:
        """True for the MPEG-2 / H.264 / HEVC transfer syntaxes (decoded by FFmpeg, not pydicom)."""
        from pydicom.uid import MPEGTransferSyntaxes

        return self.tsyntax in MPEGTransferSyntaxes

    def video_stream(self) -> tuple[bytes, str]:
        """The encapsulated video bitstream and a file suffix that lets FFmpeg probe it."""
        from pydicom.encaps import generate_fragments

        uid = str(self.tsyntax).removesuffix(".1")  # the '.1' variants are the fragmentable ones
        return b"".join(generate_fragments(self.ds.PixelData)), _VIDEO_SUFFIX.get(uid, ".bin")

    def iter_frames(self, channels: int) -> Iterator[np.ndarray]:
        """Decodes frame by frame: uint8 ``[H, W]`` (``channels=1``) or RGB ``[H, W, 3]`` (3).

        pydicom 3's decoder converts YBR_FULL / YBR_FULL_422 to RGB by default
        (``as_rgb=True``) and reports the resulting photometric interpretation, which
        we use so that nothing is converted twice.
        """
        from pydicom.pixels import get_decoder

        if self.is_video_stream:
            raise VideoReadError(
                f"{self.path}: {self.tsyntax.name} pixel data is a video stream; use video_stream()"
            )
        try:
            decoder = get_decoder(self.tsyntax)
        except NotImplementedError as e:
            raise VideoReadError(
                f"{self.path}: pydicom has no decoder for transfer syntax {self.tsyntax.name} ({self.tsyntax})"
            ) from e
        frames = decoder.iter_array(self.ds) if decoder.is_encapsulated else self._native_frames(decoder)
        while True:
            try:
                item = next(frames, None)
            except (RuntimeError, ValueError, AttributeError, KeyError, TypeError) as e:
                missing = ""
                if decoder.missing_dependencies:
                    missing = "; missing decoder packages: " + ", ".join(decoder.missing_dependencies)
                raise VideoReadError(
                    f"{self.path}: cannot decode DICOM pixel data (transfer syntax {self.tsyntax.name}"
                    f"{missing}): {type(e).__name__}: {e}"
                ) from e
            if item is None:
                return
            arr, changes = item
            frame, pi = self._to_display(arr, changes)
            self.metadata["decoded_photometric_interpretation"] = pi
            yield to_channels(frame, channels)

    def _native_frames(self, decoder: Any) -> Iterator[tuple[np.ndarray, dict]]:
        """Uncompressed pixel data: decoded at once (its bytes are in memory already), then frame by frame.

        (pydicom 3.0's per-frame native path miscounts the length of YBR_FULL_422 data.)
        """
        arr, changes = decoder.as_array(self.ds)
        samples = int(self.ds.get("SamplesPerPixel", 1) or 1)
        if arr.ndim == (2 if samples == 1 else 3):
            arr = arr[None]
        for frame in arr:
            yield frame, changes

    def _to_display(self, arr: np.ndarray, changes: dict) -> tuple[np.ndarray, str]:
        """One decoded frame -> uint8 grey ``[H, W]`` or RGB ``[H, W, 3]`` and its interpretation."""
        from pydicom.pixels.processing import apply_color_lut, convert_color_space

        ds = self.ds
        pi = str(changes.get("photometric_interpretation", ds.get("PhotometricInterpretation", "")))
        if pi == "PALETTE COLOR":
            arr = apply_color_lut(arr, ds)
            if arr.dtype != np.uint8:
                arr = (arr >> 8).astype(np.uint8) if arr.max() > 255 else arr.astype(np.uint8)
            pi = "RGB"
        arr = _to_uint8(arr, ds)
        if pi in ("YBR_FULL", "YBR_FULL_422") and arr.shape[-1] == 3:
            arr = convert_color_space(arr, pi, "RGB")
            pi = "RGB"
        if pi == "MONOCHROME1":
            arr = 255 - arr
        if arr.ndim == 3 and arr.shape[-1] == 1:
            arr = arr[..., 0]
        if arr.ndim not in (2, 3):
            raise VideoReadError(f"{self.path}: expected decoded frames [H, W] or [H, W, 3], got {arr.shape}")
        return np.ascontiguousarray(arr), pi


def probe_dicom(path: str | os.PathLike) -> dict[str, Any]:
    """Frame count, fps and size from the DICOM header only (pixel data not read)."""
    path = Path(path)
    ds = _read_dataset(path, stop_before_pixels=True)
    fps, fps_source = dicom_fps(ds)
    return {
        "num_frames": int(ds.get("NumberOfFrames", 1) or 1),
        "fps": fps,
        "height": int(ds.get("Rows", 0) or 0),
        "width": int(ds.get("Columns", 0) or 0),
        "fps_source": fps_source,
    }


# ----------------------------------------------------------------------------- what a DICOM object is


class DicomFacts(NamedTuple):
    """What the header of a DICOM file says about its object (no pixel data decoded).

    ``sop_class`` is the SOP class's name (or its UID when pydicom does not know it); the UIDs,
    ``modality``, ``transfer_syntax`` (the UID of the pixel data's encoding) and
    ``photometric_interpretation`` are None when absent; ``num_frames`` is NumberOfFrames (1 when absent);
    ``regions`` the number of items of SequenceOfUltrasoundRegions; ``fps_note`` what
    :func:`fps_disagreement` says (None when the timing tags agree).
    """

    sop_class: str
    modality: str | None
    study_uid: str | None
    series_uid: str | None
    sop_uid: str | None
    num_frames: int
    has_pixels: bool
    transfer_syntax: str | None
    regions: int
    photometric_interpretation: str | None
    fps_note: str | None


#: :attr:`DicomFacts.sop_class` of a file without SOPClassUID.
UNKNOWN_SOP_CLASS = "unknown SOP class"


class NoDecoderError(VideoReadError):
    """A DICOM whose transfer syntax no installed plugin decodes (the message names what to install)."""


def dicom_facts(path: str | os.PathLike) -> DicomFacts:
    """The :class:`DicomFacts` of a DICOM file, read from its header (the pixel data is not loaded).

    Raises:
        VideoNotFoundError / VideoReadError: a missing or unreadable file.
    """
    ds = read_header(path)

    def text(keyword: str) -> str | None:
        value = ds.get(keyword)
        return None if value in (None, "") else str(value)

    sop_class = ds.get("SOPClassUID")
    syntax = _transfer_syntax(ds)
    try:
        frames = int(ds.get("NumberOfFrames", 1) or 1)
    except (TypeError, ValueError):
        frames = 1
    return DicomFacts(
        sop_class=UNKNOWN_SOP_CLASS if sop_class is None else str(getattr(sop_class, "name", sop_class)),
        modality=text("Modality"),
        study_uid=text("StudyInstanceUID"),
        series_uid=text("SeriesInstanceUID"),
        sop_uid=text("SOPInstanceUID"),
        num_frames=frames,
        has_pixels="PixelData" in ds,
        transfer_syntax=None if syntax is None else str(syntax),
        regions=len(ds.get("SequenceOfUltrasoundRegions", None) or []),
        photometric_interpretation=text("PhotometricInterpretation"),
        fps_note=fps_disagreement(ds),
    )


def cine_refusal(facts: DicomFacts) -> str | None:
    """Why a DICOM object cannot be an echo cine from its header alone (one line), or None.

    Refused: no pixel data (a structured report, a key object, a presentation state, a DICOMDIR, ...) and
    another modality than ultrasound (Modality given and not ``US``). (A single frame is refused once
    decoded, as any still image: :func:`~coreecho_jax.data.video.echo_loop.check_echo_loop`.)
    """
    if not facts.has_pixels:
        return f"a DICOM {facts.sop_class} object without pixel data, not an echo cine"
    if facts.modality not in (None, "US"):
        return f"a DICOM {facts.sop_class} object of Modality {facts.modality}, not an ultrasound cine"
    return None


def cine_facts(path: str | os.PathLike) -> DicomFacts:
    """The :class:`DicomFacts` of a DICOM file that can be an echo cine (module doc), before any pixel is
    decoded.

    Raises:
        VideoNotFoundError: no such file.
        VideoReadError: not a DICOM file, or an image object without its pixel data (damaged), or no
            TransferSyntaxUID.
        NotAnEchoVideoError: no echo cine (:func:`cine_refusal`).
        NoDecoderError: a transfer syntax no installed plugin decodes (:func:`decoder_of`).
    """
    facts = dicom_facts(path)
    if facts.sop_class == UNKNOWN_SOP_CLASS and not is_dicom_file(path):
        raise VideoReadError(f"{path}: not a DICOM file (no 'DICM' magic at byte 128, no SOP class)")
    if not facts.has_pixels and facts.sop_class == UNKNOWN_SOP_CLASS:
        raise VideoReadError(
            f"{path}: a DICOM file with neither a SOP class nor pixel data: truncated or damaged"
        )
    if not facts.has_pixels and facts.sop_class.endswith("Image Storage"):
        raise VideoReadError(
            f"{path}: a DICOM {facts.sop_class} object without its pixel data: truncated or damaged"
        )
    refusal = cine_refusal(facts)
    if refusal:
        raise NotAnEchoVideoError(f"{path}: {refusal}")
    if facts.transfer_syntax is None:
        raise VideoReadError(f"{path}: DICOM file has no TransferSyntaxUID (0002,0010)")
    decoder, why = decoder_of(facts.transfer_syntax)
    if decoder is None:
        raise NoDecoderError(f"{path}: {why}")
    return facts


#: How a transfer syntax without a pydicom decoder is read: the encapsulated video streams go to FFmpeg.
VIDEO_STREAM_DECODER = "FFmpeg (OpenCV)"


def decoder_of(transfer_syntax: str) -> tuple[str | None, str | None]:
    """``(decoder, None)``: what decodes pixel data of this transfer syntax here (``pydicom`` for native
    data, the installed pydicom plugins, e.g. ``pillow``, or :data:`VIDEO_STREAM_DECODER`); else
    ``(None, reason)``: no decoder is installed, and the reason names what to install."""
    from pydicom.pixels import get_decoder
    from pydicom.uid import UID, MPEGTransferSyntaxes

    uid = UID(transfer_syntax)
    if uid in MPEGTransferSyntaxes:
        return VIDEO_STREAM_DECODER, None
    try:
        decoder = get_decoder(uid)
    except NotImplementedError:
        return None, f"transfer syntax {uid.name} ({uid}): pydicom has no decoder for it"
    if not decoder.is_available:
        missing = "; ".join(decoder.missing_dependencies) or "a pydicom pixel data plugin"
        return None, f"transfer syntax {uid.name} ({uid}): no decoder installed; install {missing}"
    return ", ".join(decoder.available_plugins) or "pydicom", None


def transfer_syntax_support() -> list[tuple[str, str, str | None, str | None]]:
    """``(uid, name, decoder, reason)`` for every transfer syntax pydicom knows (:func:`decoder_of`): the
    table of which compressed DICOM this installation reads, and with what."""
    from pydicom.uid import UID, AllTransferSyntaxes

    return [(str(uid), UID(uid).name, *decoder_of(uid)) for uid in sorted(AllTransferSyntaxes)]
