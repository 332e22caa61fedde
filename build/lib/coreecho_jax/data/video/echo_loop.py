"""Is a user's video an echo loop? The checks ``predict`` (and Grad-CAM on a user's video) run first.

A still image (one frame, or frames that all show the same picture) and a loop too short to hold one
cardiac cycle are refused with :class:`NotAnEchoVideoError` naming the file; a frame rate far from the
training data's gives a warning and a note.
"""

from __future__ import annotations

import math
import warnings

import numpy as np

from coreecho_jax.data.clips import ClipSpec
from coreecho_jax.data.video.video_types import NotAnEchoVideoError, Video

#: Frame rate of the training data, EchoNet-Dynamic (its videos are ~50 fps).
TRAINING_FPS = 50.0
#: A loop must hold one cardiac cycle at this heart rate: 150 bpm = 0.4 s.
MAX_HEART_RATE_BPM = 150.0
#: An fps more than this factor away from TRAINING_FPS (below 33 or above 75 fps) gives a warning.
FPS_WARN_RATIO = 1.5
#: Frames that differ from the first by at most this many grey levels anywhere count as the same picture.
STILL_TOLERANCE = 2


def min_frames(fps: float | None, spec: ClipSpec) -> int:
    """Fewest frames a loop needs: one cycle at 150 bpm (``ceil(0.4 s * fps)``) or one clip span
    (``spec.span``), whichever is fewer.

    An unknown fps counts as :data:`TRAINING_FPS`. At least 2.
    """
    rate = fps or TRAINING_FPS
    cycle = math.ceil(rate * 60.0 / MAX_HEART_RATE_BPM - 1e-9)
    return max(2, min(cycle, spec.span))


def _rule(fps: float | None, spec: ClipSpec) -> str:
    rate = f"{fps:.1f} fps" if fps else f"fps unknown, taken as {TRAINING_FPS:.0f}"
    return (
        f"at {rate}, one cardiac cycle at {MAX_HEART_RATE_BPM:.0f} bpm ({60 / MAX_HEART_RATE_BPM:.1f} s) "
        f"or one clip span ({spec.frames} x {spec.stride} = {spec.span} frames), whichever is fewer"
    )


def check_echo_loop(video: Video, spec: ClipSpec) -> list[str]:
    """Refuses a still image or a loop too short for a cardiac cycle; returns notes for the result.

    Args:
        video: the prepared video (uint8 ``[T, S, S]`` or ``[T, S, S, 3]``).
        spec: the clip settings of the model (``frames``, ``stride``).

    Raises:
        NotAnEchoVideoError: one frame, all frames the same picture, or fewer than :func:`min_frames`.
    """
    n, fps = video.num_frames, video.fps
    need = min_frames(fps, spec)
    rule = _rule(fps, spec)
    if n == 1:
        raise NotAnEchoVideoError(
            f"{video.path}: a still image (1 frame), not an echo loop; EF needs at least {need} frames ({rule})"
        )
    change = np.abs(video.frames.astype(np.int16) - video.frames[:1].astype(np.int16)).max()
    if change <= STILL_TOLERANCE:
        raise NotAnEchoVideoError(
            f"{video.path}: all {n} frames show the same picture (a still image), not an echo loop"
        )
    if n < need:
        seconds = f" ({n / fps:.2f} s)" if fps else ""
        raise NotAnEchoVideoError(
            f"{video.path}: {n} frames{seconds} are too few to hold a cardiac cycle; EF needs at least "
            f"{need} ({rule})"
        )
    notes = []
    if not fps:
        notes.append(f"the fps is unknown ({video.metadata.get('fps_source')}); taken as {TRAINING_FPS:.0f}")
    elif max(fps / TRAINING_FPS, TRAINING_FPS / fps) > FPS_WARN_RATIO:
        span = spec.span
        message = (
            f"{video.path}: {fps:.1f} fps is far from the training data's ~{TRAINING_FPS:.0f} fps "
            f"(EchoNet-Dynamic): a clip of {spec.frames} frames at stride {spec.stride} spans {span / fps:.1f} s here, "
            f"{span / TRAINING_FPS:.1f} s in training; target_fps={TRAINING_FPS:.0f} resamples the video"
        )
        warnings.warn(message, stacklevel=3)
        notes.append(message)
    if n < spec.span:
        notes.append(
            f"the video has {n} frames, fewer than one clip span ({spec.span}); it was "
            f"padded with black frames as in training"
        )
    return notes
