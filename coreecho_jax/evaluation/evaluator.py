"""The multi-clip evaluator, in the big_vision manner: ``Evaluator(predict_fn, config.eval).run(batches)``.

One object serves validation, the test protocol, ``coreecho evaluate`` and ``predict``: it runs
``predict_fn`` over this process's eval batches (K clips per video, padded rows dropped), gathers the
videos of every process, and summarises them (MAE, RMSE, R2, Pearson, bootstrap CIs).

Many processes (``jax.distributed``): the eval pipeline gives each process its share of the videos,
padded to the same number of batches, and ``predict_fn`` returns that process's rows. The rows
(file name, label, clip predictions, clip starts) travel as one fixed-width byte row per video in a
single ``process_allgather``, so every process ends with the same videos in file-name order and
computes the same metrics, whatever the number of processes or the batch size.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import jax
import numpy as np
from flax import nnx
from jax.experimental import multihost_utils

from coreecho_jax.errors import ConfigError, DataError
from coreecho_jax.evaluation import conformal, multiclip
from coreecho_jax.evaluation.multiclip import VideoPredictions

PredictFn = Callable[[Mapping[str, np.ndarray]], np.ndarray]
"""This process's eval batch (``'video': [B, K, T, H, W, C]``, ...) -> its ``[B, K]`` EF predictions (%)."""

AllGather = Callable[[np.ndarray], np.ndarray]
"""This process's array -> ``[P, ...]``, every process's array stacked in process order."""

_F8 = np.dtype("<f8")
_I8 = np.dtype("<i8")


def process_allgather(x: np.ndarray) -> np.ndarray:
    """``[P, ...]`` stack of ``x`` over the JAX processes (``x`` itself, stacked, on one process)."""
    return np.asarray(multihost_utils.process_allgather(x, tiled=False))


def model_fingerprint(model: nnx.Module) -> str:
    """:func:`conformal.weights_fingerprint` of the model's parameters and BatchNorm statistics (not its
    RNG state): the same for a model after training, restored from its checkpoint, copied or exported."""
    state = nnx.to_pure_dict(nnx.state(model, nnx.Any(nnx.Param, nnx.BatchStat)))
    leaves = jax.tree_util.tree_flatten_with_path(state)[0]
    # addressable_data(0): a replicated array's whole value, also on a process of a multi-host run
    return conformal.weights_fingerprint(
        (jax.tree_util.keystr(path), np.asarray(x.addressable_data(0) if isinstance(x, jax.Array) else x))
        for path, x in leaves
    )


def _pack(local: VideoPredictions, rows: int, k: int, width: int) -> np.ndarray:
    """``[rows, width + 8 + 16 k]`` bytes: each video's UTF-8 name (zero padded), label, K predictions, K starts."""
    n = len(local)
    out = np.zeros((rows, width + _F8.itemsize * (1 + 2 * k)), np.uint8)
    for i, name in enumerate(local.filenames):
        encoded = np.frombuffer(name.encode(), np.uint8)
        out[i, : encoded.size] = encoded
    if n:
        columns = [
            local.labels.astype(_F8).reshape(n, 1),
            local.clip_predictions.astype(_F8),
            local.starts.astype(_I8),
        ]
        out[:n, width:] = np.concatenate([c.view(np.uint8) for c in columns], axis=1)
    return out


def _unpack(rows: np.ndarray, k: int, width: int) -> VideoPredictions:
    """The inverse of :func:`_pack` on ``[N, width + 8 + 16 k]`` bytes of real (unpadded) videos."""
    n = rows.shape[0]
    names = [bytes(r).rstrip(b"\0").decode() for r in rows[:, :width]]
    numbers = np.ascontiguousarray(rows[:, width:])
    label_end, clips_end = _F8.itemsize, _F8.itemsize * (1 + k)
    labels = numbers[:, :label_end].copy().view(_F8).reshape(n)
    clips = numbers[:, label_end:clips_end].copy().view(_F8).reshape(n, k)
    starts = numbers[:, clips_end:].copy().view(_I8).reshape(n, k)
    return VideoPredictions(
        names, labels.astype(np.float64), clips.astype(np.float64), starts.astype(np.int64)
    )


def gather_videos(local: VideoPredictions, *, allgather: AllGather = process_allgather) -> VideoPredictions:
    """Every process's videos, on every process, in file-name order (two collective calls).

    Raises:
        DataError: no process had a video, or a video came twice (the eval pipeline must give each
            video to exactly one process, once).
        ValueError: processes disagree on the number of clips per video.
    """
    k_local = local.clip_predictions.shape[1] if len(local) else 0
    width_local = max((len(n.encode()) for n in local.filenames), default=0)
    sizes = allgather(np.array([len(local), k_local, width_local], np.int64))  # [P, 3]
    counts, ks = sizes[:, 0], sizes[:, 1]
    if int(counts.sum()) == 0:
        raise DataError("the evaluation split produced no videos")
    if len(set(ks[counts > 0].tolist())) != 1:
        raise ValueError(f"processes evaluated different numbers of clips per video: {ks.tolist()}")
    k, width, rows = int(ks.max()), max(1, int(sizes[:, 2].max())), int(counts.max())
    stacked = allgather(_pack(local, rows, k, width))  # [P, rows, bytes]
    result = _unpack(np.concatenate([stacked[p, :c] for p, c in enumerate(counts)]), k, width)
    names, seen = np.unique(np.array(result.filenames, dtype=object), return_counts=True)
    if np.any(seen > 1):
        raise DataError(
            f"videos evaluated more than once: {names[seen > 1].tolist()[:5]}; the eval pipeline must "
            "visit each video once"
        )
    return result.sorted_by_name()


class Evaluator:
    """K clips per video, predictions averaged per video, the paper's metrics with bootstrap CIs.

    Args:
        predict_fn: this process's eval batch -> its ``[B, K]`` predictions (EF %), see :data:`PredictFn`.
        eval_config: ``config.eval``; reads ``n_clips`` (checked against the batches) and
            ``bootstrap`` (resamples of the 95% CIs). None when ``n_clips`` and ``bootstrap`` are given.
        seed: bootstrap seed.
        train_mean: the training set's mean EF (%): adds the MAE of predicting it for every video.
        n_clips: overrides ``eval_config.n_clips`` (the transfer evaluator's one clip per video).
        bootstrap: overrides ``eval_config.bootstrap`` (0: no CIs, as validation does each epoch).
        allgather: how processes exchange arrays (default :func:`process_allgather`; tests pass fakes).
    """

    def __init__(
        self,
        predict_fn: PredictFn,
        eval_config: Any = None,
        *,
        seed: int = 0,
        train_mean: float | None = None,
        n_clips: int | None = None,
        bootstrap: int | None = None,
        allgather: AllGather = process_allgather,
    ):
        if eval_config is None and (n_clips is None or bootstrap is None):
            raise TypeError("Evaluator needs eval_config, or both n_clips and bootstrap")
        self.predict_fn = predict_fn
        self.n_clips = int(eval_config.n_clips if n_clips is None else n_clips)
        self.bootstrap = int(eval_config.bootstrap if bootstrap is None else bootstrap)
        self.seed = int(seed)
        self.train_mean = train_mean
        self.allgather = allgather

    def predict(self, batches: Iterable[Mapping[str, np.ndarray]]) -> VideoPredictions:
        """Predictions of every video of every process, in file-name order (the same on every process).

        Raises:
            ConfigError: the batches hold a number of clips per video other than ``eval.n_clips``.
            DataError: see :func:`gather_videos`.
        """
        result = gather_videos(multiclip.predict_videos(self.predict_fn, batches), allgather=self.allgather)
        k = result.clip_predictions.shape[1]
        if k != self.n_clips:
            raise ConfigError(
                f"eval.n_clips is {self.n_clips} but the clip starts hold {k} clips per video "
                "(a start-index file or a saved test_start_indexes.json made with another n_clips?)"
            )
        return result

    def summarize(self, result: VideoPredictions) -> dict[str, float | int | str]:
        """The metrics of ``result`` (see :func:`multiclip.summarize`)."""
        return multiclip.summarize(
            result, train_mean=self.train_mean, n_resamples=self.bootstrap, seed=self.seed
        )

    def run(
        self, batches: Iterable[Mapping[str, np.ndarray]]
    ) -> tuple[VideoPredictions, dict[str, float | int | str]]:
        """:meth:`predict` then :meth:`summarize`: the per-video predictions and the metrics."""
        result = self.predict(batches)
        return result, self.summarize(result)
