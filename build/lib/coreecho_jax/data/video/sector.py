"""Where the ultrasound image (the sector) is in a video, found from the frames themselves.

The sector is what moves; text, logos, colour bars and toolbars are static, and an ECG trace or a
sweep cursor lights each pixel of its band only now and then. numpy and OpenCV only.
"""

from __future__ import annotations

import cv2
import numpy as np

from coreecho_jax.data.video.video_types import CropBox, rgb_to_gray


def _odd(n: float) -> int:
    n = max(3, int(round(n)))
    return n if n % 2 else n + 1


def _largest_component(mask: np.ndarray) -> np.ndarray | None:
    """Boolean mask of the largest 8-connected component of ``mask``, or None if empty."""
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), 8)
    if count <= 1:
        return None
    label = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    return labels == label


def _clean_component(raw: np.ndarray, kernel_size: int) -> np.ndarray | None:
    """Largest component of ``raw`` after removing thin/small structures.

    Opening with a ``kernel_size`` ellipse removes text strokes, thin lines (ECG
    traces, calipers) and speckle noise; closing with twice that size joins the
    pieces of the sector. The component is then grown back into ``raw`` within
    ``kernel_size`` pixels, so the thin apex of the fan that opening ate is kept.
    """
    small = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (kernel_size, kernel_size))
    large = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * kernel_size + 1,) * 2)
    cleaned = cv2.morphologyEx(raw.astype(np.uint8), cv2.MORPH_OPEN, small)
    cleaned = cv2.morphologyEx(cleaned, cv2.MORPH_CLOSE, large)
    component = _largest_component(cleaned)
    if component is None:
        return None
    grown = cv2.dilate(component.astype(np.uint8), small).astype(bool)
    return component | (grown & raw)


def _extend_to_faint(seed: np.ndarray, faint: np.ndarray, kernel_size: int) -> np.ndarray:
    """``seed`` joined with the pieces of ``faint`` that touch it, after an opening of twice the kernel.

    The wide opening drops bands such as the strip an ECG trace sweeps (and the block noise a
    lossy codec puts around it).

    The far edges of a sector are often nearly black yet still flicker with speckle; the bright
    moving part (``seed``) alone would frame the heart too tightly. Not used when the faint part
    fills most of the frame (a noisy background, e.g. a filmed screen).
    """
    wide = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * kernel_size + 1,) * 2)
    opened = cv2.morphologyEx(faint.astype(np.uint8), cv2.MORPH_OPEN, wide)
    count, labels = cv2.connectedComponents(opened | seed.astype(np.uint8), connectivity=8)
    touching = np.unique(labels[seed])
    joined = np.isin(labels, touching[touching > 0]) | seed
    if joined.mean() > 0.9:
        return seed
    return joined


def foreground_mask(
    frames: np.ndarray,
    *,
    max_frames: int = 64,
    min_fraction: float = 0.01,
    on_level: float = 8.0,
    faint_std: float = 0.25,
) -> tuple[np.ndarray, str]:
    """Mask of the ultrasound image (the sector) in a video, ignoring overlays.

    A pixel belongs to the sector if it changes over time (temporal std above a
    threshold) *and* is lit (> ``on_level``) in at least half of the frames. Static
    text, logos and grey/colour bars have ~0 std; a moving ECG trace or sweep cursor
    lights each pixel of its band only in a few frames. A morphological opening then
    removes what is thin, a closing joins the sector's pieces, and the largest
    connected component is kept. It is then extended into the touching pixels that change
    at all (std > ``faint_std``) and are not black (> 0) in at least half of the frames: the
    dim far edges of the fan. Fallbacks: the moving mask alone, then (nothing
    moves: one frame, a still loop) the largest bright component of the per-pixel
    maximum, opened with the same kernel to drop text.

    Args:
        frames: uint8 ``[T, H, W]`` or ``[T, H, W, 3]``.
        max_frames: frames sampled (evenly) for the statistics.
        min_fraction: smallest accepted mask, as a fraction of the frame area.
        on_level: grey level above which a pixel counts as lit.
        faint_std: temporal std (grey levels) above which a dim pixel next to the sector joins it.

    Returns:
        ``(mask [H, W] bool, method)`` where method is ``"motion"``, ``"intensity"``
        or ``"full"`` (nothing found: the whole frame).
    """
    gray = rgb_to_gray(frames) if frames.ndim == 4 else frames
    t, h, w = gray.shape
    picks = np.unique(np.linspace(0, t - 1, min(t, max_frames)).round().astype(int))
    sample = gray[picks].astype(np.float32)
    kernel_size = _odd(min(h, w) / 40)
    min_area = min_fraction * h * w
    if len(picks) >= 2:
        std = sample.std(axis=0)
        nonzero = std[std > 0]
        if nonzero.size:
            threshold = max(2.0, 0.2 * float(np.percentile(nonzero, 95)))
            moving = std > threshold
            lit_often = (sample > on_level).mean(axis=0) >= 0.5
            for raw in (moving & lit_often, moving):
                mask = _clean_component(raw, kernel_size)
                if mask is not None and mask.sum() >= min_area:
                    faint = (std > faint_std) & ((sample > 0).mean(axis=0) >= 0.5)
                    return _extend_to_faint(mask, faint, kernel_size), "motion"
    peak = sample.max(axis=0)
    threshold = max(10.0, 0.1 * float(np.percentile(peak, 99)))
    mask = _clean_component(peak > threshold, kernel_size)
    if mask is not None and mask.sum() >= min_area:
        return mask, "intensity"
    return np.ones((h, w), dtype=bool), "full"


def mask_box(mask: np.ndarray) -> CropBox:
    """Tight half-open bounding box of a non-empty boolean mask ``[H, W]``."""
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        raise ValueError("mask_box: mask is empty")
    return CropBox(int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1)


def hull_mask(mask: np.ndarray, height: int, width: int) -> np.ndarray:
    """Convex hull of ``mask [h, w]`` drawn filled at ``height x width`` (bool), e.g. full resolution."""
    h, w = mask.shape
    points = np.argwhere(mask)[:, ::-1].astype(np.float64) + 0.5
    points = points * (width / w, height / h) - 0.5
    hull = cv2.convexHull(np.round(points).astype(np.int32))
    keep = np.zeros((height, width), dtype=np.uint8)
    cv2.fillConvexPoly(keep, hull, 1)
    return keep.astype(bool)


def coverage(mask: np.ndarray, box: CropBox) -> float:
    """Fraction of the pixels of ``mask [H, W]`` that lie inside ``box`` (1.0 for an empty mask)."""
    total = int(mask.sum())
    if total == 0:
        return 1.0
    inside = int(mask[max(0, box.y0) : max(0, box.y1), max(0, box.x0) : max(0, box.x1)].sum())
    return inside / total


def static_overlay(
    frames: np.ndarray, mask: np.ndarray, *, max_frames: int = 64, on_level: float = 8.0
) -> np.ndarray:
    """Pixels ``[H, W]`` bool that never change and are lit, outside ``mask``: text, labels, bars, toolbars.

    A single frame has no overlay (nothing can be told apart).
    """
    gray = rgb_to_gray(frames) if frames.ndim == 4 else frames
    t = gray.shape[0]
    if t < 2:
        return np.zeros(gray.shape[1:], dtype=bool)
    picks = np.unique(np.linspace(0, t - 1, min(t, max_frames)).round().astype(int))
    sample = gray[picks]
    static = (sample == sample[0]).all(axis=0)
    return static & (sample[0] > on_level) & ~mask


def trim_box(box: CropBox, mask: np.ndarray, overlay: np.ndarray, *, max_loss: float = 0.02) -> CropBox:
    """Moves the edges of ``box`` inward until no ``overlay`` pixel is inside, losing little of ``mask``.

    The bounding box of a fan has empty corners where a depth scale or a label may sit. Each step
    moves in by one pixel the edge whose outer line holds overlay pixels and the fewest mask pixels.
    If that would cost more than ``max_loss`` of the mask inside the box, ``box`` is returned as is.
    """
    total = int(mask[box.y0 : box.y1, box.x0 : box.x1].sum())
    x0, y0, x1, y1 = box
    lost = 0
    while x1 - x0 > 1 and y1 - y0 > 1 and overlay[y0:y1, x0:x1].any():
        lines = {
            "top": (overlay[y0, x0:x1], mask[y0, x0:x1]),
            "bottom": (overlay[y1 - 1, x0:x1], mask[y1 - 1, x0:x1]),
            "left": (overlay[y0:y1, x0], mask[y0:y1, x0]),
            "right": (overlay[y0:y1, x1 - 1], mask[y0:y1, x1 - 1]),
        }
        candidates = [(int(m.sum()), edge) for edge, (o, m) in lines.items() if o.any()]
        if not candidates:  # overlay only strictly inside: trimming cannot reach it from any edge
            return box
        cost, edge = min(candidates)
        lost += cost
        if lost > max_loss * max(total, 1):
            return box
        if edge == "top":
            y0 += 1
        elif edge == "bottom":
            y1 -= 1
        elif edge == "left":
            x0 += 1
        else:
            x1 -= 1
    return CropBox(x0, y0, x1, y1)


def sector_box(frames: np.ndarray) -> tuple[CropBox, np.ndarray, str]:
    """The crop box of the sector: ``(box, mask [H, W] bool, method)`` (see :func:`foreground_mask`).

    The box is the mask's bounding box, trimmed (:func:`trim_box`) so that static text in its
    empty corners stays out.
    """
    mask, method = foreground_mask(frames)
    box = mask_box(mask)
    if method == "full":
        return box, mask, method
    return trim_box(box, mask, static_overlay(frames, mask)), mask, method
