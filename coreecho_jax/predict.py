"""EF of one video file (AVI/MP4/DICOM), as mean and spread over K clips.

The video goes through the same preparation as a user's own data (``video_io.load_echo_video``:
region or sector crop, square, 112x112, grayscale) unless it already is a square of the dataset's
frame size (an EchoNet-Dynamic AVI), and through the same clip sampler as evaluation
(``clips.make_clips``: black end padding to ``frames * stride``, normalisation). The K starts are
spread evenly over the valid start positions.
"""

from __future__ import annotations

from pathlib import Path

import jax
import ml_collections
import numpy as np

from coreecho_jax.checkpoints import loading
from coreecho_jax.data import clips, video_io
from coreecho_jax.evaluation import steps as eval_steps

SOURCE_SIZE = 112  # EchoNet-Dynamic frame size: what the clip sampler crops and translates


def even_starts(num_frames: int, k: int, frames: int, stride: int) -> np.ndarray:
    """``k`` starts spread evenly over the valid positions of a (padded) video of ``num_frames``."""
    n = clips.num_start_positions(num_frames, frames, stride)
    return np.round(np.linspace(0, n - 1, k)).astype(np.int64)


def predict_file(config: ml_collections.ConfigDict, video_path: str | Path, checkpoint: str | Path) -> dict:
    """Reads ``video_path``, runs the model named by ``checkpoint``, returns EF mean/std/per-clip (%)."""
    d = config.data
    info = video_io.probe_video(video_path)
    crop = "none" if (info.height, info.width) == (SOURCE_SIZE, SOURCE_SIZE) else "auto"
    video = video_io.load_echo_video(video_path, size=SOURCE_SIZE, crop=crop)
    frames, stride, k = int(d.frames), int(d.stride), int(config.eval.n_clips)
    starts = even_starts(video.num_frames, k, frames, stride)
    x = clips.make_clips(video.frames, starts, frames=frames, stride=stride, image_size=int(d.image_size))
    model, origin = loading.load_for_inference(config, checkpoint)
    model.eval()
    prediction = np.asarray(jax.device_get(eval_steps.predict_step(model, x[None])))[0]
    notes = []
    span = frames * stride
    if video.num_frames < span:
        notes.append(
            f"the video has {video.num_frames} frames, fewer than one clip span ({span}); it was "
            f"padded with black frames as in training"
        )
    if video.fps and abs(video.fps - 50.0) > 5:
        notes.append(f"the video runs at {video.fps:.1f} fps; EchoNet-Dynamic (the training data) is ~50 fps")
    return {
        "video": str(video_path),
        "checkpoint": origin,
        "ef_mean": float(prediction.mean()),
        "ef_std": float(prediction.std()),
        "ef_per_clip": [float(p) for p in prediction],
        "clip_starts": [int(s) for s in starts],
        "num_frames": int(video.num_frames),
        "fps": None if video.fps is None else float(video.fps),
        "crop": video.metadata.get("crop_mode"),
        "notes": notes,
    }
