"""Multi-clip evaluation: K clips per video at fixed starts, predictions averaged per video.

The batches come from the eval pipeline (``{'video': [B, K, T, H, W, C], 'ef': [B], 'filename': [B],
'starts': [B, K], 'mask': [B]}``, the last batch padded and masked), so every video counts exactly once.
This module works on one process's batches; :mod:`coreecho_jax.evaluation.evaluator` gathers processes.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from coreecho_jax.evaluation import categories, conformal
from coreecho_jax.evaluation import metrics as metrics_lib


@dataclass
class VideoPredictions:
    """Per-video results: ``labels`` ``[N]`` and ``clip_predictions`` ``[N, K]`` (EF %), ``starts`` ``[N, K]``."""

    filenames: list[str]
    labels: np.ndarray
    clip_predictions: np.ndarray
    starts: np.ndarray

    @property
    def prediction(self) -> np.ndarray:
        """``[N]`` mean over the K clips (EF %)."""
        return self.clip_predictions.mean(axis=1)

    @property
    def spread(self) -> np.ndarray:
        """``[N]`` standard deviation (ddof=0) over the K clips (EF %): the spread conformal intervals scale by."""
        return self.clip_predictions.std(axis=1)

    def __len__(self) -> int:
        return len(self.filenames)

    def take(self, index: np.ndarray) -> VideoPredictions:
        """The videos at ``index`` (integer positions), in that order."""
        index = np.asarray(index, np.int64)
        return VideoPredictions(
            [self.filenames[i] for i in index],
            self.labels[index],
            self.clip_predictions[index],
            self.starts[index],
        )

    def sorted_by_name(self) -> VideoPredictions:
        """Videos in filename order: the order does not depend on how batches or processes split them."""
        return self.take(np.argsort(np.array(self.filenames, dtype=object), kind="stable"))


def _text(x) -> str:
    return x.decode() if isinstance(x, bytes) else str(x)


def predict_videos(
    predict_fn: Callable[[Mapping[str, np.ndarray]], np.ndarray], batches: Iterable[Mapping[str, np.ndarray]]
) -> VideoPredictions:
    """This process's videos: ``predict_fn`` (batch -> ``[B, K]``) over eval batches, padded rows dropped.

    The result may be empty (a process whose share of a small split is only padding); gathering the
    processes and checking that every video came once is :class:`evaluator.Evaluator`'s job.
    """
    names, labels, preds, starts = [], [], [], []
    for batch in batches:
        mask = np.asarray(batch["mask"]).astype(bool)
        p = np.asarray(predict_fn(batch), dtype=np.float64)
        if p.ndim != 2 or p.shape[0] != mask.shape[0]:
            raise ValueError(
                f"predict_fn must return [B, K] = [{mask.shape[0]}, K] predictions, got {p.shape}"
            )
        names += [_text(n) for n, m in zip(batch["filename"], mask) if m]
        labels.append(np.asarray(batch["ef"], np.float64)[mask])
        preds.append(p[mask])
        starts.append(np.asarray(batch["starts"], np.int64)[mask])
    if not preds:
        return VideoPredictions([], np.zeros(0), np.zeros((0, 0)), np.zeros((0, 0), np.int64))
    return VideoPredictions(names, np.concatenate(labels), np.concatenate(preds), np.concatenate(starts))


def video_batch(
    clips: np.ndarray, starts: np.ndarray, filename: str, ef: float = float("nan")
) -> dict[str, np.ndarray]:
    """One video's ``[K, T, H, W, C]`` clips as an eval batch of one (``ef`` NaN: no label)."""
    return {
        "video": np.asarray(clips)[None],
        "ef": np.array([ef], np.float32),
        "mask": np.ones(1, bool),
        "filename": np.array([filename.encode()], dtype=object),
        "starts": np.asarray(starts, np.int64)[None],
    }


def summarize(
    result: VideoPredictions, *, train_mean: float | None = None, n_resamples: int = 1000, seed: int = 0
) -> dict[str, float | int | str]:
    """MAE/RMSE/R2/Pearson with 95% bootstrap CIs, R2 x 100 as the paper prints it, mean-baseline MAE,
    and the Bland-Altman bias and 95% limits of agreement (``ba_bias``, ``ba_loa_low``, ``ba_loa_high``,
    EF %; see ``metrics.bland_altman``).

    ``n_resamples=0`` leaves the CIs out; ``train_mean`` (EF %) adds the MAE of predicting it for every
    video. An undefined value is NaN with a ``<name>_undefined`` reason (see ``metrics.summarize``).
    """
    out = metrics_lib.summarize(result.labels, result.prediction, n_resamples=n_resamples, seed=seed)
    out["r2_x100"] = 100.0 * out["r2"]
    out["clips_per_video"] = int(result.clip_predictions.shape[1])
    agreement = metrics_lib.bland_altman(result.labels, result.prediction)
    for key in ("bias", "loa_low", "loa_high"):
        out[f"ba_{key}"] = agreement[key]
        if not math.isfinite(agreement[key]):
            out[f"ba_{key}_undefined"] = agreement["undefined"]
    if train_mean is not None:
        baseline = np.full_like(result.labels, train_mean)
        out["train_mean_ef"] = float(train_mean)
        out["mae_of_predicting_train_mean"] = metrics_lib.mae(result.labels, baseline)
    return out


def clinical_summary(
    result: VideoPredictions,
    calibration: conformal.Calibration | None,
    *,
    n_resamples: int = 1000,
    seed: int = 0,
    no_calibration: str = "no calibration",
) -> dict:
    """The category metrics (AUROC of EF < 40 and < 50, the 3 x 3 category table; see
    :func:`categories.category_metrics`) and, with a calibration, the coverage and mean width of its
    intervals overall and per bin of predicted EF (:func:`conformal.interval_report`); without one,
    ``interval_undefined`` holds ``no_calibration`` (the reason)."""
    out = categories.category_metrics(result.labels, result.prediction, n_resamples=n_resamples, seed=seed)
    if calibration is None:
        out["interval_undefined"] = no_calibration
    else:
        out.update(conformal.interval_report(calibration, result.labels, result.prediction, result.spread))
    return out


def write_csv(result: VideoPredictions, path: str | Path) -> None:
    """One row per video: file, label, mean prediction, spread, and each clip's start and prediction."""
    k = result.clip_predictions.shape[1]
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(
            ["FileName", "EF", "EF_pred", "EF_pred_std"]
            + [f"start_{i}" for i in range(k)]
            + [f"EF_pred_clip_{i}" for i in range(k)]
        )
        for i, name in enumerate(result.filenames):
            clips = result.clip_predictions[i]
            w.writerow(
                [name, f"{result.labels[i]:.4f}", f"{clips.mean():.4f}", f"{clips.std():.4f}"]
                + [int(s) for s in result.starts[i]]
                + [f"{c:.4f}" for c in clips]
            )
