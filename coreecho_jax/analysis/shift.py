"""A distribution-shift score from the embedding (beyond the paper), and synthetic shifts to test it.

Score (a heuristic, not a guarantee): a video's *distance* is the mean Euclidean distance from its
embedding ``[D]`` to its ``k`` nearest training embeddings; its *percentile* is the share (in %) of
training videos whose leave-one-out distance (to their ``k`` nearest *other* training videos) is at
most that. A test video like the training data lands near the training videos' own percentiles
(uniform on 0..100); a video far from everything seen in training scores near 100. It says nothing
about a shift the encoder maps onto familiar embeddings (then the prediction can be wrong with a low
score), and a rare but valid video scores high too.

Synthetic shifts (:data:`SHIFTS`) act on normalised eval clips ``[..., T, H, W, 3]`` (the pipeline's
output) in numpy: they undo the normalisation, change the 0..255 pixels, clip and normalise again.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy import ndimage, spatial

from coreecho_jax.data import clips
from coreecho_jax.errors import DataError

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


# ------------------------------------------------------------------------------------ synthetic shifts
def _pixels(video: np.ndarray) -> np.ndarray:
    return np.asarray(video, np.float32) * clips.STD + clips.MEAN


def _normalised(pixels: np.ndarray) -> np.ndarray:
    return clips.normalise(np.clip(pixels, 0.0, 255.0))


def gain(video: np.ndarray, factor: float = 1.8) -> np.ndarray:
    """Brighter: pixels x ``factor`` (saturating at 255)."""
    return _normalised(_pixels(video) * factor)


def speckle(video: np.ndarray, sigma: float = 0.5, seed: int = 0) -> np.ndarray:
    """Multiplicative speckle: pixels x (1 + ``sigma`` N(0, 1)), independent per pixel and frame."""
    noise = np.random.default_rng(seed).standard_normal(np.shape(video)).astype(np.float32)
    return _normalised(_pixels(video) * (1.0 + sigma * noise))


def zoom(video: np.ndarray, factor: float = 1.5) -> np.ndarray:
    """Shallower depth: the central ``1 / factor`` of each frame enlarged to the full frame (bilinear)."""
    x = np.asarray(video, np.float32)
    h, w = x.shape[-3:-1]
    ch, cw = round(h / factor), round(w / factor)
    top, left = (h - ch) // 2, (w - cw) // 2
    crop = x[..., top : top + ch, left : left + cw, :]
    scale = [1.0] * (x.ndim - 3) + [h / ch, w / cw, 1.0]
    return ndimage.zoom(crop, scale, order=1)[..., :h, :w, :]


def rotate(video: np.ndarray, degrees: float = 90.0) -> np.ndarray:
    """A foreign view: every frame rotated by ``degrees`` (bilinear, black outside)."""
    pixels = ndimage.rotate(_pixels(video), degrees, axes=(-3, -2), reshape=False, order=1)
    return _normalised(pixels)


def frame_rate(video: np.ndarray, factor: int = 2) -> np.ndarray:
    """A ``factor`` x higher frame rate: each frame repeated ``factor`` times, the clip keeps its
    length ``T`` and so spans ``1 / factor`` of the time."""
    x = np.asarray(video)
    t = x.shape[-4]
    return np.take(x, np.arange(t) // int(factor), axis=-4)


#: The synthetic shifts of :func:`evaluate_shifts`: name -> clips ``[..., T, H, W, 3]`` -> same shape.
SHIFTS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "gain_x1.8": gain,
    "speckle_0.5": speckle,
    "zoom_x1.5": zoom,
    "rotate_90": rotate,
    "frame_rate_x2": frame_rate,
}
