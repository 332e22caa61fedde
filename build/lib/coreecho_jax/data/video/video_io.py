"""Video I/O: AVI/MP4/MOV/MKV (OpenCV) and ultrasound DICOM (pydicom) -> uint8 frames.

Layouts: grayscale frames are ``[T, H, W]`` uint8, colour frames ``[T, H, W, 3]`` uint8
in RGB order (OpenCV's BGR is converted). fps is frames per second (float) or ``None``.

Entry points:

* :func:`read_video` decodes a file as it is (no crop, no resize).
* :func:`load_echo_video` turns any echo video (any size/fps, AVI/MP4/DICOM) into a
  ``size x size`` clip source: crop to the image region, pad to a square with black,
  resize (``cv2.INTER_AREA`` when shrinking), optionally resample to a target fps.
  Frames are cropped and resized as they are decoded, so memory follows the output size,
  not the source resolution.
* :func:`write_video` writes uint8 frames to a (by default lossless FFV1) AVI.
* :func:`probe_video` / :func:`count_frames` read frame count, fps and size from the
  container header without decoding the frames.

Only numpy, OpenCV and (for DICOM, imported lazily) pydicom: no TensorFlow, so the
prediction path can use this module on machines without TensorFlow.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal, Protocol

import cv2
import numpy as np

from coreecho_jax.data.video.dicom import (
    DICOM_SUFFIXES,
    DicomFile,
    is_dicom_path,
    largest_2d_region,
    probe_dicom,
)
from coreecho_jax.data.video.sector import coverage, foreground_mask, hull_mask, mask_box, sector_box
from coreecho_jax.data.video.video_types import (
    CropBox,
    NotAnEchoVideoError,
    Video,
    VideoInfo,
    VideoNotFoundError,
    VideoReadError,
    check_channels,
    rgb_to_gray,
)
from coreecho_jax.errors import DataError

__all__ = [
    "DICOM_SUFFIXES",
    "CropBox",
    "NotAnEchoVideoError",
    "Video",
    "VideoInfo",
    "VideoNotFoundError",
    "VideoReadError",
    "count_frames",
    "foreground_mask",
    "is_dicom_path",
    "load_echo_video",
    "mask_box",
    "open_frames",
    "probe_video",
    "read_video",
    "resample_indices",
    "rgb_to_gray",
    "square_crop_resize",
    "write_video",
]

PathLike = str | os.PathLike

#: Default codec of :func:`write_video` for .avi/.mkv. FFV1 is lossless: a bit-exact
#: round trip for grayscale and RGB uint8 (checked with opencv-python-headless 5.0,
#: FFmpeg avcodec 62), and fast (50 frames of 112x112 written + read in ~0.05 s on one
#: core). MJPG (lossy, max error ~20 grey levels at default quality) and XVID are also
#: available; H.264 ('avc1') is not in the headless wheel.
DEFAULT_CODEC = "FFV1"
#: Default codec for .mp4/.mov containers (FFV1 is not a standard MP4 codec).
DEFAULT_MP4_CODEC = "mp4v"

#: ``crop`` of :func:`load_echo_video`.
CropMode = Literal["auto", "region", "sector", "none"]
CROP_MODES = ("auto", "region", "sector", "none")
#: Longer side, in pixels, at which the sector is looked for; larger frames are shrunk
#: (``INTER_AREA``) for that analysis only.
ANALYSIS_SIDE = 320
#: ``crop="auto"`` trusts a DICOM ultrasound region only if it holds at least this fraction of
#: the moving image (the sector mask).
MIN_REGION_COVERAGE = 0.8


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


class FrameSource(Protocol):
    """An opened video whose frames can be decoded (again) one at a time.

    Attributes: ``path`` (the user's file), ``fps`` (or None), ``height``, ``width`` (from the
    header), ``metadata`` (format facts; DICOM adds ``ultrasound_regions``).
    """

    path: Path
    fps: float | None
    height: int
    width: int
    metadata: dict[str, Any]

    def iter_frames(self, channels: int) -> Iterator[np.ndarray]:
        """uint8 frames ``[H, W]`` (``channels=1``) or RGB ``[H, W, 3]`` (3), in order."""
        ...


def _check_exists(path: Path) -> None:
    if not path.exists():
        raise VideoNotFoundError(f"{path}: file not found (expected an AVI/MP4/DICOM video)")
    if path.is_dir():
        raise VideoReadError(f"{path}: is a directory, expected a video file")


def _fourcc(capture: cv2.VideoCapture) -> str:
    code = int(capture.get(cv2.CAP_PROP_FOURCC))
    chars = "".join(chr((code >> (8 * i)) & 0xFF) for i in range(4))
    return chars if chars.isprintable() else str(code)


class OpenCVFile:
    """An AVI/MP4/MOV/MKV file read through OpenCV's FFmpeg backend (see :class:`FrameSource`).

    Args:
        path: the file to decode.
        name: the file named in messages and in ``Video.path`` (default ``path``), e.g. the
            DICOM that holds an MPEG stream written to a temporary file.
    """

    def __init__(self, path: PathLike, *, name: PathLike | None = None):
        self.file = Path(path)
        self.path = Path(name) if name is not None else self.file
        capture = self._open()
        try:
            count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
            # Still images (PNG through FFmpeg's image2 demuxer) report no count (INT64_MIN).
            self.header_frames = count if count >= 0 else None
            fps = float(capture.get(cv2.CAP_PROP_FPS))
            self.width = int(capture.get(cv2.CAP_PROP_FRAME_WIDTH))
            self.height = int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
            fourcc = _fourcc(capture)
        finally:
            capture.release()
        self.fps = fps if fps > 0 else None
        self.metadata: dict[str, Any] = {
            "format": "opencv",
            "fourcc": fourcc,
            "header_frame_count": -1 if self.header_frames is None else self.header_frames,  # -1: not given
            "fps_source": "container" if fps > 0 else "container reports no fps",
        }

    def _open(self) -> cv2.VideoCapture:
        capture = cv2.VideoCapture(str(self.file), cv2.CAP_FFMPEG)
        if not capture.isOpened():
            capture.release()
            raise VideoReadError(
                f"{self.path}: OpenCV/FFmpeg cannot open it (expected a readable AVI/MP4/MOV/MKV video)"
            )
        return capture

    def iter_frames(self, channels: int) -> Iterator[np.ndarray]:
        capture = self._open()
        code = cv2.COLOR_BGR2RGB if channels == 3 else cv2.COLOR_BGR2GRAY
        try:
            while True:
                ok, frame = capture.read()
                if not ok:
                    return
                if frame.ndim == 2:
                    frame = cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR)
                yield cv2.cvtColor(frame, code)
        finally:
            capture.release()


@contextlib.contextmanager
def open_frames(path: PathLike) -> Iterator[FrameSource]:
    """Opens a video for frame-by-frame decoding (DICOM by suffix or 'DICM' magic, else OpenCV).

    DICOM with an MPEG-2/H.264/HEVC transfer syntax: the encapsulated stream is written to a
    temporary file (removed on exit) and decoded by FFmpeg; fps and regions come from the DICOM.

    Raises:
        VideoReadError: missing, unreadable or undecodable file.
    """
    path = Path(path)
    _check_exists(path)
    if not is_dicom_path(path):
        yield OpenCVFile(path)
        return
    dicom = DicomFile(path)
    if not dicom.is_video_stream:
        yield dicom
        return
    stream, suffix = dicom.video_stream()
    with tempfile.TemporaryDirectory() as tmp:
        stream_path = Path(tmp) / f"stream{suffix}"
        stream_path.write_bytes(stream)
        try:
            source = OpenCVFile(stream_path, name=path)
        except VideoReadError as e:
            raise VideoReadError(
                f"{path}: FFmpeg could not decode the encapsulated {dicom.tsyntax.name} stream ({e})"
            ) from e
        source.fps = dicom.fps
        source.metadata = dict(dicom.metadata, stream_fourcc=source.metadata["fourcc"])
        yield source


def _collect(
    source: FrameSource,
    channels: int,
    fn: Callable[[np.ndarray], np.ndarray] | None = None,
    *,
    warn: bool = True,
) -> np.ndarray:
    """Decodes every frame, applies ``fn`` to each as it comes, stacks the results ``[T, ...]``.

    Raises:
        VideoReadError: zero frames. A container that promised more frames than decode gives a
            warning (``warn``): the file is probably truncated.
    """
    out = [frame if fn is None else fn(frame) for frame in source.iter_frames(channels)]
    header = source.metadata.get("header_frame_count")
    if not out:
        raise VideoReadError(
            f"{source.path}: no frames could be decoded (expected at least 1; header frame count {header})"
        )
    if warn and header is not None and len(out) < header:  # header -1: not given
        warnings.warn(
            f"{source.path}: decoded {len(out)} frames but the container header says "
            f"{header}; the file is probably truncated or damaged",
            stacklevel=3,
        )
    return np.stack(out)


def read_video(path: PathLike, *, color: bool = False) -> Video:
    """Decodes an AVI/MP4/MOV/MKV or DICOM file as it is (no crop, no resize).

    DICOM is recognised by a .dcm/.dicom suffix or the 'DICM' magic at byte 128
    (so MIMIC-style files without a suffix work too); anything else goes to OpenCV.

    Returns:
        ``Video`` with uint8 frames ``[T, H, W]`` (``color=False``) or ``[T, H, W, 3]`` RGB.

    Raises:
        VideoReadError: missing/unreadable file, undecodable pixel data, zero frames.
    """
    with open_frames(path) as source:
        frames = _collect(source, 3 if color else 1)
        return Video(frames, source.fps, source.path, dict(source.metadata))


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
        facts = probe_dicom(path)
        return VideoInfo(facts["num_frames"], facts["fps"], facts["height"], facts["width"], exact=False)
    source = OpenCVFile(path)
    count = source.header_frames or 0
    if exact:
        capture = source._open()
        try:
            count = 0
            while capture.grab():
                count += 1
        finally:
            capture.release()
    return VideoInfo(count, source.fps, source.height, source.width, exact=exact)


def count_frames(path: PathLike, *, exact: bool = False) -> int:
    """Number of frames (header value unless ``exact``; see :func:`probe_video`)."""
    return probe_video(path, exact=exact).num_frames


# ----------------------------------------------------------------------------- cropping


def _square_crop_resize_frame(
    frame: np.ndarray, box: CropBox, size: int | None, interpolation: int | None = None
) -> np.ndarray:
    """One frame ``[H, W(, 3)]``: crop ``box``, pad to a centred black square, resize to ``size``."""
    crop = frame[box.y0 : box.y1, box.x0 : box.x1]
    h, w = crop.shape[:2]
    side = max(h, w)
    square = np.zeros((side, side) + crop.shape[2:], dtype=np.uint8)
    top, left = (side - h) // 2, (side - w) // 2
    square[top : top + h, left : left + w] = crop
    if size is None or size == side:
        return square
    if interpolation is None:
        interpolation = cv2.INTER_AREA if size < side else cv2.INTER_LINEAR
    return cv2.resize(square, (size, size), interpolation=interpolation)


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
    return np.stack([_square_crop_resize_frame(f, box, size, interpolation) for f in frames])


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


def _analysis_size(height: int, width: int, side: int) -> tuple[int, int]:
    """``(h, w)`` of a frame shrunk so that its longer side is at most ``side`` (never enlarged)."""
    scale = min(1.0, side / max(height, width))
    return max(1, round(height * scale)), max(1, round(width * scale))


def _choose_box(
    crop: str,
    region: Any,
    sector: tuple[CropBox, np.ndarray, str] | None,
    height: int,
    width: int,
) -> tuple[CropBox, str, str | None]:
    """``(box, crop_mode, crop_note)`` in source pixels.

    ``sector`` is :func:`~coreecho_jax.data.video.sector.sector_box` of the analysis frames (maybe smaller
    than the source), or None when it was not computed.
    """
    full = CropBox(0, 0, width, height)
    if crop == "none":
        return full, "none", None
    sector_crop, mask, method = full, None, None
    if sector is not None:
        analysis_box, mask, method = sector
        mh, mw = mask.shape
        sector_crop = analysis_box.scaled(width / mw, height / mh, width, height)
    sector_note = None if method != "full" else "no moving sector found; the whole frame is used"
    if region is None or crop == "sector":
        return sector_crop, "sector", sector_note
    text = f"ultrasound region {region.box.dicom_text()}"
    fits = region.box.fits(width, height)
    clipped = region.box.clipped(width, height)
    exceeds = f"{text} exceeds the {width}x{height} image"
    if crop == "region" or method != "motion":  # forced, or nothing moves to judge the region by
        return clipped, "region", None if fits else f"{exceeds}; clipped to {clipped.dicom_text()}"
    if not fits:
        return sector_crop, "sector", f"{exceeds}; sector crop used"
    mh, mw = mask.shape
    held = coverage(mask, region.box.scaled(mw / width, mh / height, mw, mh))
    if held < MIN_REGION_COVERAGE:
        return sector_crop, "sector", f"{text} holds only {held:.0%} of the moving image; sector crop used"
    return region.box, "region", None


def load_echo_video(
    path: PathLike,
    *,
    size: int | None = 112,
    crop: CropMode = "auto",
    target_fps: float | None = None,
    channels: int = 3,
    mask_outside: bool = False,
    analysis_side: int = ANALYSIS_SIDE,
) -> Video:
    """Reads any echo video (AVI/MP4/MOV/MKV/DICOM) as a square ``size x size`` clip source.

    Steps: decode -> crop to the image region -> pad to a centred square with black ->
    resize to ``size`` (``INTER_AREA`` when shrinking) -> optionally resample the fps.
    Frames are cropped and resized one at a time as they are decoded. Finding the sector
    needs a first decoding pass (on frames shrunk to ``analysis_side``); a frame no larger than
    that is decoded once and kept, a larger video is decoded twice instead of being held whole.

    Args:
        path: video file. DICOM is recognised by suffix or the 'DICM' magic.
        size: output side (112 as EchoNet-Dynamic), or None for no resize.
        crop: ``"auto"``: the largest 2-D SequenceOfUltrasoundRegions box (DICOM) when it
            lies inside the image and holds at least ``MIN_REGION_COVERAGE`` of the moving
            image, else the sector box (``metadata["crop_note"]`` says why the region was not
            used). ``"sector"``: the bounding box of :func:`~coreecho_jax.data.video.sector.foreground_mask`
            (the moving sector; static text, bars and toolbars are left out). ``"region"``: the
            region box whatever it holds (clipped to the image; error if the file has none).
            ``"none"``: the whole frame (for videos that are already cropped, e.g.
            EchoNet-Dynamic's 112x112 AVIs).
        target_fps: resample to this fps by nearest source frame (off by default, to
            stay faithful to the file); needs a known source fps.
        channels: 3 for RGB ``[T, S, S, 3]`` (OpenCV's BGR converted), 1 for grey ``[T, S, S]``
            (BT.601 luma).
        mask_outside: black out pixels outside the sector (convex hull of the
            foreground mask) before cropping. Off by default.
        analysis_side: longer side, in pixels, of the frames the sector is found on.

    Returns:
        ``Video`` whose metadata adds ``source_shape, crop_mode ("region" | "sector" | "none"),
        crop_box, crop_note, region_box, region_spatial_format, foreground_method, source_fps,
        resample_indices`` (None when not used).

    Raises:
        VideoReadError: unreadable/missing/empty file.
        DataError: ``crop="region"`` without regions, ``target_fps`` with unknown fps, bad
            ``crop`` or ``channels``.
    """
    channels = check_channels(channels, str(path))
    if crop not in CROP_MODES:
        raise DataError(f"{path}: crop must be one of {', '.join(CROP_MODES)}, got {crop!r}")
    with open_frames(path) as source:
        regions = source.metadata.get("ultrasound_regions") or []
        region = largest_2d_region(regions) if crop in ("auto", "region") else None
        if crop == "region" and region is None:
            raise DataError(
                f"{source.path}: crop='region' needs a DICOM SequenceOfUltrasoundRegions, "
                f"which this file does not have (use crop='auto', 'sector' or 'none')"
            )
        height, width = source.height, source.width
        kept = sector = None
        if mask_outside or crop in ("auto", "sector"):
            if max(height, width) <= analysis_side:
                kept = _collect(source, channels)
                analysis = kept if channels == 1 else rgb_to_gray(kept)
            else:
                ah, aw = _analysis_size(height, width, analysis_side)
                analysis = _collect(
                    source, 1, lambda f: cv2.resize(f, (aw, ah), interpolation=cv2.INTER_AREA), warn=False
                )
            sector = sector_box(analysis)
        box, mode, note = _choose_box(crop, region, sector, height, width)
        keep = None
        if mask_outside:
            keep = hull_mask(sector[1], height, width)[box.y0 : box.y1, box.x0 : box.x1]
            keep = keep[..., None] if channels == 3 else keep

        def prepare(frame: np.ndarray) -> np.ndarray:
            if frame.shape[:2] != (height, width):
                raise VideoReadError(
                    f"{source.path}: a frame of {frame.shape[1]}x{frame.shape[0]} pixels in a video whose "
                    f"header says {width}x{height}"
                )
            cropped = frame[box.y0 : box.y1, box.x0 : box.x1]
            if keep is not None:
                cropped = cropped * keep
            return _square_crop_resize_frame(cropped, CropBox(0, 0, box.width, box.height), size)

        if kept is not None:
            frames = np.stack([prepare(f) for f in kept])
            source_frames = len(kept)
        else:
            frames = _collect(source, channels, prepare)
            source_frames = len(frames)
        metadata = dict(source.metadata)
        fps = source_fps = source.fps

    indices = None
    if target_fps is not None:
        if not fps:
            raise DataError(
                f"{path}: cannot resample to {target_fps} fps because the file's fps is "
                f"unknown ({metadata.get('fps_source')})"
            )
        indices = resample_indices(frames.shape[0], fps, float(target_fps))
        frames = frames[indices]
        fps = float(target_fps)
    metadata.update(
        source_shape=(source_frames, height, width) + ((3,) if channels == 3 else ()),
        crop_mode=mode,
        crop_box=box,
        crop_note=note,
        region_box=None if region is None else region.box,
        region_spatial_format=None if region is None else region.spatial_format,
        foreground_method=None if sector is None else sector[2],
        mask_outside=mask_outside,
        source_fps=source_fps,
        resample_indices=indices,
    )
    return Video(np.ascontiguousarray(frames), fps, Path(path), metadata)
