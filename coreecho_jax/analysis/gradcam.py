"""Grad-CAM for video: where in space and time an encoder stage holds what drives the model's output.

For clips ``x`` ``[B, T, H, W, 3]`` (normalised, as the model's own data pipeline makes them) and a
UniFormer stage ``s`` of the CoReEcho model in eval mode:

1. ``A`` = the output of stage ``s`` (after its last block), ``[B, T', H', W', C]``;
2. ``G`` = the gradient of the head's output (the predicted EF in %, or for HMC-QU the MI logit) with
   respect to ``A``;
3. channel weights ``w = mean(G, over T', H', W')`` ``[B, C]``;
4. ``cam = ReLU(sum_c w_c A_c)`` ``[B, T', H', W']`` (Selvaraju et al., ICCV 2017, with a time axis);
5. the map is upsampled to the clip's ``[T, H, W]`` by linear interpolation at the centre of each
   token: frame ``i`` sits at ``t' = i / 2`` (the patch embedding halves time with a 3-frame kernel
   centred on frame ``2 t'``), pixel ``y`` at ``y' = (y + 0.5) / s_y - 0.5`` with the stage's stride
   ``s_y = 4 * 2^(s - 1)`` (4, 8, 16, 32); coordinates outside the token grid are clamped;
6. each clip's map is divided by its maximum, so it lies in [0, 1] with a maximum of 1.

When the ReLU leaves nothing (no position where the weighted activations are positive: the
evidence for this prediction is all negative), the map falls back to ``|sum_c G_c A_c|``, the
magnitude of gradient x activation, and ``GradCam.fallback`` says so for that clip. When that is
zero too (a gradient of zero everywhere), the map is all zero and ``GradCam.blank`` says so: a
blank map is never normalised into a uniform one. A stage whose feature map is one token wide and
high (stage 4 of clips under 64 px, e.g. the 32 px quick demo) cannot localise anything in space:
:class:`GradCamError` is raised instead of returning a map that is uniform by construction. Every
report gives the share of fallback clips per model and the LV numbers of the true Grad-CAM clips and
of the fallback clips apart (:func:`cam_counts`, :mod:`.lv_focus`): the two maps are different
quantities.

The layer is a choice. The paper's Fig. 3 does not say which layer its maps come from (and the
official code holds no Grad-CAM). The default, stage 2, is the last convolutional stage of the
UniFormer, the layer Grad-CAM conventionally uses (Selvaraju et al.: the last convolutional layer,
high-level features that still keep their place): stride 8, a 14 x 14 token map at 112 px (28 x 28 at
224 px). Stages 3 and 4 are global self-attention (every token mixes the whole clip) with 7 x 7 and
3 x 3 maps at 112 px; ``--stage=2,3,4`` draws them beside stage 2.

The stage activation is taken by running the encoder's public submodules (``patch_embed1..4``,
``pos_drop``, ``blocks1..4``, ``norm``) in the order of ``UniFormer.__call__``; the rest of the
forward pass (later stages, final BatchNorm, mean pooling, head) is a function of ``A`` that is
differentiated. The split forward gives the same prediction as ``model(x)`` (tested).

This module computes the maps of a batch of clips (:func:`grad_cam`, :func:`grad_cam_batched`). The
LV-focus experiment, with the clips of a synthetic set and of a transfer fold, is :mod:`.lv_focus`
(its measure :mod:`.cam_lv`); the pictures are :mod:`.figures`; the command, with the clips of a
user's video, is :mod:`.gradcam_cli`, which ``coreecho gradcam`` runs.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from coreecho_jax.errors import ConfigError

#: Encoder stages Grad-CAM can use (1-2 convolutional, 3-4 self-attention).
STAGES = (1, 2, 3, 4)
#: The default stage: the last convolutional one.
DEFAULT_STAGE = 2
#: Spatial stride of each stage's feature map relative to the clip (patch embeddings 4, 2, 2, 2).
STAGE_STRIDE = {1: 4, 2: 8, 3: 16, 4: 32}
#: Temporal stride of every stage (only the first patch embedding downsamples time).
TIME_STRIDE = 2


class GradCamError(ConfigError):
    """Grad-CAM cannot give a meaningful map: an unknown stage, or a feature map one token wide and high."""


@dataclasses.dataclass(frozen=True)
class GradCam:
    """Grad-CAM of a batch of clips.

    Attributes:
        maps: float32 ``[B, T, H, W]`` in [0, 1] (max 1 per clip unless ``blank``), the clip's frames and size.
        raw: float32 ``[B, T', H', W']`` the map at the stage's resolution, before upsampling and scaling.
        prediction: float32 ``[B]`` the head's output: predicted EF (%), or the MI logit (HMC-QU).
        fallback: bool ``[B]``: the ReLU map was all zero; ``maps`` shows ``|sum_c G_c A_c|`` instead.
        blank: bool ``[B]``: the fallback was zero too; ``maps`` is all zero.
        stage: the encoder stage (1-4).
    """

    maps: np.ndarray
    raw: np.ndarray
    prediction: np.ndarray
    fallback: np.ndarray
    blank: np.ndarray
    stage: int


def check_stage(stage: int, height: int, width: int) -> None:
    """Raises :class:`GradCamError` for an unknown stage or one whose feature map is a single token in space."""
    if stage not in STAGES:
        raise GradCamError(f"Grad-CAM stage must be one of {STAGES}, got {stage!r}")
    h, w = height // STAGE_STRIDE[stage], width // STAGE_STRIDE[stage]
    if h * w <= 1:
        raise GradCamError(
            f"stage {stage} of a {height}x{width} clip has a {h}x{w} feature map: its Grad-CAM is uniform "
            f"in space by construction; choose an earlier stage (stage {stage} needs clips of at least "
            f"{2 * STAGE_STRIDE[stage]} px on a side)"
        )


def _stages(encoder: nnx.Module) -> tuple:
    """(patch embedding, dropout or None, blocks) of each stage, in ``UniFormer.__call__``'s order."""
    return (
        (encoder.patch_embed1, encoder.pos_drop, encoder.blocks1),
        (encoder.patch_embed2, None, encoder.blocks2),
        (encoder.patch_embed3, None, encoder.blocks3),
        (encoder.patch_embed4, None, encoder.blocks4),
    )


def _run(stages: Sequence[tuple], x: jax.Array) -> jax.Array:
    for patch_embed, drop, blocks in stages:
        x = patch_embed(x)
        if drop is not None:
            x = drop(x)
        for block in blocks:
            x = block(x)
    return x


def stage_activation(model: nnx.Module, x: jax.Array, stage: int) -> jax.Array:
    """Output of encoder stage ``stage`` (1-4) for clips ``x`` ``[B, T, H, W, C]``: ``[B, T', H', W', C_s]``."""
    encoder = model.encoder
    return _run(_stages(encoder)[:stage], x.astype(encoder.config.compute_dtype))


def prediction_from_stage(model: nnx.Module, activation: jax.Array, stage: int) -> jax.Array:
    """The head's output ``[B]`` (EF %, or MI logit) from the output of stage ``stage``: later stages, final
    norm, pooling, head."""
    encoder = model.encoder
    x = encoder.norm(_run(_stages(encoder)[stage:], activation))
    return model.head(jnp.mean(x.astype(jnp.float32), axis=(1, 2, 3)))


def cam_from_gradient(activation: jax.Array, gradient: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Grad-CAM ``ReLU(sum_c mean_thw(G)_c A_c)`` and the fallback ``|sum_c G_c A_c|``, both ``[B, T', H', W']``.

    ``activation`` and ``gradient`` are ``[B, T', H', W', C]``; computed in float32.
    """
    a = activation.astype(jnp.float32)
    g = gradient.astype(jnp.float32)
    weights = jnp.mean(g, axis=(1, 2, 3))
    cam = jax.nn.relu(jnp.einsum("bthwc,bc->bthw", a, weights))
    return cam, jnp.abs(jnp.sum(g * a, axis=-1))


def _interp_axis(x: jax.Array, coords: np.ndarray, axis: int) -> jax.Array:
    """Linear interpolation of ``x`` along ``axis`` at (static) fractional ``coords``, clamped to the ends."""
    n = x.shape[axis]
    c = np.clip(coords, 0.0, n - 1)
    lo = np.floor(c).astype(np.int32)
    hi = np.minimum(lo + 1, n - 1)
    shape = [1] * x.ndim
    shape[axis] = len(c)
    frac = jnp.asarray((c - lo).reshape(shape), jnp.float32)
    return jnp.take(x, lo, axis=axis) * (1.0 - frac) + jnp.take(x, hi, axis=axis) * frac


def token_coordinates(size: int, stride: int) -> np.ndarray:
    """Token coordinate of each of ``size`` pixels on a stride-``stride`` patch grid: ``(y + 0.5) / stride - 0.5``."""
    return (np.arange(size) + 0.5) / stride - 0.5


def upsample(cam: jax.Array, frames: int, height: int, width: int, stage: int) -> jax.Array:
    """``[B, T', H', W']`` -> ``[B, frames, height, width]`` by linear interpolation at token centres (module doc)."""
    s = STAGE_STRIDE[stage]
    out = _interp_axis(cam, np.arange(frames) / TIME_STRIDE, axis=1)
    out = _interp_axis(out, token_coordinates(height, s), axis=2)
    return _interp_axis(out, token_coordinates(width, s), axis=3)


@functools.partial(nnx.jit, static_argnames=("stage",))
def _grad_cam(model: nnx.Module, x: jax.Array, stage: int, sign: jax.Array):
    activation = stage_activation(model, x, stage)

    def target(a):
        prediction = prediction_from_stage(model, a, stage)
        return jnp.sum(prediction) * sign, prediction  # clips are independent in eval mode

    (_, prediction), gradient = jax.value_and_grad(target, has_aux=True)(activation)
    cam, magnitude = cam_from_gradient(activation, gradient)
    return (*finish(cam, magnitude, x.shape[1:4], stage), prediction)


def finish(
    cam: jax.Array, magnitude: jax.Array, size: tuple[int, int, int], stage: int
) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """Fallback, upsampling and scaling of ``cam`` and ``magnitude`` ``[B, T', H', W']`` (module doc, steps 5-6).

    Returns ``(maps [B, *size], raw [B, T', H', W'], fallback [B], blank [B])``; ``size`` is ``(T, H, W)``.
    """
    fallback = jnp.max(cam, axis=(1, 2, 3)) <= 0
    raw = jnp.where(fallback[:, None, None, None], magnitude, cam)
    maps = upsample(raw, *size, stage)
    peak = jnp.max(maps, axis=(1, 2, 3))
    blank = peak <= 0
    maps = maps / jnp.where(blank, 1.0, peak)[:, None, None, None]
    return maps, raw, fallback, blank


def grad_cam(
    model: nnx.Module, clips: np.ndarray | jax.Array, stage: int = DEFAULT_STAGE, *, sign: float = 1.0
) -> GradCam:
    """Grad-CAM of clips ``[B, T, H, W, 3]`` (normalised) at encoder ``stage`` w.r.t. the head's output
    (the predicted EF, or the MI logit of an HMC-QU model).

    Puts ``model`` in eval mode (running BatchNorm statistics, no dropout), as for prediction.
    ``sign=-1`` maps the evidence for a *lower* output instead. Compiled once per stage and clip shape.

    Raises:
        GradCamError: see :func:`check_stage`.
    """
    clips = jnp.asarray(clips)
    if clips.ndim != 5:
        raise GradCamError(f"Grad-CAM expects clips [B, T, H, W, C], got shape {clips.shape}")
    check_stage(stage, clips.shape[2], clips.shape[3])
    model.eval()
    out = _grad_cam(model, clips, stage, jnp.float32(sign))
    maps, raw, fallback, blank, prediction = (np.asarray(v) for v in out)
    return GradCam(maps, raw, prediction, fallback, blank, stage)


def grad_cam_batched(
    model: nnx.Module,
    clips: np.ndarray,
    stage: int = DEFAULT_STAGE,
    *,
    sign: float = 1.0,
    batch_size: int = 16,
) -> GradCam:
    """:func:`grad_cam` of many clips ``[N, T, H, W, 3]`` in batches of ``batch_size`` (the last one padded
    with copies of its first clip, so that one shape compiles; clips are independent in eval mode)."""
    if batch_size < 1:
        raise GradCamError(f"Grad-CAM batch size must be >= 1, got {batch_size}")
    clips = np.asarray(clips)
    parts = []
    for lo in range(0, len(clips), batch_size):
        batch = clips[lo : lo + batch_size]
        n = len(batch)
        if n < batch_size and lo > 0:
            batch = np.concatenate([batch, np.repeat(batch[:1], batch_size - n, axis=0)])
        cam = grad_cam(model, batch, stage, sign=sign)
        parts.append([cam.maps[:n], cam.raw[:n], cam.prediction[:n], cam.fallback[:n], cam.blank[:n]])
    maps, raw, prediction, fallback, blank = (np.concatenate(v) for v in zip(*parts, strict=True))
    return GradCam(maps, raw, prediction, fallback, blank, stage)


def cam_counts(fallback: np.ndarray, blank: np.ndarray) -> dict:
    """``{"clips", "fallback_clips", "fallback_share", "blank_clips", "blank_share"}`` of bool ``[N]`` flags."""
    n = len(fallback)
    return {
        "clips": n,
        "fallback_clips": int(np.sum(fallback)),
        "fallback_share": float(np.mean(fallback)) if n else float("nan"),
        "blank_clips": int(np.sum(blank)),
        "blank_share": float(np.mean(blank)) if n else float("nan"),
    }
