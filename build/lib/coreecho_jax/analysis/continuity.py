"""How continuous an embedding is in EF: three numbers, each defined below (numpy/scipy only).

Embeddings are ``[N, D]`` (one row per video, e.g. the mean over its clips), EF ``[N]`` in %.
Distances are Euclidean on the raw embeddings.

* :func:`distance_spearman`: Spearman correlation between the pairwise embedding distances and the
  pairwise |EF differences| over all ``N (N - 1) / 2`` pairs of a set. 1: the farther two videos lie,
  the more their EF differs (monotonically); ~0: distances say nothing about EF.
* :func:`knn_mae`: kNN regression of EF: each query's EF predicted as the plain mean EF of its ``k``
  nearest index embeddings (train as the index, test as the queries); its MAE (EF points), beside the
  MAE of predicting the index's mean EF for every query (the scale: a useless embedding scores about that).
* :func:`local_ordering`: for each video of a set, the fraction of its ``k`` nearest neighbours in
  the same set (itself excluded) whose |EF difference| to it is below the median |EF difference| over
  all pairs of the set; averaged over videos. 1: every neighbour is EF-close; 0.5 is chance (half of
  all pairs lie below the median by definition), below 0.5: neighbours are EF-far.
"""

from __future__ import annotations

import numpy as np
from scipy import spatial, stats

from coreecho_jax.errors import DataError

#: Default neighbours of :func:`knn_mae` and :func:`local_ordering`.
DEFAULT_K = 5


def _check(embeddings: np.ndarray, ef: np.ndarray, what: str) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(embeddings, np.float64)
    y = np.asarray(ef, np.float64)
    if x.ndim != 2 or y.shape != (x.shape[0],):
        raise DataError(f"{what}: expected embeddings [N, D] and EF [N], got {x.shape} and {y.shape}")
    return x, y


def _neighbours(index: np.ndarray, queries: np.ndarray, k: int, exclude_self: bool) -> np.ndarray:
    """``[Q, k]`` positions in ``index`` of each query's ``k`` nearest (Euclidean; ties by position)."""
    d = spatial.distance.cdist(queries, index)
    if exclude_self:
        np.fill_diagonal(d, np.inf)
    return np.argsort(d, axis=1, kind="stable")[:, :k]


def distance_spearman(embeddings: np.ndarray, ef: np.ndarray) -> float:
    """Spearman rho of pairwise embedding distances vs pairwise |EF differences| (NaN for < 3 videos)."""
    x, y = _check(embeddings, ef, "distance_spearman")
    if len(y) < 3:
        return float("nan")
    rho = stats.spearmanr(spatial.distance.pdist(x), spatial.distance.pdist(y[:, None], "cityblock"))
    return float(rho.statistic)


def knn_mae(
    index_embeddings: np.ndarray,
    index_ef: np.ndarray,
    query_embeddings: np.ndarray,
    query_ef: np.ndarray,
    k: int = DEFAULT_K,
) -> dict[str, float | int]:
    """kNN-regression MAE of the queries' EF (EF points) and the MAE of predicting the index mean.

    ``k`` is clamped to the index size (reported as ``knn_k``).
    """
    xi, yi = _check(index_embeddings, index_ef, "knn_mae index")
    xq, yq = _check(query_embeddings, query_ef, "knn_mae queries")
    if len(yi) == 0 or len(yq) == 0:
        raise DataError(f"knn_mae: an empty set ({len(yi)} index, {len(yq)} query embeddings)")
    k = max(1, min(int(k), len(yi)))
    predicted = yi[_neighbours(xi, xq, k, exclude_self=False)].mean(axis=1)
    return {
        "knn_k": k,
        "knn_mae": float(np.abs(predicted - yq).mean()),
        "knn_mae_of_predicting_index_mean": float(np.abs(yi.mean() - yq).mean()),
    }


def ordering_k(n: int, k: int = DEFAULT_K) -> int:
    """The neighbours :func:`local_ordering` uses in a set of ``n`` videos: ``k`` clamped to ``n - 1``
    (0 below 3 videos, where it is NaN)."""
    return 0 if n < 3 else max(1, min(int(k), n - 1))


def local_ordering(embeddings: np.ndarray, ef: np.ndarray, k: int = DEFAULT_K) -> float:
    """Mean fraction of each video's ``k`` nearest neighbours (same set) that are EF-closer than the
    median pairwise |EF difference|; 0.5 is chance. ``k`` is clamped (:func:`ordering_k`); NaN for < 3
    videos."""
    x, y = _check(embeddings, ef, "local_ordering")
    k = ordering_k(len(y), k)
    if k == 0:
        return float("nan")
    median = np.median(spatial.distance.pdist(y[:, None], "cityblock"))
    near = _neighbours(x, x, k, exclude_self=True)
    return float((np.abs(y[near] - y[:, None]) < median).mean())


def analyse(
    test_embeddings: np.ndarray,
    test_ef: np.ndarray,
    train_embeddings: np.ndarray | None = None,
    train_ef: np.ndarray | None = None,
    k: int = DEFAULT_K,
) -> dict[str, float | int]:
    """All three numbers of the test set (kNN MAE only with the train set as its index).

    ``local_ordering_k`` and ``knn_k`` are the neighbours each number used (``k`` after clamping).
    """
    out: dict[str, float | int] = {
        "n_test": int(len(test_ef)),
        "distance_spearman": distance_spearman(test_embeddings, test_ef),
        "local_ordering_k": ordering_k(len(test_ef), k),
        "local_ordering": local_ordering(test_embeddings, test_ef, k),
    }
    if train_embeddings is not None and train_ef is not None:
        out["n_train"] = int(len(train_ef))
        out.update(knn_mae(train_embeddings, train_ef, test_embeddings, test_ef, k))
    return out
