"""Pictures and movies of the analyses: Grad-CAM strips, movies and the Fig. 3 grid, and the figure
plumbing the UMAP figure shares (:func:`agg_figure`, :func:`save_png`).

Matplotlib draws on each figure's own Agg canvas (no pyplot: no global state, no display). Grad-CAM
maps ``[T, H, W]`` in [0, 1] are drawn over the clip's grey frames with the jet colour map at alpha
0.45 (the movies: OpenCV's jet, the same blend); frames are uint8 grey ``[T, H, W]``
(:func:`clip_frames_uint8` undoes a clip's normalisation).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from coreecho_jax.errors import ConfigError

if TYPE_CHECKING:
    from coreecho_jax.analysis.gradcam import GradCam


class FigureError(ConfigError):
    """A picture cannot be drawn as asked: no rows, or a movie format other than .gif / .mp4."""


def agg_figure(width: float, height: float, *, dpi: float = 100, **kwargs: Any) -> Figure:
    """A figure of ``width x height`` inches at ``dpi`` on its own Agg canvas; ``kwargs`` go to ``Figure``."""
    fig = Figure(figsize=(width, height), dpi=dpi, **kwargs)
    FigureCanvasAgg(fig)
    return fig


def save_png(fig: Figure, path: str | Path, *, dpi: float | None = None) -> Path:
    """Writes ``fig`` to ``path`` (its folder made first) at ``dpi`` (default: the figure's); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi="figure" if dpi is None else dpi)
    return path


# ------------------------------------------------------------------------------------------- Grad-CAM


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
    idx = strip_indices(len(frames), n)
    labels = list(range(len(frames))) if frame_labels is None else list(frame_labels)
    fig = agg_figure(len(idx) * panel_inches + 0.6, panel_inches + 0.6, dpi=dpi)
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
    return save_png(fig, path, dpi=dpi)


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
        raise FigureError(f"{path}: the movie must be a .gif or .mp4 file")
    from coreecho_jax.data.video.video_io import write_video

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
    if not rows:
        raise FigureError("a Grad-CAM figure needs at least one row")
    fig = agg_figure(n * panel_inches + 2.2, len(rows) * panel_inches + 0.5, dpi=dpi)
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
    return save_png(fig, path, dpi=dpi)


def output_text(value: float, output: str) -> str:
    """``"predicted EF 55.0%"`` or ``"MI logit 1.20 (p 0.77)"`` for a title."""
    if output == "MI logit":
        return f"MI logit {value:.2f} (p {1.0 / (1.0 + np.exp(-value)):.2f})"
    return f"predicted EF {value:.1f}%"


def write_pictures(
    out: str | Path,
    name: str,
    frames: np.ndarray,
    cam: GradCam,
    index: int,
    movie: str,
    *,
    output: str = "EF",
    frame_labels: Sequence[int] | None = None,
) -> dict[str, str]:
    """Strip PNG and movie of clip ``index`` of ``cam`` over its uint8 grey ``frames [T, H, W]``
    (:func:`clip_frames_uint8`); returns their paths.

    ``output``: ``"EF"`` or ``"MI logit"`` (the title); ``frame_labels``: the label of each clip frame (e.g.
    its video frame, ``start + stride * i``), default ``0 .. T-1``.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"gradcam_{Path(name).stem}_stage{cam.stage}" + (f"_clip{index}" if index else "")
    note = " (fallback |GxA|)" if cam.fallback[index] else " (BLANK)" if cam.blank[index] else ""
    what = output_text(float(cam.prediction[index]), output)
    title = f"{Path(name).name}: Grad-CAM stage {cam.stage}, {what}{note}"
    strip = save_strip(out / f"{stem}.png", frames, cam.maps[index], title=title, frame_labels=frame_labels)
    movie_path = save_movie(out / f"{stem}.{movie}", frames, cam.maps[index])
    return {"strip": str(strip), "movie": str(movie_path)}
