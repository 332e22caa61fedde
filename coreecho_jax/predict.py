"""EF of one video file (AVI/MP4/DICOM), as mean and spread over K clips.

The clip settings (frames, stride, image size, channels) and the model come from the run that wrote
the checkpoint (:func:`coreecho_jax.inference.runs.load_run`); a given config that disagrees with them
is an error. The video goes through the same preparation as a user's own data and Grad-CAM's
(:func:`coreecho_jax.inference.video_clips.clips_for_video`: region or sector crop, square, 112x112,
RGB or grey as the run was trained, unless it already is a square of EchoNet-Dynamic's frame size) and
through the same clip sampler as evaluation (black end padding to ``frames * stride``, normalisation).
The K starts are spread evenly over the valid start positions. The video is read and checked before
the model is loaded (:func:`coreecho_jax.inference.quality.prepare`: a DICOM's header first, then the
clips, then the share of colour pixels in the sector). Nothing here imports training, transfer or
TensorFlow code.

What is refused (:class:`~coreecho_jax.data.video.video_types.NotAnEchoVideoError`, one line naming the
file): a DICOM object without pixel data (a structured report, ...) or with a single frame, a still
image (one frame, or frames that are all the same picture) and a loop too short to hold
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

When the run workdir holds ``embeddings_train.npz`` of the same checkpoint (``coreecho embed
--splits=train``), the result also carries the distribution-shift score of the video's mean clip
embedding: ``shift_distance`` and ``shift_percentile`` (:class:`coreecho_jax.inference.shift.ShiftIndex`,
a heuristic).

``flags`` lists the codes of :data:`FLAGS` that apply (a frame rate far from the training data's, a
padded loop, no or an unbounded interval, a high shift percentile, colour Doppler, ...): the notes' facts
for tables and filters. A DICOM's result also carries ``dicom`` (its study, series and SOP instance UIDs,
SOP class, modality, transfer syntax, number of ultrasound regions). Many videos of one model share a
:class:`PredictionContext` (the calibration and the shift index, read once):
``coreecho_jax.from_pretrained(...).predict_many(paths)`` passes it to :func:`predict_clips`.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import ml_collections
import numpy as np

from coreecho_jax.checkpoints import saved_config
from coreecho_jax.data.video import echo_loop, video_io
from coreecho_jax.data.video.echo_loop import check_echo_loop, min_frames  # noqa: F401 (part of predict's API)
from coreecho_jax.evaluation import categories, conformal, multiclip
from coreecho_jax.evaluation import steps as eval_steps
from coreecho_jax.evaluation.evaluator import Evaluator, model_fingerprint
from coreecho_jax.inference import quality, runs, shift, weights_folder
from coreecho_jax.inference.runs import TrainedModel
from coreecho_jax.inference.video_clips import VideoClips

#: A shift percentile at or above this flags the video ``far_from_training`` (a heuristic, see ``shift``).
SHIFT_FLAG_PERCENTILE = 95.0


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
        WeightsError: a weights folder with a missing or changed file.
        NotAnEchoVideoError: a still image or a loop too short for a cardiac cycle.
        VideoReadError: a missing or unreadable file.
    """
    checkpoint = Path(checkpoint).resolve()  # the origin ``coreecho embed`` records with its embeddings
    if weights_folder.is_weights_folder(checkpoint):
        weights_folder.read_folder(checkpoint)  # its files checked before its config.json is read
    # the run's clip settings first: a video that is no echo loop is refused before any model loads
    config = saved_config.inference_config(config, checkpoint)
    prepared = quality.prepare(config, video_path, int(config.eval.n_clips), crop=crop, target_fps=target_fps)
    return predict_clips(runs.load_run(config, checkpoint), prepared)


#: Quality flags a result may carry (``flags``), each a fact of this video, model or calibration; the
#: notes say the details. Codes, not sentences: tables and filters read them.
FLAGS = {
    "fps_unknown": "the file gives no frame rate; taken as the training data's",
    "fps_far_from_training": "the frame rate is far from the training data's (a clip spans another time)",
    "padded": "the video is shorter than one clip span; it was padded with black frames",
    "crop_note": "the crop was not the one the file suggested (no moving sector, a region refused)",
    "no_interval": "no calibration.json fitted for these weights and K: no EF interval",
    "interval_unbounded": "the calibration bin of this EF had too few videos: interval [0, 100]",
    "far_from_training": f"shift percentile >= {SHIFT_FLAG_PERCENTILE:g}: the video looks unlike the training data",
    "colour_doppler": (
        f"colour in at least {quality.COLOUR_DOPPLER_FRACTION:.0%} of the sector's pixels: colour Doppler, "
        "while the model was trained on B-mode (grey) loops"
    ),
}


@dataclasses.dataclass(frozen=True)
class PredictionContext:
    """What every prediction of one model at one K shares, read once: the calibration fitted for its
    weights and K (or None, and ``no_interval`` says why) and the shift-score index of the run's training
    embeddings (or None)."""

    clips_per_video: int
    calibration: conformal.Calibration | None
    calibration_path: Path
    no_interval: str
    shift_index: shift.ShiftIndex | None


def prediction_context(trained: TrainedModel, k: int) -> PredictionContext:
    """The :class:`PredictionContext` of ``trained`` at ``k`` clips per video.

    Raises:
        CalibrationFileError: a damaged ``calibration.json`` beside the checkpoint.
    """
    path = conformal.calibration_path(trained.source)
    calibration, why = conformal.matching(path, model_fingerprint(trained.model), k)
    index = shift.train_index(trained.source, trained.origin)
    return PredictionContext(k, calibration, path, why, index)


def predict_clips(
    trained: TrainedModel, prepared: VideoClips, context: PredictionContext | None = None
) -> dict:
    """The EF of one prepared video by ``trained`` (K = its clips), as :func:`predict_file` returns it.

    Args:
        trained: the loaded model.
        prepared: the video's clips (:func:`~coreecho_jax.inference.video_clips.clips_for_video`).
        context: :func:`prediction_context` of ``trained`` at this K, when many videos share it; None
            reads it for this video.

    Returns:
        The JSON-ready result; ``ef_interval``/``interval_level`` only with a calibration beside
        ``trained.source``, ``shift_distance``/``shift_percentile`` only with training embeddings in it;
        ``flags``: the :data:`FLAGS` codes that apply.
    """
    model, video, d = trained.model, prepared.video, prepared.spec
    x, starts, k = prepared.clips, prepared.starts, len(prepared.starts)
    if context is None or context.clips_per_video != k:
        context = prediction_context(trained, k)
    notes = list(prepared.notes)
    model.eval()
    evaluator = Evaluator(
        lambda batch: np.asarray(eval_steps.predict_step(model, batch["video"])), trained.config.eval
    )
    result = evaluator.predict([multiclip.video_batch(x, starts, Path(prepared.path).name)])
    prediction = result.clip_predictions[0]
    ef, spread = float(prediction.mean()), float(prediction.std())
    interval = _interval(context, ef, spread, notes)
    shift_score = {}
    if context.shift_index is not None:
        embedding = np.asarray(eval_steps.embed_step(model, x[None]))[0].mean(axis=0, keepdims=True)
        shift_score = {key: float(value[0]) for key, value in context.shift_index.score(embedding).items()}
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
        **({"dicom": dict(video.metadata["dicom"])} if "dicom" in video.metadata else {}),
        "colour_fraction": video.metadata.get("colour_fraction"),
        "notes": notes,
        "flags": _flags(prepared, context, ef, shift_score.get("shift_percentile")),
        **shift_score,
    }


def _flags(
    prepared: VideoClips, context: PredictionContext, ef: float, percentile: float | None
) -> list[str]:
    """The :data:`FLAGS` codes of one result, in the order of :data:`FLAGS`."""
    video, fps, calibration = prepared.video, prepared.video.fps, context.calibration
    ratio = (
        max(fps / echo_loop.TRAINING_FPS, echo_loop.TRAINING_FPS / fps) if fps else 1.0
    )  # its warning's rule
    on = {
        "fps_unknown": not fps,
        "fps_far_from_training": ratio > echo_loop.FPS_WARN_RATIO,
        "padded": video.num_frames < prepared.spec.span,
        "crop_note": bool(video.metadata.get("crop_note")),
        "no_interval": calibration is None,
        "interval_unbounded": calibration is not None
        and calibration.undefined_reason(int(calibration.bins(ef))) is not None,
        "far_from_training": percentile is not None and percentile >= SHIFT_FLAG_PERCENTILE,
        "colour_doppler": (video.metadata.get("colour_fraction") or 0.0) >= quality.COLOUR_DOPPLER_FRACTION,
    }
    return [code for code in FLAGS if on[code]]


def _interval(context: PredictionContext, ef: float, spread: float, notes: list[str]) -> dict:
    """``ef_interval``, ``interval_level`` and ``calibration`` (its path) from the context's calibration;
    else ``{}`` and a note saying why (appended to ``notes``)."""
    calibration = context.calibration
    if calibration is None:
        notes.append(f"no EF interval: {context.no_interval}")
        return {}
    lo, hi = calibration.interval(ef, spread)
    reason = calibration.undefined_reason(int(calibration.bins(ef)))
    if reason:
        notes.append(f"EF interval [0, 100]: {reason}")
    return {
        "ef_interval": [float(lo), float(hi)],
        "interval_level": calibration.level,
        "calibration": str(context.calibration_path),
    }
