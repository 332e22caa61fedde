"""Clip sampling for EchoNet-style videos: the one place where the sampling formulas live.

numpy only (no TensorFlow), so the prediction path and the tests use it directly; the tf.data
pipeline (:mod:`coreecho_jax.data.echonet.pipeline`) implements the same formulas in TF and its tests
prove equality with the functions here. The clip facts (36 frames, stride 4, 144-frame padding,
6 px translation, 112 px frames) are :mod:`coreecho_jax.data.echonet_layout`'s.

Official behaviour (CoReEcho ``coreecho/dataset.py`` ``EchoNet.__getitem__`` + ``augmentation.py``):

1. The video is decoded with OpenCV and converted BGR -> RGB; all three channels are kept.
2. A clip is ``frames`` (36) frames taken every ``stride`` (4) frames:
   ``indices = start + stride * arange(frames)``.
3. A video with fewer than ``frames * stride`` (144, *not* 141) frames is padded at the end with
   black (raw 0) frames up to exactly 144 frames (:func:`padded_length`).
4. ``start`` is uniform in ``[0, F_padded - (frames - 1) * stride - 1]``, i.e.
   ``np.random.choice(F - 140)`` for 36/4; short videos get ``start`` in ``{0..3}``.
5. Training translation: pad ``pad`` (6) black pixels on each side (``PadIfNeeded(124)`` on a
   112x112 frame), then crop the original size at offsets ``dy, dx`` in ``{0..2*pad}`` drawn
   independently, identical for all frames of the clip, applied to the uint8 clip.
6. Normalisation is last: each channel becomes ``(x - MEAN[c]) / STD[c]`` (x in 0..255, RGB
   order), so black padding becomes about -0.65.

Layouts: videos are uint8 ``[F, H, W]`` (grey) or ``[F, H, W, C]`` (C = 1, or 3 in RGB order); a
clip is ``[T, H, W, C]`` uint8 before normalisation and float32 ``[T, S, S, 3]`` after it (one
channel is tiled to three). ``ClipSpec.channels = 1`` turns RGB input into luma first (OpenCV's
``RGB2GRAY``), as the one-channel prepared dataset stores it; not official.
Random draws are expressed as uniforms in ``[0, 1)`` mapped to integers by
:func:`start_from_uniform` and :func:`offset_from_uniform` (albumentations' ``int(13 * u)``);
the TF pipeline maps its stateless uniforms with the same formulas.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np

from coreecho_jax.data.echonet_layout import CLIP_FRAMES, CLIP_STRIDE, FRAME_SIZE, TRANSLATION_PAD
from coreecho_jax.data.video.video_io import rgb_to_gray
from coreecho_jax.errors import DataError

#: Official per-channel mean of raw 0..255 pixel values (RGB order).
MEAN = np.array([0.12741163, 0.1279413, 0.12912785], dtype=np.float32) * np.float32(255.0)
#: Official per-channel standard deviation of raw 0..255 pixel values (RGB order).
STD = np.array([0.19557191, 0.19562256, 0.1965878], dtype=np.float32) * np.float32(255.0)

Output = Literal["float32", "uint8"]
OUTPUTS = ("float32", "uint8")
CHANNELS = (1, 3)


class ClipError(DataError):
    """A clip cannot be made: bad clip settings, a video of the wrong layout, or a start out of range."""


@dataclasses.dataclass(frozen=True)
class ClipSpec:
    """How clips are cut from a video; shared by the numpy sampler and the tf.data pipelines.

    Attributes:
        frames: frames per clip (official ``--frames`` 36).
        stride: temporal stride (official ``--frequency`` 4); videos shorter than
            ``frames * stride`` frames are padded with black frames at the end.
        pad: translation border in px per side of the training augmentation (official 6).
        image_size: output side S in px; ``None`` or the frame size (112) = no resize. Another size
            resizes after the crop with :func:`resize_matrix` (for small demos; not official).
        output: ``'float32'``: normalised ``[..., S, S, 3]`` (official); ``'uint8'``: the
            un-normalised ``[..., S, S, C]`` (C = stored channels), to normalise later on device
            with :func:`normalise`.
        channels: 3 = the decoded RGB channels (official); 1 = luma, tiled to 3 at normalisation
            (the compact one-channel prepared dataset).
        augment: training clips get the random +-``pad`` px translation (official ``--aug``:
            ``PadIfNeeded`` + ``RandomCrop``); ``False``: none, every clip is the centre crop
            (the paper's Table 3 row without A). Evaluation clips are never translated.
        independent_views: the views of a training video are independent clips, each with its own
            start and translation (official ``EchoNetRNC``: two ``__getitem__`` calls); ``False``:
            one start shared by all views, translations still drawn per view (the paper's Table 3
            row without 2xC: one clip seen twice).
    """

    frames: int = CLIP_FRAMES
    stride: int = CLIP_STRIDE
    pad: int = TRANSLATION_PAD
    image_size: int | None = FRAME_SIZE
    output: Output = "float32"
    channels: int = 3
    augment: bool = True
    independent_views: bool = True

    def __post_init__(self) -> None:
        if self.frames < 1 or self.stride < 1 or self.pad < 0:
            raise ClipError(
                f"clip spec: need frames >= 1, stride >= 1, pad >= 0; got {self.frames}, {self.stride}, {self.pad}"
            )
        if self.image_size is not None and self.image_size < 1:
            raise ClipError(f"clip spec: image_size must be >= 1 or None, got {self.image_size}")
        if self.output not in OUTPUTS:
            raise ClipError(f"clip spec: output must be one of {OUTPUTS}, got {self.output!r}")
        if self.channels not in CHANNELS:
            raise ClipError(f"clip spec: channels must be one of {CHANNELS}, got {self.channels!r}")
        for name in ("augment", "independent_views"):
            if not isinstance(getattr(self, name), bool | np.bool_):
                raise ClipError(f"clip spec: {name} must be True or False, got {getattr(self, name)!r}")

    @classmethod
    def from_config(cls, data: Mapping[str, Any], **overrides: Any) -> ClipSpec:
        """The spec of a ``config.data`` (fields frames, stride, pad, image_size, channels, augment,
        independent_views; the last three default to the official values when absent)."""
        fields = dict(
            frames=int(data["frames"]),
            stride=int(data["stride"]),
            pad=int(data["pad"]),
            image_size=int(data["image_size"]),
            channels=int(data.get("channels", 3)),
            augment=bool(data.get("augment", True)),
            independent_views=bool(data.get("independent_views", True)),
        )
        return cls(**{**fields, **overrides})

    @property
    def span(self) -> int:
        """Frames a clip spans in the padded video, and the padded length of short videos."""
        return self.frames * self.stride


#: The official clip settings: 36 frames at stride 4, +-6 px translation, 112 px, RGB, float32.
OFFICIAL_SPEC = ClipSpec()


def _spec(spec: ClipSpec | None, fields: dict[str, Any]) -> ClipSpec:
    if spec is not None and fields:
        raise TypeError(f"pass either a ClipSpec or its fields, not both (got spec and {sorted(fields)})")
    return spec if spec is not None else ClipSpec(**fields)


def padded_length(num_frames: int, frames: int = CLIP_FRAMES, stride: int = CLIP_STRIDE) -> int:
    """Length of a video after the official end padding: ``max(num_frames, frames * stride)``."""
    if num_frames < 1:
        raise ClipError(f"num_frames must be >= 1, got {num_frames}")
    return max(int(num_frames), frames * stride)


def num_start_positions(num_frames: int, frames: int = CLIP_FRAMES, stride: int = CLIP_STRIDE) -> int:
    """Number of valid clip starts: ``padded_length - (frames - 1) * stride`` (``F - 140`` for 36/4)."""
    return padded_length(num_frames, frames, stride) - (frames - 1) * stride


def clip_indices(start: int | np.ndarray, frames: int = CLIP_FRAMES, stride: int = CLIP_STRIDE) -> np.ndarray:
    """Frame indices of a clip in the padded video: ``start + stride * arange(frames)``.

    ``start`` may be an array of shape ``[K]``; the result is then int64 ``[K, frames]``.
    """
    start = np.asarray(start, dtype=np.int64)
    return start[..., None] + stride * np.arange(frames, dtype=np.int64)


def check_starts(
    starts: Any, num_frames: int, frames: int = CLIP_FRAMES, stride: int = CLIP_STRIDE, *, name: str = "video"
) -> np.ndarray:
    """Returns ``starts`` as int64 ``[K]`` after checking each one indexes the padded video.

    Raises:
        ClipError: a start is not an integer in ``[0, num_start_positions - 1]``.
    """
    arr = np.asarray(starts)
    if arr.ndim != 1 or arr.size == 0 or not np.issubdtype(arr.dtype, np.integer):
        raise ClipError(f"{name}: clip starts must be a non-empty 1-D integer array, got {starts!r}")
    limit = num_start_positions(num_frames, frames, stride)
    bad = arr[(arr < 0) | (arr >= limit)]
    if bad.size:
        raise ClipError(
            f"{name}: clip start(s) {bad.tolist()} out of range for a video of {num_frames} frames "
            f"(padded to {padded_length(num_frames, frames, stride)}); valid starts are 0..{limit - 1} "
            f"for {frames} frames at stride {stride}"
        )
    return arr.astype(np.int64)


def start_from_uniform(
    u: Any, num_frames: Any, frames: int = CLIP_FRAMES, stride: int = CLIP_STRIDE
) -> np.ndarray:
    """Maps uniforms ``u`` in [0, 1) to clip starts: ``floor(u * n)`` with ``n = num_start_positions``.

    Computed in float64 (exact for float32 or float64 ``u``), clipped to ``n - 1``. Vectorised over
    ``u`` and ``num_frames`` (broadcast). The TF pipeline uses the same formula.
    """
    u = np.asarray(u, dtype=np.float64)
    num_frames = np.asarray(num_frames, dtype=np.int64)
    n = np.maximum(num_frames, frames * stride) - (frames - 1) * stride
    return np.minimum(np.floor(u * n).astype(np.int64), n - 1)


def offset_from_uniform(u: Any, pad: int = TRANSLATION_PAD) -> np.ndarray:
    """Maps uniforms in [0, 1) to crop offsets ``floor(u * (2 * pad + 1))`` in ``{0..2*pad}``.

    This is albumentations' ``RandomCrop`` rule ``int((124 - 112 + 1) * u)``; offset ``pad`` is
    the identity (no translation).
    """
    u = np.asarray(u, dtype=np.float64)
    return np.minimum(np.floor(u * (2 * pad + 1)).astype(np.int64), 2 * pad)


def _as_thwc(video: np.ndarray, channels: int | None = None) -> np.ndarray:
    """uint8 ``[F, H, W, C]`` of a video ``[F, H, W]`` or ``[F, H, W, C]``; ``channels=1`` turns RGB into luma."""
    video = np.asarray(video)
    if video.dtype != np.uint8:
        raise ClipError(f"video must be uint8, got {video.dtype}")
    if video.ndim == 3:
        video = video[..., None]
    if video.ndim != 4 or video.shape[-1] not in (1, 3) or video.shape[0] < 1:
        raise ClipError(
            f"video must be [F, H, W] or [F, H, W, C] with C in (1, 3) and F >= 1, got {video.shape}"
        )
    if channels == 1 and video.shape[-1] == 3:
        video = rgb_to_gray(video)[..., None]
    return video


def pad_video(video: np.ndarray, frames: int = CLIP_FRAMES, stride: int = CLIP_STRIDE) -> np.ndarray:
    """Appends black (0) frames to a uint8 video ``[F, H, W(, C)]`` up to :func:`padded_length`."""
    video = np.asarray(video)
    missing = padded_length(video.shape[0], frames, stride) - video.shape[0]
    if missing == 0:
        return video
    return np.concatenate([video, np.zeros((missing,) + video.shape[1:], video.dtype)], axis=0)


def gather_clip(
    video: np.ndarray, start: int, frames: int = CLIP_FRAMES, stride: int = CLIP_STRIDE
) -> np.ndarray:
    """uint8 clip ``[T, H, W, C]`` at ``start`` of the (black-padded) video ``[F, H, W(, C)]``."""
    video = _as_thwc(video)
    start = int(check_starts([start], video.shape[0], frames, stride)[0])
    return pad_video(video, frames, stride)[clip_indices(start, frames, stride)]


def translate(clip: np.ndarray, dy: int, dx: int, pad: int = TRANSLATION_PAD) -> np.ndarray:
    """Official translation of a clip ``[T, H, W, C]``: pad ``pad`` black px per side, crop ``H x W`` at ``(dy, dx)``.

    The content moves by ``(pad - dy, pad - dx)`` pixels (down/right positive); uncovered pixels are 0.
    """
    if not (0 <= dy <= 2 * pad and 0 <= dx <= 2 * pad):
        raise ClipError(f"crop offsets must be in 0..{2 * pad}, got dy={dy}, dx={dx}")
    _, h, w, _ = clip.shape
    padded = np.pad(clip, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    return padded[:, dy : dy + h, dx : dx + w]


def resize_matrix(in_size: int, out_size: int) -> np.ndarray:
    """float32 ``[out_size, in_size]`` area-resampling matrix (rows sum to 1).

    Output pixel ``i`` averages input pixels over ``[i * s, (i + 1) * s)`` with ``s = in/out``,
    weighting partial overlaps (box filter; antialiased when shrinking, nearest-like when growing).
    """
    if in_size < 1 or out_size < 1:
        raise ClipError(f"sizes must be >= 1, got {in_size} -> {out_size}")
    scale = in_size / out_size
    lo = np.arange(out_size)[:, None] * scale
    hi = lo + scale
    j = np.arange(in_size)[None, :]
    overlap = np.clip(np.minimum(hi, j + 1) - np.maximum(lo, j), 0.0, None)
    return (overlap / overlap.sum(axis=1, keepdims=True)).astype(np.float32)


def resize_clip(clip: np.ndarray, image_size: int) -> np.ndarray:
    """Resizes a clip ``[T, H, W, C]`` to float32 ``[T, S, S, C]`` with :func:`resize_matrix`."""
    ry = resize_matrix(clip.shape[1], image_size)
    rx = resize_matrix(clip.shape[2], image_size)
    rows = np.einsum("yh,thwc->tywc", ry, clip.astype(np.float32))
    return np.einsum("xw,tywc->tyxc", rx, rows).astype(np.float32)


def normalise(clip: Any, mean: Any = MEAN, std: Any = STD, xp: Any = np) -> Any:
    """Official normalisation of a clip ``[..., C]`` (0..255 values, C in (1, 3)) -> float32 ``[..., 3]``.

    One channel is replicated to three. ``xp`` may be ``jax.numpy`` to normalise on device
    (e.g. after a uint8 pipeline).
    """
    x = xp.asarray(clip).astype(xp.float32)
    return (x - xp.asarray(mean, dtype=xp.float32)) / xp.asarray(std, dtype=xp.float32)


def _needs_resize(clip: np.ndarray, image_size: int | None) -> bool:
    return image_size is not None and (clip.shape[1] != image_size or clip.shape[2] != image_size)


def _make(video: np.ndarray, start: int, offsets: tuple[int, int] | None, spec: ClipSpec) -> np.ndarray:
    """Gather (black end padding), translate, resize: uint8 ``[T, H, W, C]`` or float32 ``[T, S, S, C]``."""
    clip = gather_clip(_as_thwc(video, spec.channels), start, spec.frames, spec.stride)
    if offsets is not None:
        clip = translate(clip, int(offsets[0]), int(offsets[1]), spec.pad)
    if _needs_resize(clip, spec.image_size):
        clip = resize_clip(clip, spec.image_size)
    return clip


def make_clip_uint8(
    video: np.ndarray,
    start: int,
    *,
    offsets: tuple[int, int] | None = None,
    spec: ClipSpec | None = None,
    **fields: Any,
) -> np.ndarray:
    """One un-normalised clip uint8 ``[T, S, S, C]``: what the pipeline returns with ``output='uint8'``.

    After a resize the float32 values are rounded to uint8. ``spec`` or its ``fields`` as in :func:`make_clip`.
    """
    clip = _make(video, start, offsets, _spec(spec, fields))
    return np.clip(np.round(clip), 0, 255).astype(np.uint8) if clip.dtype != np.uint8 else clip


def make_clip(
    video: np.ndarray,
    start: int,
    *,
    offsets: tuple[int, int] | None = None,
    spec: ClipSpec | None = None,
    **fields: Any,
) -> np.ndarray:
    """One normalised clip float32 ``[T, S, S, 3]`` from a uint8 video ``[F, H, W(, C)]``.

    Args:
        video: uint8 frames (grey, or RGB), any length >= 1 (padded with black frames to ``spec.span``).
        start: clip start in the padded video.
        offsets: translation crop offsets ``(dy, dx)`` in ``{0..2*pad}``; ``None`` = no translation
            (the same as ``(pad, pad)``).
        spec: the clip settings (default: the official ones); or give its fields instead, e.g.
            ``frames=16, image_size=64``. ``spec.output`` is ignored here.
    """
    return normalise(_make(video, start, offsets, _spec(spec, fields)))


def make_clips(
    video: np.ndarray, starts: Sequence[int] | np.ndarray, spec: ClipSpec | None = None, **fields: Any
) -> np.ndarray:
    """Evaluation clips (no augmentation) float32 ``[K, T, S, S, 3]`` of one uint8 video at ``starts [K]``.

    ``video`` is grey ``[F, H, W]`` (tiled to three channels) or RGB ``[F, H, W, 3]`` (kept, or turned
    into luma when ``spec.channels == 1``); ``spec`` or its ``fields`` as in :func:`make_clip`.
    """
    spec = _spec(spec, fields)
    video = _as_thwc(video, spec.channels)
    starts = check_starts(starts, video.shape[0], spec.frames, spec.stride)
    return np.stack([make_clip(video, int(s), spec=spec) for s in starts])


def even_starts(num_frames: int, k: int, spec: ClipSpec) -> np.ndarray:
    """``k`` starts spread evenly over the valid positions of a (padded) video of ``num_frames`` for clips
    of ``spec.frames`` at ``spec.stride``."""
    n = num_start_positions(num_frames, spec.frames, spec.stride)
    return np.round(np.linspace(0, n - 1, k)).astype(np.int64)
