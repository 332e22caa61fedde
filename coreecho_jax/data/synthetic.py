"""Synthetic apical-four-chamber echo videos written in the EchoNet-Dynamic on-disk layout.

The demo and the tests read these files through the same readers and builders as real data:

```
root/
  FileList.csv         FileName,EF,ESV,EDV,FrameHeight,FrameWidth,FPS,NumberOfFrames,Split
  VolumeTracings.csv   FileName,X1,Y1,X2,Y2,Frame   (optional; FileName with ".avi")
  Videos/<FileName>.avi
  synthetic.json       the generating config (marks the folder as ours, makes writing idempotent)
```

Each video shows an ultrasound sector on black with a speckled heart: a dark left-ventricular (LV)
cavity inside brighter myocardium, a right ventricle and two atria. The LV is an ellipse in the image
plane (an ellipsoid of revolution in 3-D) whose semi-axes ``a`` (long) and ``b`` (short) follow a
cardiac cycle; the tissue around it moves with a smooth deformation, so the speckle moves with the
tissue. Volumes are the ellipsoid volume ``4/3 pi a b^2`` (equal to the area-length volume of an
ellipse) with a fixed pixel size, in mL. ``EDV`` and ``ESV`` are the volumes of the drawn cavity at the
traced end-diastolic (ED) and end-systolic (ES) frames, and ``EF = 100 (EDV - ESV) / EDV`` exactly.

EF cannot be read off one frame: EDV is drawn independently of EF, and the phase of the first frame,
the gain, the position, rotation and size of the heart are random; only the motion tells EF.

Every video is rendered from its own generator ``video_rng(seed, index)``, so any subset can be
reproduced and videos can be rendered in parallel. Units: lengths in pixels unless named ``*_cm``,
volumes in mL, EF in percent, frames uint8 ``[T, H, W]``.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from coreecho_jax.data.video_io import write_video

PathLike = str | os.PathLike

#: Bump when the renderer changes in a way that changes the written files.
FORMAT_VERSION = 1

FILELIST_COLUMNS = (
    "FileName",
    "EF",
    "ESV",
    "EDV",
    "FrameHeight",
    "FrameWidth",
    "FPS",
    "NumberOfFrames",
    "Split",
)
TRACINGS_COLUMNS = ("FileName", "X1", "Y1", "X2", "Y2", "Frame")
SPLITS = ("TRAIN", "VAL", "TEST")
#: Chords per traced frame (after the long-axis row), as in EchoNet-Dynamic.
NUM_CHORDS = 20
_META_NAME = "synthetic.json"
#: The LV contraction state is quantised to this many levels, so a video needs at most this many
#: distinct deformation maps (frames at the same level share one; labels use the quantised state).
CONTRACTION_LEVELS = 64
#: Reference image size: geometry below is given in pixels of a 112 x 112 frame and scaled.
_REF_SIZE = 112


@dataclasses.dataclass(frozen=True)
class SyntheticConfig:
    """What to generate.

    Attributes:
        n_videos: number of videos.
        seed: master seed; video ``i`` uses ``video_rng(seed, i)``.
        size: frame height = width in pixels.
        fps: frames per second written to the AVI and to ``FileList.csv``.
        min_frames, max_frames: inclusive range of frames per video.
        short_fraction: share of videos with fewer than ``short_frames`` frames (drawn uniformly
            from ``[min_frames, short_frames)``; the others from ``[short_frames, max_frames]``).
            Ignored (plain uniform) unless ``min_frames < short_frames <= max_frames``.
        short_frames: the threshold above; 144 = 36 frames x stride 4, the clip length that
            forces padding in the official pipeline.
        with_tracings: also write ``VolumeTracings.csv``.
        split_fractions: (TRAIN, VAL, TEST) shares; counts are rounded, each split gets >= 1
            video when ``n_videos >= 3``.
        heart_rate_bpm: (low, high) uniform heart rate in beats per minute.
        cm_per_px: pixel size in cm at ``size = 112`` (scaled by ``112 / size`` otherwise). 0.16
            keeps a 250 mL LV (about 75 px long) and the atria inside a 112-pixel frame; at 0.1 a
            100 mL LV alone would be 82 px long.
        edv_median_ml, edv_log_sigma, edv_range_ml: log-normal EDV (independent of EF), clipped.
        ef_normal_fraction, ef_normal_mean, ef_normal_std, ef_low_range, ef_range: the target EF is
            ``N(mean, std)`` with probability ``ef_normal_fraction``, else ``U(ef_low_range)``,
            clipped to ``ef_range``. The label is the EF of the drawn frames (within ~0.5 of it).
    """

    n_videos: int = 512
    seed: int = 0
    size: int = 112
    fps: float = 50.0
    min_frames: int = 100
    max_frames: int = 220
    short_fraction: float = 0.25
    short_frames: int = 144
    with_tracings: bool = True
    split_fractions: tuple[float, float, float] = (0.75, 0.125, 0.125)
    heart_rate_bpm: tuple[float, float] = (45.0, 130.0)
    cm_per_px: float = 0.16
    edv_median_ml: float = 95.0
    edv_log_sigma: float = 0.4
    edv_range_ml: tuple[float, float] = (40.0, 250.0)
    ef_normal_fraction: float = 0.8
    ef_normal_mean: float = 60.0
    ef_normal_std: float = 6.0
    ef_low_range: tuple[float, float] = (10.0, 50.0)
    ef_range: tuple[float, float] = (10.0, 85.0)

    def __post_init__(self):
        # Accept lists (e.g. from JSON) for the tuple fields, so configs compare equal.
        for field in ("split_fractions", "heart_rate_bpm", "edv_range_ml", "ef_low_range", "ef_range"):
            object.__setattr__(self, field, tuple(float(x) for x in getattr(self, field)))
        if self.n_videos < 1:
            raise ValueError(f"SyntheticConfig.n_videos must be >= 1, got {self.n_videos}")
        if self.size < 32:
            raise ValueError(f"SyntheticConfig.size must be >= 32 pixels, got {self.size}")
        if self.fps <= 0:
            raise ValueError(f"SyntheticConfig.fps must be > 0, got {self.fps}")
        if not 1 <= self.min_frames <= self.max_frames:
            raise ValueError(
                "SyntheticConfig needs 1 <= min_frames <= max_frames, got "
                f"min_frames={self.min_frames}, max_frames={self.max_frames}"
            )
        if len(self.split_fractions) != 3 or min(self.split_fractions) < 0 or sum(self.split_fractions) <= 0:
            raise ValueError(
                "SyntheticConfig.split_fractions must be three non-negative shares "
                f"(TRAIN, VAL, TEST), got {self.split_fractions}"
            )
        lo, hi = self.heart_rate_bpm
        if not 0 < lo <= hi:
            raise ValueError(
                f"SyntheticConfig.heart_rate_bpm must be 0 < low <= high, got {self.heart_rate_bpm}"
            )
        if not 0 < self.ef_range[0] <= self.ef_range[1] < 100:
            raise ValueError(f"SyntheticConfig.ef_range must lie in (0, 100), got {self.ef_range}")

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> SyntheticConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"SyntheticConfig: unknown keys {sorted(unknown)}; known: {sorted(names)}")
        return cls(**d)


# ----------------------------------------------------------------------------------------------
# Randomness and names
# ----------------------------------------------------------------------------------------------


def video_rng(seed: int, index: int) -> np.random.Generator:
    """The generator of video ``index`` in a dataset with master ``seed`` (independent streams)."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), int(index)]))


def video_file_name(seed: int, index: int) -> str:
    """EchoNet-style name ``0X`` + 16 upper-case hex digits, a hash of (seed, index); no ``.avi``."""
    digest = hashlib.blake2b(f"coreecho-synthetic:{int(seed)}:{int(index)}".encode(), digest_size=8)
    return "0X" + digest.hexdigest().upper()


def split_assignment(
    n_videos: int, seed: int, fractions: Sequence[float] = (0.75, 0.125, 0.125)
) -> list[str]:
    """Deterministic split per video index: shuffled, counts rounded from ``fractions``.

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
    labels = np.array(["TRAIN"] * n_train + ["VAL"] * n_val + ["TEST"] * n_test)
    perm = np.random.default_rng(np.random.SeedSequence([int(seed), 0x5B11])).permutation(n_videos)
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


def sample_ef(rng: np.random.Generator, config: SyntheticConfig) -> float:
    """Target EF in percent: a mixture of normal hearts and reduced EF (EchoNet-like spread)."""
    if rng.random() < config.ef_normal_fraction:
        ef = rng.normal(config.ef_normal_mean, config.ef_normal_std)
    else:
        ef = rng.uniform(*config.ef_low_range)
    return float(np.clip(ef, *config.ef_range))


# ----------------------------------------------------------------------------------------------
# Cardiac cycle
# ----------------------------------------------------------------------------------------------


def _smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


def contraction(phase: np.ndarray, systole_fraction: float) -> np.ndarray:
    """Contraction state in [0, 1] over the cycle phase in [0, 1): 0 at ED (phase 0), 1 at ES.

    Systole is a half cosine over ``[0, systole_fraction)``; diastole is rapid filling (80 % over
    its first 40 %), diastasis, then the atrial kick (last 20 %).
    """
    phase = np.mod(phase, 1.0)
    sys = 0.5 * (1.0 - np.cos(np.pi * np.clip(phase / systole_fraction, 0.0, 1.0)))
    psi = (phase - systole_fraction) / (1.0 - systole_fraction)
    filled = 0.8 * _smoothstep(psi / 0.4) + 0.2 * _smoothstep((psi - 0.8) / 0.2)
    return np.where(phase < systole_fraction, sys, 1.0 - filled)


# ----------------------------------------------------------------------------------------------
# Rendering
# ----------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Chamber:
    """An elliptic cavity in heart coordinates (u lateral, v along the LV axis, pixels).

    ``apex`` is the fixed point of its contraction; the long axis points along ``angle`` (radians,
    0 = +v); ``a``, ``b`` are the long and short semi-axes at ED.
    """

    apex_u: float
    apex_v: float
    angle: float
    a: float
    b: float


def _local(u, v, ch: _Chamber):
    """Coordinates along (long, short) axes relative to the chamber apex."""
    c, s = math.cos(ch.angle), math.sin(ch.angle)
    du, dv = u - ch.apex_u, v - ch.apex_v
    return du * s + dv * c, du * c - dv * s  # long, short


def _from_local(x_long, y_short, ch: _Chamber):
    c, s = math.cos(ch.angle), math.sin(ch.angle)
    return ch.apex_u + x_long * s + y_short * c, ch.apex_v + x_long * c - y_short * s


def _ellipse_distance(x_long, y_short, a, b):
    """Approximate signed distance (pixels) to the ellipse with apex at the origin (first order)."""
    xl = (x_long - a) / a
    ys = y_short / b
    rho = np.sqrt(xl * xl + ys * ys) + 1e-6
    grad = np.sqrt((xl / a) ** 2 + (ys / b) ** 2) / rho + 1e-6
    return (rho - 1.0) / grad


def _inverse_warp(x_long, y_short, a, b, a_t, b_t, reach):
    """Current -> ED (material) local coordinates for one chamber at semi-axes (a_t, b_t).

    Inside the current cavity this is the exact scaling about the apex that maps the current
    ellipse onto the ED ellipse; outside, the scaling fades to identity with
    ``exp(-(rho - 1) / reach)`` (``rho``: normalised elliptic radius), which is monotone along rays.
    """
    xl = (x_long - a_t) / a_t
    ys = y_short / b_t
    rho = np.sqrt(xl * xl + ys * ys)
    w = np.exp(-np.maximum(rho - 1.0, 0.0) / reach)
    return x_long * (1.0 + (a / a_t - 1.0) * w), y_short * (1.0 + (b / b_t - 1.0) * w), rho


def _speckle(rng: np.random.Generator, shape: tuple[int, ...], sigma_lat: float, sigma_ax: float):
    """Rayleigh speckle with mean 1: |blurred complex Gaussian| ; blur per 2-D slice."""
    z = rng.standard_normal((2, *shape)).astype(np.float32)
    flat = z.reshape(-1, *shape[-2:])
    for k in range(flat.shape[0]):
        cv2.GaussianBlur(
            flat[k], (0, 0), sigmaX=sigma_lat, sigmaY=sigma_ax, dst=flat[k], borderType=cv2.BORDER_REFLECT
        )
    mag = np.sqrt(z[0] ** 2 + z[1] ** 2)
    return mag / mag.mean(axis=(-2, -1), keepdims=True)


def _smooth_noise(rng: np.random.Generator, size: int, scale: float, amount: float):
    """Low-frequency multiplicative field ``1 + amount * N(0, 1)``-ish, [size, size] float32."""
    n = rng.standard_normal((size, size)).astype(np.float32)
    n = cv2.GaussianBlur(n, (0, 0), sigmaX=scale, borderType=cv2.BORDER_REFLECT)
    n /= n.std() + 1e-6
    return 1.0 + amount * n


@dataclasses.dataclass(frozen=True)
class _Beat:
    """The LV cycle of one video: per-frame LV semi-axes (pixels) and the traced frames."""

    a_ed: float  # long semi-axis at ED (contraction 0)
    b_ed: float  # short semi-axis at ED
    a_es_ratio: float  # a at contraction 1 / a_ed
    b_es_ratio: float  # b at contraction 1 / b_ed
    contraction: np.ndarray  # [T] in [0, 1], 0 at ED, quantised to CONTRACTION_LEVELS values
    a_t: np.ndarray  # [T] long semi-axis
    b_t: np.ndarray  # [T] short semi-axis
    volumes: np.ndarray  # [T] mL
    ed_frame: int
    es_frame: int
    heart_rate: float  # bpm
    target_ef: float


def _sample_beat(rng: np.random.Generator, cfg: SyntheticConfig, num_frames: int, cm_per_px: float) -> _Beat:
    """EF and EDV (independent draws) -> LV axes over time, ED/ES frames."""
    T = num_frames
    fps = float(cfg.fps)
    target_ef = sample_ef(rng, cfg)
    edv = float(
        np.clip(cfg.edv_median_ml * math.exp(cfg.edv_log_sigma * rng.standard_normal()), *cfg.edv_range_ml)
    )
    aspect = rng.uniform(1.6, 2.1)  # a / b at ED
    b_cm = (3.0 * edv / (4.0 * math.pi * aspect)) ** (1.0 / 3.0)
    a_px, b_px = aspect * b_cm / cm_per_px, b_cm / cm_per_px
    # ESV / EDV = (a_ES / a_ED) (b_ES / b_ED)^2, split between long-axis and radial shortening.
    ratio = 1.0 - target_ef / 100.0
    long_share = rng.uniform(0.2, 0.35)
    ra, rb = ratio**long_share, ratio ** ((1.0 - long_share) / 2.0)

    hr = rng.uniform(*cfg.heart_rate_bpm)
    systole = float(np.clip(0.28 * hr / 60.0 + 0.05, 0.3, 0.5))
    if 60.0 / hr * fps * (1.0 + systole) + 2 > T:  # too short a video for this rate: speed it up
        if T < 8:
            raise ValueError(f"render_video needs at least 8 frames, got num_frames={T}")
        hr = 60.0 * fps * 1.5 / (T - 2)
        systole = float(np.clip(0.28 * hr / 60.0 + 0.05, 0.3, 0.5))
    period = 60.0 / hr * fps  # frames per beat
    phase0 = rng.random()
    c_t = contraction(phase0 + np.arange(T) / period, systole)
    c_t = np.round(c_t * (CONTRACTION_LEVELS - 1)) / (CONTRACTION_LEVELS - 1)
    a_t = a_px * (1.0 - c_t * (1.0 - ra))
    b_t = b_px * (1.0 - c_t * (1.0 - rb))
    volumes = 4.0 / 3.0 * math.pi * a_t * b_t * b_t * cm_per_px**3
    ed, es = _traced_frames(volumes, phase0, period, systole)
    return _Beat(a_px, b_px, ra, rb, c_t, a_t, b_t, volumes, ed, es, float(hr), target_ef)


def _traced_frames(volumes: np.ndarray, phase0: float, period: float, systole: float) -> tuple[int, int]:
    """The first beat whose ED and ES both lie in the video: (ED frame, ES frame), 0-based.

    ED is the larger-volume frame of the two around the ED instant, ES the smaller of the two
    around the ES instant, so the traced frames are the drawn extremes of that beat.
    """
    T = len(volumes)
    t_ed = -phase0 * period
    while t_ed < T:
        t_es = t_ed + systole * period
        ed_c = [k for k in (math.floor(t_ed), math.ceil(t_ed)) if 0 <= k < T]
        es_c = [k for k in (math.floor(t_es), math.ceil(t_es)) if 0 <= k < T]
        if ed_c and es_c:
            return (max(ed_c, key=lambda k: volumes[k]), min(es_c, key=lambda k: volumes[k]))
        t_ed += period
    raise ValueError(f"video of {T} frames holds no complete beat (period {period:.1f} frames)")


@dataclasses.dataclass(frozen=True)
class _Anatomy:
    """Chambers in heart coordinates and the heart's placement in the image."""

    lv: _Chamber
    rv: _Chamber
    la: _Chamber
    ra: _Chamber
    wall: float  # myocardial thickness, pixels
    apex_xy: tuple[float, float]  # LV apex in image pixels (x = column, y = row)
    tilt: float  # radians; +v points along (sin tilt, cos tilt) in (x, y)

    def to_image(self, u, v):
        """Heart coordinates -> image (x, y)."""
        c, s = math.cos(self.tilt), math.sin(self.tilt)
        return self.apex_xy[0] + u * c + v * s, self.apex_xy[1] - u * s + v * c

    def from_image(self, x, y):
        c, s = math.cos(self.tilt), math.sin(self.tilt)
        dx, dy = x - self.apex_xy[0], y - self.apex_xy[1]
        return dx * c - dy * s, dx * s + dy * c


def _sample_anatomy(rng: np.random.Generator, a_px: float, b_px: float, size: int) -> _Anatomy:
    """An A4C layout around an LV of semi-axes (a_px, b_px): RV left, atria below (pixels)."""
    scale = size / _REF_SIZE
    wall = rng.uniform(5.0, 7.0) * scale
    lv = _Chamber(0.0, 0.0, 0.0, a_px, b_px)
    beta = math.radians(rng.uniform(5.0, 20.0))  # RV base flares away from the septum
    a_rv, b_rv = a_px * rng.uniform(0.7, 0.85), b_px * rng.uniform(0.6, 0.85)
    rv_cv = a_px * rng.uniform(0.15, 0.3) + a_rv * math.cos(beta)
    rv_cu = -(b_px + wall * rng.uniform(0.9, 1.2) + b_rv)
    rv = _Chamber(rv_cu + a_rv * math.sin(beta), rv_cv - a_rv * math.cos(beta), -beta, a_rv, b_rv)
    gap = rng.uniform(2.0, 4.0) * scale  # atrioventricular plane
    a_la, b_la = rng.uniform(11.0, 16.0) * scale, rng.uniform(0.75, 1.0) * b_px
    la = _Chamber(
        rng.uniform(-0.1, 0.15) * b_px, 2 * a_px + gap, math.radians(rng.uniform(-10, 10)), a_la, b_la
    )
    a_ra, b_ra = rng.uniform(10.0, 15.0) * scale, rng.uniform(0.7, 0.95) * b_rv + 2 * scale
    ra = _Chamber(
        la.apex_u - (b_la + wall * rng.uniform(0.8, 1.1) + b_ra),
        2 * a_px * rng.uniform(0.93, 1.0) + gap,
        math.radians(rng.uniform(-5, 15)),
        a_ra,
        b_ra,
    )
    tilt = math.radians(rng.uniform(-6.0, 16.0))
    apex = (size / 2 + rng.uniform(2.0, 12.0) * scale, rng.uniform(10.0, 20.0) * scale)
    return _Anatomy(lv, rv, la, ra, wall, apex, tilt)


def _material(
    rng: np.random.Generator, anat: _Anatomy, u: np.ndarray, v: np.ndarray, size: int
) -> np.ndarray:
    """Echogenicity x speckle of the heart at ED on the image grid, float32 [H, W]."""
    scale = size / _REF_SIZE
    d_min = np.full(u.shape, np.inf, dtype=np.float32)
    for ch in (anat.lv, anat.rv, anat.la, anat.ra):
        xl, ys = _local(u, v, ch)
        d_min = np.minimum(d_min, _ellipse_distance(xl, ys, ch.a, ch.b))
    blood, myo = rng.uniform(0.015, 0.045), rng.uniform(0.45, 0.7)
    peri, back = rng.uniform(0.8, 1.0), rng.uniform(0.15, 0.3)
    peri_w = rng.uniform(1.5, 3.0) * scale
    wall = anat.wall
    tissue = (
        blood
        + (myo - blood) * _smoothstep(d_min + 0.5)
        + (peri - myo) * _smoothstep(d_min - wall + 0.5)
        + (back - peri) * _smoothstep((d_min - wall - peri_w) / (2.0 * scale))
    )
    tissue *= _smooth_noise(rng, size, 4.0 * scale, 0.25)
    tissue = np.maximum(tissue, 0.0).astype(np.float32)
    return tissue * _speckle(rng, (size, size), 1.1 * scale, 0.6 * scale)


def _warp_maps(
    rng: np.random.Generator, anat: _Anatomy, beat: _Beat, levels: np.ndarray, u: np.ndarray, v: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Inverse maps (current pixel -> ED material pixel) for cv2.remap, float32 [L, H, W].

    One map per contraction level in ``levels`` ([L], 0 = ED, 1 = ES). The LV map is exact inside
    the current cavity (so the drawn cavity is the labelled ellipse); the RV contracts in phase by
    a share of the LV's fractional area change, masked out of the LV cavity.
    """
    lv, rv = anat.lv, anat.rv
    c = levels.astype(np.float32)[:, None, None]
    at = lv.a * (1.0 - c * (1.0 - beat.a_es_ratio))
    bt = lv.b * (1.0 - c * (1.0 - beat.b_es_ratio))
    xl, ys = _local(u, v, lv)
    xl_m, ys_m, rho_lv = _inverse_warp(xl[None], ys[None], lv.a, lv.b, at, bt, reach=0.6)
    u_m, v_m = _from_local(xl_m, ys_m, lv)
    lv_fac = 1.0 - beat.a_es_ratio * beat.b_es_ratio  # fractional area change
    rv_ratio = math.sqrt(1.0 - lv_fac * rng.uniform(0.6, 0.9))
    a_rv_t = rv.a * (1.0 - c * (1.0 - rv_ratio))
    b_rv_t = rv.b * (1.0 - c * (1.0 - rv_ratio))
    xr, yr = _local(u_m, v_m, rv)
    xr_m, yr_m, _ = _inverse_warp(xr, yr, rv.a, rv.b, a_rv_t, b_rv_t, reach=0.5)
    u_r, v_r = _from_local(xr_m, yr_m, rv)
    keep = np.clip((rho_lv - 1.0) * 4.0, 0.0, 1.0)  # 0 inside the current LV cavity
    u_m += (u_r - u_m) * keep
    v_m += (v_r - v_m) * keep
    map_x, map_y = anat.to_image(u_m, v_m)
    return map_x.astype(np.float32), map_y.astype(np.float32)


def _scan_shading(rng: np.random.Generator, size: int) -> np.ndarray:
    """Sector mask x depth attenuation x lateral fall-off x gain, float32 [H, W] (0 outside the fan)."""
    scale = size / _REF_SIZE
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    sx = size / 2 + rng.uniform(-3.0, 3.0) * scale
    sy = -rng.uniform(0.0, 6.0) * scale
    half_angle = math.radians(rng.uniform(36.0, 45.0))
    depth = rng.uniform(1.0, 1.15) * size
    r = np.hypot(xx - sx, yy - sy)
    theta = np.arctan2(xx - sx, yy - sy)
    edge = np.minimum(half_angle - np.abs(theta), (depth - r) / size) * size / 1.5
    sector = np.clip(edge, 0.0, 1.0) * (r > 3.0 * scale)
    mu = rng.uniform(0.2, 0.7)  # residual attenuation after time-gain compensation
    lateral = 1.0 - 0.35 * (np.abs(theta) / half_angle) ** 4
    gain = rng.uniform(0.6, 1.4)
    return (gain * np.exp(-mu * r / size) * lateral * sector).astype(np.float32)


def _chords(anat: _Anatomy, a: float, b: float) -> np.ndarray:
    """EchoNet-style tracing of an LV with semi-axes (a, b): float64 [1 + NUM_CHORDS, 4].

    Row 0 is the long axis (X1, Y1) = apex, (X2, Y2) = mid mitral annulus; rows 1.. are chords
    perpendicular to it at the centres of NUM_CHORDS equal slices, from apex to base, (X1, Y1)
    on the septal side. Coordinates are pixels (x = column, y = row).
    """
    s = (np.arange(NUM_CHORDS) + 0.5) * (2.0 * a / NUM_CHORDS)  # distance from the apex
    half = b * np.sqrt(np.clip(1.0 - ((s - a) / a) ** 2, 0.0, None))
    x_long = np.concatenate([[0.0], s])
    x_long2 = np.concatenate([[2.0 * a], s])
    y1 = np.concatenate([[0.0], -half])
    y2 = np.concatenate([[0.0], half])
    x1, yy1 = anat.to_image(*_from_local(x_long, y1, anat.lv))
    x2, yy2 = anat.to_image(*_from_local(x_long2, y2, anat.lv))
    return np.stack([x1, yy1, x2, yy2], axis=1).astype(np.float64)


def render_video(
    rng: np.random.Generator, config: SyntheticConfig | None = None, *, num_frames: int | None = None
) -> tuple[np.ndarray, dict[str, Any]]:
    """Draws one synthetic A4C echo video and its labels.

    Args:
        rng: the video's generator (``video_rng(seed, index)`` in a dataset).
        config: size, fps, frame-count, heart-rate, volume and EF distributions
            (``n_videos``, ``seed`` and the split fields are not used here).
        num_frames: overrides the sampled number of frames (>= 8).

    Returns:
        frames: uint8 ``[T, H, W]`` (H = W = ``config.size``), 0 outside the sector.
        labels: ``ef`` (%), ``edv``/``esv`` (mL), ``ed_frame``/``es_frame`` (0-based),
        ``num_frames``, ``heart_rate`` (bpm), ``target_ef`` (% before frame sampling),
        ``volumes`` (mL per frame, ``[T]``) and ``tracings``: ``{frame: float [1 + NUM_CHORDS, 4]}``
        for the ES then the ED frame, rows (X1, Y1, X2, Y2) in pixels (see ``_chords``).
    """
    cfg = config or SyntheticConfig()
    size = cfg.size
    cm_per_px = cfg.cm_per_px * _REF_SIZE / size
    T = int(num_frames) if num_frames is not None else sample_num_frames(rng, cfg)
    beat = _sample_beat(rng, cfg, T, cm_per_px)
    anat = _sample_anatomy(rng, beat.a_ed, beat.b_ed, size)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    u, v = anat.from_image(xx, yy)
    material = _material(rng, anat, u, v, size)
    levels, level_of_frame = np.unique(beat.contraction, return_inverse=True)
    map_x, map_y = _warp_maps(rng, anat, beat, levels, u, v)
    shading = _scan_shading(rng, size)
    scale = size / _REF_SIZE
    n_bank = 5  # speckle decorrelation between frames, cycled
    mix = rng.uniform(0.25, 0.45)
    bank = (1.0 - mix) + mix * _speckle(rng, (n_bank, size, size), 1.1 * scale, 0.6 * scale)
    bank *= shading

    frames = np.empty((T, size, size), dtype=np.uint8)
    for k in range(T):
        lvl = level_of_frame[k]
        img = cv2.remap(material, map_x[lvl], map_y[lvl], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        img *= bank[k % n_bank]
        np.power(img, 0.8, out=img)  # mild log-like compression
        img *= 255.0
        np.clip(img, 0.0, 255.0, out=img)
        frames[k] = img

    ed, es = beat.ed_frame, beat.es_frame
    edv, esv = float(beat.volumes[ed]), float(beat.volumes[es])
    labels = {
        "ef": 100.0 * (edv - esv) / edv,
        "edv": edv,
        "esv": esv,
        "ed_frame": ed,
        "es_frame": es,
        "num_frames": T,
        "heart_rate": beat.heart_rate,
        "target_ef": beat.target_ef,
        "volumes": beat.volumes,
        "tracings": {
            es: _chords(anat, beat.a_t[es], beat.b_t[es]),
            ed: _chords(anat, beat.a_t[ed], beat.b_t[ed]),
        },
    }
    return frames, labels


# ----------------------------------------------------------------------------------------------
# Dataset writer
# ----------------------------------------------------------------------------------------------


def _format_number(x: float) -> str:
    """Shortest round-trip text of a float (integers without ``.0``), so CSVs are byte-stable."""
    x = float(x)
    return str(int(x)) if x.is_integer() else repr(x)


def _render_and_write(job: tuple[SyntheticConfig, int, str, str]) -> tuple[list[str], list[list[str]]]:
    """Renders video ``index`` and writes its AVI; returns its FileList row and tracing rows."""
    config, index, split, videos_dir = job
    name = video_file_name(config.seed, index)
    frames, labels = render_video(video_rng(config.seed, index), config)
    write_video(Path(videos_dir) / f"{name}.avi", frames, config.fps)
    row = [
        name,
        _format_number(labels["ef"]),
        _format_number(labels["esv"]),
        _format_number(labels["edv"]),
        str(config.size),
        str(config.size),
        _format_number(config.fps),
        str(len(frames)),
        split,
    ]
    traces = []
    for frame, chords in labels["tracings"].items():  # ES first, then ED, as EchoNet's file
        traces += [[f"{name}.avi", *(f"{x:.4f}" for x in chord), str(frame)] for chord in chords]
    return row, traces


def _pool_init() -> None:
    cv2.setNumThreads(1)


def _resolve_config(
    config: SyntheticConfig | Mapping[str, Any] | None, overrides: Mapping[str, Any]
) -> SyntheticConfig:
    if config is None:
        config = SyntheticConfig()
    elif isinstance(config, Mapping):
        config = SyntheticConfig.from_dict(config)
    elif not isinstance(config, SyntheticConfig):
        raise TypeError(f"config must be a SyntheticConfig, a dict or None, got {type(config).__name__}")
    return dataclasses.replace(config, **overrides) if overrides else config


def _dataset_complete(root: Path, config: SyntheticConfig) -> bool:
    if not (root / "FileList.csv").is_file():
        return False
    if config.with_tracings and not (root / "VolumeTracings.csv").is_file():
        return False
    videos = root / "Videos"
    return all((videos / f"{video_file_name(config.seed, i)}.avi").is_file() for i in range(config.n_videos))


def write_echonet_dataset(
    root: PathLike,
    config: SyntheticConfig | Mapping[str, Any] | None = None,
    *,
    workers: int = 1,
    progress: bool = True,
    **overrides: Any,
) -> Path:
    """Writes a synthetic dataset in the EchoNet-Dynamic layout under ``root`` (see module doc).

    Idempotent: when ``root/synthetic.json`` records the same config and the dataset is complete,
    nothing is rewritten. An interrupted write of the same config is redone. A ``root`` that holds
    anything else (another config, or files not written by this function) raises
    ``FileExistsError`` rather than being overwritten.

    Args:
        root: output folder (created).
        config: a ``SyntheticConfig`` or a dict of its fields; default ``SyntheticConfig()``.
        workers: processes rendering videos (1 = in this process). Output does not depend on it.
        progress: show a tqdm progress bar.
        **overrides: config fields to replace, e.g. ``n_videos=64``.

    Returns:
        ``root`` as a Path.
    """
    cfg = _resolve_config(config, overrides)
    if workers < 1:
        raise ValueError(f"write_echonet_dataset: workers must be >= 1, got {workers}")
    root = Path(root)
    meta_path = root / _META_NAME
    wanted = {"format_version": FORMAT_VERSION, "config": cfg.to_dict()}
    if meta_path.is_file():
        try:
            meta = json.loads(meta_path.read_text())
        except json.JSONDecodeError as e:
            raise FileExistsError(
                f"{meta_path} is not valid JSON ({e}); refusing to write into {root}"
            ) from e
        old = {"format_version": meta.get("format_version"), "config": meta.get("config")}
        if old != wanted:
            old_cfg = old["config"] if isinstance(old["config"], dict) else {}
            diff = sorted(
                k for k in set(old_cfg) | set(wanted["config"]) if old_cfg.get(k) != wanted["config"].get(k)
            )
            if old["format_version"] != FORMAT_VERSION:
                diff.append(f"format_version ({old['format_version']} != {FORMAT_VERSION})")
            raise FileExistsError(
                f"{root} already holds a different synthetic dataset (differs in: {', '.join(diff)}); "
                "delete it or choose another root"
            )
        if meta.get("complete") and _dataset_complete(root, cfg):
            return root
    elif root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise FileExistsError(
            f"{root} exists and is not a synthetic dataset written by write_echonet_dataset "
            f"(no {_META_NAME}); refusing to overwrite it, choose an empty or new folder"
        )

    names = [video_file_name(cfg.seed, i) for i in range(cfg.n_videos)]
    if len(set(names)) != len(names):
        raise RuntimeError(f"file-name hash collision for seed {cfg.seed}; choose another seed")
    videos_dir = root / "Videos"
    videos_dir.mkdir(parents=True, exist_ok=True)
    meta_path.write_text(json.dumps({**wanted, "complete": False}, indent=2, sort_keys=True) + "\n")

    splits = split_assignment(cfg.n_videos, cfg.seed, cfg.split_fractions)
    jobs = [(cfg, i, splits[i], str(videos_dir)) for i in range(cfg.n_videos)]
    results = _run_jobs(jobs, workers, progress)

    rows, traces = [], []
    for row, trace in results:
        rows.append(row)
        traces += trace
    _write_csv(root / "FileList.csv", FILELIST_COLUMNS, rows)
    if cfg.with_tracings:
        _write_csv(root / "VolumeTracings.csv", TRACINGS_COLUMNS, traces)
    elif (root / "VolumeTracings.csv").exists():  # left by an interrupted write of ours
        (root / "VolumeTracings.csv").unlink()
    meta_path.write_text(json.dumps({**wanted, "complete": True}, indent=2, sort_keys=True) + "\n")
    return root


def _run_jobs(jobs: list, workers: int, progress: bool) -> list:
    try:
        from tqdm.auto import tqdm
    except ImportError:  # tqdm is in requirements; stay usable without it
        tqdm = None
    bar = tqdm(total=len(jobs), desc="synthetic videos", unit="video", disable=not progress) if tqdm else None

    def tick(items: Iterable) -> Iterator:
        for item in items:
            if bar is not None:
                bar.update(1)
            yield item

    try:
        if workers == 1:
            return list(tick(map(_render_and_write, jobs)))
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        ctx = multiprocessing.get_context("spawn")  # no fork of a parent that may hold TF/JAX threads
        with ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_pool_init) as ex:
            return list(tick(ex.map(_render_and_write, jobs, chunksize=4)))
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


# ----------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> Path:
    """``python -m coreecho_jax.data.synthetic --root DIR --n 512 --seed 0 [--workers 2]``."""
    d = SyntheticConfig()
    p = argparse.ArgumentParser(
        prog="python -m coreecho_jax.data.synthetic",
        description="Write a synthetic dataset in the EchoNet-Dynamic layout.",
    )
    p.add_argument("--root", required=True, help="output folder")
    p.add_argument("--n", type=int, default=d.n_videos, help="number of videos")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--workers", type=int, default=1, help="rendering processes")
    p.add_argument("--size", type=int, default=d.size, help="frame height = width (pixels)")
    p.add_argument("--fps", type=float, default=d.fps)
    p.add_argument("--min-frames", type=int, default=d.min_frames)
    p.add_argument("--max-frames", type=int, default=d.max_frames)
    p.add_argument("--no-tracings", action="store_true", help="skip VolumeTracings.csv")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    a = p.parse_args(argv)
    cfg = SyntheticConfig(
        n_videos=a.n,
        seed=a.seed,
        size=a.size,
        fps=a.fps,
        min_frames=a.min_frames,
        max_frames=a.max_frames,
        with_tracings=not a.no_tracings,
    )
    root = write_echonet_dataset(a.root, cfg, workers=a.workers, progress=not a.quiet)
    print(f"synthetic EchoNet-Dynamic dataset ({cfg.n_videos} videos, seed {cfg.seed}) at {root}")
    return root


if __name__ == "__main__":
    main()
