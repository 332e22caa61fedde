"""EF of one video file (AVI/MP4/DICOM), as mean and spread over K clips.

The clip settings (frames, stride, image size, channels) and the model come from the run that wrote
the checkpoint (:func:`coreecho_jax.inference.runs.load_run`); a given config that disagrees with them
is an error. The video goes through the same preparation as a user's own data and Grad-CAM's
(:func:`coreecho_jax.inference.video_clips.clips_for_video`: region or sector crop, square, 112x112,
RGB or grey as the run was trained, unless it already is a square of EchoNet-Dynamic's frame size) and
through the same clip sampler as evaluation (black end padding to ``frames * stride``, normalisation).
The K starts are spread evenly over the valid start positions. The video is read and checked before
the model is loaded. Nothing here imports training, transfer or TensorFlow code.

What is refused (:class:`~coreecho_jax.data.video.video_types.NotAnEchoVideoError`, one line naming the
file): a still image (one frame, or frames that are all the same picture) and a loop too short to hold
a cardiac cycle: fewer than :func:`min_frames` frames, i.e. one cycle at 150 bpm (0.4 s, 20 frames at
50 fps) or one clip span (``frames * stride``), whichever is fewer. A frame rate far from the training
data's (EchoNet-Dynamic, ~50 fps) gives a warning: the clip then spans another stretch of time.

EF interval: when the checkpoint's folder (a run workdir, an exported folder, or the folder of a
``.pth``) holds a ``calibration.json`` fitted for these weights and this K (training writes one; see
:mod:`coreecho_jax.evaluation.conformal`), the result carries ``ef_interval`` ``[lo, hi]`` (EF %) at
``interval_level`` and ``summary`` reads ``EF 38 [33, 44] (90 %)``; otherwise ``summary`` is ``EF 38`` and
a note says why there is no interval. ``ef_category`` is the guideline category of the predicted EF
(:mod:`coreecho_jax.evaluation.categories`). The starts here are spread evenly while calibration draws
them, so the spread may be distributed slightly differently from the calibration's.

When the run workdir holds ``embeddings_train.npz`` of the same checkpoint (``--mode=embed
--splits=train``), the result also carries the distribution-shift score of the video's mean clip
embedding: ``shift_distance`` and ``shift_percentile`` (:class:`coreecho_jax.inference.shift.ShiftIndex`,
a heuristic).
"""

from __future__ import annotations

from pathlib import Path

import ml_collections
import numpy as np

from coreecho_jax.checkpoints import saved_config
from coreecho_jax.data.video import video_io
from coreecho_jax.data.video.echo_loop import check_echo_loop, min_frames  # noqa: F401 (part of predict's API)
from coreecho_jax.evaluation import categories, conformal, multiclip
from coreecho_jax.evaluation import steps as eval_steps
from coreecho_jax.evaluation.evaluator import Evaluator, model_fingerprint
from coreecho_jax.inference import runs, shift, video_clips
from coreecho_jax.inference.runs import TrainedModel
from coreecho_jax.inference.video_clips import VideoClips


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
        The JSON-ready result (:func:`predict_clips`).

    Raises:
        CalibrationFileError: a damaged ``calibration.json`` beside the checkpoint.
        ConfigError: the given config's clip settings disagree with the run's.
        NotAnEchoVideoError: a still image or a loop too short for a cardiac cycle.
        VideoReadError: a missing or unreadable file.
    """
    checkpoint = Path(checkpoint).resolve()  # the origin ``--mode=embed`` records with its embeddings
    # the run's clip settings first: a video that is no echo loop is refused before any model loads
    config = saved_config.inference_config(config, checkpoint)
    prepared = video_clips.clips_for_video(
        config, video_path, int(config.eval.n_clips), crop=crop, target_fps=target_fps
    )
    return predict_clips(runs.load_run(config, checkpoint), prepared)


def predict_clips(trained: TrainedModel, prepared: VideoClips) -> dict:
    """The EF of one prepared video by ``trained`` (K = its clips), as :func:`predict_file` returns it.

    Returns:
        The JSON-ready result; ``ef_interval``/``interval_level`` only with a calibration beside
        ``trained.source``, ``shift_distance``/``shift_percentile`` only with training embeddings in it.
    """
    model, video, d = trained.model, prepared.video, prepared.spec
    x, starts, k = prepared.clips, prepared.starts, len(prepared.starts)
    notes = list(prepared.notes)
    model.eval()
    evaluator = Evaluator(
        lambda batch: np.asarray(eval_steps.predict_step(model, batch["video"])), trained.config.eval
    )
    result = evaluator.predict([multiclip.video_batch(x, starts, Path(prepared.path).name)])
    prediction = result.clip_predictions[0]
    ef, spread = float(prediction.mean()), float(prediction.std())
    interval = _interval(trained.source, model, ef, spread, k, notes)
    shift_score = {}
    index = shift.train_index(trained.source, trained.origin)
    if index is not None:
        embedding = np.asarray(eval_steps.embed_step(model, x[None]))[0].mean(axis=0, keepdims=True)
        shift_score = {key: float(value[0]) for key, value in index.score(embedding).items()}
    return {
        "summary": conformal.summary_line(ef, interval.get("ef_interval"), interval.get("interval_level")),
        "video": str(prepared.path),
        "checkpoint": trained.origin,
        "ef_mean": ef,
        "ef_std": spread,
        **interval,
        "ef_category": categories.NAMES[int(categories.bin_index(ef))],
        "ef_per_clip": [float(p) for p in prediction],
        "clip_starts": [int(s) for s in starts],
        "num_frames": int(video.num_frames),
        "fps": None if video.fps is None else float(video.fps),
        "clip": {
            "frames": d.frames,
            "stride": d.stride,
            "image_size": int(d.image_size),
            "channels": 1 if video.frames.ndim == 3 else 3,
        },
        "crop": video.metadata.get("crop_mode"),
        "crop_box": list(video.metadata["crop_box"]),
        "notes": notes,
        **shift_score,
    }


def _interval(checkpoint: Path, model, ef: float, spread: float, k: int, notes: list[str]) -> dict:
    """``ef_interval``, ``interval_level`` and ``calibration`` (its path) from the checkpoint's
    calibration when it fits these weights and K; else ``{}`` and a note saying why (appended to ``notes``)."""
    path = conformal.calibration_path(checkpoint)
    calibration, why = conformal.matching(path, model_fingerprint(model), k)
    if calibration is None:
        notes.append(f"no EF interval: {why}")
        return {}
    lo, hi = calibration.interval(ef, spread)
    reason = calibration.undefined_reason(int(calibration.bins(ef)))
    if reason:
        notes.append(f"EF interval [0, 100]: {reason}")
    return {
        "ef_interval": [float(lo), float(hi)],
        "interval_level": calibration.level,
        "calibration": str(path),
    }
