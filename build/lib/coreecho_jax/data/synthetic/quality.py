"""Image-quality degradation of drawn echo videos (CAMUS-style ``Good`` / ``Medium`` / ``Poor``).

A poor acoustic window shows as haze (clutter filling the cavities), lower tissue contrast, blur and
noise; :func:`degrade` adds all four, scaled by one ``amount``, inside the sector only.
"""

from __future__ import annotations

import cv2
import numpy as np

from coreecho_jax.data.synthetic.heart import REF_SIZE, smooth_noise
from coreecho_jax.errors import ConfigError


def degrade(frames: np.ndarray, amount: float, rng: np.random.Generator) -> np.ndarray:
    """A degraded copy of ``frames``: uint8 ``[T, H, W]`` (H = W) in, the same shape and dtype out.

    Args:
        frames: uint8 ``[T, H, W]``, 0 outside the sector (as drawn by ``draw_video``).
        amount: 0 (unchanged; ``frames`` returned as is, no draw from ``rng``) to 1 (poor: clutter
            up to ~35 % of full scale, contrast x 0.6, blur sigma 1.5 px at 112 px, noise sigma 12
            grey levels).
        rng: draws the clutter field and the noise.

    The sector is the set of pixels that are non-zero in any frame; pixels outside stay 0.
    """
    if not 0.0 <= amount <= 1.0:
        raise ConfigError(f"degrade: amount must lie in [0, 1], got {amount}")
    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 3 or frames.shape[1] != frames.shape[2]:
        raise ConfigError(
            f"degrade: frames must be uint8 [T, H, W] with H = W, got {frames.dtype} {frames.shape}"
        )
    if amount == 0.0:
        return frames
    size = frames.shape[1]
    scale = size / REF_SIZE
    sector = frames.max(axis=0) > 0
    clutter = np.clip(smooth_noise(rng, size, 6.0 * scale, 0.5), 0.0, None) * (0.35 * 255.0 * amount)
    out = frames.astype(np.float32) * (1.0 - 0.4 * amount) + clutter
    sigma = 1.5 * scale * amount
    for k in range(len(out)):
        cv2.GaussianBlur(out[k], (0, 0), sigmaX=sigma, dst=out[k], borderType=cv2.BORDER_REFLECT)
    out += rng.normal(0.0, 12.0 * amount, out.shape).astype(np.float32)
    out *= sector
    return np.clip(np.rint(out), 0.0, 255.0).astype(np.uint8)
