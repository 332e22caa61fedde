"""Grad-CAM for video: where in space and time an encoder stage holds what drives the predicted EF.

For clips ``x`` ``[B, T, H, W, 3]`` (normalised, as the clip sampler makes them) and a UniFormer stage
``s`` of the CoReEcho model in eval mode:

1. ``A`` = the output of stage ``s`` (after its last block), ``[B, T', H', W', C]``;
2. ``G`` = the gradient of the predicted EF (the regression head's output, %) with respect to ``A``;
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
:class:`GradCamError` is raised instead of returning a map that is uniform by construction.

The stage activation is taken by running the encoder's public submodules (``patch_embed1..4``,
``pos_drop``, ``blocks1..4``, ``norm``) in the order of ``UniFormer.__call__``; the rest of the
forward pass (later stages, final BatchNorm, mean pooling, head) is a function of ``A`` that is
differentiated. The split forward gives the same prediction as ``model(x)`` (tested).

Command line::

    python -m coreecho_jax.analysis.gradcam --checkpoint=RUN_OR_PTH --video=FILE --out=DIR [--stage=2,4]
    python -m coreecho_jax.analysis.gradcam --checkpoint=RUN --lv_focus=DATASET_ROOT --out=DIR

writes ``gradcam_<video>_stage<s>.png`` (a strip of evenly spaced frames with the map overlaid) and
``.gif`` (or ``.mp4``) of the whole clip, and with ``--lv_focus`` the LV-focus numbers of
:mod:`coreecho_jax.analysis.cam_lv` to ``lv_focus_stage<s>.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import importlib.util
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from coreecho_jax.analysis import cam_lv
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
        prediction: float32 ``[B]`` predicted EF (%).
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
    """Predicted EF ``[B]`` (%) from the output of stage ``stage``: later stages, final norm, pooling, head."""
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
    """Grad-CAM of clips ``[B, T, H, W, 3]`` (normalised) at encoder ``stage`` w.r.t. the predicted EF.

    Puts ``model`` in eval mode (running BatchNorm statistics, no dropout), as for prediction.
    ``sign=-1`` maps the evidence for a *lower* EF instead. Compiled once per stage and clip shape.

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


# ------------------------------------------------------------------------------------------- pictures


def clip_frames_uint8(clip: np.ndarray) -> np.ndarray:
    """A normalised clip ``[T, H, W, 3]`` back to uint8 grey frames ``[T, H, W]`` (mean of the channels)."""
    from coreecho_jax.data.clips import MEAN, STD

    pixels = np.asarray(clip, np.float32) * STD + MEAN
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


# ------------------------------------------------------------------------------------------- a video file


def load_config(spec: str | None, checkpoint: str | Path) -> ml_collections.ConfigDict:
    """The config for ``checkpoint``: a ``configs/*.py[:variant]`` file, or (None) the run workdir's ``config.json``."""
    from coreecho_jax.checkpoints import saved_config

    if spec is None:
        saved = saved_config.read_run_config(checkpoint)
        if saved is None:
            raise ConfigError(
                f"{checkpoint}: not a run workdir (no config.json); give --config=configs/FILE.py"
            )
        return ml_collections.ConfigDict(saved)
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


def write_pictures(
    out: str | Path,
    name: str,
    clip: np.ndarray,
    cam: GradCam,
    index: int,
    start: int,
    stride: int,
    movie: str,
) -> dict[str, str]:
    """Strip PNG and movie of clip ``index`` of ``cam`` (its clip ``[T, H, W, 3]``); returns their paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    frames = clip_frames_uint8(clip)
    stem = f"gradcam_{Path(name).stem}_stage{cam.stage}" + (f"_clip{index}" if index else "")
    note = " (fallback |GxA|)" if cam.fallback[index] else " (BLANK)" if cam.blank[index] else ""
    title = f"{Path(name).name}: Grad-CAM stage {cam.stage}, predicted EF {cam.prediction[index]:.1f}%{note}"
    labels = start + stride * np.arange(len(frames))
    strip = save_strip(out / f"{stem}.png", frames, cam.maps[index], title=title, frame_labels=labels)
    movie_path = save_movie(out / f"{stem}.{movie}", frames, cam.maps[index])
    return {"strip": str(strip), "movie": str(movie_path)}


# ------------------------------------------------------------------------------------------- LV focus


def split_file_names(root: str | Path, split: str = "test") -> list[str]:
    """File names (no extension) of one split of an EchoNet-layout dataset, in FileList.csv order."""
    from coreecho_jax.data.echonet import read_echonet

    return [r.filename for r in read_echonet(root, required_splits=()).split(split)]


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
            evaluation draws (``start_indexes.draw_start_indexes`` with ``eval.seed``).
        dataset_root: synthetic dataset written with ``write_masks=True``.
        file_names: videos (no extension) under ``dataset_root/Videos``.
        stage, sign: see :func:`coreecho_jax.analysis.gradcam.grad_cam`.
        dilation: LV dilation radius, px of the 112 px frame.

    Returns:
        ``{"focus_mean", "chance_mean", "focus_over_chance", "videos_above_chance", "n_videos",
        "n_clips", "fallback_clips", "blank_clips", "gradcam_clips_focus_mean",
        "gradcam_clips_chance_mean", "fallback_clips_focus_mean", "fallback_clips_chance_mean",
        "stage", "dilation_px", "videos": [{"file", "focus", "chance", "prediction", "clips": [{"start",
        "focus", "chance", "fallback"}]}]}``: per video the mean over its clips, overall the mean over
        videos; the ``gradcam_clips_*`` / ``fallback_clips_*`` means are over the clips whose map is the
        ReLU Grad-CAM / the ``|G x A|`` fallback.

    Raises:
        DataError: a video without its mask file (``masks/<name>.npz``), or masks of another frame count.
    """
    from tqdm import tqdm

    from coreecho_jax.data import clips, start_indexes
    from coreecho_jax.data import echonet_layout as layout
    from coreecho_jax.data.synthetic.echonet import MASK_DIR, read_mask
    from coreecho_jax.data.video_io import read_video

    d = config.data
    frames, stride, size = int(d.frames), int(d.stride), int(d.image_size)
    k = int(n_clips or config.eval.n_clips)
    spec = clips.ClipSpec.from_config(d)
    seed = int(config.eval.seed)
    root = Path(dataset_root)
    rows = []
    for name in tqdm(list(file_names), desc=f"LV focus, stage {stage}", disable=not progress):
        masks = read_mask(root, name)
        video = read_video(root / layout.VIDEO_DIR / layout.avi_name(name), color=True).frames
        if len(masks) != len(video):
            raise DataError(
                f"{root / MASK_DIR / name}.npz: {len(masks)} mask frames, the video has {len(video)}"
            )
        avi = layout.avi_name(name)
        starts = start_indexes.draw_start_indexes({avi: len(video)}, k, frames, stride, seed)[avi]
        cam = grad_cam(model, clips.make_clips(video, starts, spec), stage, sign=sign)
        per_clip = []
        for j, start in enumerate(starts):
            lv, valid = cam_lv.clip_lv_masks(masks, int(start), frames, stride, size, dilation)
            focus, chance = cam_lv.focus_fraction(cam.maps[j], lv, valid)
            per_clip.append(
                {"start": int(start), "focus": focus, "chance": chance, "fallback": bool(cam.fallback[j])}
            )
        used = [c for c in per_clip if np.isfinite(c["focus"])]  # a blank map has no mass
        rows.append(
            {
                "file": name,
                "focus": float(np.mean([c["focus"] for c in used])) if used else float("nan"),
                "chance": float(np.mean([c["chance"] for c in used])) if used else float("nan"),
                "prediction": float(cam.prediction.mean()),
                "clips": per_clip,
            }
        )
    return _summarise(rows, stage=stage, dilation_px=dilation, n_clips=k)


def _summarise(rows: list[dict], **fields) -> dict:
    """Means over videos (and over the Grad-CAM and the fallback clips apart) of :func:`lv_focus`'s rows."""
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
        "fallback_clips": sum(c["fallback"] for c in every),
        "blank_clips": sum(not np.isfinite(c["focus"]) for c in every),
    }
    out["focus_over_chance"] = out["focus_mean"] / out["chance_mean"] if videos else float("nan")
    for kind, fallback in (("gradcam", False), ("fallback", True)):
        chosen = [c for c in every if c["fallback"] == fallback and np.isfinite(c["focus"])]
        out[f"{kind}_clips_focus_mean"] = mean(c["focus"] for c in chosen)
        out[f"{kind}_clips_chance_mean"] = mean(c["chance"] for c in chosen)
    return {**out, "videos": rows}


def _count(text: str) -> int:
    """An argparse type: an integer >= 1 (argparse names the flag in its error line)."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}")
    return value


def main(argv: Sequence[str] | None = None) -> dict:
    """``python -m coreecho_jax.analysis.gradcam --checkpoint=... (--video=FILE | --lv_focus=ROOT) --out=DIR``."""
    p = argparse.ArgumentParser(
        prog="python -m coreecho_jax.analysis.gradcam", description=__doc__.split("\n")[0]
    )
    p.add_argument("--checkpoint", required=True, help="run workdir, imported folder or CoReEcho .pth")
    p.add_argument("--config", default=None, help="configs/FILE.py[:variant]; default: the run's config.json")
    p.add_argument("--video", default=None, help="AVI/MP4/DICOM file to explain")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--stage", default=str(DEFAULT_STAGE), help="encoder stage(s), comma-separated, e.g. 2,4")
    p.add_argument(
        "--clips", type=_count, default=1, help="evenly spaced clips of the video (pictures of each)"
    )
    p.add_argument("--movie", choices=("gif", "mp4"), default="gif")
    p.add_argument("--sign", type=float, choices=(1.0, -1.0), default=1.0, help="-1: evidence for a lower EF")
    p.add_argument("--lv_focus", default=None, help="synthetic dataset root with masks/: CAM mass in the LV")
    p.add_argument("--split", default="test", help="split of --lv_focus")
    p.add_argument("--dilation", type=int, default=5, help="LV dilation radius in px of the 112 px frame")
    p.add_argument("--max_videos", type=_count, default=None, help="first N videos of the split only")
    a = p.parse_args(argv)
    if a.video is None and a.lv_focus is None:
        p.error("give --video=FILE and/or --lv_focus=DATASET_ROOT")
    from coreecho_jax.checkpoints import loading, saved_config

    try:
        stages = [int(s) for s in a.stage.split(",")]
    except ValueError:
        raise GradCamError(f"--stage={a.stage}: expected stage numbers 1-4, comma-separated") from None
    config = saved_config.inference_config(load_config(a.config, a.checkpoint), a.checkpoint)
    for stage in stages:  # before loading anything
        check_stage(stage, int(config.data.image_size), int(config.data.image_size))
    model, origin = loading.load_for_inference(config, a.checkpoint)
    report: dict = {"checkpoint": origin, "stages": {}}
    if a.video is not None:
        x, starts = video_clips(config, a.video, n_clips=a.clips)
    for stage in stages:
        entry: dict = {}
        if a.video is not None:
            cam = grad_cam(model, x, stage, sign=a.sign)
            entry["pictures"] = [
                write_pictures(a.out, a.video, x[k], cam, k, int(starts[k]), int(config.data.stride), a.movie)
                for k in range(len(x))
            ]
            entry["prediction"] = cam.prediction.tolist()
            entry["fallback"] = cam.fallback.tolist()
        if a.lv_focus is not None:
            names = split_file_names(a.lv_focus, a.split)[: a.max_videos]
            focus = lv_focus(model, config, a.lv_focus, names, stage=stage, dilation=a.dilation, sign=a.sign)
            path = Path(a.out) / f"lv_focus_stage{stage}.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(focus, indent=2) + "\n")
            entry["lv_focus"] = {k: v for k, v in focus.items() if k != "videos"}
        report["stages"][str(stage)] = entry
    print(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    from coreecho_jax.errors import CoreEchoError

    try:
        main()
    except CoreEchoError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
