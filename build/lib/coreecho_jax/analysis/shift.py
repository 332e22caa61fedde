"""Synthetic shifts to test the distribution-shift score (:mod:`coreecho_jax.inference.shift`).

The shifts (:data:`SHIFTS`) act on normalised eval clips ``[..., T, H, W, 3]`` (the pipeline's
output) in numpy: they undo the normalisation, change the 0..255 pixels, clip and normalise again.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy import ndimage

from coreecho_jax.data import clips


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
