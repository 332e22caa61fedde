"""A distribution-shift score from the embedding (beyond the paper).

Score (a heuristic, not a guarantee): a video's *distance* is the mean Euclidean distance from its
embedding ``[D]`` to its ``k`` nearest training embeddings; its *percentile* is the share (in %) of
training videos whose leave-one-out distance (to their ``k`` nearest *other* training videos) is at
most that. A test video like the training data lands near the training videos' own percentiles
(uniform on 0..100); a video far from everything seen in training scores near 100. It says nothing
about a shift the encoder maps onto familiar embeddings (then the prediction can be wrong with a low
score), and a rare but valid video scores high too.

The training embeddings are a run workdir's ``embeddings_train.npz`` (``coreecho embed --splits=train``,
:func:`train_index`). Synthetic shifts to test the score are :mod:`coreecho_jax.analysis.shift`'s.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy import spatial

from coreecho_jax.errors import DataError
from coreecho_jax.inference.embeddings import cached_train

#: Default neighbours of the score.
DEFAULT_K = 5


class ShiftIndex:
    """The training embeddings ``[N, D]`` and their leave-one-out distances, for :meth:`score`."""

    def __init__(self, train_embeddings: np.ndarray, k: int = DEFAULT_K):
        x = np.asarray(train_embeddings, np.float64)
        if x.ndim != 2 or x.shape[0] < 2:
            raise DataError(f"shift score: expected >= 2 training embeddings [N, D], got shape {x.shape}")
        self.train = x
        self.k = max(1, min(int(k), x.shape[0] - 1))
        d = spatial.distance.cdist(x, x)
        np.fill_diagonal(d, np.inf)  # leave one out
        self.train_loo = self._mean_nearest(d)  # [N], in the order of ``train_embeddings``
        self.train_distances = np.sort(self.train_loo)

    def _mean_nearest(self, d: np.ndarray) -> np.ndarray:
        return np.sort(d, axis=1)[:, : self.k].mean(axis=1)

    def distance(self, embeddings: np.ndarray) -> np.ndarray:
        """``[M]`` mean distance of each embedding ``[M, D]`` to its ``k`` nearest training embeddings."""
        x = np.atleast_2d(np.asarray(embeddings, np.float64))
        if x.shape[1] != self.train.shape[1]:
            raise DataError(
                f"shift score: embeddings of width {x.shape[1]}, the training embeddings have {self.train.shape[1]}"
            )
        return self._mean_nearest(spatial.distance.cdist(x, self.train))

    def percentile(self, distance: np.ndarray) -> np.ndarray:
        """``[M]`` share (%) of training leave-one-out distances <= each distance."""
        rank = np.searchsorted(self.train_distances, np.asarray(distance, np.float64), side="right")
        return 100.0 * rank / len(self.train_distances)

    def score(self, embeddings: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """``{'shift_distance': [M], 'shift_percentile': [M]}`` of embeddings ``[M, D]``; None: the
        training videos' own leave-one-out scores."""
        distance = self.train_loo if embeddings is None else self.distance(embeddings)
        return {"shift_distance": distance, "shift_percentile": self.percentile(distance)}


def train_index(run: str | Path, origin: str, k: int = DEFAULT_K) -> ShiftIndex | None:
    """The shift-score index of a run workdir's ``embeddings_train.npz`` of checkpoint ``origin``, if any
    (None for a ``.pth`` file, or a workdir without that file)."""
    run = Path(run)
    train = cached_train(run, origin) if run.is_dir() else None
    return None if train is None else ShiftIndex(train.embedding, k)
