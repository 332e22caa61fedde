"""Synthetic HMC-QU downloads: A4C videos whose MI label is visible only in the wall motion.

Layout (what :func:`coreecho_jax.data.transfer.hmcqu.read_hmcqu` reads)::

    root/A4C.xlsx                 sheet "A4C": ECHO, SEG1, SEG2, SEG3, SEG5, SEG6, SEG7 (MI / non-MI),
                                  Reference Frame, End of Cycle (1-based, inclusive),
                                  LV Wall Ground-truth Segmentation Masks ("ü" or empty)
    root/HMC-QU/A4C/<ECHO>.avi    ECHO ids with a space, e.g. "ES0001 _4CH_1"; grey, ``height x width``
    root/hmcqu_folds.csv          stratified folds of the videos with a mask, in the shipped format
                                  (name, SEG..., start_frame, end_frame, available, Fold)

``header="two_rows"`` writes the start/end headers under a merged "One cardiac-cycle frames" cell, as
another release's sheet reads. An MI video draws one wall segment (of SEG1..SEG7 without the apical
cap) hypokinetic (``HeartParams.hypokinetic_segments``, its motion scaled by ``mi_segment_motion``) and
labels that segment MI; a normal video has none. ``mi_segments=(lo, hi)`` lets an infarct span a run of
``lo..hi`` adjacent labelled segments along the wall instead (a coronary territory; the apical cap is
drawn hypokinetic too when the run goes round the apex), each labelled MI. Everything else (EF,
anatomy, texture, rate) comes from the same distributions, so only the motion tells the label (the
global EF drops a little with the segment, as in real infarcts). The annotated cycle runs from the
first ED to the next ED. The square drawing (``size``) is resized to ``height`` and padded with black
columns to ``width`` (real videos are 422 x 636 to 768 x 1024). Video ``i`` uses ``video_rng(seed, i)``.

``coreecho synthetic --dataset=hmcqu --root=DIR [--n=24] [--seed=0] [--height=422 --width=636]``.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from coreecho_jax import seeds
from coreecho_jax.data.synthetic import heart
from coreecho_jax.data.synthetic.camus import quota_labels, write_once
from coreecho_jax.data.transfer.folds import stratified_folds
from coreecho_jax.data.transfer.hmcqu import A4C_SEGMENT_COLUMNS
from coreecho_jax.data.video.video_io import write_video
from coreecho_jax.errors import ConfigError

PathLike = str | os.PathLike

FORMAT_VERSION = 1
HEADER_STYLES = ("one_row", "two_rows")
START_HEADER, END_HEADER = "Reference Frame", "End of Cycle"
CYCLE_HEADER = "One cardiac-cycle frames"
MASK_HEADER = "LV Wall Ground-truth Segmentation Masks"
#: The check sign of the mask column (a Wingdings check mark shows as "ü" in the sheet's text).
MASK_MARK = "ü"
FOLD_FILE = "hmcqu_folds.csv"
#: The labelled segments in their order along the wall, basal septum -> apex -> basal lateral wall.
WALL_ORDER = tuple(int(s[3:]) for s in A4C_SEGMENT_COLUMNS)
APICAL_CAP = 4


@dataclasses.dataclass(frozen=True)
class HmcQuSyntheticConfig(heart.DrawingConfig):
    """What to write: the drawing's distributions plus the dataset's fields.

    Attributes:
        n_videos: recordings (rows of the sheet).
        seed: master seed.
        size: side of the drawn square (pixels).
        height, width: frame size of the AVIs (height <= width); the real ones are 422 x 636 ..
            768 x 1024.
        min_frames, max_frames: inclusive range of frames per video (>= 8).
        mi_fraction: share of MI videos (72 / 109 in the paper's subset); >= 1 of each class per
            mask group when it has >= 2 videos.
        mask_fraction: share of videos marked as having a mask (109 / 162).
        mi_segment_motion: share of normal wall motion left in the MI segment(s) (0 = akinetic).
        mi_segments: (lo, hi), the number of adjacent labelled segments an infarct spans, drawn
            uniformly in ``lo..hi`` (default (1, 1): one segment, as the issue that built this asked).
        n_folds, fold_seed: the stratified folds written to ``hmcqu_folds.csv``.
        header: ``"one_row"`` or ``"two_rows"`` (see the module doc).
    """

    n_videos: int = 24
    seed: int = 0
    fps: float = 25.0
    height: int = 422
    width: int = 636
    min_frames: int = 40
    max_frames: int = 60
    mi_fraction: float = 0.66
    mask_fraction: float = 0.67
    mi_segment_motion: float = 0.1
    mi_segments: tuple[int, int] = (1, 1)
    n_folds: int = 5
    fold_seed: int = 0
    header: str = "one_row"

    def __post_init__(self):
        super().__post_init__()
        if self.header not in HEADER_STYLES:
            raise ConfigError(
                f"HmcQuSyntheticConfig.header must be one of {HEADER_STYLES}, got {self.header!r}"
            )
        if not 0 < self.height <= self.width:
            raise ConfigError(
                f"HmcQuSyntheticConfig needs 0 < height <= width, got {self.height} x {self.width}"
            )
        if not 8 <= self.min_frames <= self.max_frames:
            raise ConfigError(
                f"HmcQuSyntheticConfig needs 8 <= min_frames <= max_frames, got {self.min_frames}, {self.max_frames}"
            )
        object.__setattr__(self, "mi_segments", tuple(int(k) for k in self.mi_segments))
        k = self.mi_segments
        if len(k) != 2 or not 1 <= k[0] <= k[1] <= len(WALL_ORDER):
            raise ConfigError(
                f"HmcQuSyntheticConfig.mi_segments must be (lo, hi) with 1 <= lo <= hi <= "
                f"{len(WALL_ORDER)}, got {self.mi_segments}"
            )
        if not (0 <= self.mi_fraction <= 1 and 0 <= self.mask_fraction <= 1):
            raise ConfigError("HmcQuSyntheticConfig.mi_fraction and mask_fraction must lie in [0, 1]")


def echo_id(index: int) -> str:
    """The ECHO id of video ``index`` (0-based): ``"ES0001 _4CH_1"`` style, with its space."""
    return f"ES{index + 1:04d} _4CH_1"


def mi_territory(rng: np.random.Generator, lo: int, hi: int) -> tuple[int, ...]:
    """A run of ``lo..hi`` (uniform) adjacent labelled segments of :data:`WALL_ORDER`, uniform start."""
    k = int(rng.integers(lo, hi + 1))
    start = int(rng.integers(0, len(WALL_ORDER) - k + 1))
    return WALL_ORDER[start : start + k]


def draw_recording(
    config: HmcQuSyntheticConfig, index: int, mi_segments: int | tuple[int, ...] | None
) -> tuple[heart.DrawnVideo, int, int]:
    """Video ``index`` (hypokinetic ``mi_segments``, one or several labelled segments, or none) and
    its cycle (start, end), 1-based inclusive. A territory holding segments 3 and 5 also draws the
    apical cap between them hypokinetic.

    The first ED lies in the first half beat (``phase0`` in [0.5, 1)) and the rate is raised when
    needed so that the next ED is in the video too. The cycle's frames come from the timing (the
    frames nearest the two ED instants), so they are the same with or without the MI segment.
    """
    rng = heart.video_rng(config.seed, index)
    T = int(rng.integers(config.min_frames, config.max_frames + 1))
    params = heart.sample_heart_params(rng, config, T)
    if 1.5 * params.period + 2 > T:
        params = dataclasses.replace(params, heart_rate_bpm=60.0 * config.fps * 1.5 / (T - 2))
    params = dataclasses.replace(
        params,
        phase0=float(rng.uniform(0.5, 1.0)),
        hypokinetic_segments=_drawn_segments(mi_segments),
        segment_motion=config.mi_segment_motion,
    )
    video = heart.draw_video(params, rng)
    t_ed = (1.0 - params.phase0) * params.period  # the first ED instant, in frames

    def nearest_ed(t: float) -> int:  # the less contracted of the two frames around instant t
        frames = [k for k in (math.floor(t), math.ceil(t)) if k < T] or [T - 1]
        return min(frames, key=lambda k: video.contraction[k])

    return video, nearest_ed(t_ed) + 1, nearest_ed(t_ed + params.period) + 1


def _drawn_segments(mi_segments: int | tuple[int, ...] | None) -> tuple[int, ...]:
    if mi_segments is None:
        return ()
    segs = (mi_segments,) if isinstance(mi_segments, int) else tuple(mi_segments)
    return segs + (APICAL_CAP,) if {3, 5} <= set(segs) else segs


def to_frame_size(frames: np.ndarray, height: int, width: int) -> np.ndarray:
    """Square ``[T, S, S]`` -> ``[T, height, width]``: resized to ``height`` (linear), black columns added."""
    if frames.shape[1] != height:
        frames = np.stack([cv2.resize(f, (height, height), interpolation=cv2.INTER_LINEAR) for f in frames])
    pad = width - height
    return np.pad(frames, ((0, 0), (0, 0), (pad // 2, pad - pad // 2)))


def _write_sheet(path: Path, rows: list[list[Any]], header: str) -> None:
    import openpyxl

    book = openpyxl.Workbook()
    sheet = book.active
    sheet.title = "A4C"
    segs = list(A4C_SEGMENT_COLUMNS)
    if header == "one_row":
        sheet.append(["ECHO", *segs, START_HEADER, END_HEADER, MASK_HEADER])
    else:
        sheet.append(["ECHO", *segs, CYCLE_HEADER, None, MASK_HEADER])
        sheet.append([None] * (1 + len(segs)) + [START_HEADER, END_HEADER, None])
        sheet.merge_cells(start_row=1, start_column=2 + len(segs), end_row=1, end_column=3 + len(segs))
    for row in rows:
        sheet.append(row)
    book.save(path)


def _write_files(cfg: HmcQuSyntheticConfig, root: Path) -> None:
    n = cfg.n_videos
    order = seeds.generator(cfg.seed, seeds.SYNTHETIC_HMCQU)
    has_mask = np.array(quota_labels(n, (1 - cfg.mask_fraction, cfg.mask_fraction), order), bool)
    mi = np.zeros(n, bool)
    for group in (has_mask, ~has_mask):
        idx = np.flatnonzero(group)
        mi[idx] = np.array(quota_labels(len(idx), (1 - cfg.mi_fraction, cfg.mi_fraction), order), bool)
    video_dir = root / "HMC-QU" / "A4C"
    rows, fold_rows = [], []
    for i in range(n):
        if not mi[i]:
            segments: tuple[int, ...] = ()
        elif cfg.mi_segments == (1, 1):  # the original one-segment draw (same data as before)
            segments = (int(order.choice(WALL_ORDER)),)
        else:
            segments = mi_territory(order, *cfg.mi_segments)
        video, start, end = draw_recording(cfg, i, segments or None)
        write_video(
            video_dir / f"{echo_id(i)}.avi", to_frame_size(video.frames, cfg.height, cfg.width), cfg.fps
        )
        labels = ["MI" if s in segments else "non-MI" for s in WALL_ORDER]
        rows.append([echo_id(i), *labels, start, end, MASK_MARK if has_mask[i] else None])
        if has_mask[i]:
            fold_rows.append([echo_id(i), *labels, start, end, 1])
    _write_sheet(root / "A4C.xlsx", rows, cfg.header)
    names = [r[0] for r in fold_rows]
    folds = stratified_folds(names, [int("MI" in r[1:7]) for r in fold_rows], cfg.n_folds, cfg.fold_seed)
    fold_of = {name: f.index + 1 for f in folds for name in f.test}
    with open(root / FOLD_FILE, "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["name", *A4C_SEGMENT_COLUMNS, "start_frame", "end_frame", "available", "Fold"])
        w.writerows([*r, fold_of[r[0]]] for r in fold_rows)


def write_hmcqu_dataset(
    root: PathLike, config: HmcQuSyntheticConfig | Mapping[str, Any] | None = None, **overrides: Any
) -> Path:
    """Writes a synthetic HMC-QU download under ``root`` (layout in the module doc) with
    :func:`coreecho_jax.data.synthetic.camus.write_once`; returns ``root``."""
    cfg = HmcQuSyntheticConfig.resolve(config, overrides)
    return write_once(root, "hmcqu", FORMAT_VERSION, cfg, functools.partial(_write_files, cfg))
