"""UMAP of embeddings coloured by EF: one model, or two runs side by side (the paper's Fig. 1).

    python -m coreecho_jax.analysis.umap_figure --runs=RUN_A,RUN_B --labels=CoReEcho,L1 --out=umap_pair.png

reads ``embeddings_<split>.npz`` (``--split``, default test) of each run workdir (written by
``--mode=embed``) and draws one panel per run. UMAP (umap-learn) is seeded (``random_state``): the
same embeddings give the same picture. Defaults: ``n_neighbors=15``, ``min_dist=0.1`` (umap-learn's
own), Euclidean; ``n_neighbors`` is clamped to ``N - 1`` for tiny sets (at least 2, so N >= 3 videos).
Matplotlib draws with the Agg backend (no display needed).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib
import matplotlib.figure

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from coreecho_jax.analysis.embeddings import Embeddings
from coreecho_jax.errors import DataError

N_NEIGHBORS = 15
MIN_DIST = 0.1
COLORBAR_LABEL = "EF (%)"


def umap_2d(
    embeddings: np.ndarray, *, n_neighbors: int = N_NEIGHBORS, min_dist: float = MIN_DIST, seed: int = 0
) -> np.ndarray:
    """``[N, D]`` -> ``[N, 2]`` UMAP coordinates (seeded; ``n_neighbors`` clamped to ``N - 1``)."""
    x = np.asarray(embeddings, np.float32)
    if x.ndim != 2 or x.shape[0] < 3:
        raise DataError(f"UMAP needs >= 3 embeddings [N, D], got shape {x.shape}")
    import umap  # slow to import (numba): only when a picture is asked for

    n = max(2, min(int(n_neighbors), x.shape[0] - 1))
    reducer = umap.UMAP(n_neighbors=n, min_dist=float(min_dist), random_state=int(seed), n_jobs=1)
    return np.asarray(reducer.fit_transform(x))


def _panel(ax, xy: np.ndarray, ef: np.ndarray, title: str, vmin: float, vmax: float):
    points = ax.scatter(xy[:, 0], xy[:, 1], c=ef, cmap="viridis", s=8, vmin=vmin, vmax=vmax)
    ax.set_title(title)
    ax.set_xlabel("UMAP 1")
    ax.set_ylabel("UMAP 2")
    return points


def umap_figure(
    panels: Sequence[tuple[np.ndarray, np.ndarray, str]], *, seed: int = 0, **umap_kwargs
) -> matplotlib.figure.Figure:
    """A figure with a UMAP panel per ``(embeddings [N, D], EF [N] %, title)``, one shared EF colour bar."""
    if not panels:
        raise DataError("no embeddings to draw")
    efs = np.concatenate([np.asarray(ef, np.float64) for _, ef, _ in panels])
    vmin, vmax = float(efs.min()), float(efs.max())
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels) + 1, 4.5), squeeze=False)
    points = None
    for ax, (embeddings, ef, title) in zip(axes[0], panels):
        points = _panel(ax, umap_2d(embeddings, seed=seed, **umap_kwargs), ef, title, vmin, vmax)
    fig.colorbar(points, ax=list(axes[0]), label=COLORBAR_LABEL)
    return fig


def plot_umaps(panels: Sequence[tuple[np.ndarray, np.ndarray, str]], out: str | Path, **kwargs) -> Path:
    """:func:`umap_figure` saved as a PNG (120 dpi)."""
    fig = umap_figure(panels, **kwargs)
    out = Path(out)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def plot_umap(embeddings: np.ndarray, ef: np.ndarray, out: str | Path, *, title: str = "", **kwargs) -> Path:
    """One model's UMAP coloured by EF."""
    return plot_umaps([(embeddings, ef, title)], out, **kwargs)


def plot_runs(
    runs: Sequence[str | Path],
    out: str | Path,
    *,
    labels: Sequence[str] | None = None,
    split: str = "test",
    **kwargs,
) -> Path:
    """Runs side by side from their ``embeddings_<split>.npz`` (``labels`` default: the folder names)."""
    labels = list(labels) if labels else [Path(r).name for r in runs]
    if len(labels) != len(runs):
        raise DataError(f"{len(runs)} runs but {len(labels)} labels")
    panels = []
    for run, label in zip(runs, labels):
        path = Path(run) / f"embeddings_{split}.npz"
        if not path.exists():
            raise DataError(f"{path}: missing; run --mode=embed --workdir={run} first")
        e = Embeddings.load(path)
        panels.append((e.embedding, e.videos.labels, label))
    return plot_umaps(panels, out, **kwargs)


def main(argv: Sequence[str] | None = None) -> None:
    import argparse

    from coreecho_jax.errors import CoreEchoError

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--runs", required=True, help="comma list of run workdirs with embeddings_<split>.npz"
    )
    parser.add_argument("--labels", default="", help="comma list of panel titles (default: folder names)")
    parser.add_argument("--out", required=True, help="the PNG to write")
    parser.add_argument("--split", default="test")
    parser.add_argument("--n_neighbors", type=int, default=N_NEIGHBORS)
    parser.add_argument("--min_dist", type=float, default=MIN_DIST)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        out = plot_runs(
            args.runs.split(","),
            args.out,
            labels=[x for x in args.labels.split(",") if x] or None,
            split=args.split,
            seed=args.seed,
            n_neighbors=args.n_neighbors,
            min_dist=args.min_dist,
        )
    except CoreEchoError as e:
        raise SystemExit(f"error: {e}") from None
    print(out)


if __name__ == "__main__":
    main()
