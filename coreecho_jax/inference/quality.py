"""A video file prepared for the model, with the facts a quality flag needs: the one preparation that
``EchoModel.predict``, ``predict_file`` and the folder command's decoding workers share.

:func:`prepare` is :func:`~coreecho_jax.inference.video_clips.clips_for_video` with two checks around it:

* a DICOM file's header first (:func:`~coreecho_jax.data.video.dicom.cine_facts`, the check corpus
  preparation makes too): what is not DICOM or lost its pixel data is unreadable, an object without pixel
  data (a structured report, a key object, a DICOMDIR) or of another modality is refused as no echo cine,
  and a transfer syntax no installed plugin decodes is refused naming what to install, before any pixel is
  read (a single frame is refused once read, as any still image); its study, series and SOP instance UIDs
  go into the video's ``metadata["dicom"]``;
* colour Doppler after: the share of the sector's pixels that show a saturated colour
  (:func:`colour_fraction`) goes into ``metadata["colour_fraction"]``; ``predict`` flags
  ``colour_doppler`` at :data:`COLOUR_DOPPLER_FRACTION` or more (the model was trained on B-mode).

numpy, OpenCV and pydicom only (no JAX): the folder command's worker processes import this.
"""

from __future__ import annotations

from pathlib import Path

import ml_collections
import numpy as np

from coreecho_jax.data.video import dicom, video_io
from coreecho_jax.data.video.sector import foreground_mask
from coreecho_jax.data.video.video_types import Video, VideoReadError
from coreecho_jax.inference import video_clips
from coreecho_jax.inference.video_clips import VideoClips

#: A pixel shows colour when its largest and smallest RGB values differ by at least this (0..255):
#: grey B-mode has R = G = B, up to a few levels of codec noise; Doppler's reds, blues and yellows differ
#: by far more.
COLOUR_CHROMA = 64
#: Colour Doppler is flagged when, in some frame, at least this share of the sector's pixels shows
#: colour (a heuristic: a Doppler box fills a fifth of a sector or more; an ECG trace or a coloured
#: label in the sector stays far below it).
COLOUR_DOPPLER_FRACTION = 0.01
#: Frames (evenly spread) looked at for colour.
COLOUR_FRAMES = 32
#: A DICOM's facts in ``metadata["dicom"]``: these fields of :class:`~coreecho_jax.data.video.dicom.DicomFacts`.
DICOM_FIELDS = ("sop_class", "modality", "study_uid", "series_uid", "sop_uid", "transfer_syntax", "regions")


def prepare(
    config: ml_collections.ConfigDict,
    path: str | Path,
    k: int,
    *,
    crop: video_io.CropMode | None = None,
    target_fps: float | None = None,
) -> VideoClips:
    """``k`` evaluation clips of the video file ``path`` with its quality facts (module doc).

    Args: as :func:`~coreecho_jax.inference.video_clips.clips_for_video`.

    Raises:
        NotAnEchoVideoError: a DICOM object that is no cine, a still image, a loop too short.
        NoDecoderError (:mod:`~coreecho_jax.data.video.dicom`): a DICOM transfer syntax no installed plugin
            decodes.
        VideoReadError: a missing, unreadable or damaged file.
    """
    facts = dicom.cine_facts(path) if Path(path).is_file() and video_io.is_dicom_path(path) else None
    prepared = video_clips.clips_for_video(config, path, k, crop=crop, target_fps=target_fps)
    metadata = prepared.video.metadata
    if facts is not None:
        metadata["dicom"] = {field: getattr(facts, field) for field in DICOM_FIELDS}
    metadata["colour_fraction"] = colour_of(prepared.video, path)
    return prepared


def colour_fraction(frames: np.ndarray) -> float:
    """The largest share, over up to :data:`COLOUR_FRAMES` frames, of the sector's pixels that show
    colour (:data:`COLOUR_CHROMA`).

    Args:
        frames: uint8 RGB ``[T, H, W, 3]``, cropped to the image (the prepared video's frames).

    Returns:
        A share in [0, 1]; the sector is :func:`~coreecho_jax.data.video.sector.foreground_mask`'s (what
        moves: colour bars and labels beside the sector stay out).
    """
    t = frames.shape[0]
    picks = np.unique(np.linspace(0, t - 1, min(t, COLOUR_FRAMES)).round().astype(int))
    sample = frames[picks]
    mask, _ = foreground_mask(sample)
    chroma = sample.max(axis=-1).astype(np.int16) - sample.min(axis=-1).astype(np.int16)
    coloured = (chroma >= COLOUR_CHROMA) & mask
    return float(coloured.reshape(len(picks), -1).sum(axis=1).max() / max(int(mask.sum()), 1))


def colour_of(video: Video, path: str | Path) -> float | None:
    """:func:`colour_fraction` of a prepared video; a grey one (``channels=1``) reads the first
    :data:`COLOUR_FRAMES` frames of ``path`` again in colour, cropped as the video was. None when that
    second read fails."""
    if video.frames.ndim == 4:
        return colour_fraction(video.frames)
    box = video.metadata["crop_box"]
    frames = []
    try:
        with video_io.open_frames(path) as source:
            for frame in source.iter_frames(3):
                frames.append(frame[box.y0 : box.y1, box.x0 : box.x1])
                if len(frames) == COLOUR_FRAMES:
                    break
    except VideoReadError:
        return None
    return colour_fraction(np.stack(frames)) if frames else None
