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
  decode: the encapsulated bitstream goes through OpenCV's FFmpeg (checked with MPEG-2;
  H.264/HEVC rely on the FFmpeg decoders bundled with opencv-python-headless).

Pixel data that is not 8-bit is scaled to uint8 (unsigned: value * 255 / (2**BitsStored - 1);
signed: the data's min..max). MONOCHROME1 is inverted; PALETTE COLOR goes through its LUT.

Frame rate, in order: FrameTime (ms/frame, fps = 1000/FrameTime), CineRate,
RecommendedDisplayFrameRate, mean of FrameTimeVector (ms, first entry skipped
because it is the 0 offset of frame 0). If none is present, fps is ``None``.

Layouts: ``[T, H, W]`` uint8 grayscale, ``[T, H, W, 3]`` uint8 RGB.
No TensorFlow here.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from coreecho_jax.data.video_io import (
    CropBox,
    Video,
    VideoNotFoundError,
    VideoReadError,
    rgb_to_gray,
)

#: RegionSpatialFormat (0018,6012) value of a 2-D tissue/flow image region.
REGION_FORMAT_2D = 1


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


def _read_dataset(path: Path, *, stop_before_pixels: bool = False):
    import pydicom  # local import: pydicom is only needed for DICOM input
    from pydicom.errors import InvalidDicomError

    if not path.exists():
        raise VideoNotFoundError(f"{path}: file not found (expected a DICOM file)")
    try:
        return pydicom.dcmread(path, stop_before_pixels=stop_before_pixels, force=not is_dicom_file(path))
    except (InvalidDicomError, OSError, ValueError, EOFError, KeyError) as e:
        raise VideoReadError(f"{path}: not a readable DICOM file ({type(e).__name__}: {e})") from e


def _transfer_syntax(ds: Any) -> Any:
    meta = getattr(ds, "file_meta", None)
    return None if meta is None else meta.get("TransferSyntaxUID", None)


def dicom_fps(ds: Any) -> tuple[float | None, str]:
    """Frames per second from a DICOM dataset and the tag it came from.

    Returns:
        ``(fps, source)``; ``(None, reason)`` when no timing tag is usable.
    """

    def positive(value: Any) -> float | None:
        try:
            v = float(value)
        except (TypeError, ValueError):
            return None
        return v if np.isfinite(v) and v > 0 else None

    frame_time = positive(ds.get("FrameTime"))
    if frame_time is not None:
        return 1000.0 / frame_time, "FrameTime"
    for keyword in ("CineRate", "RecommendedDisplayFrameRate"):
        rate = positive(ds.get(keyword))
        if rate is not None:
            return rate, keyword
    vector = ds.get("FrameTimeVector")
    if vector is not None:
        values = np.atleast_1d(np.asarray(vector, dtype=np.float64))
        # Entry 0 is the time offset of frame 0 (normally 0 ms); the rest are increments.
        increments = values[1:] if values.size > 1 else values
        increments = increments[np.isfinite(increments) & (increments > 0)]
        if increments.size:
            return 1000.0 / float(increments.mean()), "FrameTimeVector"
    return None, ("no FrameTime, CineRate, RecommendedDisplayFrameRate or FrameTimeVector: fps unknown")


def dicom_regions(ds: Any) -> list[UltrasoundRegion]:
    """Regions of SequenceOfUltrasoundRegions, clipped to the image; [] if absent."""
    rows, cols = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
    regions = []
    for item in ds.get("SequenceOfUltrasoundRegions", None) or []:
        try:
            x0 = int(item.RegionLocationMinX0)
            y0 = int(item.RegionLocationMinY0)
            x1 = int(item.RegionLocationMaxX1) + 1
            y1 = int(item.RegionLocationMaxY1) + 1
        except (AttributeError, TypeError, ValueError):
            continue
        if cols:
            x0, x1 = max(0, x0), min(cols, x1)
        if rows:
            y0, y1 = max(0, y0), min(rows, y1)
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
        lo, hi = float(arr.min()), float(arr.max())
        scaled = (arr.astype(np.float32) - lo) * (255.0 / max(hi - lo, 1e-6))
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


def _decode_video_syntax(path: Path, ds: Any, tsyntax: Any) -> np.ndarray:
    """MPEG-2 / H.264 / HEVC pixel data (pydicom has no decoder): FFmpeg via OpenCV.

    The encapsulated fragments are one video bitstream; they are written to a
    temporary file and decoded like any other video. Returns RGB ``[T, H, W, 3]``.
    """
    import tempfile

    from pydicom.encaps import generate_fragments

    from coreecho_jax.data.video_io import read_opencv_video

    uid = str(tsyntax).removesuffix(".1")  # the '.1' variants are the fragmentable ones
    suffix = _VIDEO_SUFFIX.get(uid, ".bin")
    stream = b"".join(generate_fragments(ds.PixelData))
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp) / f"stream{suffix}"
        tmp_path.write_bytes(stream)
        try:
            return read_opencv_video(tmp_path, color=True).frames
        except VideoReadError as e:
            raise VideoReadError(
                f"{path}: FFmpeg could not decode the encapsulated {tsyntax.name} stream ({e})"
            ) from e


def _decode(path: Path, ds: Any) -> tuple[np.ndarray, str]:
    """Decodes all frames; returns (array, photometric interpretation after decoding).

    pydicom 3's decoder converts YBR_FULL / YBR_FULL_422 to RGB by default
    (``as_rgb=True``) and reports the resulting photometric interpretation, which
    we use so that nothing is converted twice. Note that ``pydicom.pixels.pixel_array``
    only fills ``ds_out`` when given a file, not a Dataset, hence ``Decoder.as_array``.
    """
    from pydicom.pixels import get_decoder
    from pydicom.pixels.processing import apply_color_lut, convert_color_space
    from pydicom.uid import MPEGTransferSyntaxes

    tsyntax = _transfer_syntax(ds)
    if tsyntax is None:
        raise VideoReadError(f"{path}: DICOM file has no TransferSyntaxUID (0002,0010)")
    if tsyntax in MPEGTransferSyntaxes:
        return _decode_video_syntax(path, ds, tsyntax), "RGB"
    try:
        decoder = get_decoder(tsyntax)
    except NotImplementedError as e:
        raise VideoReadError(
            f"{path}: pydicom has no decoder for transfer syntax {tsyntax.name} ({tsyntax})"
        ) from e
    try:
        arr, changes = decoder.as_array(ds)
    except (RuntimeError, ValueError, AttributeError, KeyError, TypeError) as e:
        missing = ""
        if decoder.missing_dependencies:
            missing = "; missing decoder packages: " + ", ".join(decoder.missing_dependencies)
        raise VideoReadError(
            f"{path}: cannot decode DICOM pixel data (transfer syntax {tsyntax.name}{missing}): "
            f"{type(e).__name__}: {e}"
        ) from e
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
    return arr, pi


def read_dicom(path: str | os.PathLike, *, color: bool = False) -> Video:
    """Reads a (multi-frame) ultrasound DICOM.

    Args:
        path: the DICOM file.
        color: keep RGB ``[T, H, W, 3]``; otherwise grayscale ``[T, H, W]`` (BT.601 luma of
            RGB input).

    Returns:
        ``Video`` with fps from the timing tags (``None`` if absent) and metadata keys
        ``format, transfer_syntax, photometric_interpretation, fps_source, ultrasound_regions``.

    Raises:
        VideoReadError: missing/unreadable file, no PixelData, undecodable pixel data,
            zero frames.
    """
    path = Path(path)
    ds = _read_dataset(path)
    if "PixelData" not in ds:
        kinds = [k for k in ("FloatPixelData", "DoubleFloatPixelData") if k in ds]
        extra = f" (it has {', '.join(kinds)}, which is not supported)" if kinds else ""
        raise VideoReadError(
            f"{path}: DICOM file has no PixelData (7FE0,0010); expected an image or "
            f"multi-frame ultrasound object{extra}"
        )
    arr, pi = _decode(path, ds)
    n_frames = int(ds.get("NumberOfFrames", 1) or 1)
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    if (samples == 1 and arr.ndim == 2) or (samples == 3 and arr.ndim == 3 and n_frames == 1):
        arr = arr[None]
    if arr.ndim not in (3, 4) or arr.shape[0] == 0:
        raise VideoReadError(
            f"{path}: expected at least one decoded frame, got pixel array of shape {arr.shape}"
        )
    if color and arr.ndim == 3:
        arr = np.repeat(arr[..., None], 3, axis=-1)
    elif not color and arr.ndim == 4:
        arr = rgb_to_gray(arr)
    fps, fps_source = dicom_fps(ds)
    tsyntax = _transfer_syntax(ds)
    metadata = {
        "format": "dicom",
        "transfer_syntax": None if tsyntax is None else str(tsyntax),
        "photometric_interpretation": str(ds.get("PhotometricInterpretation", "")),
        "decoded_photometric_interpretation": pi,
        "fps_source": fps_source,
        "ultrasound_regions": dicom_regions(ds),
    }
    return Video(frames=np.ascontiguousarray(arr), fps=fps, path=path, metadata=metadata)


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
