"""UMAP pictures: one model and two runs side by side, non-blank, with the EF colour bar."""

import matplotlib.image
import numpy as np
import pytest

from coreecho_jax.analysis import umap_figure
from coreecho_jax.analysis.embeddings import Embeddings
from coreecho_jax.errors import DataError
from coreecho_jax.evaluation.multiclip import VideoPredictions


def _embeddings(n: int, seed: int) -> Embeddings:
    rng = np.random.default_rng(seed)
    ef = rng.uniform(15.0, 75.0, n)
    clip_embeddings = (ef[:, None, None] * np.ones((1, 2, 8)) + rng.normal(size=(n, 2, 8))).astype(np.float32)
    videos = VideoPredictions(
        [f"v{i:02d}" for i in range(n)], ef, ef[:, None] + np.zeros((1, 2)), np.zeros((n, 2), np.int64)
    )
    return Embeddings(videos, clip_embeddings, "test", "constructed")


def _assert_picture(path, min_width: int) -> None:
    image = matplotlib.image.imread(path)
    assert image.shape[1] >= min_width and image.shape[0] >= 400
    assert image[..., :3].std() > 0.05  # not blank


@pytest.mark.slow  # umap-learn compiles with numba on first use: ~60 s on a busy machine
def test_umap_pictures_of_one_model_and_of_two_runs_side_by_side(tmp_path):
    e = _embeddings(40, seed=0)
    fig = umap_figure.umap_figure([(e.embedding, e.videos.labels, "CoReEcho")])
    panel, colorbar = fig.axes
    assert colorbar.get_ylabel() == "EF (%)"
    assert (panel.get_xlabel(), panel.get_ylabel(), panel.get_title()) == ("UMAP 1", "UMAP 2", "CoReEcho")
    xy = panel.collections[0].get_offsets()
    assert xy.shape == (40, 2) and np.ptp(xy, axis=0).min() > 0  # 40 points spread in 2-D
    # seeded: the same embeddings give the same map
    again = umap_figure.umap_figure([(e.embedding, e.videos.labels, "CoReEcho")])
    np.testing.assert_allclose(again.axes[0].collections[0].get_offsets(), xy)

    _assert_picture(umap_figure.plot_umap(e.embedding, e.videos.labels, tmp_path / "one.png"), 500)

    for name, seed in (("a", 1), ("b", 2)):
        (tmp_path / name).mkdir()
        _embeddings(4, seed).save(tmp_path / name / "embeddings_test.npz")  # tiny: n_neighbors clamped
    umap_figure.main(
        [
            "--runs",
            f"{tmp_path / 'a'},{tmp_path / 'b'}",
            "--labels=CoReEcho,L1",
            f"--out={tmp_path / 'pair.png'}",
        ]
    )
    _assert_picture(tmp_path / "pair.png", 1000)


def test_missing_embeddings_and_too_few_points_are_clear_errors(tmp_path):
    with pytest.raises(DataError, match="embeddings_test.npz: missing; run --mode=embed"):
        umap_figure.plot_runs([tmp_path], tmp_path / "x.png")
    with pytest.raises(DataError, match="UMAP needs >= 3 embeddings"):
        umap_figure.umap_2d(np.zeros((2, 4)))
