"""One split's embeddings and predictions, and their file ``embeddings_<split>.npz`` (:data:`NPZ_KEYS`).

``coreecho embed`` (:mod:`coreecho_jax.analysis.embed`) writes these files into a run workdir;
:func:`cached_train` reads the training split's back for the shift score of ``predict`` and the analyses.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
from absl import logging

from coreecho_jax.errors import DataError
from coreecho_jax.evaluation import multiclip

#: Keys of ``embeddings_<split>.npz`` (N videos in file-name order, K clips, D embedding width).
NPZ_KEYS = {
    "filenames": "[N] str, video file names",
    "ef": "[N] float64, true EF (%)",
    "prediction": "[N] float64, predicted EF (%), mean over the K clips",
    "clip_predictions": "[N, K] float64, predicted EF (%) of each clip",
    "starts": "[N, K] int64, first frame of each clip",
    "clip_embeddings": "[N, K, D] float32, encoder embedding of each clip",
    "embedding": "[N, D] float32, mean of the K clip embeddings",
    "split": "[] str, the split",
    "checkpoint": "[] str, where the model came from",
}


@dataclasses.dataclass
class Embeddings:
    """One split's videos: predictions (``VideoPredictions``), clip embeddings ``[N, K, D]``, origin."""

    videos: multiclip.VideoPredictions
    clip_embeddings: np.ndarray
    split: str
    checkpoint: str = ""

    @property
    def embedding(self) -> np.ndarray:
        """``[N, D]`` mean over the K clips."""
        return self.clip_embeddings.mean(axis=1)

    def arrays(self) -> dict[str, np.ndarray]:
        """The :data:`NPZ_KEYS` arrays."""
        v = self.videos
        return {
            "filenames": np.array(v.filenames, dtype=str),
            "ef": v.labels,
            "prediction": v.prediction,
            "clip_predictions": v.clip_predictions,
            "starts": v.starts,
            "clip_embeddings": self.clip_embeddings.astype(np.float32),
            "embedding": self.embedding.astype(np.float32),
            "split": np.array(self.split),
            "checkpoint": np.array(self.checkpoint),
        }

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        np.savez(path, **self.arrays())
        return path

    @classmethod
    def load(cls, path: str | Path) -> Embeddings:
        """Reads an ``embeddings_<split>.npz``; DataError naming the file when a key is missing."""
        with np.load(path, allow_pickle=False) as z:
            missing = sorted(set(NPZ_KEYS) - set(z.files))
            if missing:
                raise DataError(f"{path}: not an embeddings file, missing keys {missing}")
            videos = multiclip.VideoPredictions(
                [str(n) for n in z["filenames"]], z["ef"], z["clip_predictions"], z["starts"]
            )
            return cls(videos, z["clip_embeddings"], str(z["split"]), str(z["checkpoint"]))


def cached_train(workdir: str | Path, origin: str) -> Embeddings | None:
    """``embeddings_train.npz`` of ``workdir`` when it holds the embeddings of checkpoint ``origin``
    (the origin ``coreecho embed`` recorded); None when there is no such file, or a warning and None when
    it holds another checkpoint's."""
    path = Path(workdir) / "embeddings_train.npz"
    if not path.exists():
        return None
    cached = Embeddings.load(path)
    if cached.checkpoint != origin:
        logging.warning("%s holds embeddings of %s, not %s: not used", path, cached.checkpoint, origin)
        return None
    return cached
