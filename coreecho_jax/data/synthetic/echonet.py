"""Synthetic A4C echo videos written in the EchoNet-Dynamic on-disk layout.

The demo and the tests read these files through the same readers and builders as real data::

    root/
      FileList.csv         FileName,EF,ESV,EDV,FrameHeight,FrameWidth,FPS,NumberOfFrames,Split
      VolumeTracings.csv   FileName,X1,Y1,X2,Y2,Frame   (optional; FileName with ".avi")
      Videos/<FileName>.avi
      masks/<FileName>.npz (optional) ``lv_mask``: bool [T, H, W], the LV cavity of every frame
      synthetic.json       the generating config (marks the folder as ours, makes writing idempotent)

``EDV`` and ``ESV`` are the volumes of the drawn cavity at the traced end-diastolic (ED) and
end-systolic (ES) frames, and ``EF = 100 (EDV - ESV) / EDV`` exactly (see ``heart`` for the drawing).
Every video is drawn from its own generator ``video_rng(seed, index)``, so any subset can be
reproduced and videos can be drawn in parallel.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from coreecho_jax import logs, seeds
from coreecho_jax.data import echonet_layout as layout
from coreecho_jax.data.synthetic.heart import (
    DrawingConfig,
    DrawnVideo,
    draw_video,
    sample_heart_params,
    video_rng,
)
from coreecho_jax.data.video.video_io import write_video
from coreecho_jax.errors import ConfigError, DataError

PathLike = str | os.PathLike

#: Bump when the drawing changes in a way that changes the written files.
FORMAT_VERSION = 1
#: Chords per traced frame (after the long-axis row), as in EchoNet-Dynamic's VolumeTracings.csv.
NUM_CHORDS = 20
#: Folder (under the dataset root) of the optional per-video LV masks, and the array's key.
MASK_DIR = "masks"
MASK_KEY = "lv_mask"
META_NAME = "synthetic.json"


class DatasetExistsError(DataError, FileExistsError):
    """The output folder holds something other than this synthetic dataset."""


@dataclasses.dataclass(frozen=True)
class SyntheticConfig(DrawingConfig):
    """What to generate: the drawing's distributions (``DrawingConfig``) plus the dataset's fields.

    Attributes:
        n_videos: number of videos.
        seed: master seed; video ``i`` uses ``video_rng(seed, i)``.
        size: frame height = width in pixels (EchoNet-Dynamic's 112 by default).
        min_frames, max_frames: inclusive range of frames per video.
        short_fraction: share of videos with fewer than ``short_frames`` frames (drawn uniformly
            from ``[min_frames, short_frames)``; the others from ``[short_frames, max_frames]``).
            Ignored (plain uniform) unless ``min_frames < short_frames <= max_frames``.
        short_frames: the threshold above; 144 = 36 frames x stride 4, the clip length that
            forces padding in the official pipeline.
        with_tracings: also write ``VolumeTracings.csv``.
        split_fractions: (TRAIN, VAL, TEST) shares; counts are rounded, each split gets >= 1
            video when ``n_videos >= 3``.
    """

    n_videos: int = 512
    seed: int = 0
    size: int = layout.FRAME_SIZE
    min_frames: int = 100
    max_frames: int = 220
    short_fraction: float = 0.25
    short_frames: int = layout.PAD_TO_FRAMES
    with_tracings: bool = True
    split_fractions: tuple[float, float, float] = (0.75, 0.125, 0.125)

    def __post_init__(self):
        super().__post_init__()
        if self.n_videos < 1:
            raise ConfigError(f"SyntheticConfig.n_videos must be >= 1, got {self.n_videos}")
        if not 1 <= self.min_frames <= self.max_frames:
            raise ConfigError(
                "SyntheticConfig needs 1 <= min_frames <= max_frames, got "
                f"min_frames={self.min_frames}, max_frames={self.max_frames}"
            )
        if len(self.split_fractions) != 3 or min(self.split_fractions) < 0 or sum(self.split_fractions) <= 0:
            raise ConfigError(
                "SyntheticConfig.split_fractions must be three non-negative shares "
                f"(TRAIN, VAL, TEST), got {self.split_fractions}"
            )


# ----------------------------------------------------------------------------------------------
# Names, splits, frame counts
# ----------------------------------------------------------------------------------------------


def video_file_name(seed: int, index: int) -> str:
    """EchoNet-style name ``0X`` + 16 upper-case hex digits, a hash of (seed, index); no ``.avi``."""
    digest = hashlib.blake2b(f"coreecho-synthetic:{int(seed)}:{int(index)}".encode(), digest_size=8)
    return "0X" + digest.hexdigest().upper()


def split_assignment(
    n_videos: int, seed: int, fractions: Sequence[float] = (0.75, 0.125, 0.125)
) -> list[str]:
    """Deterministic split (``FILELIST_SPLITS`` spelling) per video index: shuffled, counts rounded.

    Every split with a positive fraction gets at least one video when ``n_videos`` allows it
    (``n_videos >= 3``), so TRAIN/VAL/TEST are all non-empty for ``n >= 3`` (in particular 8).
    """
    fr = np.asarray(fractions, dtype=np.float64)
    fr = fr / fr.sum()
    counts = [int(round(n_videos * f)) for f in fr[1:]]
    for k, f in enumerate(fr[1:]):
        if f > 0 and counts[k] == 0 and n_videos - sum(counts) > 1:
            counts[k] = 1
    n_val, n_test = counts
    while n_val + n_test >= n_videos and (n_val or n_test):  # keep >= 1 TRAIN
        if n_val >= n_test:
            n_val -= 1
        else:
            n_test -= 1
    n_train = n_videos - n_val - n_test
    train, val, test = layout.FILELIST_SPLITS
    labels = np.array([train] * n_train + [val] * n_val + [test] * n_test)
    perm = seeds.generator(seed, seeds.SYNTHETIC_ECHONET_SPLITS).permutation(n_videos)
    out = np.empty(n_videos, dtype=object)
    out[perm] = labels
    return [str(s) for s in out]


def sample_num_frames(rng: np.random.Generator, config: SyntheticConfig) -> int:
    """Frames of one video (see ``SyntheticConfig.short_fraction``)."""
    lo, hi, cut = config.min_frames, config.max_frames, config.short_frames
    if lo < cut <= hi:
        if rng.random() < config.short_fraction:
            return int(rng.integers(lo, cut))
        return int(rng.integers(cut, hi + 1))
    return int(rng.integers(lo, hi + 1))


def draw_echonet_video(
    rng: np.random.Generator, config: SyntheticConfig | None = None, *, num_frames: int | None = None
) -> DrawnVideo:
    """Draws one video of the dataset: frame count, heart and picture, all from ``rng``.

    Args:
        rng: the video's generator (``video_rng(seed, index)`` in a dataset).
        config: the distributions (``n_videos``, ``seed`` and the split fields are not used here).
        num_frames: overrides the sampled number of frames (>= 8).
    """
    cfg = config or SyntheticConfig()
    T = int(num_frames) if num_frames is not None else sample_num_frames(rng, cfg)
    return draw_video(sample_heart_params(rng, cfg, T), rng)


def tracing_chords(video: DrawnVideo, frame: int) -> np.ndarray:
    """EchoNet-style tracing of the drawn LV in ``frame``: float64 ``[1 + NUM_CHORDS, 4]``.

    Row 0 is the long axis (X1, Y1) = apex, (X2, Y2) = mid mitral annulus; rows 1.. are chords
    perpendicular to it at the centres of NUM_CHORDS equal slices, from apex to base, (X1, Y1)
    on the septal side. Coordinates are pixels (x = column, y = row). The LV must be the ellipse
    (no hypokinetic segment).
    """
    if video.params.hypokinetic_segments:
        raise ConfigError("tracing_chords: the LV of a video with a hypokinetic segment is not an ellipse")
    a, b = video.lv_long[frame], video.lv_short[frame]
    s = (np.arange(NUM_CHORDS) + 0.5) * (2.0 * a / NUM_CHORDS)  # distance from the apex
    half = b * np.sqrt(np.clip(1.0 - ((s - a) / a) ** 2, 0.0, None))
    x_long = np.concatenate([[0.0], s])
    x_long2 = np.concatenate([[2.0 * a], s])
    y1 = np.concatenate([[0.0], -half])
    y2 = np.concatenate([[0.0], half])
    x1, yy1 = video.lv_to_image(x_long, y1)
    x2, yy2 = video.lv_to_image(x_long2, y2)
    return np.stack([x1, yy1, x2, yy2], axis=1).astype(np.float64)


def read_mask(root: PathLike, file_name: str) -> np.ndarray:
    """The LV masks written with ``write_masks=True``: bool ``[T, H, W]`` of video ``file_name``."""
    path = Path(root) / MASK_DIR / f"{layout.stem(file_name)}.npz"
    if not path.is_file():
        raise DataError(f"{path}: no LV mask file (write the dataset with write_masks=True)")
    with np.load(path, allow_pickle=False) as z:
        return z[MASK_KEY]


# ----------------------------------------------------------------------------------------------
# Dataset writer
# ----------------------------------------------------------------------------------------------


def _format_number(x: float) -> str:
    """Shortest round-trip text of a float (integers without ``.0``), so CSVs are byte-stable."""
    x = float(x)
    return str(int(x)) if x.is_integer() else repr(x)


def _draw_and_write(job: tuple[SyntheticConfig, int, str, str, bool]) -> tuple[list[str], list[list[str]]]:
    """Draws video ``index`` and writes its AVI (and mask); returns its FileList row and tracing rows."""
    config, index, split, root, write_masks = job
    name = video_file_name(config.seed, index)
    video = draw_echonet_video(video_rng(config.seed, index), config)
    write_video(Path(root) / layout.VIDEO_DIR / f"{name}{layout.VIDEO_SUFFIX}", video.frames, config.fps)
    if write_masks:
        with open(Path(root) / MASK_DIR / f"{name}.npz", "wb") as f:
            np.savez_compressed(f, **{MASK_KEY: video.lv_mask})
    row = [
        name,
        _format_number(video.ef),
        _format_number(video.esv),
        _format_number(video.edv),
        str(config.size),
        str(config.size),
        _format_number(config.fps),
        str(len(video.frames)),
        split,
    ]
    traces = []
    for frame in (video.es_frame, video.ed_frame):  # ES first, then ED, as EchoNet's file
        chords = tracing_chords(video, frame)
        traces += [[layout.avi_name(name), *(f"{x:.4f}" for x in chord), str(frame)] for chord in chords]
    return row, traces


def _pool_init() -> None:
    cv2.setNumThreads(1)


def _dataset_complete(root: Path, config: SyntheticConfig, write_masks: bool) -> bool:
    if not (root / layout.FILELIST).is_file():
        return False
    if config.with_tracings and not (root / layout.TRACINGS).is_file():
        return False
    names = [video_file_name(config.seed, i) for i in range(config.n_videos)]
    if write_masks and not all((root / MASK_DIR / f"{n}.npz").is_file() for n in names):
        return False
    return all((root / layout.VIDEO_DIR / f"{n}{layout.VIDEO_SUFFIX}").is_file() for n in names)


def _check_root(root: Path, wanted: dict[str, Any]) -> dict[str, Any] | None:
    """The recorded metadata of ``root`` when it holds the ``wanted`` dataset (or None when empty);
    raises ``DatasetExistsError`` when it holds anything else."""
    meta_path = root / META_NAME
    if not meta_path.is_file():
        if root.exists() and (not root.is_dir() or any(root.iterdir())):
            raise DatasetExistsError(
                f"{root} exists and is not a synthetic dataset written by write_echonet_dataset "
                f"(no {META_NAME}); refusing to overwrite it, choose an empty or new folder"
            )
        return None
    try:
        meta = json.loads(meta_path.read_text())
    except json.JSONDecodeError as e:
        raise DatasetExistsError(f"{meta_path} is not valid JSON ({e}); refusing to write into {root}") from e
    old = {"format_version": meta.get("format_version"), "config": meta.get("config")}
    if old != wanted:
        old_cfg = old["config"] if isinstance(old["config"], dict) else {}
        diff = sorted(
            k for k in set(old_cfg) | set(wanted["config"]) if old_cfg.get(k) != wanted["config"].get(k)
        )
        if old["format_version"] != FORMAT_VERSION:
            diff.append(f"format_version ({old['format_version']} != {FORMAT_VERSION})")
        raise DatasetExistsError(
            f"{root} already holds a different synthetic dataset (differs in: {', '.join(diff)}); "
            "delete it or choose another root"
        )
    return meta


def write_echonet_dataset(
    root: PathLike,
    config: SyntheticConfig | Mapping[str, Any] | None = None,
    *,
    workers: int = 1,
    progress: bool = True,
    write_masks: bool = False,
    **overrides: Any,
) -> Path:
    """Writes a synthetic dataset in the EchoNet-Dynamic layout under ``root`` (see module doc).

    Idempotent: when ``root/synthetic.json`` records the same config and the dataset is complete
    (with its masks, when asked for), nothing is rewritten. An interrupted write of the same config
    is redone. A ``root`` that holds anything else (another config, or files not written by this
    function) raises ``DatasetExistsError`` (a ``FileExistsError``) rather than being overwritten.

    Args:
        root: output folder (created).
        config: a ``SyntheticConfig`` or a dict of its fields; default ``SyntheticConfig()``.
        workers: processes drawing videos (1 = in this process). Output does not depend on it.
        progress: show a tqdm progress bar.
        write_masks: also write ``masks/<FileName>.npz`` holding ``lv_mask``, bool ``[T, H, W]``:
            the LV cavity drawn in each frame (read it back with ``read_mask``). Videos and CSVs do
            not depend on it.
        **overrides: config fields to replace, e.g. ``n_videos=64``.

    Returns:
        ``root`` as a Path.
    """
    cfg = SyntheticConfig.resolve(config, overrides)
    if workers < 1:
        raise ConfigError(f"write_echonet_dataset: workers must be >= 1, got {workers}")
    root = Path(root)
    wanted = {"format_version": FORMAT_VERSION, "config": cfg.to_dict()}
    meta = _check_root(root, wanted)
    if meta is not None and meta.get("complete") and _dataset_complete(root, cfg, write_masks):
        return root

    names = [video_file_name(cfg.seed, i) for i in range(cfg.n_videos)]
    if len(set(names)) != len(names):
        raise ConfigError(f"file-name hash collision for seed {cfg.seed}; choose another seed")
    (root / layout.VIDEO_DIR).mkdir(parents=True, exist_ok=True)
    if write_masks:
        (root / MASK_DIR).mkdir(exist_ok=True)
    meta_path = root / META_NAME
    meta_path.write_text(json.dumps({**wanted, "complete": False}, indent=2, sort_keys=True) + "\n")

    splits = split_assignment(cfg.n_videos, cfg.seed, cfg.split_fractions)
    jobs = [(cfg, i, splits[i], str(root), write_masks) for i in range(cfg.n_videos)]
    results = _run_jobs(jobs, workers, progress)

    rows, traces = [], []
    for row, trace in results:
        rows.append(row)
        traces += trace
    _write_csv(root / layout.FILELIST, layout.FILELIST_COLUMNS, rows)
    if cfg.with_tracings:
        _write_csv(root / layout.TRACINGS, layout.TRACING_COLUMNS, traces)
    elif (root / layout.TRACINGS).exists():  # left by an interrupted write of ours
        (root / layout.TRACINGS).unlink()
    meta_path.write_text(json.dumps({**wanted, "complete": True}, indent=2, sort_keys=True) + "\n")
    return root


def _run_jobs(jobs: list, workers: int, progress: bool) -> list:
    bar = logs.progress(total=len(jobs), desc="synthetic videos", unit="video") if progress else None

    def tick(items: Iterable) -> Iterator:
        for item in items:
            if bar is not None:
                bar.update(1)
            yield item

    try:
        if workers == 1:
            return list(tick(map(_draw_and_write, jobs)))
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        ctx = multiprocessing.get_context("spawn")  # no fork of a parent that may hold TF/JAX threads
        with ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_pool_init) as ex:
            return list(tick(ex.map(_draw_and_write, jobs, chunksize=4)))
    finally:
        if bar is not None:
            bar.close()


def _write_csv(path: Path, header: Sequence[str], rows: Iterable[Sequence[str]]) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "w", newline="") as f:
        f.write(",".join(header) + "\n")
        for row in rows:
            f.write(",".join(row) + "\n")
    os.replace(tmp, path)
