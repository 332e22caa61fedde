"""What the video readers share: the decoded ``Video``, pixel boxes, header facts, errors, colour helpers.

Imported by :mod:`~coreecho_jax.data.video.video_io` (files -> frames), :mod:`~coreecho_jax.data.video.dicom`
(pydicom) and :mod:`~coreecho_jax.data.video.sector` (where the ultrasound image is), none of which import
each other in a circle. numpy and OpenCV only.

Layouts: grayscale frames are uint8 ``[T, H, W]``, colour frames uint8 ``[T, H, W, 3]`` in RGB order.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any, NamedTuple

import cv2
import numpy as np

from coreecho_jax.errors import DataError

#: Colour channels a reader can return: 1 = grey ``[..., H, W]``, 3 = RGB ``[..., H, W, 3]``.
CHANNELS = (1, 3)


class VideoReadError(DataError):
    """A video file is missing, unreadable, or holds no frames (also a ``ValueError``)."""


class VideoNotFoundError(VideoReadError, FileNotFoundError):
    """The video file does not exist (also a ``FileNotFoundError``)."""


class NotAnEchoVideoError(DataError):
    """A readable file that cannot be an echocardiogram loop: a still image, or too few frames."""


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
        return max(0, self.width) * max(0, self.height)

    def fits(self, width: int, height: int) -> bool:
        """True if the box lies inside a ``width x height`` image."""
        return 0 <= self.x0 < self.x1 <= width and 0 <= self.y0 < self.y1 <= height

    def clipped(self, width: int, height: int) -> CropBox:
        """The part of the box inside a ``width x height`` image (may be empty)."""
        return CropBox(max(0, self.x0), max(0, self.y0), min(width, self.x1), min(height, self.y1))

    def scaled(self, sx: float, sy: float, width: int, height: int) -> CropBox:
        """The box in an image ``sx`` times wider and ``sy`` times taller, grown to whole pixels."""
        box = CropBox(
            math.floor(self.x0 * sx),
            math.floor(self.y0 * sy),
            math.ceil(self.x1 * sx),
            math.ceil(self.y1 * sy),
        )
        return box.clipped(width, height)

    def dicom_text(self) -> str:
        """``(x0,y0)-(x1,y1)`` with inclusive maxima, as DICOM's RegionLocation tags write them."""
        return f"({self.x0},{self.y0})-({self.x1 - 1},{self.y1 - 1})"


class VideoInfo(NamedTuple):
    """Header facts of a video (see :func:`~coreecho_jax.data.video.video_io.probe_video`)."""

    num_frames: int
    fps: float | None
    height: int
    width: int
    exact: bool  # True if num_frames was counted by decoding, not read from the header


def check_channels(channels: int, where: str) -> int:
    """``channels`` as an int in :data:`CHANNELS`, else a ``DataError`` naming ``where``."""
    if channels not in CHANNELS:
        raise DataError(f"{where}: channels must be 1 (grey) or 3 (RGB), got {channels!r}")
    return int(channels)


def rgb_to_gray(frames: np.ndarray) -> np.ndarray:
    """uint8 ``[..., 3]`` RGB -> uint8 ``[...]`` luma (ITU-R BT.601 weights, as cv2)."""
    shape = frames.shape[:-1]
    flat = np.ascontiguousarray(frames).reshape(-1, 1, 3)
    return cv2.cvtColor(flat, cv2.COLOR_RGB2GRAY).reshape(shape)


def to_channels(frame: np.ndarray, channels: int) -> np.ndarray:
    """One uint8 frame ``[H, W]`` or ``[H, W, 3]`` (RGB) as grey ``[H, W]`` (1) or RGB ``[H, W, 3]`` (3)."""
    if channels == 3:
        return frame if frame.ndim == 3 else np.repeat(frame[..., None], 3, axis=-1)
    return frame if frame.ndim == 2 else rgb_to_gray(frame)
