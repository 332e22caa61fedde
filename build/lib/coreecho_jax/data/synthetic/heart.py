"""Drawing of synthetic apical-four-chamber (A4C) echo videos whose labels follow from the drawn heart.

A video shows an ultrasound sector on black with a speckled heart: a dark left-ventricular (LV)
cavity inside brighter myocardium, a right ventricle and two atria. The LV is an ellipse in the image
plane (an ellipsoid of revolution in 3-D) whose semi-axes ``a`` (long) and ``b`` (short) follow a
cardiac cycle about the fixed apex; the tissue around it moves with a smooth deformation, so the
speckle moves with the tissue. Volumes are the ellipsoid volume ``4/3 pi a b^2`` (equal to the
area-length volume of an ellipse) with a fixed pixel size, in mL, and the cavity drawn in each frame
is exactly that ellipse (its mask is returned with the frames).

Two steps, so that dataset writers choose the heart and the drawing stays one:

1. :func:`sample_heart_params` draws a :class:`HeartParams` (EDV, target EF, LV shape, heart rate,
   phase) from a :class:`DrawingConfig`; a writer may also build or edit one (e.g.
   :meth:`HeartParams.half_cycle` for an ED -> ES sequence, ``hypokinetic_segments`` for a regional
   wall-motion reduction).
2. :func:`draw_video` draws the anatomy, texture and scan geometry from the same generator and returns
   a :class:`DrawnVideo`: frames, per-frame LV masks, volumes, ED/ES frames, EF.

EF cannot be read off one frame: EDV is drawn independently of EF, and the phase of the first frame,
the gain, the position, rotation and size of the heart are random; only the motion tells EF.

Units: lengths in pixels unless named ``*_cm``, volumes in mL, EF in percent, frames uint8
``[T, H, W]``, masks bool ``[T, H, W]``, image points ``(x, y)`` = (column, row) in pixels.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any, Self

import cv2
import numpy as np

from coreecho_jax import seeds
from coreecho_jax.errors import ConfigError

#: Reference image size: geometry below is given in pixels of a 112 x 112 frame and scaled.
REF_SIZE = 112
#: The LV contraction state is quantised to this many levels, so a video needs at most this many
#: distinct deformation maps (frames at the same level share one; labels use the quantised state).
CONTRACTION_LEVELS = 64
#: The seven A4C wall segments (the numbering of HMC-QU's ``SEG1`` .. ``SEG7``), septum first.
A4C_SEGMENTS = {
    1: "basal inferoseptal",
    2: "mid inferoseptal",
    3: "apical septal",
    4: "apical cap",
    5: "apical lateral",
    6: "mid anterolateral",
    7: "basal anterolateral",
}
# Segment borders in the elliptic angle psi of the LV contour (0 at the apex, -pi / +pi at the septal /
# lateral end of the mitral annulus): the apical cap is |psi| < 0.45 rad, and the long axis is cut in
# thirds (cos psi = +-1/3) between apical, mid and basal segments. A segment's weight ramps from 0 to 1
# over _SEGMENT_EDGE radians centred on its borders; the basal segments reach 0 at psi = +-pi, where the
# contour crosses the mitral opening (psi jumps from +pi to -pi there, so the weight must vanish).
_SEGMENT_EDGE = 0.5
_CAP = 0.45
_THIRD = math.acos(1.0 / 3.0)
_SEGMENT_PSI = {
    1: (-math.pi + _SEGMENT_EDGE / 2, -math.pi + _THIRD),
    2: (-math.pi + _THIRD, -_THIRD),
    3: (-_THIRD, -_CAP),
    4: (-_CAP, _CAP),
    5: (_CAP, _THIRD),
    6: (_THIRD, math.pi - _THIRD),
    7: (math.pi - _THIRD, math.pi - _SEGMENT_EDGE / 2),
}


@dataclasses.dataclass(frozen=True)
class DrawingConfig:
    """The per-video distributions of the drawing (dataset writers extend it with their own fields).

    Attributes:
        size: frame height = width in pixels.
        fps: frames per second (sets how many frames one heart beat takes).
        heart_rate_bpm: (low, high) uniform heart rate in beats per minute.
        cm_per_px: pixel size in cm at ``size = 112`` (scaled by ``112 / size`` otherwise). 0.16
            keeps a 250 mL LV (about 75 px long) and the atria inside a 112-pixel frame; at 0.1 a
            100 mL LV alone would be 82 px long.
        edv_median_ml, edv_log_sigma, edv_range_ml: log-normal EDV (independent of EF), clipped.
        ef_normal_fraction, ef_normal_mean, ef_normal_std, ef_low_range, ef_range: the target EF is
            ``N(mean, std)`` with probability ``ef_normal_fraction``, else ``U(ef_low_range)``,
            clipped to ``ef_range``. The label is the EF of the drawn frames (within ~0.5 of it).
    """

    size: int = REF_SIZE
    fps: float = 50.0
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
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if isinstance(value, list | tuple):
                object.__setattr__(self, field.name, tuple(float(x) for x in value))
        name = type(self).__name__
        if self.size < 32:
            raise ConfigError(f"{name}.size must be >= 32 pixels, got {self.size}")
        if self.fps <= 0:
            raise ConfigError(f"{name}.fps must be > 0, got {self.fps}")
        lo, hi = self.heart_rate_bpm
        if not 0 < lo <= hi:
            raise ConfigError(f"{name}.heart_rate_bpm must be 0 < low <= high, got {self.heart_rate_bpm}")
        if not 0 < self.ef_range[0] <= self.ef_range[1] < 100:
            raise ConfigError(f"{name}.ef_range must lie in (0, 100), got {self.ef_range}")

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Self:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ConfigError(f"{cls.__name__}: unknown keys {sorted(unknown)}; known: {sorted(names)}")
        return cls(**d)

    @classmethod
    def resolve(cls, config: Self | Mapping[str, Any] | None, overrides: Mapping[str, Any]) -> Self:
        """``config`` (an instance, a dict of its fields, or None for the defaults) with ``overrides``."""
        if config is None:
            config = cls()
        elif isinstance(config, Mapping):
            config = cls.from_dict(config)
        elif not isinstance(config, cls):
            raise TypeError(f"config must be a {cls.__name__}, a dict or None, got {type(config).__name__}")
        return dataclasses.replace(config, **overrides) if overrides else config


@dataclasses.dataclass(frozen=True)
class HeartParams:
    """Everything that sets the LV of one video and its labels (the texture comes from the generator).

    Attributes:
        num_frames: frames T of the video (>= 2).
        size: frame height = width in pixels.
        fps: frames per second.
        cm_per_px: pixel size in cm at this ``size``.
        edv_ml: LV volume at contraction 0 (end-diastole), mL.
        target_ef: EF in % of a full contraction (0 -> 1); the drawn EF is within ~0.5 of it.
        aspect: long / short semi-axis of the LV at end-diastole.
        long_share: share of the volume change taken by long-axis shortening (the rest is radial).
        heart_rate_bpm: beats per minute; one beat takes ``60 / heart_rate_bpm * fps`` frames.
        systole_fraction: share of the beat from ED to ES.
        phase0: cycle phase of frame 0 in [0, 1) (0 = ED, ``systole_fraction`` = ES).
        hypokinetic_segments: A4C segments (keys of ``A4C_SEGMENTS``) whose wall moves less.
        segment_motion: share of the normal wall motion left in those segments (0 = akinetic).
    """

    num_frames: int
    size: int
    fps: float
    cm_per_px: float
    edv_ml: float
    target_ef: float
    aspect: float
    long_share: float
    heart_rate_bpm: float
    systole_fraction: float
    phase0: float
    hypokinetic_segments: tuple[int, ...] = ()
    segment_motion: float = 0.25

    def __post_init__(self):
        object.__setattr__(self, "hypokinetic_segments", tuple(int(s) for s in self.hypokinetic_segments))
        if self.num_frames < 2:
            raise ConfigError(f"HeartParams.num_frames must be >= 2, got {self.num_frames}")
        if not 0 <= self.target_ef < 100:
            raise ConfigError(f"HeartParams.target_ef must lie in [0, 100), got {self.target_ef}")
        if not 0 < self.systole_fraction < 1:
            raise ConfigError(f"HeartParams.systole_fraction must lie in (0, 1), got {self.systole_fraction}")
        unknown = sorted(set(self.hypokinetic_segments) - set(A4C_SEGMENTS))
        if unknown:
            raise ConfigError(
                f"HeartParams.hypokinetic_segments: unknown segments {unknown}; known: {sorted(A4C_SEGMENTS)}"
            )
        if not 0 <= self.segment_motion <= 1:
            raise ConfigError(f"HeartParams.segment_motion must lie in [0, 1], got {self.segment_motion}")

    @property
    def period(self) -> float:
        """Frames per beat."""
        return 60.0 / self.heart_rate_bpm * self.fps

    def half_cycle(self) -> HeartParams:
        """The same heart drawn over one half cycle: frame 0 at ED, the last frame at ES.

        The heart rate is set so that systole spans ``num_frames - 1`` frame intervals; the systole
        fraction is kept. The drawn volumes fall monotonically; ``DrawnVideo.es_frame`` is the last
        frame or one before it with the same (quantised) volume.
        """
        hr = 60.0 * self.fps * self.systole_fraction / (self.num_frames - 1)
        return dataclasses.replace(self, phase0=0.0, heart_rate_bpm=hr)


@dataclasses.dataclass(frozen=True)
class DrawnVideo:
    """One drawn video and its labels.

    Attributes:
        frames: uint8 ``[T, H, W]``, 0 outside the sector.
        lv_mask: bool ``[T, H, W]``, the LV cavity drawn in each frame.
        volumes: float64 ``[T]``, LV volume of each frame in mL.
        ed_frame, es_frame: 0-based end-diastolic and end-systolic frame of the first beat with both
            in the video (the drawn volume extremes of that beat; ``ed_frame < es_frame``).
        ef: ``100 (EDV - ESV) / EDV`` in %, from the volumes at those frames.
        edv, esv: those volumes, mL.
        contraction: float64 ``[T]`` in [0, 1] (0 at ED), quantised to ``CONTRACTION_LEVELS`` values.
        lv_long, lv_short: float64 ``[T]``, the LV semi-axes in pixels (global contraction; a
            hypokinetic segment bulges out of this ellipse, ``lv_mask`` is exact).
        params: the heart drawn.
        anatomy: the drawn chambers and their placement (internal; use :meth:`lv_to_image`).
    """

    frames: np.ndarray
    lv_mask: np.ndarray
    volumes: np.ndarray
    ed_frame: int
    es_frame: int
    ef: float
    edv: float
    esv: float
    contraction: np.ndarray
    lv_long: np.ndarray
    lv_short: np.ndarray
    params: HeartParams
    anatomy: _Anatomy = dataclasses.field(repr=False)

    def lv_to_image(self, x_long, y_short):
        """LV coordinates -> image ``(x, y)`` in pixels.

        ``x_long`` runs from the apex (0) towards the mitral annulus (``2 * lv_long``), ``y_short`` is
        perpendicular to it, negative on the septal side. Arrays broadcast.
        """
        return self.anatomy.to_image(*_from_local(x_long, y_short, self.anatomy.lv))


# ----------------------------------------------------------------------------------------------
# Randomness and heart parameters
# ----------------------------------------------------------------------------------------------


def video_rng(seed: int, index: int) -> np.random.Generator:
    """The generator of video ``index`` in a dataset with master ``seed`` (independent streams)."""
    return seeds.generator(seed, index)


def sample_ef(rng: np.random.Generator, config: DrawingConfig) -> float:
    """Target EF in percent: a mixture of normal hearts and reduced EF (EchoNet-like spread)."""
    if rng.random() < config.ef_normal_fraction:
        ef = rng.normal(config.ef_normal_mean, config.ef_normal_std)
    else:
        ef = rng.uniform(*config.ef_low_range)
    return float(np.clip(ef, *config.ef_range))


def systole_fraction(heart_rate_bpm: float) -> float:
    """Share of the beat spent in systole: longer at fast rates (diastole shortens more), 0.3-0.5."""
    return float(np.clip(0.28 * heart_rate_bpm / 60.0 + 0.05, 0.3, 0.5))


def sample_heart_params(rng: np.random.Generator, config: DrawingConfig, num_frames: int) -> HeartParams:
    """EF and EDV (independent draws), LV shape, heart rate and phase of one video of ``num_frames``.

    A heart rate too slow for the video to hold one beat (ED, ES and the next ED) is raised until
    it fits; that needs ``num_frames >= 8``.
    """
    T = int(num_frames)
    fps = float(config.fps)
    target_ef = sample_ef(rng, config)
    edv = float(
        np.clip(
            config.edv_median_ml * math.exp(config.edv_log_sigma * rng.standard_normal()),
            *config.edv_range_ml,
        )
    )
    aspect = rng.uniform(1.6, 2.1)  # a / b at ED
    long_share = rng.uniform(0.2, 0.35)
    hr = rng.uniform(*config.heart_rate_bpm)
    systole = systole_fraction(hr)
    if 60.0 / hr * fps * (1.0 + systole) + 2 > T:  # too short a video for this rate: speed it up
        if T < 8:
            raise ConfigError(f"a synthetic video needs at least 8 frames, got num_frames={T}")
        hr = 60.0 * fps * 1.5 / (T - 2)
        systole = systole_fraction(hr)
    return HeartParams(
        num_frames=T,
        size=int(config.size),
        fps=fps,
        cm_per_px=config.cm_per_px * REF_SIZE / config.size,
        edv_ml=edv,
        target_ef=target_ef,
        aspect=float(aspect),
        long_share=float(long_share),
        heart_rate_bpm=float(hr),
        systole_fraction=systole,
        phase0=float(rng.random()),
    )


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


@dataclasses.dataclass(frozen=True)
class _Beat:
    """The LV cycle of one video: per-frame LV semi-axes (pixels)."""

    a_ed: float  # long semi-axis at ED (contraction 0)
    b_ed: float  # short semi-axis at ED
    a_es_ratio: float  # a at contraction 1 / a_ed
    b_es_ratio: float  # b at contraction 1 / b_ed
    contraction: np.ndarray  # [T] in [0, 1], 0 at ED, quantised to CONTRACTION_LEVELS values
    a_t: np.ndarray  # [T] long semi-axis
    b_t: np.ndarray  # [T] short semi-axis
    volumes: np.ndarray  # [T] mL of the ellipsoid


def _beat(p: HeartParams) -> _Beat:
    """LV axes over time from the heart parameters."""
    b_cm = (3.0 * p.edv_ml / (4.0 * math.pi * p.aspect)) ** (1.0 / 3.0)
    a_px, b_px = p.aspect * b_cm / p.cm_per_px, b_cm / p.cm_per_px
    # ESV / EDV = (a_ES / a_ED) (b_ES / b_ED)^2, split between long-axis and radial shortening.
    ratio = 1.0 - p.target_ef / 100.0
    ra, rb = ratio**p.long_share, ratio ** ((1.0 - p.long_share) / 2.0)
    c_t = contraction(p.phase0 + np.arange(p.num_frames) / p.period, p.systole_fraction)
    c_t = np.round(c_t * (CONTRACTION_LEVELS - 1)) / (CONTRACTION_LEVELS - 1)
    a_t = a_px * (1.0 - c_t * (1.0 - ra))
    b_t = b_px * (1.0 - c_t * (1.0 - rb))
    volumes = 4.0 / 3.0 * math.pi * a_t * b_t * b_t * p.cm_per_px**3
    return _Beat(a_px, b_px, ra, rb, c_t, a_t, b_t, volumes)


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
    raise ConfigError(f"video of {T} frames holds no complete beat (period {period:.1f} frames)")


# ----------------------------------------------------------------------------------------------
# Anatomy and texture
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
    ``a_t``, ``b_t`` may vary per pixel: a pixel is then inside the cavity exactly when its material
    point lies inside the ED ellipse.
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


def smooth_noise(rng: np.random.Generator, size: int, scale: float, amount: float) -> np.ndarray:
    """Low-frequency multiplicative field ``1 + amount * N(0, 1)``-ish, float32 ``[size, size]``.

    ``scale`` is the Gaussian blur sigma in pixels (the size of the blobs).
    """
    n = rng.standard_normal((size, size)).astype(np.float32)
    n = cv2.GaussianBlur(n, (0, 0), sigmaX=scale, borderType=cv2.BORDER_REFLECT)
    n /= n.std() + 1e-6
    return 1.0 + amount * n


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
    scale = size / REF_SIZE
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
    scale = size / REF_SIZE
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
    tissue *= smooth_noise(rng, size, 4.0 * scale, 0.25)
    tissue = np.maximum(tissue, 0.0).astype(np.float32)
    return tissue * _speckle(rng, (size, size), 1.1 * scale, 0.6 * scale)


# ----------------------------------------------------------------------------------------------
# Motion
# ----------------------------------------------------------------------------------------------


def segment_weight(psi: np.ndarray, segments: tuple[int, ...]) -> np.ndarray:
    """Weight in [0, 1] of the union of A4C ``segments`` at elliptic contour angle ``psi`` (radians).

    ``psi`` is 0 at the apex, negative on the septal side and +-pi at the middle of the mitral annulus;
    the weight is 1 inside a segment and ramps to 0 across its borders (continuous in ``psi``, 0 at
    ``psi = +-pi``).
    """
    w = np.zeros_like(psi)
    for seg in segments:
        lo, hi = _SEGMENT_PSI[seg]
        inside = _smoothstep((psi - lo) / _SEGMENT_EDGE + 0.5) * _smoothstep((hi - psi) / _SEGMENT_EDGE + 0.5)
        w = np.maximum(w, inside)
    return w


def _lv_axes(lv: _Chamber, beat: _Beat, c: np.ndarray, xl, ys, params: HeartParams):
    """Current LV semi-axes at contraction levels ``c`` ([L, 1, 1]): global, or per pixel when a
    segment is hypokinetic (its contraction scaled by ``segment_motion``)."""
    at = lv.a * (1.0 - c * (1.0 - beat.a_es_ratio))
    bt = lv.b * (1.0 - c * (1.0 - beat.b_es_ratio))
    if not params.hypokinetic_segments:
        return at, bt
    psi = np.arctan2(ys / bt, (at - xl) / at)  # contour angle in the globally contracted frame
    c_px = c * (1.0 - (1.0 - params.segment_motion) * segment_weight(psi, params.hypokinetic_segments))
    return lv.a * (1.0 - c_px * (1.0 - beat.a_es_ratio)), lv.b * (1.0 - c_px * (1.0 - beat.b_es_ratio))


def _warp_maps(
    rng: np.random.Generator,
    anat: _Anatomy,
    beat: _Beat,
    levels: np.ndarray,
    u: np.ndarray,
    v: np.ndarray,
    params: HeartParams,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Inverse maps (current pixel -> ED material pixel) for cv2.remap, float32 [L, H, W], and the
    LV cavity of each level, bool [L, H, W].

    One map per contraction level in ``levels`` ([L], 0 = ED, 1 = ES). The LV map is exact inside
    the current cavity (so the drawn cavity is the labelled one); the RV contracts in phase by
    a share of the LV's fractional area change, masked out of the LV cavity.
    """
    lv, rv = anat.lv, anat.rv
    c = levels.astype(np.float32)[:, None, None]
    xl, ys = _local(u, v, lv)
    at, bt = _lv_axes(lv, beat, c, xl[None], ys[None], params)
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
    return map_x.astype(np.float32), map_y.astype(np.float32), rho_lv <= 1.0


def disc_volumes(mask: np.ndarray, x_long: np.ndarray, cm_per_px: float) -> np.ndarray:
    """Simpson's method of discs on pixel masks: volume in mL per mask, float64 ``[N]``.

    Args:
        mask: bool ``[N, H, W]``.
        x_long: float ``[H, W]``, each pixel's position along the long axis in pixels; the axis is
            cut in 1-pixel slices, a slice's diameter is its mask area / 1 pixel.
        cm_per_px: pixel size in cm.
    """
    bins = np.floor(x_long).astype(np.int64)
    bins -= bins.min()
    out = np.empty(len(mask))
    for k, m in enumerate(mask):
        d = np.bincount(bins[m], minlength=bins.max() + 1).astype(np.float64)
        out[k] = np.sum(np.pi * (d / 2.0) ** 2) * cm_per_px**3
    return out


# ----------------------------------------------------------------------------------------------
# Scan and frames
# ----------------------------------------------------------------------------------------------


def _scan_shading(rng: np.random.Generator, size: int) -> np.ndarray:
    """Sector mask x depth attenuation x lateral fall-off x gain, float32 [H, W] (0 outside the fan)."""
    scale = size / REF_SIZE
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


def draw_video(params: HeartParams, rng: np.random.Generator) -> DrawnVideo:
    """Draws one synthetic A4C echo video of the heart ``params``.

    Args:
        params: the heart (from :func:`sample_heart_params`, possibly edited).
        rng: draws the anatomy around the LV, the texture and the scan geometry (in a dataset: the
            video's ``video_rng(seed, index)``, after ``sample_heart_params`` used it).

    Returns:
        The frames, LV masks and labels. Without hypokinetic segments the volumes are those of the
        drawn ellipsoid (exact); with them, Simpson's discs of the drawn masks (see
        :func:`disc_volumes`). ED/ES are then taken from those volumes.
    """
    size, T = params.size, params.num_frames
    beat = _beat(params)
    anat = _sample_anatomy(rng, beat.a_ed, beat.b_ed, size)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    u, v = anat.from_image(xx, yy)
    material = _material(rng, anat, u, v, size)
    levels, level_of_frame = np.unique(beat.contraction, return_inverse=True)
    map_x, map_y, cavity = _warp_maps(rng, anat, beat, levels, u, v, params)
    shading = _scan_shading(rng, size)
    scale = size / REF_SIZE
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

    volumes = beat.volumes
    if params.hypokinetic_segments:
        volumes = disc_volumes(cavity, _local(u, v, anat.lv)[0], params.cm_per_px)[level_of_frame]
    ed, es = _traced_frames(volumes, params.phase0, params.period, params.systole_fraction)
    edv, esv = float(volumes[ed]), float(volumes[es])
    return DrawnVideo(
        frames=frames,
        lv_mask=cavity[level_of_frame],
        volumes=volumes,
        ed_frame=ed,
        es_frame=es,
        ef=100.0 * (edv - esv) / edv,
        edv=edv,
        esv=esv,
        contraction=beat.contraction,
        lv_long=beat.a_t,
        lv_short=beat.b_t,
        params=params,
        anatomy=anat,
    )
