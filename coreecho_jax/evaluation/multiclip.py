"""Multi-clip evaluation: K clips per video at fixed starts, predictions averaged per video.

The batches come from the eval pipeline (``{'video': [B, K, T, H, W, C], 'ef': [B], 'filename': [B],
'starts': [B, K], 'mask': [B]}``, the last batch padded and masked), so every video counts exactly once.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from coreecho_jax.evaluation import metrics as metrics_lib


@dataclass
class VideoPredictions:
    """Per-video results: ``clip_predictions`` is ``[N, K]`` (EF %), ``prediction`` their mean."""

    filenames: list[str]
    labels: np.ndarray
    clip_predictions: np.ndarray
    starts: np.ndarray

    @property
    def prediction(self) -> np.ndarray:
        return self.clip_predictions.mean(axis=1)

    def __len__(self) -> int:
        return len(self.filenames)


def _text(x) -> str:
    return x.decode() if isinstance(x, bytes) else str(x)


def predict_videos(
    predict_fn: Callable[[np.ndarray], np.ndarray], batches: Iterable[Mapping[str, np.ndarray]]
) -> VideoPredictions:
    """Runs ``predict_fn`` (``[B, K, ...]`` clips -> ``[B, K]``) over eval batches; drops padded rows."""
    names, labels, preds, starts = [], [], [], []
    for batch in batches:
        mask = np.asarray(batch["mask"]).astype(bool)
        p = np.asarray(predict_fn(batch), dtype=np.float64)
        names += [_text(n) for n, m in zip(batch["filename"], mask) if m]
        labels.append(np.asarray(batch["ef"], np.float64)[mask])
        preds.append(p[mask])
        starts.append(np.asarray(batch["starts"])[mask])
    if not names:
        raise ValueError("the evaluation split produced no videos")
    if len(set(names)) != len(names):
        raise ValueError("a video was evaluated twice; the eval pipeline must visit each video once")
    return VideoPredictions(names, np.concatenate(labels), np.concatenate(preds), np.concatenate(starts))


def summarize(
    result: VideoPredictions, *, train_mean: float | None = None, n_resamples: int = 1000, seed: int = 0
) -> dict[str, float]:
    """MAE/RMSE/R2/Pearson with 95% bootstrap CIs; R2 x 100 as the paper prints it; mean-baseline MAE."""
    out = metrics_lib.summarize(result.labels, result.prediction, n_resamples=n_resamples, seed=seed)
    out["r2_x100"] = 100.0 * out["r2"]
    out["clips_per_video"] = int(result.clip_predictions.shape[1])
    if train_mean is not None:
        baseline = np.full_like(result.labels, train_mean)
        out["train_mean_ef"] = float(train_mean)
        out["mae_of_predicting_train_mean"] = metrics_lib.mae(result.labels, baseline)
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
