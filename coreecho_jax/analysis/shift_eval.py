"""How well the shift score (:mod:`coreecho_jax.inference.shift`) flags synthetic shifts the model never saw.

    coreecho shift --config=demo --workdir=RUN [--checkpoint=...]

Embeds the training split (or reuses ``embeddings_train.npz`` of the same checkpoint in the workdir,
as ``coreecho embed --splits=train`` leaves it), the test split as it is and the test split under each
shift of :data:`shift.SHIFTS`, at the test protocol's clip starts. Per shift, in ``shift_eval.json``:

* ``auroc``: AUROC (:func:`metrics.auroc`) of the shift distance separating the shifted test videos
  (positives) from the same videos unshifted (negatives); 0.5 = no better than chance.
* ``spearman_abs_error``: Spearman rho of |EF error| against the shift distance over the unshifted and
  shifted videos together (does the error grow with the score?); ``mae`` / ``mae_clean``: MAE (EF
  points) of the shifted and unshifted videos; ``median_percentile``: median calibrated score.

A heuristic: synthetic shifts are stand-ins for real ones (another scanner, view or frame rate).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import jax
import ml_collections
import numpy as np
from scipy import stats

from coreecho_jax.analysis import embed as embed_lib
from coreecho_jax.analysis import shift
from coreecho_jax.errors import ConfigError
from coreecho_jax.evaluation import metrics
from coreecho_jax.evaluation.results import write_json
from coreecho_jax.inference.embeddings import Embeddings, cached_train
from coreecho_jax.inference.runs import load_run
from coreecho_jax.inference.shift import DEFAULT_K, ShiftIndex
from coreecho_jax.train.loop import Trainer


def _abs_error(e: Embeddings) -> np.ndarray:
    return np.abs(e.videos.prediction - e.videos.labels)


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    if len(a) < 3 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    return float(stats.spearmanr(a, b).statistic)


def shift_report(index: ShiftIndex, clean: Embeddings, shifted: Mapping[str, Embeddings]) -> dict:
    """The numbers of the module docstring for each shifted copy of ``clean`` (same videos)."""
    clean_distance = index.distance(clean.embedding)
    clean_error = _abs_error(clean)
    out: dict = {
        "clean": {
            "n": len(clean.videos),
            "mae": float(clean_error.mean()),
            "median_percentile": float(np.median(index.percentile(clean_distance))),
            "spearman_abs_error": _spearman(clean_error, clean_distance),
        }
    }
    for name, e in shifted.items():
        if e.videos.filenames != clean.videos.filenames:
            raise ValueError(f"shift {name}: not the same videos as the unshifted set")
        distance = index.distance(e.embedding)
        error = _abs_error(e)
        out[name] = {
            "auroc": metrics.auroc(
                np.r_[np.zeros(len(clean_distance)), np.ones(len(distance))], np.r_[clean_distance, distance]
            ),
            "spearman_abs_error": _spearman(np.r_[clean_error, error], np.r_[clean_distance, distance]),
            "mae": float(error.mean()),
            "mae_clean": float(clean_error.mean()),
            "median_percentile": float(np.median(index.percentile(distance))),
        }
    return out


def run_shift_eval(
    config: ml_collections.ConfigDict,
    workdir: str | Path,
    checkpoint: str | None = None,
    *,
    shifts: Sequence[str] | None = None,
    k: int = DEFAULT_K,
) -> dict:
    """Embeds train (unless cached), test and each shifted test; writes ``shift_eval.json``."""
    names = list(shifts) if shifts else list(shift.SHIFTS)
    unknown = [s for s in names if s not in shift.SHIFTS]
    if unknown:
        raise ConfigError(f"--shifts: unknown {unknown}; expected some of {', '.join(shift.SHIFTS)}")
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    source = Path(checkpoint or workdir).resolve()  # the origin embed mode records
    trained = load_run(config, source)
    origin = trained.origin
    trainer = Trainer(trained.config, workdir, model=trained.model, write_metrics=False, stages=())
    first = jax.process_index() == 0
    train = cached_train(workdir, origin)
    if train is None:
        train = embed_lib.embed_split(trainer, "train")
        train.checkpoint = origin
        if first:
            train.save(workdir / "embeddings_train.npz")
    index = ShiftIndex(train.embedding, k)
    clean = embed_lib.embed_split(trainer, "test")
    shifted = {
        name: embed_lib.embed_split(trainer, "test", shift.SHIFTS[name], f"embed test, {name}")
        for name in names
    }
    result = {
        "checkpoint": origin,
        "k": index.k,
        "n_train": len(train.videos),
        **shift_report(index, clean, shifted),
    }
    if first:
        write_json(result, workdir / "shift_eval.json")
    return result
