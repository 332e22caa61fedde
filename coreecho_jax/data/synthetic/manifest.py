"""A synthetic cohort of your own: A4C videos and a manifest CSV, what ``configs/custom_demo.py`` reads.

Layout (what :func:`coreecho_jax.data.transfer.manifest.read_manifest` reads)::

    root/manifest.csv          regression:     path,label,start_frame,end_frame
                               classification: path,label,fold,start_frame,end_frame
    root/videos/v0001.avi ...  grey, size x size, lossless FFV1

Regression (``kind="regression"``): videos drawn as the synthetic EchoNet-Dynamic ones
(:func:`~coreecho_jax.data.synthetic.echonet.draw_echonet_video`, ``min_frames..max_frames`` frames),
labelled with their EF (%, 2 decimals). A share ``cycle_share`` of the rows gives the first beat's
ED -> ES frames (0-based, both ends included; a half cycle, as CAMUS's), the others none: the whole
loop. No fold column: the reader's seeded stratified folds.

Classification (``kind="classification"``): recordings drawn as the synthetic HMC-QU ones
(:func:`~coreecho_jax.data.synthetic.hmcqu.draw_recording`): a share ``positive_fraction`` has an
akinetic territory of ``mi_segments`` adjacent wall segments (label 1), the others none (label 0); every
row gives its ED -> ED cycle. A ``fold`` column holds seeded stratified folds (``n_folds``), so the
manifest's own folds are used.

Video ``i`` is drawn from ``video_rng(seed, i)``; the labels' and rows' draws from ``(seed,
SYNTHETIC_MANIFEST)``. Written once (:func:`~coreecho_jax.data.synthetic.camus.write_once`): the same
config again is a no-op, another refuses to overwrite.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from coreecho_jax import seeds
from coreecho_jax.data.synthetic import heart
from coreecho_jax.data.synthetic.camus import quota_labels, write_once
from coreecho_jax.data.synthetic.echonet import SyntheticConfig, draw_echonet_video
from coreecho_jax.data.synthetic.hmcqu import HmcQuSyntheticConfig, draw_recording, mi_territory
from coreecho_jax.data.transfer.folds import stratified_folds
from coreecho_jax.data.transfer.manifest import KINDS, MANIFEST_FILE
from coreecho_jax.data.video.video_io import write_video
from coreecho_jax.errors import ConfigError

PathLike = str | os.PathLike

FORMAT_VERSION = 1
VIDEO_DIR = "videos"


@dataclasses.dataclass(frozen=True)
class ManifestSyntheticConfig(heart.DrawingConfig):
    """What to write: the drawing's distributions plus the cohort's fields.

    Attributes:
        kind: ``"regression"`` (EF labels) or ``"classification"`` (1 = an akinetic territory, 0 = none).
        n_videos: rows of the manifest.
        seed: master seed.
        min_frames, max_frames: inclusive range of frames per video (>= 8).
        cycle_share: regression: share of rows that give an ED -> ES cycle (the rest: the whole loop).
        positive_fraction: classification: share of label-1 videos (>= 2 of each class when n >= 4).
        mi_segments: classification: (lo, hi) adjacent segments an infarct spans, drawn in lo..hi.
        mi_segment_motion: classification: share of normal wall motion left in them (0: akinetic).
        n_folds: classification: the folds written to the ``fold`` column.
    """

    kind: str = "regression"
    n_videos: int = 24
    seed: int = 0
    min_frames: int = 40
    max_frames: int = 60
    cycle_share: float = 0.5
    positive_fraction: float = 0.5
    mi_segments: tuple[int, int] = (1, 3)
    mi_segment_motion: float = 0.0
    n_folds: int = 5

    def __post_init__(self):
        super().__post_init__()
        object.__setattr__(self, "mi_segments", tuple(int(k) for k in self.mi_segments))
        if self.kind not in KINDS:
            raise ConfigError(f"ManifestSyntheticConfig.kind must be one of {KINDS}, got {self.kind!r}")
        if not 8 <= self.min_frames <= self.max_frames:
            raise ConfigError(
                f"ManifestSyntheticConfig needs 8 <= min_frames <= max_frames, got {self.min_frames}, "
                f"{self.max_frames}"
            )
        if self.n_videos < max(4, self.n_folds):
            raise ConfigError(
                f"ManifestSyntheticConfig.n_videos must be >= 4 and >= n_folds = {self.n_folds}, got {self.n_videos}"
            )
        if not (0 <= self.cycle_share <= 1 and 0 < self.positive_fraction < 1):
            raise ConfigError(
                "ManifestSyntheticConfig: cycle_share must lie in [0, 1], positive_fraction in (0, 1)"
            )


def _regression_rows(cfg: ManifestSyntheticConfig, root: Path) -> tuple[list[str], list[list[Any]]]:
    draws = seeds.generator(cfg.seed, seeds.SYNTHETIC_MANIFEST)
    with_cycle = quota_labels(cfg.n_videos, (1 - cfg.cycle_share, cfg.cycle_share), draws)
    echonet = SyntheticConfig(
        **{f.name: getattr(cfg, f.name) for f in dataclasses.fields(heart.DrawingConfig)},
        min_frames=cfg.min_frames,
        max_frames=cfg.max_frames,
    )
    rows = []
    for i in range(cfg.n_videos):
        video = draw_echonet_video(heart.video_rng(cfg.seed, i), echonet)
        path = f"{VIDEO_DIR}/v{i + 1:04d}.avi"
        write_video(root / path, video.frames, cfg.fps)
        cycle = [video.ed_frame, video.es_frame] if with_cycle[i] else ["", ""]
        rows.append([path, round(video.ef, 2), *cycle])
    return ["path", "label", "start_frame", "end_frame"], rows


def _classification_rows(cfg: ManifestSyntheticConfig, root: Path) -> tuple[list[str], list[list[Any]]]:
    draws = seeds.generator(cfg.seed, seeds.SYNTHETIC_MANIFEST)
    positive = quota_labels(cfg.n_videos, (1 - cfg.positive_fraction, cfg.positive_fraction), draws)
    hmcqu = HmcQuSyntheticConfig(
        **{f.name: getattr(cfg, f.name) for f in dataclasses.fields(heart.DrawingConfig)},
        n_videos=cfg.n_videos,
        seed=cfg.seed,
        height=cfg.size,
        width=cfg.size,
        min_frames=cfg.min_frames,
        max_frames=cfg.max_frames,
        mi_segment_motion=cfg.mi_segment_motion,
        mi_segments=cfg.mi_segments,
    )
    paths = [f"{VIDEO_DIR}/v{i + 1:04d}.avi" for i in range(cfg.n_videos)]
    folds = stratified_folds(paths, positive, cfg.n_folds, cfg.seed)
    fold_of = {p: f.index for f in folds for p in f.test}
    rows = []
    for i, path in enumerate(paths):
        segments = mi_territory(draws, *cfg.mi_segments) if positive[i] else None
        video, start, end = draw_recording(hmcqu, i, segments)  # 1-based, both ends included
        write_video(root / path, video.frames, cfg.fps)
        rows.append([path, positive[i], fold_of[path], start - 1, end - 1])
    return ["path", "label", "fold", "start_frame", "end_frame"], rows


def _write_files(cfg: ManifestSyntheticConfig, root: Path) -> None:
    (root / VIDEO_DIR).mkdir(parents=True, exist_ok=True)
    write_rows = _regression_rows if cfg.kind == "regression" else _classification_rows
    header, rows = write_rows(cfg, root)
    with open(root / MANIFEST_FILE, "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(header)
        w.writerows(rows)


def write_manifest_dataset(
    root: PathLike, config: ManifestSyntheticConfig | Mapping[str, Any] | None = None, **overrides: Any
) -> Path:
    """Writes a synthetic cohort (videos and ``manifest.csv``, module doc) under ``root``; returns ``root``."""
    cfg = ManifestSyntheticConfig.resolve(config, overrides)
    return write_once(root, f"manifest-{cfg.kind}", FORMAT_VERSION, cfg, functools.partial(_write_files, cfg))
