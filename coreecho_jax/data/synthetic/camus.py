"""Synthetic CAMUS downloads: half-cycle A4C (and optionally A2C) sequences in either release layout.

``release="2023"``::

    root/CAMUS_public/database_nifti/patientNNNN/patientNNNN_4CH_half_sequence.nii.gz
                                                patientNNNN_4CH_half_sequence_gt.nii.gz   LV cavity = 1
                                                Info_4CH.cfg   ED, ES, NbFrame, Sex, Age, ImageQuality, EF,
                                                               FrameRate
    root/CAMUS_public/database_split/subgroup_{training,validation,testing}.txt

``release="2019"``::

    root/training/patientNNNN/patientNNNN_4CH_sequence.mhd + .raw
                              Info_4CH.cfg   ED, ES, NbFrame, Sex, Age, ImageQuality, LVedv, LVesv, LVef
    root/testing/patientNNNN/...   (the last ``n_testing`` patients, with their labels)

Each sequence is one drawn half cycle (:meth:`HeartParams.half_cycle`, ED first); a share of patients
is stored ES -> ED (``ED: NbFrame``, ``ES: 1``), as some real files are. ``EF`` is the EF of the drawn
LV (``DrawnVideo.ef``; real CAMUS EF is biplane, so its A4C-only error is larger). ``ImageQuality``
takes all three values; ``Medium`` and ``Poor`` sequences are degraded with :func:`quality.degrade`
(amounts ``medium_amount``, ``poor_amount``). The drawn square (``size``) is stretched in rows by
``row_scale`` and padded with black columns to ``width``, so pixels are anisotropic as in CAMUS; the
header spacing says so. The A2C sequence (``with_2ch``) is another drawing of the same heart (same EF).
Patient ``i`` (1-based name ``patient{i:04d}``) uses ``video_rng(seed, i)``: deterministic from ``seed``.
The 2023 layout also gets the per-frame segmentation the real release ships, with only the LV cavity
drawn (label 1; ``DrawnVideo.lv_mask`` stretched and padded as the frames, kept where at least half of a
pixel is LV, in the stored frame order).
A dataset written before the segmentation was added has none (the format version is unchanged, so
such a dataset is still read as complete): write it again to measure the Grad-CAM in the LV.

``coreecho synthetic --dataset=camus --root=DIR [--release=2019] [--n=20] [--seed=0]``.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from coreecho_jax import seeds
from coreecho_jax.data.synthetic import heart
from coreecho_jax.data.synthetic.echonet import DatasetExistsError, split_assignment
from coreecho_jax.data.synthetic.quality import degrade
from coreecho_jax.data.transfer.camus import LV_LABEL, NIFTI_SEQUENCE, NIFTI_SEQUENCE_GT, SPLIT_FILES
from coreecho_jax.errors import ConfigError

PathLike = str | os.PathLike

#: Bump when the writers change the files they write.
FORMAT_VERSION = 1
META_NAME = "synthetic.json"
RELEASES = ("2023", "2019")


@dataclasses.dataclass(frozen=True)
class CamusSyntheticConfig(heart.DrawingConfig):
    """What to write: the drawing's distributions plus the dataset's fields.

    Attributes:
        n_patients: patients (``patient0001`` ..).
        seed: master seed.
        release: ``"2023"`` (NIfTI + cfg with ``EF``, ``FrameRate``, split files) or ``"2019"``
            (MHD/RAW + cfg with ``LVedv``, ``LVesv``, ``LVef``).
        min_frames, max_frames: inclusive range of frames per half cycle (>= 8; CAMUS has ~10-40).
        width: image width in pixels (>= the stretched drawing; 0 = no padding).
        row_scale: rows are stretched by this factor after drawing (row spacing = column / row_scale).
        es_first_fraction: share of patients stored ES -> ED (>= 1 patient when > 0 and n >= 2).
        quality_shares: (Good, Medium, Poor) shares; each label gets >= 1 patient when n >= 3.
        medium_amount, poor_amount: ``degrade`` amounts of Medium and Poor sequences.
        with_2ch: also write the two-chamber view.
        n_testing: 2019 layout: the last ``n_testing`` patients go to ``testing/``.
        split_fractions: 2023 layout: (training, validation, testing) shares of the split files.
    """

    n_patients: int = 20
    seed: int = 0
    fps: float = 30.0
    release: str = "2023"
    min_frames: int = 10
    max_frames: int = 20
    width: int = 0
    row_scale: float = 1.25
    es_first_fraction: float = 0.3
    quality_shares: tuple[float, float, float] = (0.35, 0.45, 0.2)
    medium_amount: float = 0.4
    poor_amount: float = 1.0
    with_2ch: bool = False
    n_testing: int = 0
    split_fractions: tuple[float, float, float] = (0.7, 0.15, 0.15)

    def __post_init__(self):
        super().__post_init__()
        if self.release not in RELEASES:
            raise ConfigError(f"CamusSyntheticConfig.release must be one of {RELEASES}, got {self.release!r}")
        if self.n_patients < 1:
            raise ConfigError(f"CamusSyntheticConfig.n_patients must be >= 1, got {self.n_patients}")
        if not 8 <= self.min_frames <= self.max_frames:
            raise ConfigError(
                f"CamusSyntheticConfig needs 8 <= min_frames <= max_frames, got {self.min_frames}, {self.max_frames}"
            )
        if self.width and self.width < self.size:
            raise ConfigError(
                f"CamusSyntheticConfig.width must be 0 or >= size={self.size}, got {self.width}"
            )
        if not 0 <= self.n_testing < self.n_patients:
            raise ConfigError(
                f"CamusSyntheticConfig.n_testing must lie in [0, n_patients), got {self.n_testing}"
            )


def quota_labels(n: int, shares: tuple[float, ...], rng: np.random.Generator) -> list[int]:
    """Label index per item: counts proportional to ``shares`` (each >= 1 when ``n`` allows), shuffled."""
    fr = np.asarray(shares, dtype=np.float64) / np.sum(shares)
    counts = np.floor(fr * n).astype(int)
    if n >= len(fr):
        counts[(counts == 0) & (fr > 0)] = 1
    while counts.sum() > n:
        counts[np.argmax(counts)] -= 1
    while counts.sum() < n:
        counts[np.argmax(fr * n - counts)] += 1
    return [int(x) for x in rng.permutation(np.repeat(np.arange(len(fr)), counts))]


def prepare_root(root: Path, wanted: dict[str, Any], complete: bool) -> bool:
    """True when ``root`` already holds the ``wanted`` synthetic dataset, complete (nothing to do).

    An empty or missing ``root`` or one holding an interrupted write of ``wanted`` is made ready (its
    metadata marked incomplete); anything else raises ``DatasetExistsError``.
    """
    meta_path = root / META_NAME
    if meta_path.is_file():
        try:
            meta = json.loads(meta_path.read_text())
        except json.JSONDecodeError:
            meta = {}
        if {k: meta.get(k) for k in wanted} != wanted:
            raise DatasetExistsError(
                f"{root} holds another synthetic dataset; delete it or choose another root"
            )
        if meta.get("complete") and complete:
            return True
    elif root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise DatasetExistsError(
            f"{root} exists and is not a synthetic dataset (no {META_NAME}); refusing to write"
        )
    root.mkdir(parents=True, exist_ok=True)
    meta_path.write_text(json.dumps({**wanted, "complete": False}, indent=2, sort_keys=True) + "\n")
    return False


def finish_root(root: Path, wanted: dict[str, Any]) -> None:
    (root / META_NAME).write_text(json.dumps({**wanted, "complete": True}, indent=2, sort_keys=True) + "\n")


def write_once(
    root: PathLike, kind: str, format_version: int, config: heart.DrawingConfig, write: Callable[[Path], None]
) -> Path:
    """Runs ``write(root)`` unless ``root`` already holds this dataset, complete; returns ``root``.

    The dataset is named by its ``kind``, the writer's ``format_version`` and ``config`` (recorded in
    ``synthetic.json``). Idempotent for the same three; refuses (``DatasetExistsError``, see
    :func:`prepare_root`) a ``root`` holding anything else. Marked complete only after ``write`` returns.
    """
    root = Path(root)
    wanted = {"format_version": format_version, "kind": kind, "config": config.to_dict()}
    if not prepare_root(root, wanted, complete=True):
        write(root)
        finish_root(root, wanted)
    return root


def to_image(frames: np.ndarray, row_scale: float, width: int) -> np.ndarray:
    """Square drawn frames ``[T, S, S]`` -> ``[T, round(S row_scale), max(S, width)]``: rows stretched
    (linear), black columns added evenly on both sides."""
    T, S, _ = frames.shape
    height = round(S * row_scale)
    if height != S:
        frames = np.stack([cv2.resize(f, (S, height), interpolation=cv2.INTER_LINEAR) for f in frames])
    pad = max(width - S, 0)
    return np.pad(frames, ((0, 0), (0, 0), (pad // 2, pad - pad // 2)))


def _write_image(path: Path, frames: np.ndarray, spacing_mm: tuple[float, float]) -> None:
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(frames)  # [T, H, W] -> size (W, H, T)
    image.SetSpacing((spacing_mm[1], spacing_mm[0], 1.0))
    sitk.WriteImage(image, str(path))


def _cfg_text(fields: Mapping[str, Any]) -> str:
    return "".join(f"{k}: {v}\n" for k, v in fields.items())


def draw_patient(config: CamusSyntheticConfig, index: int) -> tuple[heart.DrawnVideo, np.random.Generator]:
    """The half cycle of patient ``index`` (1-based) and its generator (for what the writer draws next)."""
    rng = heart.video_rng(config.seed, index)
    T = int(rng.integers(config.min_frames, config.max_frames + 1))
    params = heart.sample_heart_params(rng, config, T).half_cycle()
    return heart.draw_video(params, rng), rng


def _write_files(cfg: CamusSyntheticConfig, root: Path) -> None:
    n = cfg.n_patients
    order = seeds.generator(cfg.seed, seeds.SYNTHETIC_CAMUS)
    qualities = quota_labels(n, cfg.quality_shares, order)
    n_rev = round(n * cfg.es_first_fraction)
    if cfg.es_first_fraction > 0 and n >= 2:
        n_rev = min(max(n_rev, 1), n - 1)
    es_first = set(order.permutation(n)[:n_rev].tolist())
    amounts = (0.0, cfg.medium_amount, cfg.poor_amount)
    names = [f"patient{i:04d}" for i in range(1, n + 1)]
    for i, name in enumerate(names):
        video, rng = draw_patient(cfg, i + 1)
        mm = 10.0 * video.params.cm_per_px
        spacing = (mm / cfg.row_scale, mm)  # (row, column)
        if cfg.release == "2023":
            folder = root / "CAMUS_public" / "database_nifti" / name
        else:
            folder = root / ("testing" if i >= n - cfg.n_testing else "training") / name
        folder.mkdir(parents=True, exist_ok=True)
        views = [("4CH", video)]
        if cfg.with_2ch:
            views.append(("2CH", heart.draw_video(video.params, np.random.default_rng([cfg.seed, i + 1, 2]))))
        sex, age = ("F", "M")[int(rng.integers(2))], int(rng.integers(20, 91))
        for view, drawn in views:
            frames = to_image(degrade(drawn.frames, amounts[qualities[i]], rng), cfg.row_scale, cfg.width)
            lv = to_image(drawn.lv_mask.astype(np.uint8) * 255, cfg.row_scale, cfg.width) > 127
            lv = lv.astype(np.uint8) * LV_LABEL
            nb = len(frames)
            ed, es = (nb, 1) if i in es_first else (1, nb)
            if i in es_first:
                frames, lv = frames[::-1], lv[::-1]
            fields: dict[str, Any] = {"ED": ed, "ES": es, "NbFrame": nb, "Sex": sex, "Age": age}
            fields["ImageQuality"] = ("Good", "Medium", "Poor")[qualities[i]]
            if cfg.release == "2023":
                fields |= {"EF": round(video.ef, 2), "FrameRate": float(cfg.fps)}
                seq = folder / f"{name}_{view}_{NIFTI_SEQUENCE}"
                _write_image(folder / f"{name}_{view}_{NIFTI_SEQUENCE_GT}", np.ascontiguousarray(lv), spacing)
            else:
                edv, esv = round(video.edv, 2), round(video.esv, 2)
                fields |= {"LVedv": edv, "LVesv": esv, "LVef": round(video.ef, 2)}
                seq = folder / f"{name}_{view}_sequence.mhd"
            _write_image(seq, np.ascontiguousarray(frames), spacing)
            (folder / f"Info_{view}.cfg").write_text(_cfg_text(fields))
    if cfg.release == "2023":
        split_dir = root / "CAMUS_public" / "database_split"
        split_dir.mkdir(parents=True, exist_ok=True)
        splits = split_assignment(n, cfg.seed, cfg.split_fractions)
        for role, label in zip(("train", "val", "test"), ("TRAIN", "VAL", "TEST")):
            text = "".join(f"{p}\n" for p, s in zip(names, splits) if s == label)
            (split_dir / SPLIT_FILES[role]).write_text(text)


def write_camus_dataset(
    root: PathLike, config: CamusSyntheticConfig | Mapping[str, Any] | None = None, **overrides: Any
) -> Path:
    """Writes a synthetic CAMUS download under ``root`` (layouts in the module doc) with
    :func:`write_once`; returns ``root``."""
    cfg = CamusSyntheticConfig.resolve(config, overrides)
    return write_once(root, "camus", FORMAT_VERSION, cfg, functools.partial(_write_files, cfg))
