"""Does the Grad-CAM look at the left ventricle? CAM mass inside the (dilated) LV cavity of synthetic videos.

The synthetic EchoNet writer can store the LV cavity of every frame (``write_echonet_dataset(...,
write_masks=True)``; ``read_mask`` gives bool ``[F, 112, 112]`` in the video's own frames). For the
evaluation clips of a video (``K`` evenly spaced starts; frame ``i`` of the clip at ``start`` is video
frame ``start + stride * i``; the full frame, no translation, resized to ``data.image_size`` as the
clip sampler does) the masks are mapped onto the clip the same way:

1. each video frame's mask is dilated by a disk of ``dilation`` px (in the 112 px frame);
2. the frames of the clip are gathered; frames of the black end padding (beyond the video) have no
   LV and are left out of the measure, numerator and denominator;
3. the dilated masks are area-resized to the clip's size (the sampler's ``resize_clip``) and a pixel
   counts as LV when at least half of it is (``>= 0.5``).

Transfer clips (one per video, :mod:`coreecho_jax.data.transfer.cycles`) have an LV only where the dataset
segments it in every frame of the cycle: CAMUS's 2023 release (``_half_sequence_gt``, label 1; the
synthetic CAMUS writes it too). :func:`cycle_lv_masks` sends those masks through the clip's own
preparation (:func:`coreecho_jax.data.transfer.cycles.cycle_to_clip` of the mask x 255: the same crop, resize
and time resampling as the frames), keeps a pixel where at least half of it is LV (``>= 127.5``) and
dilates in the clip by a disk of ``round(dilation * S / 112)`` px, the EchoNet radius scaled to the
clip's side ``S``. HMC-QU's masks outline the LV *wall* (myocardium), not the cavity, and have no reader
here: its CAM-in-LV share is not defined.

``focus = sum(cam * lv) / sum(cam)`` over the clip's frames (a clip with a blank map is left out);
``chance = mean(lv)``: the share of the frame area the dilated LV covers, i.e. the focus of a
uniform map. A focus above chance means the map concentrates on the LV region.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from coreecho_jax.data import clips
from coreecho_jax.data.echonet_layout import FRAME_SIZE
from coreecho_jax.data.transfer import cycles
from coreecho_jax.errors import DataError

#: Default dilation radius of the LV mask, px of the 112 px frame.
DEFAULT_DILATION = 5


def disk(radius: int) -> np.ndarray:
    """bool ``[2r+1, 2r+1]`` disk structuring element (pixels within ``radius`` of the centre)."""
    if radius < 0:
        raise DataError(f"LV dilation radius must be >= 0 px, got {radius}")
    y, x = np.mgrid[-radius : radius + 1, -radius : radius + 1]
    return x * x + y * y <= radius * radius


def clip_lv_masks(
    masks: np.ndarray, start: int, frames: int, stride: int, image_size: int, dilation: int = DEFAULT_DILATION
) -> tuple[np.ndarray, np.ndarray]:
    """The dilated LV of a clip: (bool ``[T, S, S]``, bool ``[T]`` frame lies inside the video, not padding).

    Args:
        masks: bool ``[F, H, W]`` LV cavity of every video frame.
        start, frames, stride: the clip (frame ``i`` is video frame ``start + stride * i``).
        image_size: the clip's side S in px.
        dilation: disk radius in px of the mask's frame.
    """
    masks = np.asarray(masks, bool)
    if masks.ndim != 3:
        raise DataError(f"LV masks must be bool [F, H, W], got shape {masks.shape}")
    index = clips.clip_indices(int(start), frames, stride)
    valid = index < masks.shape[0]
    picked = np.zeros((frames,) + masks.shape[1:], bool)
    picked[valid] = masks[index[valid]]
    if dilation > 0:
        picked = ndimage.binary_dilation(picked, structure=disk(dilation)[None])
    if picked.shape[1:] != (image_size, image_size):
        picked = clips.resize_clip(picked[..., None].astype(np.float32), image_size)[..., 0] >= 0.5
    return picked, valid


def focus_fraction(cam: np.ndarray, lv: np.ndarray, valid: np.ndarray | None = None) -> tuple[float, float]:
    """(CAM mass inside ``lv`` / total CAM mass, area share of ``lv``) over the ``valid`` frames of ``[T, H, W]``.

    The focus is NaN when the map has no mass on those frames.
    """
    cam = np.asarray(cam, np.float64)
    lv = np.asarray(lv, bool)
    if cam.shape != lv.shape:
        raise DataError(f"CAM {cam.shape} and LV mask {lv.shape} must have the same [T, H, W] shape")
    if valid is not None:
        cam, lv = cam[valid], lv[valid]
    total = cam.sum()
    focus = float((cam * lv).sum() / total) if total > 0 else float("nan")
    return focus, float(lv.mean())


def clip_dilation(dilation: int, image_size: int) -> int:
    """The radius in clip px of ``dilation`` px of a 112 px frame: ``round(dilation * image_size / 112)``."""
    if dilation < 0:
        raise DataError(f"LV dilation radius must be >= 0 px, got {dilation}")
    return int(round(dilation * image_size / FRAME_SIZE))


def cycle_lv_masks(masks: np.ndarray, spec: cycles.CycleSpec, dilation: int = DEFAULT_DILATION) -> np.ndarray:
    """The dilated LV of a transfer clip: bool ``[T, S, S]`` from the cycle's masks bool ``[F, H, W]``.

    The masks go through ``cycle_to_clip`` with the clip's ``spec`` (module doc); ``dilation`` is in px of a
    112 px frame (:func:`clip_dilation`).
    """
    masks = np.asarray(masks, bool)
    if masks.ndim != 3:
        raise DataError(f"LV masks must be bool [F, H, W], got shape {masks.shape}")
    lv = np.asarray(cycles.cycle_to_clip(masks.astype(np.uint8) * 255, spec), np.float32) >= 127.5
    radius = clip_dilation(dilation, spec.image_size)
    if radius > 0:
        lv = ndimage.binary_dilation(lv, structure=disk(radius)[None])
    return lv
