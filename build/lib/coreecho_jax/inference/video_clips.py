"""A user's video file as the model's evaluation clips: the one preparation ``predict`` and Grad-CAM share.

:func:`clips_for_video` probes the file, chooses the crop (none for a square of EchoNet-Dynamic's frame
size, 112x112, else ``"auto"``: DICOM region or sector, :func:`~coreecho_jax.data.video.video_io.load_echo_video`),
reads it as the run was trained (RGB or grey, 112 px), refuses what is not an echo loop
(:func:`~coreecho_jax.data.video.echo_loop.check_echo_loop`), spreads K starts evenly over the valid positions
(:func:`~coreecho_jax.data.clips.even_starts`) and cuts the clips as evaluation does
(:func:`~coreecho_jax.data.clips.make_clips`: black end padding to ``frames * stride``, resize to
``image_size``, normalisation). numpy and OpenCV only.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import ml_collections
import numpy as np

from coreecho_jax.data import clips
from coreecho_jax.data.echonet_layout import FRAME_SIZE
from coreecho_jax.data.video import video_io
from coreecho_jax.data.video.echo_loop import check_echo_loop
from coreecho_jax.data.video.video_types import Video


@dataclasses.dataclass(frozen=True)
class VideoClips:
    """One video prepared for the model.

    Attributes:
        path: the file as the caller named it.
        video: the prepared video: uint8 ``[F, 112, 112]`` (grey) or ``[F, 112, 112, 3]``, its fps, and
            ``metadata`` (``crop_mode``, ``crop_box``, ``crop_note``, ...).
        spec: the clip settings (the run's ``config.data``).
        starts: int64 ``[K]`` first frame of each clip.
        clips: float32 ``[K, T, S, S, 3]``, normalised.
        notes: what the result should say (fps far from the training data's, padding, the crop's note).
    """

    path: str | Path
    video: Video
    spec: clips.ClipSpec
    starts: np.ndarray
    clips: np.ndarray
    notes: list[str]


def clips_for_video(
    config: ml_collections.ConfigDict,
    path: str | Path,
    k: int,
    *,
    crop: video_io.CropMode | None = None,
    target_fps: float | None = None,
) -> VideoClips:
    """``k`` evaluation clips of the video file ``path`` (module doc).

    Args:
        config: the run's config (:func:`coreecho_jax.inference.runs.load_run` gives it): ``data.frames``,
            ``stride``, ``pad``, ``image_size``, ``channels``.
        path: AVI/MP4/MOV/MKV or DICOM file.
        k: clips (K >= 1), starts spread evenly.
        crop: see ``video_io.load_echo_video``; None: ``"none"`` for a 112x112 video, else ``"auto"``.
        target_fps: resample the video to this fps first (e.g. 50, the training data's); off by default.

    Raises:
        NotAnEchoVideoError: a still image or a loop too short for a cardiac cycle.
        VideoReadError: a missing or unreadable file.
    """
    spec = clips.ClipSpec.from_config(config.data)
    if crop is None:
        info = video_io.probe_video(path)
        crop = "none" if (info.height, info.width) == (FRAME_SIZE, FRAME_SIZE) else "auto"
    video = video_io.load_echo_video(
        path, size=FRAME_SIZE, crop=crop, channels=spec.channels, target_fps=target_fps
    )
    notes = check_echo_loop(video, spec)
    if video.metadata.get("crop_note"):
        notes.append(video.metadata["crop_note"])
    starts = clips.even_starts(video.num_frames, k, spec)
    return VideoClips(path, video, spec, starts, clips.make_clips(video.frames, starts, spec), notes)
