"""The Python API: ``from_pretrained`` gives an :class:`EchoModel`; it predicts, streams and embeds.

::

    import coreecho_jax
    m = coreecho_jax.from_pretrained("weights/echonet")   # a folder, or "owner/name" on the Hub
    r = m.predict("a.dcm")                                 # a Prediction; r.to_dict() is predict's JSON
    print(r.summary, r.ef_interval, r.flags)
    for r in m.predict_many(paths):                        # one loaded, compiled model; errors as results
        print(r.path, r.ef if r.ok else r.error)
    e = m.embed("a.dcm")                                   # e.embedding [D], e.clip_embeddings [K, D]

One :class:`EchoModel` holds the model (loaded and checked once), its config (clip settings, K) and
what every prediction shares (the calibration matched to its weights, the shift-score index of a run's
training embeddings): :meth:`~EchoModel.predict_many` reads each video and runs the same compiled
model on it. A video gives the same numbers on every call and in every process: the preparation is
deterministic (evenly spread clip starts, no random draw) and the model is in eval mode.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import types
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import ml_collections
import numpy as np

from coreecho_jax import predict as predict_lib
from coreecho_jax.checkpoints import saved_config
from coreecho_jax.data.video import video_io
from coreecho_jax.errors import CoreEchoError, DataError
from coreecho_jax.evaluation import steps as eval_steps
from coreecho_jax.evaluation.evaluator import model_fingerprint
from coreecho_jax.inference import compile_cache, quality, runs, weights_folder
from coreecho_jax.inference.video_clips import VideoClips
from coreecho_jax.weights import hub


@dataclasses.dataclass(frozen=True)
class Prediction:
    """One video's result (EF in %), or the error that stopped it (``error``; the other fields empty).

    Attributes:
        path: the video as given.
        ef: mean of the K clip predictions.
        ef_interval: ``(lo, hi)`` at ``interval_level`` (calibrated), or None without a calibration.
        category: guideline category of ``ef`` (``reduced`` < 40, ``mildly_reduced`` < 50, ``normal``).
        summary: ``EF 38 [33, 44] (90 %)`` (``EF 38`` without an interval).
        ef_per_clip, clip_starts: each clip's EF and first frame.
        clip_spread: standard deviation of the K clip EFs.
        shift_percentile, shift_distance: the distribution-shift score when the model has training
            embeddings (a run workdir after ``coreecho embed``), else None.
        crop, crop_box: how the frame was cropped (``region``/``sector``/``none``; x0, y0, x1, y1 px).
        num_frames, fps: the video read.
        notes: sentences worth reading; flags: their codes (:data:`coreecho_jax.predict.FLAGS`).
        study_uid, series_uid, sop_uid: a DICOM's StudyInstanceUID, SeriesInstanceUID and
            SOPInstanceUID (None for other files or when absent).
        colour_fraction: the largest share of the sector's pixels in colour in a frame
            (:func:`coreecho_jax.inference.quality.colour_fraction`; ``colour_doppler`` flags it).
    """

    path: str
    ef: float | None = None
    ef_interval: tuple[float, float] | None = None
    interval_level: float | None = None
    category: str | None = None
    summary: str = ""
    ef_per_clip: tuple[float, ...] = ()
    clip_starts: tuple[int, ...] = ()
    clip_spread: float | None = None
    shift_percentile: float | None = None
    shift_distance: float | None = None
    crop: str | None = None
    crop_box: tuple[int, ...] | None = None
    num_frames: int | None = None
    fps: float | None = None
    notes: tuple[str, ...] = ()
    flags: tuple[str, ...] = ()
    error: str | None = None
    study_uid: str | None = None
    series_uid: str | None = None
    sop_uid: str | None = None
    colour_fraction: float | None = None
    record: Mapping[str, Any] = dataclasses.field(
        default_factory=lambda: types.MappingProxyType({}), repr=False, compare=False
    )

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_dict(self) -> dict[str, Any]:
        """``predict_file``'s JSON of this video (a fresh copy); ``{"video", "error"}`` for an error."""
        if not self.ok:
            return {"video": self.path, "error": self.error}
        return copy.deepcopy(dict(self.record))

    @classmethod
    def from_record(cls, path: str | Path, record: Mapping[str, Any]) -> Prediction:
        """The typed view of a :func:`coreecho_jax.predict.predict_clips` result."""
        interval = record.get("ef_interval")
        uids = record.get("dicom", {})
        return cls(
            path=str(path),
            ef=record["ef_mean"],
            ef_interval=None if interval is None else (interval[0], interval[1]),
            interval_level=record.get("interval_level"),
            category=record["ef_category"],
            summary=record["summary"],
            ef_per_clip=tuple(record["ef_per_clip"]),
            clip_starts=tuple(record["clip_starts"]),
            clip_spread=record["ef_std"],
            shift_percentile=record.get("shift_percentile"),
            shift_distance=record.get("shift_distance"),
            crop=record["crop"],
            crop_box=tuple(record["crop_box"]),
            num_frames=record["num_frames"],
            fps=record["fps"],
            notes=tuple(record["notes"]),
            flags=tuple(record["flags"]),
            study_uid=uids.get("study_uid"),
            series_uid=uids.get("series_uid"),
            sop_uid=uids.get("sop_uid"),
            colour_fraction=record.get("colour_fraction"),
            record=types.MappingProxyType(copy.deepcopy(dict(record))),
        )


@dataclasses.dataclass(frozen=True, eq=False)
class Embedding:
    """A video's encoder embeddings: ``embedding`` float32 ``[D]`` (mean of the clips'), ``clip_embeddings``
    float32 ``[K, D]``, ``clip_starts`` int64 ``[K]`` (None for clips given as an array), ``path``."""

    embedding: np.ndarray
    clip_embeddings: np.ndarray
    clip_starts: np.ndarray | None = None
    path: str | None = None


class EchoModel:
    """A loaded model with its preparation (module doc). Build it with :func:`from_pretrained`.

    Attributes:
        trained: the model, its config and origin (:class:`~coreecho_jax.inference.runs.TrainedModel`).
        name: what it was loaded from (a folder, or ``owner/name@revision``).
    """

    def __init__(self, trained: runs.TrainedModel, name: str):
        self.trained = trained
        self.name = name
        self._context: predict_lib.PredictionContext | None = None

    def __repr__(self) -> str:
        head = "EF head" if self.has_head else "encoder only"
        return f"EchoModel({self.name!r}, {head}, K={self.clips_per_video})"

    @property
    def config(self) -> ml_collections.ConfigDict:
        """The config the model was trained with: clip settings (``data.*``), K (``eval.n_clips``)."""
        return self.trained.config

    @property
    def has_head(self) -> bool:
        return self.trained.has_head

    @property
    def clips_per_video(self) -> int:
        return int(self.config.eval.n_clips)

    @property
    def weights_sha256(self) -> str:
        """The weights' SHA-256 (:func:`~coreecho_jax.evaluation.evaluator.model_fingerprint`)."""
        return model_fingerprint(self.trained.model)

    def prepare(
        self, path: str | Path, *, crop: video_io.CropMode | None = None, target_fps: float | None = None
    ) -> VideoClips:
        """The video as this model's K clips and quality facts (:func:`coreecho_jax.inference.quality.prepare`)."""
        return quality.prepare(self.config, path, self.clips_per_video, crop=crop, target_fps=target_fps)

    def _require_head(self) -> None:
        if not self.has_head:
            raise weights_folder.WeightsError(f"{self.name}: {runs.NO_HEAD}")

    def predict(
        self, path: str | Path, *, crop: video_io.CropMode | None = None, target_fps: float | None = None
    ) -> Prediction:
        """The EF of one video file (AVI/MP4/MOV/MKV or DICOM).

        Raises:
            WeightsError: an encoder without an EF head.
            NotAnEchoVideoError, VideoReadError: a file that is no echo loop, or unreadable.
        """
        self._require_head()
        return self.predict_prepared(self.prepare(path, crop=crop, target_fps=target_fps))

    def predict_prepared(self, prepared: VideoClips) -> Prediction:
        """The EF of a video :meth:`prepare` gave (e.g. in another process: the folder command decodes
        ahead of the model), the same as :meth:`predict` of its file.

        Raises:
            WeightsError: an encoder without an EF head.
        """
        self._require_head()
        if self._context is None:
            self._context = predict_lib.prediction_context(self.trained, self.clips_per_video)
        record = predict_lib.predict_clips(self.trained, prepared, self._context)
        return Prediction.from_record(prepared.path, record)

    def predict_many(
        self,
        paths: Iterable[str | Path],
        *,
        crop: video_io.CropMode | None = None,
        target_fps: float | None = None,
    ) -> Iterator[Prediction]:
        """One :class:`Prediction` per path, in order, as each is ready (a generator). A file that fails
        (unreadable, no echo loop: an error raised on purpose, or an OSError) gives a result whose
        ``error`` says why, and the stream goes on.

        Raises:
            WeightsError: an encoder without an EF head (at once, before any file).
        """
        self._require_head()
        return self._stream(paths, crop, target_fps)

    def _stream(
        self, paths: Iterable[str | Path], crop: video_io.CropMode | None, target_fps: float | None
    ) -> Iterator[Prediction]:
        for path in paths:
            try:
                yield self.predict(path, crop=crop, target_fps=target_fps)
            except (CoreEchoError, OSError) as e:
                yield Prediction(path=str(path), error=str(e))

    def embed(
        self,
        video: str | Path | VideoClips | np.ndarray,
        *,
        crop: video_io.CropMode | None = None,
        target_fps: float | None = None,
    ) -> Embedding:
        """The encoder embeddings of a video file, of its prepared clips (:meth:`prepare`), or of clips
        float32 ``[K, T, S, S, 3]`` normalised as the model's (T = ``data.frames``, S = ``data.image_size``).

        Raises:
            DataError: an array of another shape. The errors of :meth:`prepare` for a file.
        """
        starts, path = None, None
        if isinstance(video, str | os.PathLike):
            video = self.prepare(video, crop=crop, target_fps=target_fps)
        if isinstance(video, VideoClips):
            x, starts, path = video.clips, np.asarray(video.starts, np.int64), str(video.path)
        else:
            x = np.asarray(video, np.float32)
            data = self.config.data
            expected = (int(data.frames), int(data.image_size), int(data.image_size), 3)
            if x.ndim != 5 or x.shape[1:] != expected:
                raise DataError(
                    f"embed: expected clips [K, {', '.join(map(str, expected))}], got shape {x.shape}"
                )
        self.trained.model.eval()
        clip_embeddings = np.asarray(eval_steps.embed_step(self.trained.model, x[None]))[0]
        return Embedding(clip_embeddings.mean(axis=0), clip_embeddings, starts, path)


def from_pretrained(
    path_or_hub_id: str | Path,
    revision: str | None = None,
    *,
    local_files_only: bool | None = None,
    cache_dir: str | Path | None = None,
    config: ml_collections.ConfigDict | None = None,
    compilation_cache: compile_cache.CacheSetting = None,
) -> EchoModel:
    """The model a weights folder holds, ready to predict (module doc).

    Args:
        path_or_hub_id: a weights folder (:mod:`coreecho_jax.inference.weights_folder`) or a run workdir
            on disk; else a Hugging Face Hub id ``owner/name`` (needs ``huggingface_hub``).
        revision: the Hub branch, tag or commit to pin (a Hub id only).
        local_files_only: True: read only the Hub cache, no network call; ``HF_HUB_OFFLINE=1`` does the
            same whatever this says (None: the environment decides).
        cache_dir: the Hub cache (default: huggingface_hub's).
        config: optional; its runtime model fields (``dtype``, ``attention``, ...) and ``eval.*`` are
            used, its clip settings must agree with the folder's.
        compilation_cache: JAX's persistent compilation cache, so that the next process does not
            compile the model again: a folder, False for off, None for the default
            (:func:`coreecho_jax.inference.compile_cache.enable`: ``$COREECHO_COMPILE_CACHE``, else
            ``<data home>/jax_compilation_cache``). Process-wide.

    Raises:
        WeightsError: see :func:`coreecho_jax.weights.hub.resolve` and
            :func:`coreecho_jax.inference.weights_folder.read_folder` (a changed file names itself);
            neither a weights folder nor a run workdir.
        ConfigError: a ``compilation_cache`` (or ``$COREECHO_COMPILE_CACHE``) that is a file.
    """
    compile_cache.enable(compilation_cache)
    folder, name = hub.resolve(
        path_or_hub_id, revision, local_files_only=local_files_only, cache_dir=cache_dir
    )
    if weights_folder.is_weights_folder(folder):
        trained = runs.load_weights_folder(config, folder, require_head=False)
    elif folder.is_dir() and saved_config.read_run_config(folder) is not None:
        trained = runs.load_run(config, folder)
    else:
        raise weights_folder.WeightsError(
            f"{name}: not a weights folder (no {weights_folder.MANIFEST_FILE}) nor a run workdir (no "
            f"{saved_config.RUN_CONFIG_FILE}); export one with coreecho export-weights"
        )
    return EchoModel(trained, name)
