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
of the fallback clips apart: the two maps are different quantities.

The layer is a choice. The paper's Fig. 3 does not say which layer its maps come from (and the
official code holds no Grad-CAM). The default, stage 2, is the last convolutional stage of the
UniFormer, the layer Grad-CAM conventionally uses (Selvaraju et al.: the last convolutional layer,
high-level features that still keep their place): stride 8, a 14 x 14 token map at 112 px (28 x 28 at
224 px). Stages 3 and 4 are global self-attention (every token mixes the whole clip) with 7 x 7 and
3 x 3 maps at 112 px; ``--stage=2,3,4`` draws them beside stage 2.

Models: anything :func:`coreecho_jax.analysis.runs.load_run` loads, with the clips of the config
that trained it. An EchoNet model (a CoReEcho run, ``.pth`` or imported folder) explains clips of a
video file (``--video``, cut as ``predict`` cuts them) or of a synthetic EchoNet set (``--lv_focus``,
the test protocol's clips). A transfer fold (CAMUS: the predicted EF; HMC-QU: the MI logit) explains
the prepared clip of each video of its fold's test set (``--split``): one clip per video, the fold's
own preparation (``transfer.data.prepare`` in the transfer workdir, from its cache) and
normalisation (``data.mean``/``data.std``).

The stage activation is taken by running the encoder's public submodules (``patch_embed1..4``,
``pos_drop``, ``blocks1..4``, ``norm``) in the order of ``UniFormer.__call__``; the rest of the
forward pass (later stages, final BatchNorm, mean pooling, head) is a function of ``A`` that is
differentiated. The split forward gives the same prediction as ``model(x)`` (tested).

Command line::

    python -m coreecho_jax.analysis.gradcam --checkpoint=RUN_OR_PTH --video=FILE --out=DIR [--stage=2,4]
    python -m coreecho_jax.analysis.gradcam --checkpoint=RUN --lv_focus=DATASET_ROOT --out=DIR
    python -m coreecho_jax.analysis.gradcam --checkpoint=TRANSFER_WORKDIR/folds/fold0 --out=DIR
    python -m coreecho_jax.analysis.gradcam --checkpoint=RUN --lv_focus=ROOT \
        --checkpoint=CAMUS_WORKDIR/folds/fold0 --checkpoint=HMCQU_WORKDIR/folds/fold0 --stage=2,3,4 --out=DIR

writes ``gradcam_<video>_stage<s>.png`` (a strip of evenly spaced frames with the map overlaid) and
``.gif`` (or ``.mp4``) of the model's example clip, with ``--lv_focus`` the LV-focus numbers of
:mod:`coreecho_jax.analysis.cam_lv` to ``lv_focus_stage<s>.json`` (a transfer fold: its videos to
``videos_stage<s>.json``), and ``gradcam.json``: per model and stage the fallback share and the LV
numbers. With several ``--checkpoint`` (Fig. 3: the EchoNet run and the CAMUS and HMC-QU folds that
started from it) each model writes into ``DIR/<row>_<task>/`` and ``fig3.png`` shows one row per
model and stage: its example clip's frames with the map.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import importlib.util
import json
import re
import sys
from collections.abc import Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from coreecho_jax.analysis import cam_lv, runs
from coreecho_jax.errors import ConfigError, DataError

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


# ------------------------------------------------------------------------------------------- pictures


def clip_frames_uint8(
    clip: np.ndarray, mean: Sequence[float] | None = None, std: Sequence[float] | None = None
) -> np.ndarray:
    """A normalised clip ``[T, H, W, 3]`` back to uint8 grey frames ``[T, H, W]`` (mean of the channels).

    ``mean``/``std`` (1 or 3 values, 0..255 scale) are the normalisation the clip had; default EchoNet's.
    """
    from coreecho_jax.data.clips import MEAN, STD

    mean = MEAN if mean is None else np.asarray(mean, np.float32).reshape(-1)
    std = STD if std is None else np.asarray(std, np.float32).reshape(-1)
    pixels = np.asarray(clip, np.float32) * std + mean
    return np.clip(np.round(pixels.mean(axis=-1)), 0, 255).astype(np.uint8)


def overlay(frames: np.ndarray, maps: np.ndarray, *, size: int = 224, alpha: float = 0.45) -> np.ndarray:
    """uint8 RGB ``[T, size, size, 3]``: grey frames ``[T, H, W]`` blended with maps ``[T, H, W]`` in [0, 1] (jet)."""
    import cv2

    out = []
    for frame, cam in zip(frames, maps, strict=True):
        grey = cv2.resize(frame, (size, size), interpolation=cv2.INTER_LINEAR)
        heat = cv2.resize(np.asarray(cam, np.float32), (size, size), interpolation=cv2.INTER_LINEAR)
        colour = cv2.applyColorMap(np.clip(heat * 255, 0, 255).astype(np.uint8), cv2.COLORMAP_JET)
        colour = cv2.cvtColor(colour, cv2.COLOR_BGR2RGB).astype(np.float32)
        base = np.repeat(grey[..., None], 3, axis=-1).astype(np.float32)
        out.append(np.clip((1 - alpha) * base + alpha * colour, 0, 255).astype(np.uint8))
    return np.stack(out)


def strip_indices(frames: int, n: int) -> np.ndarray:
    """``n`` evenly spaced frame indices of a clip of ``frames`` frames (all of them when fewer)."""
    return np.unique(np.round(np.linspace(0, frames - 1, min(n, frames))).astype(np.int64))


def save_strip(
    path: str | Path,
    frames: np.ndarray,
    maps: np.ndarray,
    *,
    n: int = 8,
    title: str = "",
    frame_labels: Sequence[int] | None = None,
    panel_inches: float = 1.6,
    dpi: int = 100,
) -> Path:
    """PNG strip of ``n`` evenly spaced frames with the map overlaid, a colour bar and a title.

    Args:
        frames: uint8 grey ``[T, H, W]``; maps: ``[T, H, W]`` in [0, 1].
        frame_labels: the label of each clip frame (e.g. its index in the video); default 0..T-1.
    The figure is ``(n_shown * panel_inches + 0.6) x (panel_inches + 0.6)`` inches at ``dpi``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    idx = strip_indices(len(frames), n)
    labels = list(range(len(frames))) if frame_labels is None else list(frame_labels)
    fig = plt.figure(figsize=(len(idx) * panel_inches + 0.6, panel_inches + 0.6), dpi=dpi)
    grid = fig.add_gridspec(
        1,
        len(idx) + 1,
        width_ratios=[1.0] * len(idx) + [0.08],
        wspace=0.05,
        left=0.01,
        right=0.96,
        top=0.8,
        bottom=0.02,
    )
    image = None
    for j, i in enumerate(idx):
        ax = fig.add_subplot(grid[0, j])
        ax.imshow(frames[i], cmap="gray", vmin=0, vmax=255)
        image = ax.imshow(maps[i], cmap="jet", vmin=0.0, vmax=1.0, alpha=0.45)
        ax.set_title(f"frame {labels[i]}", fontsize=8)
        ax.axis("off")
    colorbar = fig.colorbar(image, cax=fig.add_subplot(grid[0, -1]))
    colorbar.ax.tick_params(labelsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    path = Path(path)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path


def save_movie(
    path: str | Path, frames: np.ndarray, maps: np.ndarray, *, fps: float = 10.0, size: int = 224
) -> Path:
    """The whole clip with the map overlaid, one movie frame per clip frame.

    ``.gif`` (Pillow, looping) or ``.mp4`` (OpenCV, mp4v), by the suffix of ``path``. Each frame
    carries its index (top left), so no two GIF frames are identical (Pillow merges those).
    """
    import cv2

    path = Path(path)
    pictures = overlay(frames, maps, size=size)
    for i, picture in enumerate(pictures):
        cv2.putText(picture, str(i), (4, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1, cv2.LINE_AA)
    if path.suffix.lower() == ".gif":
        from PIL import Image

        images = [Image.fromarray(p) for p in pictures]
        images[0].save(path, save_all=True, append_images=images[1:], duration=int(round(1000 / fps)), loop=0)
        return path
    if path.suffix.lower() != ".mp4":
        raise GradCamError(f"{path}: the movie must be a .gif or .mp4 file")
    from coreecho_jax.data.video_io import write_video

    return write_video(path, pictures, fps, codec="mp4v")


@dataclasses.dataclass(frozen=True)
class FigureRow:
    """One row of :func:`save_rows`: uint8 grey ``frames [T, H, W]``, ``maps [T, H, W]`` in [0, 1], a label."""

    label: str
    frames: np.ndarray
    maps: np.ndarray


def save_rows(
    path: str | Path,
    rows: Sequence[FigureRow],
    *,
    n: int = 8,
    title: str = "",
    panel_inches: float = 1.3,
    dpi: int = 100,
) -> Path:
    """PNG grid as the paper's Fig. 3: per row ``n`` evenly spaced frames of its clip with the map overlaid
    (jet, alpha 0.45), the row's label on the left, one colour bar.

    The figure is ``(n * panel_inches + 2.2) x (len(rows) * panel_inches + 0.5)`` inches at ``dpi``; a row
    with fewer than ``n`` frames leaves the rest of its panels empty.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not rows:
        raise GradCamError("a Grad-CAM figure needs at least one row")
    fig = plt.figure(figsize=(n * panel_inches + 2.2, len(rows) * panel_inches + 0.5), dpi=dpi)
    grid = fig.add_gridspec(
        len(rows),
        n + 1,
        width_ratios=[1.0] * n + [0.06],
        wspace=0.04,
        hspace=0.06,
        left=1.9 / (n * panel_inches + 2.2),
        right=0.97,
        top=1 - 0.4 / (len(rows) * panel_inches + 0.5),
        bottom=0.02,
    )
    image = None
    for r, row in enumerate(rows):
        idx = strip_indices(len(row.frames), n)
        for j in range(n):
            ax = fig.add_subplot(grid[r, j])
            ax.set_xticks([])
            ax.set_yticks([])
            if j < len(idx):
                ax.imshow(row.frames[idx[j]], cmap="gray", vmin=0, vmax=255)
                image = ax.imshow(row.maps[idx[j]], cmap="jet", vmin=0.0, vmax=1.0, alpha=0.45)
            else:
                ax.axis("off")
            if j == 0:
                ax.set_ylabel(row.label, fontsize=7, rotation=0, ha="right", va="center")
    colorbar = fig.colorbar(image, cax=fig.add_subplot(grid[:, -1]))
    colorbar.ax.tick_params(labelsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    path = Path(path)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path


# ------------------------------------------------------------------------------------------- a video file


def load_config(spec: str) -> ml_collections.ConfigDict:
    """The config of a ``configs/*.py[:variant]`` file (``--config``)."""
    file, _, variant = spec.partition(":")
    module_spec = importlib.util.spec_from_file_location("_gradcam_config", file)
    if module_spec is None or not Path(file).is_file():
        raise ConfigError(f"--config={spec}: {file} is not a config file (configs/*.py)")
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module.get_config(variant or None) if variant else module.get_config()


def video_clips(
    config: ml_collections.ConfigDict, video_path: str | Path, *, n_clips: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """Clips of a user's video prepared as ``predict.predict_file`` prepares them: ``([K, T, S, S, 3], starts [K])``.

    ``config`` is the inference config (clip settings of the run). The video is cropped to a square
    and resized to 112 px unless it already is 112x112 (``video_io.load_echo_video``), and cut into
    ``n_clips`` evaluation clips whose starts are spread evenly over the valid positions
    (:func:`clips.even_starts`). A still image or a loop shorter than a cardiac cycle is refused.
    """
    from coreecho_jax.data import clips, video_io
    from coreecho_jax.data.echo_loop import check_echo_loop
    from coreecho_jax.data.echonet_layout import FRAME_SIZE

    d = config.data
    frames, stride = int(d.frames), int(d.stride)
    info = video_io.probe_video(video_path)
    crop = "none" if (info.height, info.width) == (FRAME_SIZE, FRAME_SIZE) else "auto"
    video = video_io.load_echo_video(video_path, size=FRAME_SIZE, crop=crop, channels=int(d.channels))
    check_echo_loop(video, frames, stride)  # a still image or a too-short loop is refused, as by predict
    starts = clips.even_starts(video.num_frames, n_clips, frames, stride)
    return clips.make_clips(video.frames, starts, clips.ClipSpec.from_config(d)), starts


def output_text(value: float, output: str) -> str:
    """``"predicted EF 55.0%"`` or ``"MI logit 1.20 (p 0.77)"`` for a title."""
    if output == "MI logit":
        return f"MI logit {value:.2f} (p {1.0 / (1.0 + np.exp(-value)):.2f})"
    return f"predicted EF {value:.1f}%"


def write_pictures(
    out: str | Path,
    name: str,
    clip: np.ndarray,
    cam: GradCam,
    index: int,
    start: int,
    stride: int,
    movie: str,
    *,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    output: str = "EF",
    frame_labels: Sequence[int] | None = None,
) -> dict[str, str]:
    """Strip PNG and movie of clip ``index`` of ``cam`` (its clip ``[T, H, W, 3]``); returns their paths.

    ``mean``/``std``: the clip's normalisation (default EchoNet's); ``output``: ``"EF"`` or ``"MI logit"``;
    ``frame_labels``: default the video frame of each clip frame, ``start + stride * i``.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    frames = clip_frames_uint8(clip, mean, std)
    stem = f"gradcam_{Path(name).stem}_stage{cam.stage}" + (f"_clip{index}" if index else "")
    note = " (fallback |GxA|)" if cam.fallback[index] else " (BLANK)" if cam.blank[index] else ""
    what = output_text(float(cam.prediction[index]), output)
    title = f"{Path(name).name}: Grad-CAM stage {cam.stage}, {what}{note}"
    labels = start + stride * np.arange(len(frames)) if frame_labels is None else frame_labels
    strip = save_strip(out / f"{stem}.png", frames, cam.maps[index], title=title, frame_labels=labels)
    movie_path = save_movie(out / f"{stem}.{movie}", frames, cam.maps[index])
    return {"strip": str(strip), "movie": str(movie_path)}


# ------------------------------------------------------------------------------------------- LV focus


def split_file_names(root: str | Path, split: str = "test") -> list[str]:
    """File names (no extension) of one split of an EchoNet-layout dataset, in FileList.csv order."""
    from coreecho_jax.data.echonet import read_echonet

    return [r.filename for r in read_echonet(root, required_splits=()).split(split)]


def eval_clips(
    config: ml_collections.ConfigDict, dataset_root: str | Path, name: str, n_clips: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(video ``[F, 112, 112, 3]``, starts ``[K]``, clips ``[K, T, S, S, 3]``) of video ``name`` of an
    EchoNet-layout set at the starts the test evaluation draws (``start_indexes.draw_start_indexes``,
    ``eval.seed``)."""
    from coreecho_jax.data import clips, start_indexes
    from coreecho_jax.data import echonet_layout as layout
    from coreecho_jax.data.video_io import read_video

    d = config.data
    video = read_video(Path(dataset_root) / layout.VIDEO_DIR / layout.avi_name(name), color=True).frames
    avi = layout.avi_name(name)
    starts = start_indexes.draw_start_indexes(
        {avi: len(video)}, n_clips, int(d.frames), int(d.stride), int(config.eval.seed)
    )[avi]
    return video, starts, clips.make_clips(video, starts, clips.ClipSpec.from_config(d))


def lv_focus(
    model: nnx.Module,
    config: ml_collections.ConfigDict,
    dataset_root: str | Path,
    file_names: Sequence[str],
    *,
    stage: int = DEFAULT_STAGE,
    dilation: int = cam_lv.DEFAULT_DILATION,
    n_clips: int | None = None,
    sign: float = 1.0,
    progress: bool = True,
) -> dict:
    """Fraction of Grad-CAM mass inside the dilated LV, per video and overall, with the chance level.

    Args:
        model: CoReEcho model (put in eval mode).
        config: the run's (inference) config: ``data.frames``, ``stride``, ``image_size``, ``channels``;
            ``eval.n_clips`` clips per video unless ``n_clips`` is given, at the starts the test
            evaluation draws (:func:`eval_clips`).
        dataset_root: synthetic dataset written with ``write_masks=True``.
        file_names: videos (no extension) under ``dataset_root/Videos``.
        stage, sign: see :func:`coreecho_jax.analysis.gradcam.grad_cam`.
        dilation: LV dilation radius, px of the 112 px frame.

    Returns:
        :func:`_summarise` of the videos: ``{"focus_mean", "chance_mean", "focus_over_chance",
        "videos_above_chance", "n_videos", "n_clips", "clips", "fallback_clips", "fallback_share",
        "blank_clips", "gradcam_clips_*", "fallback_clips_*", "stage", "dilation_px", "videos": [{"file",
        "focus", "chance", "prediction", "clips": [{"start", "focus", "chance", "fallback"}]}]}``.

    Raises:
        DataError: a video without its mask file (``masks/<name>.npz``), or masks of another frame count.
    """
    from tqdm import tqdm

    from coreecho_jax.data.synthetic.echonet import MASK_DIR, read_mask

    d = config.data
    frames, stride, size = int(d.frames), int(d.stride), int(d.image_size)
    k = int(n_clips or config.eval.n_clips)
    root = Path(dataset_root)
    rows = []
    for name in tqdm(list(file_names), desc=f"LV focus, stage {stage}", disable=not progress):
        masks = read_mask(root, name)
        video, starts, x = eval_clips(config, root, name, k)
        if len(masks) != len(video):
            raise DataError(
                f"{root / MASK_DIR / name}.npz: {len(masks)} mask frames, the video has {len(video)}"
            )
        cam = grad_cam(model, x, stage, sign=sign)
        per_clip = []
        for j, start in enumerate(starts):
            lv, valid = cam_lv.clip_lv_masks(masks, int(start), frames, stride, size, dilation)
            focus, chance = cam_lv.focus_fraction(cam.maps[j], lv, valid)
            per_clip.append(
                {"start": int(start), "focus": focus, "chance": chance, "fallback": bool(cam.fallback[j])}
            )
        rows.append(_video_row(name, per_clip, float(cam.prediction.mean())))
    return _summarise(rows, stage=stage, dilation_px=dilation, n_clips=k)


def _video_row(name: str, per_clip: list[dict], prediction: float) -> dict:
    """A video's row: the mean focus and chance over its clips with a map (a blank map has no mass)."""
    used = [c for c in per_clip if np.isfinite(c["focus"])]
    return {
        "file": name,
        "focus": float(np.mean([c["focus"] for c in used])) if used else float("nan"),
        "chance": float(np.mean([c["chance"] for c in used])) if used else float("nan"),
        "prediction": prediction,
        "clips": per_clip,
    }


def _summarise(rows: list[dict], **fields) -> dict:
    """Means over videos (and over the Grad-CAM and the fallback clips apart) of :func:`lv_focus`'s rows.

    ``gradcam_clips_*`` are over the clips whose map is the ReLU Grad-CAM, ``fallback_clips_*`` over those
    drawing the ``|G x A|`` fallback (a clip's focus and chance, not the per-video means): ``*_measured``
    clips, their ``*_focus_mean``, ``*_chance_mean`` and ``*_focus_over_chance``.
    """
    every = [c for r in rows for c in r["clips"]]

    def mean(values) -> float:
        values = [v for v in values if np.isfinite(v)]
        return float(np.mean(values)) if values else float("nan")

    videos = [r for r in rows if np.isfinite(r["focus"])]
    out = {
        **fields,
        "n_videos": len(rows),
        "focus_mean": mean(r["focus"] for r in videos),
        "chance_mean": mean(r["chance"] for r in videos),
        "videos_above_chance": sum(r["focus"] > r["chance"] for r in videos),
        "clips": len(every),
        "fallback_clips": sum(c["fallback"] for c in every),
        "blank_clips": sum(not np.isfinite(c["focus"]) for c in every),
    }
    out["fallback_share"] = out["fallback_clips"] / len(every) if every else float("nan")
    out["focus_over_chance"] = out["focus_mean"] / out["chance_mean"] if videos else float("nan")
    for kind, fallback in (("gradcam", False), ("fallback", True)):
        chosen = [c for c in every if c["fallback"] == fallback and np.isfinite(c["focus"])]
        out[f"{kind}_clips_measured"] = len(chosen)
        out[f"{kind}_clips_focus_mean"] = mean(c["focus"] for c in chosen)
        out[f"{kind}_clips_chance_mean"] = mean(c["chance"] for c in chosen)
        out[f"{kind}_clips_focus_over_chance"] = (
            out[f"{kind}_clips_focus_mean"] / out[f"{kind}_clips_chance_mean"] if chosen else float("nan")
        )
    return {**out, "videos": rows}


# ------------------------------------------------------------------------------------------- transfer models

#: Why a transfer dataset has no CAM-in-LV number (module doc of :mod:`coreecho_jax.analysis.cam_lv`).
LV_UNDEFINED = {
    "hmcqu": "not defined: HMC-QU's masks outline the LV wall (myocardium), not the cavity, and have no "
    "reader here (the synthetic HMC-QU writes none)",
}
#: The parts of a transfer fold whose videos Grad-CAM can explain.
FOLD_PARTS = ("train", "val", "test")


def transfer_clips(
    trained: runs.TrainedModel, part: str = "test", *, max_videos: int | None = None
) -> tuple[tuple[str, ...], np.ndarray]:
    """Names and clips ``[N, T, S, S, 3]`` (normalised) of the videos in ``part`` of the model's fold.

    The clips are the fold's own: ``transfer.data.prepare`` with the transfer workdir's config (its
    cache in ``<workdir>/prepared``; the download must still be at ``data.root``), one clip per video,
    normalised with ``data.mean``/``data.std`` (:func:`coreecho_jax.data.cycles.normalise`).

    Raises:
        GradCamError: an unknown ``part``, or a fold without videos there.
    """
    from coreecho_jax.data import cycles
    from coreecho_jax.transfer import data as transfer_sets

    if part not in FOLD_PARTS:
        raise GradCamError(f"--split={part}: a transfer fold's part must be one of {FOLD_PARTS}")
    d = trained.config.data
    prepared = transfer_sets.prepare(trained.task, d, trained.workdir, progress=False)
    if not 0 <= trained.fold < len(prepared.folds):
        raise GradCamError(
            f"{trained.workdir}: fold {trained.fold} is not one of its {len(prepared.folds)} folds"
        )
    names = tuple(getattr(prepared.folds[trained.fold], part))[:max_videos]
    if not names:
        raise GradCamError(
            f"{trained.workdir}: fold {trained.fold} has no {part} videos; choose another --split"
        )
    return names, cycles.normalise(prepared.clips[prepared.rows(names)], d.mean, d.std)


def transfer_lv_masks(
    trained: runs.TrainedModel, names: Sequence[str], dilation: int
) -> tuple[dict[str, np.ndarray], list[dict]]:
    """The dilated LV of each clip (``{name: bool [T, S, S]}``, :func:`cam_lv.cycle_lv_masks`) and the
    videos left out with why (``[{"name", "reason"}]``).

    CAMUS only (its per-frame segmentation, :meth:`coreecho_jax.data.camus.CamusRecord.lv_masks`); for
    another task every video is left out with :data:`LV_UNDEFINED`'s reason.
    """
    from coreecho_jax.data import camus
    from coreecho_jax.transfer import data as transfer_sets

    if trained.task != "camus":
        return {}, [{"name": n, "reason": LV_UNDEFINED[trained.task]} for n in names]
    d = trained.config.data
    cam_lv.clip_dilation(dilation, int(d.image_size))  # a bad radius is an error, not a skipped video
    root = transfer_sets.download_root(trained.task, d, trained.workdir)
    records = {r.patient: r for r in camus.read_camus(root, str(d.view), on_error="skip").records}
    spec = transfer_sets.cycle_spec(d)
    masks, skipped = {}, []
    for name in names:
        if name not in records:
            skipped.append({"name": name, "reason": f"{root}: {name} is not readable there any more"})
            continue
        try:
            masks[name] = cam_lv.cycle_lv_masks(records[name].lv_masks(), spec, dilation)
        except DataError as e:
            skipped.append({"name": name, "reason": str(e)})
    return masks, skipped


def transfer_focus(
    trained: runs.TrainedModel,
    names: Sequence[str],
    clips: np.ndarray,
    *,
    stage: int = DEFAULT_STAGE,
    dilation: int = cam_lv.DEFAULT_DILATION,
    sign: float = 1.0,
    lv: tuple[dict[str, np.ndarray], list[dict]] | None = None,
) -> tuple[dict, GradCam]:
    """Grad-CAM of a transfer model's clips: the fallback share, and where the dataset segments the LV
    (CAMUS) the CAM mass in it, as :func:`lv_focus` (one clip per video, no end padding).

    ``lv``: :func:`transfer_lv_masks` of ``names`` when already read (else read here, with ``dilation``).

    Returns:
        ``({"stage", "clips", "fallback_clips", "fallback_share", "blank_clips", "blank_share",
        "lv": :func:`_summarise` of the videos with masks | absent, "lv_undefined": why | absent,
        "lv_skipped": [{"name", "reason"}], "videos": [{"file", "prediction", "fallback", "blank"}]}, cam)``.
    """
    cam = grad_cam_batched(
        trained.model, clips, stage, sign=sign, batch_size=int(trained.config.eval.batch_size)
    )
    masks, skipped = transfer_lv_masks(trained, names, dilation) if lv is None else lv
    rows = []
    for i, name in enumerate(names):
        if name in masks:
            focus, chance = cam_lv.focus_fraction(cam.maps[i], masks[name])
            clip = {"start": 0, "focus": focus, "chance": chance, "fallback": bool(cam.fallback[i])}
            rows.append(_video_row(name, [clip], float(cam.prediction[i])))
    out: dict = {"stage": stage, **cam_counts(cam.fallback, cam.blank)}
    if rows:
        radius = cam_lv.clip_dilation(dilation, int(trained.config.data.image_size))
        out["lv"] = {
            k: v for k, v in _summarise(rows, dilation_px=radius, n_clips=1).items() if k != "videos"
        }
    else:
        first = skipped[0]["reason"] if skipped else "no videos"
        out["lv_undefined"] = first if trained.task != "camus" else f"no video with LV masks; first: {first}"
    out["lv_skipped"] = skipped if rows else []
    by_name = {r["file"]: r for r in rows}
    out["videos"] = []
    for i, name in enumerate(names):
        video = {"file": name, "prediction": float(cam.prediction[i]), "fallback": bool(cam.fallback[i])}
        video["blank"] = bool(cam.blank[i])
        if name in by_name:
            video |= {"focus": by_name[name]["focus"], "chance": by_name[name]["chance"]}
        out["videos"].append(video)
    return out, cam


def same_encoder(a: nnx.Module, b: nnx.Module) -> bool:
    """Whether two CoReEcho models hold the same encoder, bit for bit (parameters and BatchNorm statistics)."""
    from coreecho_jax.checkpoints.manager import model_state_dict

    left = jax.tree_util.tree_leaves_with_path(model_state_dict(a)["encoder"])
    right = jax.tree_util.tree_leaves_with_path(model_state_dict(b)["encoder"])
    return len(left) == len(right) and all(
        pa == pb and np.shape(x) == np.shape(y) and np.array_equal(np.asarray(x), np.asarray(y))
        for (pa, x), (pb, y) in zip(left, right, strict=True)
    )


# ------------------------------------------------------------------------------------------- the command


def _count(text: str) -> int:
    """An argparse type: an integer >= 1 (argparse names the flag in its error line)."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}")
    return value


#: Row labels of the figure, per task (the paper's Fig. 3 names the datasets).
TASK_LABELS = {"echonet": "EchoNet-Dynamic", "camus": "CAMUS", "hmcqu": "HMC-QU"}


def _model_label(trained: runs.TrainedModel) -> str:
    label = TASK_LABELS[trained.task]
    return label if trained.fold is None else f"{label} fold {trained.fold}"


def _explain_echonet(
    a: argparse.Namespace, trained: runs.TrainedModel, out: Path, stage: int
) -> tuple[dict, FigureRow]:
    """One EchoNet model at one stage: pictures of ``--video``'s clips and/or ``--lv_focus``; the figure row."""
    config = trained.config
    entry: dict = {}
    row = None
    if a.video is not None:
        x, starts = video_clips(config, a.video, n_clips=a.clips)
        cam = grad_cam(trained.model, x, stage, sign=a.sign)
        entry["pictures"] = [
            write_pictures(out, a.video, x[k], cam, k, int(starts[k]), int(config.data.stride), a.movie)
            for k in range(len(x))
        ]
        entry["prediction"] = cam.prediction.tolist()
        entry["fallback"] = cam.fallback.tolist()
        entry.update(cam_counts(cam.fallback, cam.blank))
        row = FigureRow(
            f"{_model_label(trained)}\n{Path(a.video).name}", clip_frames_uint8(x[0]), cam.maps[0]
        )
    if a.lv_focus is not None:
        names = split_file_names(a.lv_focus, a.split)[: a.max_videos]
        focus = lv_focus(
            trained.model, config, a.lv_focus, names, stage=stage, dilation=a.dilation, sign=a.sign
        )
        path = out / f"lv_focus_stage{stage}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(focus, indent=2) + "\n")
        entry["lv_focus"] = {k: v for k, v in focus.items() if k != "videos"}
        entry.update({k: focus[k] for k in ("clips", "fallback_clips", "fallback_share", "blank_clips")})
        if a.video is None:  # the figure shows the first video's first test clip
            _, _, x = eval_clips(config, a.lv_focus, names[0], 1)
            cam = grad_cam(trained.model, x, stage, sign=a.sign)
            row = FigureRow(f"{_model_label(trained)}\n{names[0]}", clip_frames_uint8(x[0]), cam.maps[0])
    return entry, row


def _explain_transfer(
    a: argparse.Namespace, trained: runs.TrainedModel, out: Path, stage: int, data: tuple
) -> tuple[dict, FigureRow]:
    """One transfer fold at one stage: every video of ``--split``, pictures of the first; the figure row."""
    names, x, lv = data
    d = trained.config.data
    entry, cam = transfer_focus(trained, names, x, stage=stage, dilation=a.dilation, sign=a.sign, lv=lv)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"videos_stage{stage}.json").write_text(json.dumps(entry, indent=2) + "\n")
    entry = {k: v for k, v in entry.items() if k != "videos"}
    stem = re.sub(r"[^A-Za-z0-9_-]+", "_", f"{trained.task}_fold{trained.fold}_{names[0]}")  # ids hold spaces
    pictures = write_pictures(
        out, stem, x[0], cam, 0, 0, 1, a.movie, mean=d.mean, std=d.std, output=trained.output
    )
    entry["pictures"] = [pictures]
    row = FigureRow(
        f"{_model_label(trained)}\n{names[0]}", clip_frames_uint8(x[0], d.mean, d.std), cam.maps[0]
    )
    return entry, row


def main(argv: Sequence[str] | None = None) -> dict:
    """``python -m coreecho_jax.analysis.gradcam --checkpoint=... [--checkpoint=...] --out=DIR`` (module doc)."""
    p = argparse.ArgumentParser(
        prog="python -m coreecho_jax.analysis.gradcam", description=__doc__.split("\n")[0]
    )
    p.add_argument(
        "--checkpoint",
        required=True,
        action="append",
        help="run workdir, imported folder, CoReEcho .pth or transfer fold (WORKDIR/folds/fold<k>); "
        "repeat it for one figure row per model (Fig. 3: the EchoNet run, a CAMUS and an HMC-QU fold)",
    )
    p.add_argument("--config", default=None, help="configs/FILE.py[:variant]; default: the run's config.json")
    p.add_argument("--video", default=None, help="EchoNet models: AVI/MP4/DICOM file to explain")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument(
        "--stage",
        default=str(DEFAULT_STAGE),
        help="encoder stage(s), comma-separated, e.g. 2,3,4 (module doc)",
    )
    p.add_argument(
        "--clips", type=_count, default=1, help="evenly spaced clips of the video (pictures of each)"
    )
    p.add_argument("--movie", choices=("gif", "mp4"), default="gif")
    p.add_argument(
        "--sign", type=float, choices=(1.0, -1.0), default=1.0, help="-1: evidence for a lower output"
    )
    p.add_argument(
        "--lv_focus",
        default=None,
        help="EchoNet models: synthetic dataset root with masks/: CAM mass in the LV",
    )
    p.add_argument(
        "--split", default="test", help="split of --lv_focus; for a transfer fold its part (train, val, test)"
    )
    p.add_argument("--dilation", type=int, default=5, help="LV dilation radius in px of the 112 px frame")
    p.add_argument("--max_videos", type=_count, default=None, help="first N videos of the split only")
    a = p.parse_args(argv)
    if a.dilation < 0:
        p.error(f"argument --dilation: expected a radius >= 0 px, got {a.dilation}")
    try:
        stages = [int(s) for s in a.stage.split(",")]
    except ValueError:
        raise GradCamError(f"--stage={a.stage}: expected stage numbers 1-4, comma-separated") from None
    for stage in stages:
        check_stage(stage, 10**6, 10**6)  # an unknown stage, before loading anything
    if a.video is None and a.lv_focus is None and any(runs.find_fold(c) is None for c in a.checkpoint):
        p.error("an EchoNet model needs --video=FILE and/or --lv_focus=DATASET_ROOT")
    given = load_config(a.config) if a.config else None
    models = [runs.load_run(c, given) for c in a.checkpoint]
    for trained in models:  # before computing anything
        size = int(trained.config.data.image_size)
        for stage in stages:
            check_stage(stage, size, size)
    out = Path(a.out)
    several = len(models) > 1
    report: dict = {"stages": stages, "models": []}
    figure_rows: dict[int, list[FigureRow]] = {stage: [] for stage in stages}
    for i, trained in enumerate(models):
        folder = out / f"{i}_{trained.task}" if several else out
        entry: dict = {
            "checkpoint": trained.origin,
            "task": trained.task,
            "fold": trained.fold,
            "output": trained.output,
            "stages": {},
        }
        if trained.fold is not None:
            entry["encoder_from"] = str(trained.config.transfer.init) or "random initialisation (scratch)"
            entry["mode"] = str(trained.config.transfer.mode)
            names, x = transfer_clips(trained, a.split, max_videos=a.max_videos)
            data = (names, x, transfer_lv_masks(trained, names, a.dilation))  # read once for every stage
        if i > 0:
            entry["same_encoder_as_first"] = same_encoder(trained.model, models[0].model)
        for stage in stages:
            if trained.fold is None:
                result, row = _explain_echonet(a, trained, folder, stage)
            else:
                result, row = _explain_transfer(a, trained, folder, stage, data)
            entry["stages"][str(stage)] = result
            figure_rows[stage].append(dataclasses.replace(row, label=f"{row.label}\nstage {stage}"))
        report["models"].append(entry)
    if several:
        rows = [row for stage in stages for row in figure_rows[stage]]  # stage by stage, the models in order
        report["figure"] = str(save_rows(out / "fig3.png", rows, title="Grad-CAM (jet: 0 to 1 per clip)"))
    out.mkdir(parents=True, exist_ok=True)
    (out / "gradcam.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    from coreecho_jax.errors import CoreEchoError

    try:
        main()
    except CoreEchoError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
