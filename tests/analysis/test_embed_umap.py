"""UMAP pictures as the official code draws them: its UMAP call, one clip per video (the best of the
validation passes), seaborn's cubehelix colours; test and train rows, runs side by side.

The fast tests replace umap-learn by a recorder (the first two embedding dimensions as the map), so
they check what is passed and drawn without numba; one slow test runs the real UMAP.
"""

import re
import sys
import types

import matplotlib.image
import numpy as np
import pytest

from coreecho_jax import cli
from coreecho_jax.analysis import umap_figure
from coreecho_jax.errors import ConfigError, DataError
from coreecho_jax.evaluation.multiclip import VideoPredictions
from coreecho_jax.inference.embeddings import Embeddings

#: seaborn 0.13.2 ``cubehelix_palette(as_cmap=True, rot=-0.2)`` at 0, 0.25, 0.5, 0.75, 1 (RGB).
SEABORN_CUBEHELIX = [
    [0.76805788, 0.88417562, 0.89908506],
    [0.54849941, 0.71720561, 0.78916919],
    [0.38156382, 0.52745265, 0.65793621],
    [0.24847533, 0.32922087, 0.47987035],
    [0.12477747, 0.14301385, 0.24734758],
]


def _embeddings(n: int, seed: int, split: str = "test", errors=(0.0, 0.0)) -> Embeddings:
    """``n`` videos, ``len(errors)`` clips each; clip k predicts EF with noise of SD ``errors[k]`` and
    its embedding is ``[EF, k, noise...]`` (the clip index readable in dimension 1)."""
    rng = np.random.default_rng(seed)
    ef = rng.uniform(15.0, 75.0, n)
    k = len(errors)
    clip_predictions = ef[:, None] + rng.normal(size=(n, k)) * np.asarray(errors)[None, :]
    clip_embeddings = np.concatenate(
        [
            np.broadcast_to(ef[:, None, None], (n, k, 1)),
            np.broadcast_to(np.arange(k, dtype=float)[None, :, None], (n, k, 1)),
            rng.normal(size=(n, k, 6)),
        ],
        axis=2,
    ).astype(np.float32)
    videos = VideoPredictions(
        [f"v{i:02d}" for i in range(n)], ef, clip_predictions, np.zeros((n, k), np.int64)
    )
    return Embeddings(videos, clip_embeddings, split, "constructed")


class _RecordingUMAP:
    """Stands in for ``umap.UMAP``: records its arguments; the map is the first two dimensions."""

    calls: list[dict] = []

    def __init__(self, **kwargs):
        _RecordingUMAP.calls.append(kwargs)

    def fit_transform(self, x):
        return np.asarray(x, np.float64)[:, :2]


@pytest.fixture
def recorded(monkeypatch):
    _RecordingUMAP.calls = []
    monkeypatch.setitem(sys.modules, "umap", types.SimpleNamespace(UMAP=_RecordingUMAP))
    return _RecordingUMAP.calls


# --------------------------------------------------------------------------------- the official call
def test_the_umap_call_is_the_official_one(recorded):
    x = np.random.default_rng(0).normal(size=(40, 8))
    umap_figure.umap_2d(x)
    # train_first_stage.py: UMAP(n_components=2, n_neighbors=5, init='random', random_state=0)
    assert recorded == [
        {
            "n_components": 2,
            "n_neighbors": 5,
            "min_dist": 0.1,
            "init": "random",
            "random_state": 0,
            "n_jobs": 1,
        }
    ]
    umap_figure.umap_2d(x[:4], n_neighbors=15, init="spectral", seed=3)  # the earlier settings, as options
    assert recorded[1] == {**recorded[0], "n_neighbors": 3, "init": "spectral", "random_state": 3}
    with pytest.raises(ConfigError, match="--init=tsne: expected one of random, spectral, pca"):
        umap_figure.umap_2d(x, init="tsne")


def test_one_clip_per_video_the_best_of_three_passes():
    # clip 1 predicts exactly: the highest R2; on test (3 passes) its embeddings are drawn
    e = _embeddings(30, seed=0, errors=(8.0, 0.0, 5.0))
    k, r2, n = umap_figure.best_pass(e)
    assert (k, r2, n) == (1, 1.0, 3)
    x, note = umap_figure.video_embeddings(e)
    np.testing.assert_array_equal(x, e.clip_embeddings[:, 1])
    assert note == "clip 1 of every video (the best one-clip R2 of 3 pass(es): 1.000)"
    # the training set ran one pass (validate's default): its first clip, however good the others
    train = _embeddings(30, seed=0, split="train", errors=(8.0, 0.0, 5.0))
    assert umap_figure.best_pass(train)[::2] == (0, 1)
    # a tie goes to the later pass (r2 >= best_r2)
    tied = _embeddings(30, seed=1, errors=(0.0, 3.0, 0.0))
    assert umap_figure.best_pass(tied)[:2] == (2, 1.0)
    # constant labels: R2 is NaN for every pass, the last pass is kept
    flat = _embeddings(5, seed=2, errors=(1.0, 1.0, 1.0))
    flat.videos.labels[:] = 50.0
    k, r2, n = umap_figure.best_pass(flat)
    assert k == 2 and np.isnan(r2)
    # fewer clips stored than passes: the best of those there are
    assert umap_figure.best_pass(_embeddings(30, seed=0, errors=(8.0, 0.0)))[::2] == (1, 2)
    mean, note = umap_figure.video_embeddings(e, "mean")
    np.testing.assert_allclose(mean, e.clip_embeddings.mean(axis=1))
    assert note == "mean of 3 clip embeddings per video"
    with pytest.raises(ConfigError, match="--embedding=median"):
        umap_figure.video_embeddings(e, "median")


def test_colours_are_seaborns_cubehelix_of_the_official_code():
    cmap = umap_figure.official_cmap()
    assert cmap.name == "seaborn_cubehelix" and cmap.N == 256
    np.testing.assert_allclose(cmap(np.linspace(0, 1, 5))[:, :3], SEABORN_CUBEHELIX, atol=1e-8)
    assert umap_figure.colormap("viridis").name == "viridis"
    with pytest.raises(ConfigError, match="--cmap=nope: expected seaborn_cubehelix or a matplotlib"):
        umap_figure.colormap("nope")


# ------------------------------------------------------------------------------------------ the figure
def _save_runs(tmp_path, names=("a", "b")):
    runs = []
    for i, name in enumerate(names):
        run = tmp_path / name
        run.mkdir()
        _embeddings(12, seed=i, errors=(6.0, 0.0, 6.0)).save(run / "embeddings_test.npz")
        _embeddings(20, seed=10 + i, split="train", errors=(0.0, 6.0, 6.0)).save(run / "embeddings_train.npz")
        runs.append(run)
    return runs


def test_test_and_train_rows_of_two_runs_as_the_paper_draws_them(tmp_path, recorded):
    runs = _save_runs(tmp_path)
    lines = []
    out = umap_figure.plot_runs(runs, tmp_path / "fig1.png", labels=["CoReEcho", "L1"], say=lines.append)
    assert lines == [
        f"{runs[0]} test: 12 videos, clip 1 of every video (the best one-clip R2 of 3 pass(es): 1.000)",
        f"{runs[1]} test: 12 videos, clip 1 of every video (the best one-clip R2 of 3 pass(es): 1.000)",
        f"{runs[0]} train: 20 videos, clip 0 of every video (the best one-clip R2 of 1 pass(es): 1.000)",
        f"{runs[1]} train: 20 videos, clip 0 of every video (the best one-clip R2 of 1 pass(es): 1.000)",
    ]
    assert len(recorded) == 4 and {c["n_neighbors"] for c in recorded} == {5}
    image = matplotlib.image.imread(out)
    assert image.shape[1] > image.shape[0] > 600 and image[..., :3].std() > 0.05

    fig = umap_figure.umap_figure(
        [
            [
                (np.eye(8)[:5] * 40, np.arange(5) + 20.0, "CoReEcho"),
                (np.eye(8)[:5], np.arange(5) + 30.0, "L1"),
            ],
            [(np.eye(8)[:4], np.arange(4) + 60.0, "")],
        ],
        row_labels=["test", "train"],
    )
    panels = [ax for ax in fig.axes if ax.collections and ax.get_label() != "<colorbar>"]
    colorbars = [ax for ax in fig.axes if ax.get_label() == "<colorbar>"]
    assert [ax.get_title() for ax in panels] == ["CoReEcho", "L1", ""]
    assert [ax.get_ylabel() for ax in panels] == ["Test", "", "Train"]
    for ax in panels:
        points = ax.collections[0]
        assert points.get_cmap().name == "seaborn_cubehelix" and set(points.get_sizes()) == {20}
        assert list(ax.get_xticks()) == [] and list(ax.get_yticks()) == []
    np.testing.assert_array_equal(panels[0].collections[0].get_offsets(), np.eye(8)[:5, :2] * 40)
    # one colour bar per row, over the row's EF
    assert [cb.get_ylabel() for cb in colorbars] == ["EF (%)", "EF (%)"]
    assert [panels[i].collections[0].get_clim() for i in (0, 1, 2)] == [
        (20.0, 34.0),
        (20.0, 34.0),
        (60.0, 63.0),
    ]


def test_the_command_defaults_and_options(tmp_path, recorded, capsys):
    runs = _save_runs(tmp_path)
    cli.main(["umap", f"--runs={runs[0]}", f"--out={tmp_path / 'one.png'}"])
    assert capsys.readouterr().out.splitlines()[-1] == str(tmp_path / "one.png")
    assert [c["init"] for c in recorded] == ["random", "random"]  # test, then train
    recorded.clear()
    argv = [f"--runs={runs[0]}", f"--out={tmp_path / 'old.png'}", "--splits=test", "--embedding=mean"]
    cli.main(["umap", *argv, "--n_neighbors=15", "--init=spectral", "--cmap=viridis"])
    assert [(c["n_neighbors"], c["init"]) for c in recorded] == [(11, "spectral")]  # 12 videos: clamped
    assert "mean of 3 clip embeddings per video" in capsys.readouterr().err  # the log
    capsys.readouterr()
    for splits, line in (
        ("test,tset", "error: --splits=test,tset: expected a comma list of train, val, test"),
        (
            "val",
            r"error: .*embeddings_val.npz: missing; run coreecho embed --workdir=.* --splits=val first .*",
        ),
    ):
        with pytest.raises(SystemExit) as info:
            cli.main(["umap", f"--runs={runs[0]}", f"--out={tmp_path / 'x.png'}", f"--splits={splits}"])
        assert info.value.code == 1
        assert re.fullmatch(line, capsys.readouterr().err.strip())


@pytest.mark.slow  # umap-learn compiles with numba on first use: ~60 s on a busy machine
def test_the_real_umap_is_seeded_and_draws_a_picture(tmp_path):
    e = _embeddings(40, seed=0, errors=(3.0, 0.0, 3.0))
    x, _ = umap_figure.video_embeddings(e)
    fig = umap_figure.umap_figure([[(x, e.videos.labels, "CoReEcho")]])
    xy = fig.axes[0].collections[0].get_offsets()
    assert xy.shape == (40, 2) and np.ptp(xy, axis=0).min() > 0  # 40 points spread in 2-D
    again = umap_figure.umap_figure([[(x, e.videos.labels, "CoReEcho")]])  # seeded: the same map
    np.testing.assert_allclose(again.axes[0].collections[0].get_offsets(), xy)
    path = umap_figure.plot_embeddings(e, tmp_path / "one.png")
    image = matplotlib.image.imread(path)
    assert image.shape[1] >= 500 and image[..., :3].std() > 0.05  # not blank


def test_missing_embeddings_and_too_few_points_are_clear_errors(tmp_path):
    with pytest.raises(DataError, match="embeddings_test.npz: missing; run coreecho embed"):
        umap_figure.plot_runs([tmp_path], tmp_path / "x.png")
    with pytest.raises(DataError, match="UMAP needs >= 3 embeddings"):
        umap_figure.umap_2d(np.zeros((2, 4)))
