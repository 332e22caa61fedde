"""--mode=embed: gathering processes (threads), the npz file, the head on embeddings, one end-to-end run."""

import csv
import json

import chex
import jax.numpy as jnp
import numpy as np
import pytest

from coreecho_jax import cli, predict
from coreecho_jax.analysis import embed
from coreecho_jax.checkpoints.manager import RunCheckpoints, model_state_dict
from coreecho_jax.data.echonet import inputs
from coreecho_jax.data.echonet_layout import avi_name
from coreecho_jax.errors import ConfigError, DataError
from coreecho_jax.evaluation import steps as eval_steps
from coreecho_jax.inference.embeddings import NPZ_KEYS, Embeddings
from coreecho_jax.inference.shift import ShiftIndex
from coreecho_jax.models.coreecho import build_model
from tests.conftest import quick_config, run_main
from tests.evaluation.test_evaluator import _batch, _clip_spread, _Processes

D = 4


def _embed_fn(batch):
    # clip k of a video embeds as (EF + k) * [1, 2, 3, 4]: each row tells which video and clip it is.
    ef = np.asarray(batch["ef"], np.float64)
    rows = (ef[:, None] + np.arange(3)[None, :])[..., None] * np.arange(1, D + 1)
    return _clip_spread(batch), rows.astype(np.float32)


def test_every_process_ends_with_every_video_and_its_own_embeddings_in_name_order():
    # Process 0 holds two videos (one non-ASCII name), process 1 one, process 2 only padding.
    shares = [
        [_batch(["zeta.avi", "ä-long-name-0123456789.avi"], [33.0, 61.0])],
        [_batch(["alpha.avi"], [47.0])],
        [_batch([], [])],
    ]
    out = _Processes(3).run(lambda i, g: embed.collect(_embed_fn, shares[i], "test", allgather=g))
    for result in out:
        assert not isinstance(result, Exception), result
        assert result.videos.filenames == ["alpha.avi", "zeta.avi", "ä-long-name-0123456789.avi"]
        np.testing.assert_array_equal(result.videos.labels, [47.0, 33.0, 61.0])
        chex.assert_shape(result.clip_embeddings, (3, 3, D))
        expected = (result.videos.labels[:, None] + np.arange(3))[..., None] * np.arange(1, D + 1)
        np.testing.assert_allclose(result.clip_embeddings, expected)
        np.testing.assert_allclose(
            result.embedding, (result.videos.labels + 1.0)[:, None] * np.arange(1, D + 1)
        )


def test_npz_keys_shapes_and_round_trip(tmp_path):
    [result] = _Processes(1).run(
        lambda i, g: embed.collect(_embed_fn, [_batch(["b.avi", "a.avi"], [40.0, 60.0])], "val", allgather=g)
    )
    result.checkpoint = "run/checkpoints/stage2"
    path = result.save(tmp_path / "embeddings_val.npz")
    with np.load(path, allow_pickle=False) as z:
        assert set(z.files) == set(NPZ_KEYS)
        chex.assert_shape([z["ef"], z["prediction"]], (2,))
        chex.assert_shape([z["clip_predictions"], z["starts"]], (2, 3))
        chex.assert_shape(z["clip_embeddings"], (2, 3, D))
        chex.assert_shape(z["embedding"], (2, D))
        assert z["filenames"].tolist() == ["a.avi", "b.avi"] and str(z["split"]) == "val"
    loaded = Embeddings.load(path)
    assert loaded.checkpoint == "run/checkpoints/stage2" and loaded.videos.filenames == ["a.avi", "b.avi"]
    np.testing.assert_allclose(loaded.videos.prediction, [60.0, 40.0])
    np.savez(tmp_path / "other.npz", ef=np.zeros(2))
    with pytest.raises(DataError, match="other.npz: not an embeddings file"):
        Embeddings.load(tmp_path / "other.npz")


def test_splits_flag():
    assert embed.parse_splits(None) == ["test"]
    assert embed.parse_splits("train, test,train") == ["train", "test"]
    with pytest.raises(ConfigError, match="--splits=tset"):
        embed.parse_splits("tset")


@pytest.mark.slow  # compiles the tiny model twice: ~15 s alone, ~55 s on a busy machine
def test_head_on_the_embeddings_is_the_prediction():
    model = build_model(quick_config().model, seed=0)
    model.eval()
    video = jnp.asarray(np.random.default_rng(0).normal(size=(2, 3, 8, 32, 32, 3)), jnp.float32)
    embedding = eval_steps.embed_step(model, video)
    chex.assert_shape(embedding, (2, 3, 128))
    np.testing.assert_allclose(
        embed.head_step(model, embedding), eval_steps.predict_step(model, video), rtol=1e-5, atol=1e-4
    )


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A run workdir of the quick config with a best checkpoint of a randomly initialised model."""
    workdir = tmp_path_factory.mktemp("run")
    config = quick_config()
    (workdir / "config.json").write_text(config.to_json_best_effort(indent=2))
    ckpts = RunCheckpoints(workdir / "checkpoints" / "stage2", async_save=False)
    ckpts.save_best(1, {"model": model_state_dict(build_model(config.model, seed=0))}, {"epoch": 0})
    ckpts.wait()
    ckpts.close()
    return workdir


@pytest.mark.slow  # data preparation, two splits through the model on 4 virtual devices, UMAP (numba)
def test_embed_mode_writes_embeddings_scores_analysis_and_umap(run_dir):
    result = cli.run("embed", quick_config(), str(run_dir), splits="train,test")
    for split, n in (("train", 30), ("test", 5)):
        e = Embeddings.load(run_dir / f"embeddings_{split}.npz")
        chex.assert_shape(e.clip_embeddings, (n, 3, 128))
        assert e.split == split and "stage2" in e.checkpoint
        with open(run_dir / f"embeddings_{split}.csv") as f:
            rows = list(csv.DictReader(f))
        assert [r["FileName"] for r in rows] == e.videos.filenames
        assert {"EF", "EF_pred", "EF_pred_std", "shift_distance", "shift_percentile"} <= set(rows[0])
        if split == "train":  # the training videos' own scores leave themselves out of the index
            own = ShiftIndex(e.embedding).score()["shift_distance"]
            np.testing.assert_allclose([float(r["shift_distance"]) for r in rows], own, atol=1e-3)
    test = Embeddings.load(run_dir / "embeddings_test.npz")
    saved = json.loads((run_dir / "test_start_indexes.json").read_text())  # the test protocol's starts
    for name, starts in zip(test.videos.filenames, test.videos.starts):
        assert starts.tolist() == saved[avi_name(name)]
    analysis = json.loads((run_dir / "analysis.json").read_text())
    assert analysis.keys() == result.keys()
    for key in ("distance_spearman", "local_ordering", "knn_mae", "knn_mae_of_predicting_index_mean"):
        assert key in analysis
    assert analysis["n_train"] == 30 and analysis["n_test"] == 5
    assert analysis["local_ordering_k"] == 4 and analysis["knn_k"] == 5  # 5 test videos: 4 neighbours each
    assert (run_dir / "umap_test.png").stat().st_size > 1000
    # predict finds the run's training embeddings and adds the video's shift score
    video = sorted((inputs.synthetic_root(quick_config()) / "Videos").glob("*.avi"))[0]
    scored = predict.predict_file(quick_config(), video, run_dir)
    assert scored["shift_distance"] > 0 and 0 <= scored["shift_percentile"] <= 100


def test_main_passes_splits_to_embed_mode(tmp_path):
    done = run_main(
        "--config=configs/demo.py:quick", f"--workdir={tmp_path}", "--mode=embed", "--splits=train,tset"
    )
    assert done.returncode == 1
    assert "error: --splits=train,tset: expected a comma list of train, val, test" in done.stderr
