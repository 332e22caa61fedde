"""One cardiac (half) cycle per video as a fixed-length clip: the input of the transfer experiments.

CAMUS sequences run from ED to ES (a half cycle, 10 to 40 frames); HMC-QU's annotated cycle runs over
one heartbeat (12 to 31 frames in the paper's subset). The encoder needs a fixed, even frame count, so
each cycle is resampled to ``frames`` frames, as the field does (linear interpolation in time between
the two nearest frames; the paper's reference [21] resampled trilinearly to 12 frames; CoReEcho's own
count is unpublished). The official CAMUS class reads already-preprocessed tensors, so the spatial
steps here are ours, stated as choices:

1. grey frames ``[F, H, W]`` uint8 (CAMUS is grey; HMC-QU AVIs are read as luma);
2. a centred crop keeping ``crop_fraction`` of each side (HMC-QU, after [21]: 170 of 224 -> 0.759;
   CAMUS: 1.0, the whole image), then a resize to ``size x size`` with area interpolation (the aspect
   ratio is not kept: CAMUS pixels are anisotropic and the lab's own preprocessing resizes the same way);
3. the time resampling above, rounded back to uint8 (what is stored: ``[N, T, S, S]``).

Training augmentation (:func:`random_affine`) follows the official CAMUS class: torchvision's
``RandomAffine(10, translate=(0.1, 0.1), scale=(0.8, 1.1))``, nearest interpolation, fill 0, one
draw per clip (every frame moves alike), applied to the 0..255 clip before the normalisation
``(x - mean) / std`` (CAMUS: 40.94405, 54.723774 from the official class) and the tiling of the grey
channel to three. The draw's distribution is torchvision's (angle, scale uniform; translation
``round(uniform(-0.1 W, 0.1 W))`` px); the pixel grid convention is OpenCV's (the torchvision result
can differ by half a pixel at the rotation centre).

Batches are numpy dicts; their layouts are in :func:`train_batches` and :func:`eval_batches`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence

import cv2
import numpy as np

from coreecho_jax.errors import DataError


class CycleError(DataError):
    """A cycle cannot become a clip (too few frames, wrong layout)."""


@dataclasses.dataclass(frozen=True)
class CycleSpec:
    """How a cycle becomes a stored clip.

    Attributes:
        frames: frames per clip T (even: the UniFormer stem halves time).
        size: output side S in px.
        crop_fraction: share of each side kept by the centred crop before resizing (1.0: none).
    """

    frames: int = 16
    size: int = 112
    crop_fraction: float = 1.0

    def __post_init__(self):
        if self.frames < 2 or self.frames % 2:
            raise CycleError(f"frames must be an even number >= 2, got {self.frames}")
        if self.size < 1:
            raise CycleError(f"size must be >= 1, got {self.size}")
        if not 0 < self.crop_fraction <= 1:
            raise CycleError(f"crop_fraction must lie in (0, 1], got {self.crop_fraction}")


@dataclasses.dataclass(frozen=True)
class AffineSpec:
    """torchvision ``RandomAffine(degrees, translate=(translate, translate), scale=scale)``."""

    degrees: float = 10.0
    translate: float = 0.1
    scale: tuple[float, float] = (0.8, 1.1)


def centre_crop(frames: np.ndarray, fraction: float) -> np.ndarray:
    """The centred ``round(fraction * H) x round(fraction * W)`` window of ``[F, H, W]`` frames."""
    if fraction >= 1.0:
        return frames
    h, w = frames.shape[1:3]
    ch, cw = max(1, round(fraction * h)), max(1, round(fraction * w))
    top, left = (h - ch) // 2, (w - cw) // 2
    return frames[:, top : top + ch, left : left + cw]


def resample_time(frames: np.ndarray, length: int) -> np.ndarray:
    """``[F, ...]`` -> ``[length, ...]`` float32 by linear interpolation at ``linspace(0, F - 1, length)``:
    the first and last frames are kept exactly."""
    n = frames.shape[0]
    if n < 2:
        raise CycleError(f"a cycle needs at least 2 frames, got {n}")
    pos = np.linspace(0.0, n - 1.0, length)
    lo = np.minimum(np.floor(pos).astype(np.int64), n - 2)
    frac = (pos - lo).astype(np.float32).reshape((-1,) + (1,) * (frames.ndim - 1))
    x = frames.astype(np.float32)
    return x[lo] * (1.0 - frac) + x[lo + 1] * frac


def cycle_to_clip(frames: np.ndarray, spec: CycleSpec) -> np.ndarray:
    """A cycle ``[F, H, W]`` uint8 (grey) -> the stored clip ``[T, S, S]`` uint8 (module doc, steps 2-3)."""
    frames = np.asarray(frames)
    if frames.ndim != 3:
        raise CycleError(f"expected grey frames [F, H, W], got shape {frames.shape}")
    cropped = centre_crop(frames, spec.crop_fraction)
    resized = np.stack([cv2.resize(f, (spec.size, spec.size), interpolation=cv2.INTER_AREA) for f in cropped])
    return np.clip(np.rint(resample_time(resized, spec.frames)), 0, 255).astype(np.uint8)


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
    """One affine draw applied to every frame of a ``[T, H, W]`` uint8 clip (nearest, fill 0)."""
    t, h, w = clip.shape
    m = affine_matrix(rng, spec, h, w)
    out = np.empty_like(clip)
    for i in range(t):
        out[i] = cv2.warpAffine(
            clip[i], m, (w, h), flags=cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT, borderValue=0
        )
    return out


def normalise(clips: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """``[..., T, S, S]`` uint8 grey -> ``[..., T, S, S, 3]`` float32: the grey channel tiled to three
    and ``(x - mean[c]) / std[c]`` per channel."""
    mean = np.asarray(mean, np.float32).reshape(-1)
    std = np.asarray(std, np.float32).reshape(-1)
    if mean.size not in (1, 3) or std.size not in (1, 3):
        raise CycleError(f"mean and std need 1 or 3 values, got {mean.size} and {std.size}")
    x = clips.astype(np.float32)[..., None]
    return (np.broadcast_to(x, x.shape[:-1] + (3,)) - mean) / std


def _seed(*words: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(w) for w in words]))


def epoch_order(indices: Sequence[int], *, seed: int, fold: int, epoch: int) -> np.ndarray:
    """The training order of one epoch: a permutation of ``indices`` from (seed, fold, epoch)."""
    indices = np.asarray(indices, np.int64)
    return indices[_seed(seed, fold, epoch, 0x0D).permutation(len(indices))]


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
    """One epoch of training batches of the rows ``indices`` of ``clips`` ``[N, T, S, S]`` uint8.

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
                [random_affine(c, _seed(seed, fold, epoch, b, j, 0xAF), augment) for c, j in zip(batch, mine)]
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
