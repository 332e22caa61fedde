"""EF of one video file (AVI/MP4/DICOM), as mean and spread over K clips.

The clip settings (frames, stride, image size, channels) and the model come from the run that wrote
the checkpoint (:func:`coreecho_jax.checkpoints.saved_config.inference_config`); a given config that
disagrees with them is an error. The video goes through the same preparation as a user's own data
(``video_io.load_echo_video``: region or sector crop, square, 112x112, RGB or grey as the run was
trained) unless it already is a square of EchoNet-Dynamic's frame size, and through the same clip
sampler as evaluation (``clips.make_clips``: black end padding to ``frames * stride``,
normalisation). The K starts are spread evenly over the valid start positions.

What is refused (:class:`~coreecho_jax.data.video_types.NotAnEchoVideoError`, one line naming the
file): a still image (one frame, or frames that are all the same picture) and a loop too short to hold
a cardiac cycle: fewer than :func:`min_frames` frames, i.e. one cycle at 150 bpm (0.4 s, 20 frames at
50 fps) or one clip span (``frames * stride``), whichever is fewer. A frame rate far from the training
data's (EchoNet-Dynamic, ~50 fps) gives a warning: the clip then spans another stretch of time.

When the run workdir holds ``embeddings_train.npz`` of the same checkpoint (``--mode=embed
--splits=train``), the result also carries the distribution-shift score of the video's mean clip
embedding: ``shift_distance`` and ``shift_percentile`` (:class:`coreecho_jax.analysis.shift.ShiftIndex`,
a heuristic).
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import ml_collections
import numpy as np

from coreecho_jax.analysis import embed
from coreecho_jax.checkpoints import loading, saved_config
from coreecho_jax.data import clips, video_io
from coreecho_jax.data.echonet_layout import FRAME_SIZE
from coreecho_jax.data.video_types import NotAnEchoVideoError, Video
from coreecho_jax.evaluation import multiclip
from coreecho_jax.evaluation import steps as eval_steps
from coreecho_jax.evaluation.evaluator import Evaluator

#: Frame rate of the training data, EchoNet-Dynamic (its videos are ~50 fps).
TRAINING_FPS = 50.0
#: A loop must hold one cardiac cycle at this heart rate: 150 bpm = 0.4 s.
MAX_HEART_RATE_BPM = 150.0
#: An fps more than this factor away from TRAINING_FPS (below 33 or above 75 fps) gives a warning.
FPS_WARN_RATIO = 1.5
#: Frames that differ from the first by at most this many grey levels anywhere count as the same picture.
STILL_TOLERANCE = 2


def even_starts(num_frames: int, k: int, frames: int, stride: int) -> np.ndarray:
    """``k`` starts spread evenly over the valid positions of a (padded) video of ``num_frames``."""
    n = clips.num_start_positions(num_frames, frames, stride)
    return np.round(np.linspace(0, n - 1, k)).astype(np.int64)


def min_frames(fps: float | None, frames: int, stride: int) -> int:
    """Fewest frames a loop needs: one cycle at 150 bpm (``ceil(0.4 s * fps)``) or one clip span, whichever is fewer.

    An unknown fps counts as :data:`TRAINING_FPS`. At least 2.
    """
    rate = fps or TRAINING_FPS
    cycle = math.ceil(rate * 60.0 / MAX_HEART_RATE_BPM - 1e-9)
    return max(2, min(cycle, frames * stride))


def _rule(fps: float | None, frames: int, stride: int) -> str:
    rate = f"{fps:.1f} fps" if fps else f"fps unknown, taken as {TRAINING_FPS:.0f}"
    return (
        f"at {rate}, one cardiac cycle at {MAX_HEART_RATE_BPM:.0f} bpm ({60 / MAX_HEART_RATE_BPM:.1f} s) "
        f"or one clip span ({frames} x {stride} = {frames * stride} frames), whichever is fewer"
    )


def check_echo_loop(video: Video, frames: int, stride: int) -> list[str]:
    """Refuses a still image or a loop too short for a cardiac cycle; returns notes for the result.

    Args:
        video: the prepared video (uint8 ``[T, S, S]`` or ``[T, S, S, 3]``).
        frames, stride: the clip settings of the model.

    Raises:
        NotAnEchoVideoError: one frame, all frames the same picture, or fewer than :func:`min_frames`.
    """
    n, fps = video.num_frames, video.fps
    need = min_frames(fps, frames, stride)
    rule = _rule(fps, frames, stride)
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
        span = frames * stride
        message = (
            f"{video.path}: {fps:.1f} fps is far from the training data's ~{TRAINING_FPS:.0f} fps "
            f"(EchoNet-Dynamic): a clip of {frames} frames at stride {stride} spans {span / fps:.1f} s here, "
            f"{span / TRAINING_FPS:.1f} s in training; target_fps={TRAINING_FPS:.0f} resamples the video"
        )
        warnings.warn(message, stacklevel=3)
        notes.append(message)
    if n < frames * stride:
        notes.append(
            f"the video has {n} frames, fewer than one clip span ({frames * stride}); it was "
            f"padded with black frames as in training"
        )
    return notes


def predict_file(
    config: ml_collections.ConfigDict,
    video_path: str | Path,
    checkpoint: str | Path,
    *,
    crop: video_io.CropMode | None = None,
    target_fps: float | None = None,
) -> dict:
    """Reads ``video_path``, runs the model named by ``checkpoint``, returns EF mean/std/per-clip (%).

    Args:
        config: the given config; clip settings and model come from the run (see module docstring),
            ``eval.n_clips`` (K) from here.
        video_path: AVI/MP4/MOV/MKV or DICOM file.
        checkpoint: a run workdir, an imported Orbax folder or a CoReEcho ``.pth``.
        crop: see ``video_io.load_echo_video``; None: ``"none"`` for a 112x112 video, else ``"auto"``.
        target_fps: resample the video to this fps first (e.g. 50, the training data's); off by default.

    Returns:
        The JSON-ready result; ``shift_distance``/``shift_percentile`` only with training embeddings.

    Raises:
        ConfigError: the given config's clip settings disagree with the run's.
        NotAnEchoVideoError: a still image or a loop too short for a cardiac cycle.
        VideoReadError: a missing or unreadable file.
    """
    checkpoint = Path(checkpoint).resolve()  # the origin ``--mode=embed`` records with its embeddings
    config = saved_config.inference_config(config, checkpoint)
    d = config.data
    frames, stride, k = int(d.frames), int(d.stride), int(config.eval.n_clips)
    if crop is None:
        info = video_io.probe_video(video_path)
        crop = "none" if (info.height, info.width) == (FRAME_SIZE, FRAME_SIZE) else "auto"
    video = video_io.load_echo_video(
        video_path, size=FRAME_SIZE, crop=crop, channels=int(d.channels), target_fps=target_fps
    )
    notes = check_echo_loop(video, frames, stride)
    if video.metadata.get("crop_note"):
        notes.append(video.metadata["crop_note"])
    starts = even_starts(video.num_frames, k, frames, stride)
    spec = clips.ClipSpec.from_config(d)
    x = clips.make_clips(video.frames, starts, spec)
    model, origin = loading.load_for_inference(config, checkpoint)
    model.eval()
    evaluator = Evaluator(
        lambda batch: np.asarray(eval_steps.predict_step(model, batch["video"])), config.eval
    )
    result = evaluator.predict([multiclip.video_batch(x, starts, Path(video_path).name)])
    prediction = result.clip_predictions[0]
    shift_score = {}
    index = embed.train_index(checkpoint, origin)
    if index is not None:
        embedding = np.asarray(eval_steps.embed_step(model, x[None]))[0].mean(axis=0, keepdims=True)
        shift_score = {key: float(value[0]) for key, value in index.score(embedding).items()}
    return {
        "video": str(video_path),
        "checkpoint": origin,
        "ef_mean": float(prediction.mean()),
        "ef_std": float(prediction.std()),
        "ef_per_clip": [float(p) for p in prediction],
        "clip_starts": [int(s) for s in starts],
        "num_frames": int(video.num_frames),
        "fps": None if video.fps is None else float(video.fps),
        "clip": {
            "frames": frames,
            "stride": stride,
            "image_size": int(d.image_size),
            "channels": 1 if video.frames.ndim == 3 else 3,
        },
        "crop": video.metadata.get("crop_mode"),
        "crop_box": list(video.metadata["crop_box"]),
        "notes": notes,
        **shift_score,
    }
