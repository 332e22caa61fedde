"""Video I/O: AVI/MP4/MOV/MKV (OpenCV) and ultrasound DICOM (pydicom) -> uint8 frames.

Layouts: grayscale frames are ``[T, H, W]`` uint8, colour frames ``[T, H, W, 3]`` uint8
in RGB order (OpenCV's BGR is converted). fps is frames per second (float) or ``None``.

Entry points:

* :func:`read_video` decodes a file as it is (no crop, no resize).
* :func:`load_echo_video` turns any echo video (any size/fps, AVI/MP4/DICOM) into a
  ``size x size`` clip source: crop to the image region, pad to a square with black,
  resize (``cv2.INTER_AREA`` when shrinking), optionally resample to a target fps.
* :func:`write_video` writes uint8 frames to a (by default lossless FFV1) AVI.
* :func:`probe_video` / :func:`count_frames` read frame count, fps and size from the
  container header without decoding the frames.

Only numpy, OpenCV and (for DICOM, imported lazily) pydicom: no TensorFlow, so the
prediction path can use this module on machines without TensorFlow.
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from pathlib import Path
from typing import Any, Literal, NamedTuple

import cv2
import numpy as np

PathLike = str | os.PathLike

#: Default codec of :func:`write_video` for .avi/.mkv. FFV1 is lossless: a bit-exact
#: round trip for grayscale and RGB uint8 (checked with opencv-python-headless 5.0,
#: FFmpeg avcodec 62), and fast (50 frames of 112x112 written + read in ~0.05 s on one
#: core). MJPG (lossy, max error ~20 grey levels at default quality) and XVID are also
#: available; H.264 ('avc1') is not in the headless wheel.
DEFAULT_CODEC = "FFV1"
#: Default codec for .mp4/.mov containers (FFV1 is not a standard MP4 codec).
DEFAULT_MP4_CODEC = "mp4v"

DICOM_SUFFIXES = (".dcm", ".dicom", ".dic")

CropMode = Literal["auto", "region", "none"]


class VideoReadError(ValueError):
    """A video file is missing, unreadable, or holds no frames."""


class VideoNotFoundError(VideoReadError, FileNotFoundError):
    """The video file does not exist (also a ``FileNotFoundError``)."""


@dataclasses.dataclass
class Video:
    """Decoded video.

    Attributes:
        frames: uint8 ``[T, H, W]`` (grayscale) or ``[T, H, W, 3]`` (RGB), T >= 1.
        fps: frames per second, or ``None`` if the file does not say.
        path: the file the frames came from.
        metadata: extra facts (source format, fps source, crop box, resampling, ...).
    """

    frames: np.ndarray
    fps: float | None
    path: Path
    metadata: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def num_frames(self) -> int:
        return int(self.frames.shape[0])


class CropBox(NamedTuple):
    """Pixel box with half-open bounds: rows ``y0:y1``, columns ``x0:x1``."""

    x0: int
    y0: int
    x1: int
    y1: int

    @property
    def width(self) -> int:
        return self.x1 - self.x0

    @property
    def height(self) -> int:
        return self.y1 - self.y0

    @property
    def area(self) -> int:
        return self.width * self.height


class VideoInfo(NamedTuple):
    """Header facts of a video (see :func:`probe_video`)."""

    num_frames: int
    fps: float | None
    height: int
    width: int
    exact: bool  # True if num_frames was counted by decoding, not read from the header


# ----------------------------------------------------------------------------- writing


def write_video(path: PathLike, frames: np.ndarray, fps: float, *, codec: str | None = None) -> Path:
    """Writes uint8 frames ``[T, H, W]`` (gray) or ``[T, H, W, 3]`` (RGB) to a video file.

    Args:
        path: output file; the container follows the suffix (``.avi`` recommended).
        frames: uint8 ``[T, H, W]`` or ``[T, H, W, 3]`` in RGB order, T >= 1.
        fps: frames per second stored in the container (> 0).
        codec: FourCC. Default: ``"FFV1"`` (lossless) for .avi/.mkv and ``"mp4v"``
            for .mp4/.mov. ``"MJPG"`` is lossy but readable almost everywhere.

    Returns:
        The path written. Grayscale input is stored as 3 equal channels, as in
        EchoNet-Dynamic's AVIs, so reading it back with ``color=False`` is exact.
    """
    path = Path(path)
    frames = np.asarray(frames)
    if frames.dtype != np.uint8:
        raise ValueError(f"write_video({path}): frames must be uint8, got {frames.dtype}")
    if frames.ndim == 4 and frames.shape[-1] == 1:
        frames = frames[..., 0]
    if frames.ndim not in (3, 4) or (frames.ndim == 4 and frames.shape[-1] != 3):
        raise ValueError(
            f"write_video({path}): frames must be [T,H,W] or [T,H,W,3], got shape {frames.shape}"
        )
    if frames.shape[0] == 0:
        raise ValueError(f"write_video({path}): frames has zero frames (shape {frames.shape})")
    if not fps or fps <= 0:
        raise ValueError(f"write_video({path}): fps must be > 0, got {fps}")
    if codec is None:
        is_mp4 = path.suffix.lower() in (".mp4", ".mov", ".m4v")
        codec = DEFAULT_MP4_CODEC if is_mp4 else DEFAULT_CODEC
    if len(codec) != 4:
        raise ValueError(f"write_video({path}): codec must be a 4-character FourCC, got {codec!r}")
    height, width = frames.shape[1:3]
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(
        str(path),
        cv2.CAP_FFMPEG,
        cv2.VideoWriter_fourcc(*codec),
        float(fps),
        (int(width), int(height)),
        True,
    )
    if not writer.isOpened():
        raise OSError(f"write_video({path}): OpenCV could not open a writer with codec {codec!r}")
    try:
        for frame in frames:
            code = cv2.COLOR_GRAY2BGR if frame.ndim == 2 else cv2.COLOR_RGB2BGR
            writer.write(cv2.cvtColor(np.ascontiguousarray(frame), code))
    finally:
        writer.release()
    return path


# ----------------------------------------------------------------------------- reading


def rgb_to_gray(frames: np.ndarray) -> np.ndarray:
    """uint8 ``[..., 3]`` RGB -> uint8 ``[...]`` luma (ITU-R BT.601 weights, as cv2)."""
    shape = frames.shape[:-1]
    flat = np.ascontiguousarray(frames).reshape(-1, 1, 3)
    return cv2.cvtColor(flat, cv2.COLOR_RGB2GRAY).reshape(shape)


def is_dicom_path(path: PathLike) -> bool:
    """True for a .dcm/.dicom suffix or the 'DICM' magic at byte 128."""
    from coreecho_jax.data.dicom import is_dicom_file

    return Path(path).suffix.lower() in DICOM_SUFFIXES or is_dicom_file(path)


def _check_exists(path: Path) -> None:
    if not path.exists():
        raise VideoNotFoundError(f"{path}: file not found (expected an AVI/MP4/DICOM video)")
    if path.is_dir():
        raise VideoReadError(f"{path}: is a directory, expected a video file")


def _open_capture(path: Path) -> cv2.VideoCapture:
    capture = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
    if not capture.isOpened():
        capture.release()
        raise VideoReadError(
            f"{path}: OpenCV/FFmpeg cannot open it (expected a readable AVI/MP4/MOV/MKV video)"
        )
    return capture


def _fourcc(capture: cv2.VideoCapture) -> str:
    code = int(capture.get(cv2.CAP_PROP_FOURCC))
    chars = "".join(chr((code >> (8 * i)) & 0xFF) for i in range(4))
    return chars if chars.isprintable() else str(code)


def read_opencv_video(path: PathLike, *, color: bool = False) -> Video:
    """Decodes every frame of an AVI/MP4/MOV/MKV file with OpenCV's FFmpeg backend.

    Args:
        path: the video file.
        color: return RGB ``[T, H, W, 3]``; otherwise grayscale ``[T, H, W]``.

    Raises:
        VideoReadError: missing or unreadable file, or zero decodable frames.
    """
    path = Path(path)
    _check_exists(path)
    capture = _open_capture(path)
    frames = []
    try:
        header_count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
        fps = float(capture.get(cv2.CAP_PROP_FPS))
        fourcc = _fourcc(capture)
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            if frame.ndim == 2:
                frame = cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR)
            code = cv2.COLOR_BGR2RGB if color else cv2.COLOR_BGR2GRAY
            frames.append(cv2.cvtColor(frame, code))
    finally:
        capture.release()
    if not frames:
        raise VideoReadError(
            f"{path}: no frames could be decoded (expected at least 1; header frame count {header_count})"
        )
    if len(frames) < header_count:
        warnings.warn(
            f"{path}: decoded {len(frames)} frames but the container header says "
            f"{header_count}; the file is probably truncated or damaged",
            stacklevel=2,
        )
    metadata = {
        "format": "opencv",
        "fourcc": fourcc,
        "header_frame_count": header_count,
        "fps_source": "container" if fps > 0 else "container reports no fps",
    }
    return Video(np.stack(frames), fps if fps > 0 else None, path, metadata)


def read_video(path: PathLike, *, color: bool = False) -> Video:
    """Decodes an AVI/MP4/MOV/MKV or DICOM file as it is (no crop, no resize).

    DICOM is recognised by a .dcm/.dicom suffix or the 'DICM' magic at byte 128
    (so MIMIC-style files without a suffix work too); anything else goes to OpenCV.

    Returns:
        ``Video`` with uint8 frames ``[T, H, W]`` (``color=False``) or ``[T, H, W, 3]`` RGB.
    """
    path = Path(path)
    _check_exists(path)
    if is_dicom_path(path):
        from coreecho_jax.data.dicom import read_dicom

        return read_dicom(path, color=color)
    return read_opencv_video(path, color=color)


def probe_video(path: PathLike, *, exact: bool = False) -> VideoInfo:
    """Frame count, fps and frame size without decoding the pixels.

    For AVI/MP4 the count is OpenCV's ``CAP_PROP_FRAME_COUNT``, read from the
    container (AVI index/header, MP4 sample table). It can be wrong: truncated or
    damaged files keep the header's count, and for streams without an index FFmpeg
    estimates it from duration x fps. ``exact=True`` counts by grabbing every
    frame (decodes, but skips colour conversion); ``read_video`` is always exact.
    DICOM: NumberOfFrames, Rows, Columns and the timing tags (header only).
    """
    path = Path(path)
    _check_exists(path)
    if is_dicom_path(path):
        from coreecho_jax.data.dicom import probe_dicom

        facts = probe_dicom(path)
        return VideoInfo(facts["num_frames"], facts["fps"], facts["height"], facts["width"], exact=False)
    capture = _open_capture(path)
    try:
        count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
        fps = float(capture.get(cv2.CAP_PROP_FPS))
        width = int(capture.get(cv2.CAP_PROP_FRAME_WIDTH))
        height = int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
        if exact:
            count = 0
            while capture.grab():
                count += 1
    finally:
        capture.release()
    return VideoInfo(count, fps if fps > 0 else None, height, width, exact=exact)


def count_frames(path: PathLike, *, exact: bool = False) -> int:
    """Number of frames (header value unless ``exact``; see :func:`probe_video`)."""
    return probe_video(path, exact=exact).num_frames


# ----------------------------------------------------------------------------- cropping


def _odd(n: float) -> int:
    n = max(3, int(round(n)))
    return n if n % 2 else n + 1


def _largest_component(mask: np.ndarray) -> np.ndarray | None:
    """Boolean mask of the largest 8-connected component of ``mask``, or None if empty."""
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), 8)
    if count <= 1:
        return None
    label = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    return labels == label


def _clean_component(raw: np.ndarray, kernel_size: int) -> np.ndarray | None:
    """Largest component of ``raw`` after removing thin/small structures.

    Opening with a ``kernel_size`` ellipse removes text strokes, thin lines (ECG
    traces, calipers) and speckle noise; closing with twice that size joins the
    pieces of the sector. The component is then grown back into ``raw`` within
    ``kernel_size`` pixels, so the thin apex of the fan that opening ate is kept.
    """
    small = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (kernel_size, kernel_size))
    large = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * kernel_size + 1,) * 2)
    cleaned = cv2.morphologyEx(raw.astype(np.uint8), cv2.MORPH_OPEN, small)
    cleaned = cv2.morphologyEx(cleaned, cv2.MORPH_CLOSE, large)
    component = _largest_component(cleaned)
    if component is None:
        return None
    grown = cv2.dilate(component.astype(np.uint8), small).astype(bool)
    return component | (grown & raw)


def foreground_mask(
    frames: np.ndarray,
    *,
    max_frames: int = 64,
    min_fraction: float = 0.01,
    on_level: float = 8.0,
) -> tuple[np.ndarray, str]:
    """Mask of the ultrasound image (the sector) in a video, ignoring overlays.

    A pixel belongs to the sector if it changes over time (temporal std above a
    threshold) *and* is lit (> ``on_level``) in at least half of the frames. Static
    text, logos and grey/colour bars have ~0 std; a moving ECG trace or sweep cursor
    lights each pixel of its band only in a few frames. A morphological opening then
    removes what is thin, a closing joins the sector's pieces, and the largest
    connected component is kept. Fallbacks: the moving mask alone, then (nothing
    moves: one frame, a still loop) the largest bright component of the per-pixel
    maximum, opened with the same kernel to drop text.

    Args:
        frames: uint8 ``[T, H, W]`` or ``[T, H, W, 3]``.
        max_frames: frames sampled (evenly) for the statistics.
        min_fraction: smallest accepted mask, as a fraction of the frame area.
        on_level: grey level above which a pixel counts as lit.

    Returns:
        ``(mask [H, W] bool, method)`` where method is ``"motion"``, ``"intensity"``
        or ``"full"`` (nothing found: the whole frame).
    """
    gray = rgb_to_gray(frames) if frames.ndim == 4 else frames
    t, h, w = gray.shape
    picks = np.unique(np.linspace(0, t - 1, min(t, max_frames)).round().astype(int))
    sample = gray[picks].astype(np.float32)
    kernel_size = _odd(min(h, w) / 40)
    min_area = min_fraction * h * w
    if len(picks) >= 2:
        std = sample.std(axis=0)
        nonzero = std[std > 0]
        if nonzero.size:
            threshold = max(2.0, 0.2 * float(np.percentile(nonzero, 95)))
            moving = std > threshold
            lit_often = (sample > on_level).mean(axis=0) >= 0.5
            for raw in (moving & lit_often, moving):
                mask = _clean_component(raw, kernel_size)
                if mask is not None and mask.sum() >= min_area:
                    return mask, "motion"
    peak = sample.max(axis=0)
    threshold = max(10.0, 0.1 * float(np.percentile(peak, 99)))
    mask = _clean_component(peak > threshold, kernel_size)
    if mask is not None and mask.sum() >= min_area:
        return mask, "intensity"
    return np.ones((h, w), dtype=bool), "full"


def mask_box(mask: np.ndarray) -> CropBox:
    """Tight half-open bounding box of a non-empty boolean mask ``[H, W]``."""
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        raise ValueError("mask_box: mask is empty")
    return CropBox(int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1)


def square_crop_resize(
    frames: np.ndarray, box: CropBox, size: int | None, *, interpolation: int | None = None
) -> np.ndarray:
    """Crops ``box``, pads the short side with black to a centred square, resizes.

    Args:
        frames: uint8 ``[T, H, W]`` or ``[T, H, W, 3]``.
        box: crop box (half-open, inside the frame).
        size: output side in pixels, or None to keep the square's own size.
        interpolation: cv2 flag; default ``INTER_AREA`` when shrinking (as for
            EchoNet-Dynamic's 112x112 videos), ``INTER_LINEAR`` when enlarging.

    Returns:
        uint8 ``[T, size, size]`` or ``[T, size, size, 3]``.
    """
    crop = frames[:, box.y0 : box.y1, box.x0 : box.x1]
    t, h, w = crop.shape[:3]
    side = max(h, w)
    square = np.zeros((t, side, side) + crop.shape[3:], dtype=np.uint8)
    top, left = (side - h) // 2, (side - w) // 2
    square[:, top : top + h, left : left + w] = crop
    if size is None or size == side:
        return square
    if interpolation is None:
        interpolation = cv2.INTER_AREA if size < side else cv2.INTER_LINEAR
    out = np.empty((t, size, size) + crop.shape[3:], dtype=np.uint8)
    for i in range(t):
        out[i] = cv2.resize(square[i], (size, size), interpolation=interpolation)
    return out


def resample_indices(num_frames: int, fps: float, target_fps: float) -> np.ndarray:
    """Source frame index for each output frame when changing fps (nearest frame).

    Output frame ``i`` shows time ``i / target_fps``, i.e. source frame
    ``round(i * fps / target_fps)``; the output spans the same duration
    (``round(num_frames * target_fps / fps)`` frames, at least 1).
    """
    if fps <= 0 or target_fps <= 0:
        raise ValueError(f"resample_indices: fps must be > 0, got {fps} -> {target_fps}")
    count = max(1, int(round(num_frames * target_fps / fps)))
    # Round half up (np.rint would round 0.5 to even and make uneven steps).
    indices = np.floor(np.arange(count) * (fps / target_fps) + 0.5).astype(np.int64)
    return np.minimum(indices, num_frames - 1)


def load_echo_video(
    path: PathLike,
    *,
    size: int | None = 112,
    crop: CropMode = "auto",
    target_fps: float | None = None,
    color: bool = False,
    mask_outside: bool = False,
) -> Video:
    """Reads any echo video (AVI/MP4/MOV/MKV/DICOM) as a square ``size x size`` clip source.

    Steps: decode -> crop to the image region -> pad to a centred square with black ->
    resize to ``size`` (``INTER_AREA`` when shrinking) -> optionally resample the fps.

    Args:
        path: video file. DICOM is recognised by suffix or the 'DICM' magic.
        size: output side (112 as EchoNet-Dynamic), or None for no resize.
        crop: ``"region"``: the largest 2-D SequenceOfUltrasoundRegions box (DICOM);
            error if the file has none. ``"auto"``: that region if present, else the
            bounding box of :func:`foreground_mask` (moving sector, ignores static text
            and bars). ``"none"``: the whole frame (use it for videos that are already
            cropped, e.g. EchoNet-Dynamic's 112x112 AVIs).
        target_fps: resample to this fps by nearest source frame (off by default, to
            stay faithful to the file); needs a known source fps.
        color: RGB ``[T, S, S, 3]`` instead of grayscale ``[T, S, S]``.
        mask_outside: black out pixels outside the sector (convex hull of the
            foreground mask) before cropping. Off by default.

    Returns:
        ``Video`` whose metadata adds ``source_shape, crop_mode, crop_box,
        region_spatial_format, foreground_method, source_fps, resample_indices``
        (None when not used).

    Raises:
        VideoReadError: unreadable/missing/empty file.
        ValueError: ``crop="region"`` without regions, or ``target_fps`` with unknown fps.
    """
    video = read_video(path, color=color)
    frames = video.frames
    height, width = frames.shape[1:3]
    metadata = dict(video.metadata)
    metadata["source_shape"] = tuple(frames.shape)
    if crop not in ("auto", "region", "none"):
        raise ValueError(f"{video.path}: crop must be 'auto', 'region' or 'none', got {crop!r}")

    region = None
    regions = metadata.get("ultrasound_regions") or []
    if crop in ("auto", "region") and regions:
        from coreecho_jax.data.dicom import largest_2d_region

        region = largest_2d_region(regions)
    if crop == "region" and region is None:
        raise ValueError(
            f"{video.path}: crop='region' needs a DICOM SequenceOfUltrasoundRegions, "
            f"which this file does not have (use crop='auto' or 'none')"
        )

    mask = method = None
    if mask_outside or (crop == "auto" and region is None):
        mask, method = foreground_mask(frames)
    if region is not None:
        box, mode = region.box, "region"
    elif crop == "auto":
        box, mode = mask_box(mask), "foreground"
    else:
        box, mode = CropBox(0, 0, width, height), "none"

    if mask_outside:
        hull = cv2.convexHull(np.argwhere(mask)[:, ::-1].astype(np.int32))
        keep = np.zeros((height, width), dtype=np.uint8)
        cv2.fillConvexPoly(keep, hull, 1)
        keep = keep.astype(bool)
        frames = frames * (keep[..., None] if frames.ndim == 4 else keep)

    frames = square_crop_resize(frames, box, size)
    fps = video.fps
    indices = None
    if target_fps is not None:
        if not fps:
            raise ValueError(
                f"{video.path}: cannot resample to {target_fps} fps because the file's fps is "
                f"unknown ({metadata.get('fps_source')})"
            )
        indices = resample_indices(frames.shape[0], fps, float(target_fps))
        frames = frames[indices]
        fps = float(target_fps)
    metadata.update(
        crop_mode=mode,
        crop_box=box,
        region_spatial_format=None if region is None else region.spatial_format,
        foreground_method=method,
        mask_outside=mask_outside,
        source_fps=video.fps,
        resample_indices=indices,
    )
    return Video(np.ascontiguousarray(frames), fps, video.path, metadata)
