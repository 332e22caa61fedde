"""One cardiac (half) cycle per video as a fixed-length clip: the input of the transfer experiments.

CAMUS sequences run from ED to ES (a half cycle, 10 to 40 frames); HMC-QU's annotated cycle runs over
one heartbeat (12 to 31 frames in the paper's subset). The encoder needs a fixed, even frame count, so
each cycle becomes a clip of ``frames`` frames of ``image_size x image_size`` px by one of two pipelines
(:class:`CycleSpec`, fields ``spatial`` and ``time_sampling``):

``spatial="ref21"`` (HMC-QU's default): the paper says its HMC-QU preprocessing strictly follows its
reference [21] (Saeed & Yaqub 2022, github.com/BioMedIA-MBZUAI/mi-classification, ``mi/a4c/cycle.py``,
which pins Pillow 8.4.0, torch 1.10.0, torchvision 0.11.1). Per frame, as [21]:

1. grey by PIL's ``convert("L")`` of the array OpenCV decoded, which is in BGR order while PIL takes
   it for RGB: ``L = (19595 B + 38470 G + 7471 R + 32768) >> 16`` (ITU-R 601-2 weights on swapped
   channels; the same as any other luma for grey pixels, R = G = B);
2. PIL ``resize((S, S))`` with its default filter, BICUBIC for mode L since Pillow 7.0 (8.4.0's
   default; passed explicitly here), rounded to uint8 by PIL;
3. float, then torchvision ``CenterCrop``: ``c = round(crop_fraction * S)`` px (170 of 224), the top
   and left offsets ``int(round((S - c) / 2))`` (Python's rounding, as torchvision);
4. torchvision ``Resize((S, S))`` of the float tensor: bilinear, ``align_corners=False``, no
   antialiasing (torchvision 0.11 applies none to tensors; it would not change an enlargement anyway).

The clip stays float32 (on the 0..255 scale: [21]'s values x 255; [21] divides by 255 before step 3,
which commutes with every step). ``spatial="area"`` (CAMUS's default, HMC-QU's before this protocol):
OpenCV's luma (``COLOR_RGB2GRAY``, BT.601 on the true channels), a centred crop keeping ``crop_fraction``
of each side (offsets ``(H - h) // 2``), a resize to ``S x S`` with area interpolation (aspect not
kept: CAMUS pixels are anisotropic and the CAMUS lab's own preprocessing resizes the same way), and
the clip rounded to uint8.

Time (``time_sampling``): ``"centres"`` is [21]'s ``interpolate(..., size=(12, 224, 224),
mode="trilinear")`` in time (``align_corners`` false): output frame ``i`` of ``T`` samples the cycle of
``F`` frames at ``(i + 0.5) F / T - 0.5``, clamped to ``[0, F - 1]``, linearly between the two nearest
frames (the cycle's first and last frames are not kept exactly). ``"ends"`` samples at
``linspace(0, F - 1, T)``: the first and last frames are kept.

Stored clips: ``[N, T, S, S]``, uint8 (``area``) or float32 0..255 (``ref21``).

Training augmentation (:func:`random_affine`) follows the official CAMUS class and [21]'s
``datasets.py`` alike: torchvision's ``RandomAffine(10, translate=(0.1, 0.1), scale=(0.8, 1.1))``,
nearest interpolation, fill 0, one draw per clip (every frame moves alike), applied to the stored clip
before the normalisation ``(x - mean) / std`` (CAMUS: 40.94405, 54.723774 from the official class) and
the tiling of the grey channel to three. The draw's distribution is torchvision's (angle, scale
uniform; translation ``round(uniform(-0.1 W, 0.1 W))`` px); the pixel grid convention is OpenCV's (the
torchvision result can differ by half a pixel at the rotation centre).

Batches are numpy dicts; their layouts are in :func:`train_batches` and :func:`eval_batches`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence

import cv2
import numpy as np
from PIL import Image

from coreecho_jax import seeds
from coreecho_jax.data.video.video_types import rgb_to_gray
from coreecho_jax.errors import DataError

#: ``CycleSpec.spatial``: [21]'s PIL / torchvision chain, or crop + area resize (module doc).
SPATIAL = ("ref21", "area")
#: ``CycleSpec.time_sampling``: [21]'s ``align_corners=False`` positions, or both ends kept.
TIME_SAMPLING = ("centres", "ends")


class CycleError(DataError):
    """A cycle cannot become a clip (too few frames, wrong layout)."""


@dataclasses.dataclass(frozen=True)
class CycleSpec:
    """How a cycle becomes a stored clip (the module doc describes both pipelines).

    Attributes:
        frames: frames per clip T (even: the UniFormer stem halves time). [21]: 12.
        image_size: output side S in px (``data.image_size``, as :attr:`clips.ClipSpec.image_size`). [21]: 224.
        crop_fraction: share of each side kept by the centred crop (1.0: none). [21]: 170 / 224.
        spatial: ``"ref21"`` (grey, resize, crop, resize back, as [21]; float32 clips) or ``"area"``
            (grey, crop, area resize; uint8 clips).
        time_sampling: ``"centres"`` ([21]'s trilinear ``align_corners=False``) or ``"ends"``
            (``linspace(0, F - 1, T)``).
    """

    frames: int = 16
    image_size: int = 112
    crop_fraction: float = 1.0
    spatial: str = "area"
    time_sampling: str = "ends"

    def __post_init__(self):
        if self.frames < 2 or self.frames % 2:
            raise CycleError(f"data.frames must be an even number >= 2, got {self.frames}")
        if self.image_size < 1:
            raise CycleError(f"data.image_size must be >= 1, got {self.image_size}")
        if not 0 < self.crop_fraction <= 1:
            raise CycleError(f"data.crop_fraction must lie in (0, 1], got {self.crop_fraction}")
        if self.spatial not in SPATIAL:
            raise CycleError(f"data.spatial must be one of {SPATIAL}, got {self.spatial!r}")
        if self.time_sampling not in TIME_SAMPLING:
            raise CycleError(f"data.time_sampling must be one of {TIME_SAMPLING}, got {self.time_sampling!r}")

    @property
    def dtype(self) -> type:
        """The stored clips' dtype: float32 (0..255 scale) for ``ref21``, uint8 for ``area``."""
        return np.float32 if self.spatial == "ref21" else np.uint8


@dataclasses.dataclass(frozen=True)
class AffineSpec:
    """torchvision ``RandomAffine(degrees, translate=(translate, translate), scale=scale)``."""

    degrees: float = 10.0
    translate: float = 0.1
    scale: tuple[float, float] = (0.8, 1.1)


def centre_crop(frames: np.ndarray, fraction: float) -> np.ndarray:
    """The centred ``round(fraction * H) x round(fraction * W)`` window of ``[F, H, W]`` frames
    (offsets ``(H - h) // 2``; the ``area`` pipeline)."""
    if fraction >= 1.0:
        return frames
    h, w = frames.shape[1:3]
    ch, cw = max(1, round(fraction * h)), max(1, round(fraction * w))
    top, left = (h - ch) // 2, (w - cw) // 2
    return frames[:, top : top + ch, left : left + cw]


def torchvision_centre_crop(frames: np.ndarray, fraction: float) -> np.ndarray:
    """torchvision ``CenterCrop((round(fraction * H), round(fraction * W)))`` of ``[F, H, W]`` frames:
    offsets ``int(round((H - h) / 2))`` with Python's round-half-to-even (the ``ref21`` pipeline)."""
    if fraction >= 1.0:
        return frames
    h, w = frames.shape[1:3]
    ch, cw = max(1, round(fraction * h)), max(1, round(fraction * w))
    top, left = int(round((h - ch) / 2.0)), int(round((w - cw) / 2.0))
    return frames[:, top : top + ch, left : left + cw]


def linear_taps(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """PyTorch's linear interpolation with ``align_corners=False`` along one axis, as index pairs.

    Output ``i`` samples input position ``src = max((i + 0.5) * in / out - 0.5, 0)`` (float32, the
    scale ``in / out`` as PyTorch computes it when given a size): ``(1 - w) x[i0] + w x[i1]`` with
    ``i0 = floor(src)``, ``i1 = min(i0 + 1, in - 1)``, ``w = src - i0``.

    Returns:
        (i0, i1, w): int64 ``[out]``, int64 ``[out]``, float32 ``[out]``.
    """
    if in_size < 1 or out_size < 1:
        raise CycleError(f"sizes must be >= 1, got {in_size} -> {out_size}")
    scale = np.float32(in_size) / np.float32(out_size)
    src = np.maximum(scale * (np.arange(out_size, dtype=np.float32) + np.float32(0.5)) - np.float32(0.5), 0)
    i0 = np.minimum(np.floor(src).astype(np.int64), in_size - 1)
    i1 = np.minimum(i0 + 1, in_size - 1)
    return i0, i1, (src - i0).astype(np.float32)


def resample_time(frames: np.ndarray, length: int, sampling: str = "ends") -> np.ndarray:
    """``[F, ...]`` -> ``[length, ...]`` float32, linear in time.

    ``sampling="ends"``: positions ``linspace(0, F - 1, length)``, the first and last frames kept
    exactly (needs F >= 2). ``"centres"``: [21]'s ``align_corners=False`` positions
    (:func:`linear_taps`).
    """
    n = frames.shape[0]
    x = frames.astype(np.float32)
    if sampling == "centres":
        if n < 1:
            raise CycleError("a cycle needs at least 1 frame, got 0")
        i0, i1, w = linear_taps(n, length)
        w = w.reshape((-1,) + (1,) * (frames.ndim - 1))
        return x[i0] * (np.float32(1) - w) + x[i1] * w
    if sampling != "ends":
        raise CycleError(f"time sampling must be one of {TIME_SAMPLING}, got {sampling!r}")
    if n < 2:
        raise CycleError(f"a cycle needs at least 2 frames, got {n}")
    pos = np.linspace(0.0, n - 1.0, length)
    lo = np.minimum(np.floor(pos).astype(np.int64), n - 2)
    frac = (pos - lo).astype(np.float32).reshape((-1,) + (1,) * (frames.ndim - 1))
    return x[lo] * (1.0 - frac) + x[lo + 1] * frac


def resize_bilinear(frames: np.ndarray, size: int) -> np.ndarray:
    """float32 ``[F, H, W]`` -> ``[F, size, size]``: torchvision's ``Resize`` of a float tensor
    (bilinear, ``align_corners=False``, no antialiasing), one axis after the other."""
    out = frames.astype(np.float32)
    for axis in (1, 2):
        i0, i1, w = linear_taps(out.shape[axis], size)
        shape = [1, 1, 1]
        shape[axis] = size
        w = w.reshape(shape)
        out = np.take(out, i0, axis=axis) * (np.float32(1) - w) + np.take(out, i1, axis=axis) * w
    return out


def pil_grey_resize(frame: np.ndarray, size: int) -> np.ndarray:
    """One decoded frame -> uint8 ``[size, size]`` as [21]: ``Image.fromarray(bgr).convert("L")
    .resize((size, size))`` (BICUBIC, PIL's default for mode L).

    ``frame`` is grey ``[H, W]`` or RGB ``[H, W, 3]`` (this library's order; reversed here to the BGR
    array OpenCV gave [21])."""
    if frame.ndim == 3:
        image = Image.fromarray(np.ascontiguousarray(frame[..., ::-1])).convert("L")
    else:
        image = Image.fromarray(np.ascontiguousarray(frame))
    return np.asarray(image.resize((size, size), Image.Resampling.BICUBIC))


def _check_frames(frames: np.ndarray) -> np.ndarray:
    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or not (frames.ndim == 3 or (frames.ndim == 4 and frames.shape[-1] == 3)):
        raise CycleError(
            f"expected uint8 grey frames [F, H, W] or RGB [F, H, W, 3], got {frames.dtype} {frames.shape}"
        )
    if frames.shape[0] == 0:
        raise CycleError("a cycle needs at least 1 frame, got 0")
    return frames


def cycle_to_clip(frames: np.ndarray, spec: CycleSpec) -> np.ndarray:
    """A cycle ``[F, H, W]`` grey or ``[F, H, W, 3]`` RGB, uint8 -> the stored clip ``[T, S, S]``:
    float32 0..255 (``spec.spatial="ref21"``) or uint8 (``"area"``); steps in the module doc."""
    frames = _check_frames(frames)
    if spec.spatial == "ref21":
        grey = np.stack([pil_grey_resize(f, spec.image_size) for f in frames]).astype(np.float32)
        cropped = torchvision_centre_crop(grey, spec.crop_fraction)
        resized = (
            resize_bilinear(cropped, spec.image_size) if cropped.shape[1:] != grey.shape[1:] else cropped
        )
        return resample_time(resized, spec.frames, spec.time_sampling).astype(np.float32)
    grey = rgb_to_gray(frames) if frames.ndim == 4 else frames
    cropped = centre_crop(grey, spec.crop_fraction)
    resized = np.stack(
        [cv2.resize(f, (spec.image_size, spec.image_size), interpolation=cv2.INTER_AREA) for f in cropped]
    )
    return np.clip(np.rint(resample_time(resized, spec.frames, spec.time_sampling)), 0, 255).astype(np.uint8)


def affine_matrix(rng: np.random.Generator, spec: AffineSpec, height: int, width: int) -> np.ndarray:
    """One ``RandomAffine`` draw as a 2x3 OpenCV matrix (rotation and scale about the centre, then the
    translation): angle ~ U(-degrees, degrees), translation ``round(U(-t W, t W))``, ``round(U(-t H,
    t H))`` px, scale ~ U(scale)."""
    angle = rng.uniform(-spec.degrees, spec.degrees)
    tx = float(np.round(rng.uniform(-spec.translate * width, spec.translate * width)))
    ty = float(np.round(rng.uniform(-spec.translate * height, spec.translate * height)))
    scale = rng.uniform(*spec.scale)
    m = cv2.getRotationMatrix2D(((width - 1) / 2.0, (height - 1) / 2.0), angle, scale)
    m[:, 2] += (tx, ty)
    return m


def random_affine(clip: np.ndarray, rng: np.random.Generator, spec: AffineSpec) -> np.ndarray:
    """One affine draw applied to every frame of a ``[T, H, W]`` clip, uint8 or float32 (nearest, fill 0)."""
    t, h, w = clip.shape
    m = affine_matrix(rng, spec, h, w)
    out = np.empty_like(clip)
    for i in range(t):
        out[i] = cv2.warpAffine(
            clip[i], m, (w, h), flags=cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT, borderValue=0
        )
    return out


def normalise(clips: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """``[..., T, S, S]`` grey (uint8, or float32 on the 0..255 scale) -> ``[..., T, S, S, 3]`` float32:
    the grey channel tiled to three and ``(x - mean[c]) / std[c]`` per channel."""
    mean = np.asarray(mean, np.float32).reshape(-1)
    std = np.asarray(std, np.float32).reshape(-1)
    if mean.size not in (1, 3) or std.size not in (1, 3):
        raise CycleError(f"mean and std need 1 or 3 values, got {mean.size} and {std.size}")
    x = clips.astype(np.float32)[..., None]
    return (np.broadcast_to(x, x.shape[:-1] + (3,)) - mean) / std


def epoch_order(indices: Sequence[int], *, seed: int, fold: int, epoch: int) -> np.ndarray:
    """The training order of one epoch: a permutation of ``indices`` from (seed, fold, epoch)."""
    indices = np.asarray(indices, np.int64)
    return indices[seeds.generator(seed, fold, epoch, seeds.TRAIN_ORDER).permutation(len(indices))]


def train_batches(
    clips: np.ndarray,
    labels: np.ndarray,
    indices: Sequence[int],
    global_batch: int,
    *,
    seed: int,
    fold: int,
    epoch: int,
    mean: Sequence[float],
    std: Sequence[float],
    augment: AffineSpec | None,
    process_index: int = 0,
    process_count: int = 1,
) -> Iterator[dict[str, np.ndarray]]:
    """One epoch of training batches of the rows ``indices`` of ``clips`` ``[N, T, S, S]`` (uint8 or
    float32, 0..255).

    Yields this process's share of each full global batch (the last partial batch is dropped):
    ``{"video": [b, T, S, S, 3] float32, "label": [b] float32}`` with ``b = global_batch /
    process_count``. The order and every augmentation draw are functions of (seed, fold, epoch,
    batch, row in batch) alone, so a resumed epoch and any process count see the same batches.
    """
    if global_batch % process_count:
        raise DataError(f"batch size {global_batch} does not split over {process_count} processes")
    order = epoch_order(indices, seed=seed, fold=fold, epoch=epoch)
    local = global_batch // process_count
    for b in range(len(order) // global_batch):
        rows = order[b * global_batch : (b + 1) * global_batch]
        mine = range(process_index * local, (process_index + 1) * local)
        batch = clips[rows[mine.start : mine.stop]]
        if augment is not None:
            batch = np.stack(
                [
                    random_affine(c, seeds.generator(seed, fold, epoch, b, j, seeds.AFFINE), augment)
                    for c, j in zip(batch, mine)
                ]
            )
        yield {
            "video": normalise(batch, mean, std),
            "label": labels[rows[mine.start : mine.stop]].astype(np.float32),
        }


def eval_batches(
    clips: np.ndarray,
    labels: np.ndarray,
    names: Sequence[str],
    indices: Sequence[int],
    global_batch: int,
    *,
    mean: Sequence[float],
    std: Sequence[float],
    process_index: int = 0,
    process_count: int = 1,
) -> Iterator[dict[str, np.ndarray]]:
    """The rows ``indices`` (in order) as eval batches of one clip per video, padded to full batches.

    Yields this process's share of each global batch, in the layout of the EchoNet evaluator
    (:mod:`coreecho_jax.evaluation.multiclip`): ``video [b, 1, T, S, S, 3]`` float32, ``ef [b]`` (the
    label: EF % or 0/1), ``mask [b]`` (False on padding rows), ``filename [b]`` (bytes), ``starts
    [b, 1]`` (0: the whole cycle).
    """
    if global_batch % process_count:
        raise DataError(f"batch size {global_batch} does not split over {process_count} processes")
    indices = np.asarray(indices, np.int64)
    local = global_batch // process_count
    n_batches = -(-len(indices) // global_batch)
    for b in range(n_batches):
        rows = indices[b * global_batch : (b + 1) * global_batch][
            process_index * local : (process_index + 1) * local
        ]
        n = len(rows)
        padded = np.concatenate([rows, np.full(local - n, indices[0], np.int64)])
        yield {
            "video": normalise(clips[padded], mean, std)[:, None],
            "ef": labels[padded].astype(np.float32),
            "mask": np.arange(local) < n,
            "filename": np.array([str(names[i]).encode() for i in padded], dtype=object),
            "starts": np.zeros((local, 1), np.int64),
        }
