"""UMAP of embeddings coloured by EF as the official code draws it: the paper's Fig. 1, test and train.

    coreecho umap --runs=RUN_A,RUN_B --labels=CoReEcho,L1 --out=umap_pair.png

reads ``embeddings_<split>.npz`` of each run workdir (written by ``coreecho embed --splits=train,test``)
and draws one row per split of ``--splits`` (default ``test,train``: the paper's figure, test on top)
and one column per run, with one EF colour bar per row. Each panel is its own UMAP fit, as the
official ``train_first_stage.py`` fits one per split.

The defaults are the official ones (``coreecho/viz.py`` ``HelperUMAP`` called from
``train_first_stage.py`` on the best checkpoint):

* ``UMAP(n_components=2, n_neighbors=5, init='random', random_state=0)``; umap-learn's own
  ``min_dist=0.1`` and Euclidean metric. ``n_neighbors`` is clamped to ``N - 1`` for tiny sets.
* one embedding per video, one clip's (``embedding="best_pass"``, :func:`best_pass`). The official
  ``validate(loader, model, regressor, n_clips_per_sample)`` runs ``n_clips_per_sample`` passes over
  the split, each pass one random clip per video, and returns the embeddings of the pass whose
  one-clip predictions have the highest R2 (``if r2 >= best_r2``: a tie goes to the later pass).
  The figure's test and validation sets ran with ``--val_n_clips_per_sample 3`` (the README's
  command), the training set with the default 1 (:data:`OFFICIAL_PASSES`). We mirror it on the clips
  the embeddings file holds: pass ``k`` is clip ``k`` of every video (the test protocol's starts for
  test, starts drawn from ``eval.seed`` for train and val), and the pass kept is the one with the
  highest R2 of ``clip_predictions[:, k]`` among the first 3 (test, val) or 1 (train) clips. The
  official passes draw fresh random starts; ours reuse the stored ones, so the pictures are reproducible.
* ``seaborn.cubehelix_palette(as_cmap=True, rot=-0.2)`` colours (:func:`official_cmap`, rebuilt here
  without seaborn), points of size 20, no ticks, a colour bar. The paper's printed Fig. 1 has other
  colours (lavender to dark green; its colour bar is closest to cubehelix start ~2.3, rot ~0.2): we
  follow the code.

Our earlier settings stay as options: ``--n_neighbors=15 --init=spectral --embedding=mean
--cmap=viridis`` (the mean of the K clip embeddings, the embedding ``analysis.json`` measures).
Matplotlib draws on its own Agg canvas (no pyplot, no display; :mod:`.figures`).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import matplotlib
import numpy as np
from absl import logging
from matplotlib.figure import Figure

from coreecho_jax import logs
from coreecho_jax.analysis import figures
from coreecho_jax.errors import ConfigError, DataError
from coreecho_jax.evaluation import metrics
from coreecho_jax.inference.embeddings import Embeddings

N_NEIGHBORS = 5  # official
INIT = "random"  # official
MIN_DIST = 0.1  # umap-learn's default, which the official call keeps
SEED = 0  # official random_state
INITS = ("random", "spectral", "pca")
EMBEDDINGS = ("best_pass", "mean")
OFFICIAL_CMAP = "seaborn_cubehelix"  # the name seaborn gives the colour map
POINT_SIZE = 20  # official
COLORBAR_LABEL = "EF (%)"
SPLITS = ("test", "train")  # the paper's rows, test on top
#: Validation passes the official figure chose among: 3 for test and val (``--val_n_clips_per_sample 3``),
#: 1 for train (``validate(train_no_aug_loader, model, regressor)``).
OFFICIAL_PASSES = {"train": 1, "val": 3, "test": 3}

Panel = tuple[np.ndarray, np.ndarray, str]
"""``(embeddings [N, D], EF [N] %, title)``: one UMAP panel."""


# ----------------------------------------------------------------------------------------- the map
def umap_2d(
    embeddings: np.ndarray,
    *,
    n_neighbors: int = N_NEIGHBORS,
    min_dist: float = MIN_DIST,
    init: str = INIT,
    seed: int = SEED,
) -> np.ndarray:
    """``[N, D]`` -> ``[N, 2]`` UMAP coordinates (seeded; ``n_neighbors`` clamped to ``N - 1``)."""
    x = np.asarray(embeddings, np.float32)
    if x.ndim != 2 or x.shape[0] < 3:
        raise DataError(f"UMAP needs >= 3 embeddings [N, D], got shape {x.shape}")
    if init not in INITS:
        raise ConfigError(f"--init={init}: expected one of {', '.join(INITS)}")
    import umap  # slow to import (numba): only when a picture is asked for

    n = max(2, min(int(n_neighbors), x.shape[0] - 1))
    reducer = umap.UMAP(
        n_components=2, n_neighbors=n, min_dist=float(min_dist), init=init, random_state=int(seed), n_jobs=1
    )
    return np.asarray(reducer.fit_transform(x))


# ------------------------------------------------------------------------- one embedding per video
def best_pass(e: Embeddings, passes: int | None = None) -> tuple[int, float, int]:
    """``(k, R2, n)``: the clip ``k`` of the first ``n`` whose one-clip predictions have the highest R2.

    The official ``validate`` pass selection (``r2 >= best_r2``: a tie goes to the later pass; a NaN
    R2, of constant labels, never wins, so all-NaN keeps the last). ``passes`` defaults to
    :data:`OFFICIAL_PASSES` of ``e.split``; a file with fewer clips per video offers ``n`` < ``passes``
    (a warning says so).
    """
    stored = e.clip_embeddings.shape[1]
    wanted = OFFICIAL_PASSES.get(e.split, 1) if passes is None else int(passes)
    if wanted < 1:
        raise ConfigError(f"passes = {wanted}: must be >= 1")
    n = min(wanted, stored)
    if n < wanted:
        logging.warning(
            "%s embeddings hold %d clip(s) per video: the best of %d passes, not %d", e.split, n, n, wanted
        )
    best, best_r2 = n - 1, -np.inf
    for k in range(n):
        r2 = metrics.r2(e.videos.labels, e.videos.clip_predictions[:, k])
        if r2 >= best_r2:  # False for NaN
            best, best_r2 = k, r2
    return best, float(best_r2) if np.isfinite(best_r2) else float("nan"), n


def video_embeddings(e: Embeddings, how: str = "best_pass") -> tuple[np.ndarray, str]:
    """``[N, D]`` one embedding per video (``best_pass``: one clip's, :func:`best_pass`; ``mean``: the
    mean over the K clips) and a line saying which."""
    if how == "mean":
        return e.embedding, f"mean of {e.clip_embeddings.shape[1]} clip embeddings per video"
    if how != "best_pass":
        raise ConfigError(f"--embedding={how}: expected one of {', '.join(EMBEDDINGS)}")
    k, r2, n = best_pass(e)
    return e.clip_embeddings[
        :, k
    ], f"clip {k} of every video (the best one-clip R2 of {n} pass(es): {r2:.3f})"


# ------------------------------------------------------------------------------------------ colours
def official_cmap() -> matplotlib.colors.Colormap:
    """``seaborn.cubehelix_palette(as_cmap=True, rot=-0.2)`` (``coreecho/viz.py``) without seaborn.

    seaborn's construction: the cubehelix of start 0, rot -0.2, gamma 1, hue 0.8 sampled from light
    0.85 to dark 0.15 in 256 colours (light = low EF).
    """
    start, rot, gamma, hue, light, dark = 0.0, -0.2, 1.0, 0.8, 0.85, 0.15

    def channel(p0: float, p1: float) -> Callable[[np.ndarray], np.ndarray]:
        def color(x: np.ndarray) -> np.ndarray:
            xg = x**gamma
            a = hue * xg * (1 - xg) / 2
            phi = 2 * np.pi * (start / 3 + rot * x)
            return xg + a * (p0 * np.cos(phi) + p1 * np.sin(phi))

        return color

    cdict = {
        "red": channel(-0.14861, 1.78277),
        "green": channel(-0.29227, -0.90649),
        "blue": channel(1.97294, 0.0),
    }
    helix = matplotlib.colors.LinearSegmentedColormap("cubehelix", cdict)
    return matplotlib.colors.ListedColormap(helix(np.linspace(light, dark, 256)), OFFICIAL_CMAP)


def colormap(name: str) -> matplotlib.colors.Colormap:
    """:data:`OFFICIAL_CMAP` (the default) or a matplotlib colour map by name; ConfigError otherwise."""
    if name == OFFICIAL_CMAP:
        return official_cmap()
    if name not in matplotlib.colormaps:
        raise ConfigError(
            f"--cmap={name}: expected {OFFICIAL_CMAP} or a matplotlib colour map (e.g. viridis)"
        )
    return matplotlib.colormaps[name]


# ------------------------------------------------------------------------------------------ figures
def umap_figure(
    rows: Sequence[Sequence[Panel]],
    *,
    row_labels: Sequence[str] = (),
    cmap: str = OFFICIAL_CMAP,
    **umap_kwargs,
) -> Figure:
    """A grid of UMAP panels, ``rows[r][c]`` = ``(embeddings [N, D], EF [N] %, title)``, one EF colour
    bar per row (its range: the row's EF), ``row_labels[r]`` left of each row. ``umap_kwargs`` go to
    :func:`umap_2d`. A progress bar counts the fitted panels."""
    if not rows or not all(rows):
        raise DataError("no embeddings to draw")
    colours = colormap(cmap)
    n_cols = max(len(row) for row in rows)
    fig = figures.agg_figure(4.2 * n_cols + 1.2, 3.8 * len(rows), dpi=120, layout="constrained")
    axes = fig.subplots(len(rows), n_cols, squeeze=False)
    if "umap" not in sys.modules:
        logs.say("UMAP: the first fit in a process compiles umap-learn's code (numba): a minute or more")
    with logs.progress(desc="UMAP", total=sum(len(row) for row in rows), unit="panel") as bar:
        fitted = [[(_fitted(x, bar, umap_kwargs), ef, title) for x, ef, title in row] for row in rows]
    for r, row in enumerate(fitted):
        _draw_row(fig, axes[r], row, row_labels[r] if r < len(row_labels) else None, colours)
    return fig


def _fitted(embeddings: np.ndarray, bar, umap_kwargs: dict) -> np.ndarray:
    """:func:`umap_2d` of one panel, counted on the progress ``bar``."""
    xy = umap_2d(embeddings, **umap_kwargs)
    bar.update(1)
    return xy


def _draw_row(fig: Figure, axes: np.ndarray, row: Sequence[Panel], label: str | None, colours) -> None:
    """One row of :func:`umap_figure` into ``axes`` (the row's): its panels ``(xy [N, 2], EF [N], title)``,
    the row label and the row's colour bar (over the row's EF)."""
    efs = np.concatenate([np.asarray(ef, np.float64) for _, ef, _ in row])
    points = None
    for ax, (xy, ef, title) in zip(axes, row):
        points = ax.scatter(
            xy[:, 0], xy[:, 1], c=ef, s=POINT_SIZE, cmap=colours, vmin=efs.min(), vmax=efs.max()
        )
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(title)
    for ax in axes[len(row) :]:
        ax.set_axis_off()
    if label is not None:
        axes[0].set_ylabel(label.capitalize(), fontsize="large")
    fig.colorbar(points, ax=list(axes), label=COLORBAR_LABEL)


def plot_umaps(rows: Sequence[Sequence[Panel]], out: str | Path, **kwargs) -> Path:
    """:func:`umap_figure` saved as a PNG."""
    return figures.save_png(umap_figure(rows, **kwargs), out)


def plot_embeddings(e: Embeddings, out: str | Path, *, title: str = "", embedding: str = "best_pass") -> Path:
    """One split's UMAP (``coreecho embed``'s ``umap_<split>.png``) with the defaults above."""
    x, _ = video_embeddings(e, embedding)
    return plot_umaps([[(x, e.videos.labels, title)]], out, row_labels=[e.split])


def plot_runs(
    runs: Sequence[str | Path],
    out: str | Path,
    *,
    labels: Sequence[str] | None = None,
    splits: Sequence[str] = SPLITS,
    embedding: str = "best_pass",
    say: Callable[[str], None] = logs.say,
    **kwargs,
) -> Path:
    """One row per split, one column per run, from the runs' ``embeddings_<split>.npz``.

    ``labels`` (default: the folder names) title the top row; ``say`` gets one line per panel naming
    the embedding drawn. ``kwargs`` go to :func:`umap_figure`.
    """
    labels = list(labels) if labels else [Path(r).name for r in runs]
    if len(labels) != len(runs):
        raise DataError(f"{len(runs)} runs but {len(labels)} labels")
    unknown = [s for s in splits if s not in OFFICIAL_PASSES]
    if not splits or unknown:
        raise ConfigError(
            f"--splits={','.join(splits)}: expected a comma list of {', '.join(OFFICIAL_PASSES)}"
        )
    rows = []
    for r, split in enumerate(splits):
        row = []
        for run, label in zip(runs, labels):
            path = Path(run) / f"embeddings_{split}.npz"
            if not path.exists():
                raise DataError(
                    f"{path}: missing; run coreecho embed --workdir={run} --splits={split} first "
                    f"(or leave {split} out of --splits)"
                )
            e = Embeddings.load(path)
            x, note = video_embeddings(e, embedding)
            say(f"{run} {split}: {len(x)} videos, {note}")
            row.append((x, e.videos.labels, label if r == 0 else ""))
        rows.append(row)
    return plot_umaps(rows, out, row_labels=list(splits), **kwargs)
