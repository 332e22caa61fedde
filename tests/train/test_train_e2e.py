"""End to end on synthetic echoes: train both stages, resume after a SIGKILL, evaluate, predict."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import chex
import numpy as np
import pytest

from configs import demo
from coreecho_jax import predict
from coreecho_jax.checkpoints.manager import RunCheckpoints, model_state_dict
from coreecho_jax.data import synthetic
from coreecho_jax.models import build_model
from coreecho_jax.train import loop
from tests.paths import REPO


def _config(root: Path):
    """The demo's ``quick`` variant (40 videos, 8x32x32 clips, 3 + 1 epochs) on the shared root."""
    config = demo.get_config("quick")
    config.data.root = str(root)
    return config


def _flags(root: Path, workdir: Path) -> list[str]:
    return [
        f"--config={REPO / 'configs' / 'demo.py'}:quick",
        f"--workdir={workdir}",
        f"--config.data.root={root}",
    ]


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("synthetic")
    synthetic.write_echonet_dataset(path, n_videos=40, seed=0, progress=False)
    return path


@pytest.fixture(scope="module")
def finished_run(root, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("run")
    results = loop.train_and_evaluate(_config(root), workdir)
    return workdir, results


def test_run_writes_everything_a_user_needs(finished_run):
    workdir, results = finished_run
    for name in (
        "config.json",
        "metrics.jsonl",
        "results.json",
        "test_predictions_final.csv",
        "test_start_indexes.json",
        "test_final_scatter.png",
        "test_final_bland_altman.png",
        "training_curves.png",
        "calibration.json",
    ):
        assert (workdir / name).is_file(), name
    assert list((workdir / "tensorboard").iterdir())
    saved = json.loads((workdir / "results.json").read_text())
    for key in (
        "mae",
        "mae_ci_low",
        "mae_ci_high",
        "rmse",
        "r2",
        "r2_x100",
        "mae_of_predicting_train_mean",
        "ba_bias",
        "ba_loa_low",
        "ba_loa_high",
    ):
        assert np.isfinite(saved[key]), key
    assert saved["ba_loa_low"] < saved["ba_bias"] < saved["ba_loa_high"]
    assert saved["n"] == 5 and saved["clips_per_video"] == 3  # every test video, 3 clips each
    assert saved["mae_ci_low"] <= saved["mae"] <= saved["mae_ci_high"]
    # EF intervals fitted on the 5 validation videos: fewer than the 9 a finite 90 % quantile needs, so
    # every bin is [0, 100] and says why; the category table counts every test video once.
    calibration = json.loads((workdir / "calibration.json").read_text())
    assert calibration["level"] == 0.9 and sum(b["n"] for b in calibration["bins"]) == 5
    assert calibration["source"].startswith("validation split: 5 videos, 3 clips each")
    assert all(
        b["quantile"] is None and "needs at least 9" in b["quantile_undefined"] for b in calibration["bins"]
    )
    best = f"{workdir.resolve()}/checkpoints/stage2/best (epoch {saved['stage2_best_epoch']})"
    assert calibration["checkpoint"] == best
    assert saved["interval_level"] == 0.9 and saved["interval_n"] == 5
    assert saved["interval_coverage"] == 1.0 and saved["interval_mean_width"] == 100.0
    assert saved["interval_calibration"] == calibration["source"]
    assert saved["weights_sha256"] == calibration["weights_sha256"]  # the fingerprint predict checks
    assert sum(map(sum, saved["ef_category_confusion"]["counts"])) == 5
    assert "auroc_ef_below_40" in saved and "auroc_ef_below_50" in saved
    records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    epochs = [(r["stage"], r["epoch"]) for r in records if "epoch/val_mae" in r]
    assert epochs == [(1, 1), (1, 2), (1, 3), (2, 1)]  # numbered from 1, as the log lines and checkpoints
    # Learning, at the scale CI affords (RnC needs ~15 demo epochs before val MAE moves; the demo in the
    # README shows that): the RnC loss falls from the first to the last stage-1 epoch on the training set.
    rnc = [r["epoch/train_rnc"] for r in records if r.get("stage") == 1 and "epoch/train_rnc" in r]
    assert rnc[-1] < rnc[0], rnc


def _kill_during(root: Path, workdir: Path, stage: int, epoch: int) -> None:
    """Runs main.py in a subprocess and SIGKILLs it once it logged a training step of (stage, epoch),
    ``epoch`` numbered from 1 as metrics.jsonl numbers it."""
    cmd = [sys.executable, str(REPO / "main.py")] + _flags(root, workdir)
    # The same numerics as this process (tests/conftest.py): devices and matmul precision.
    env = dict(os.environ, JAX_PLATFORMS="cpu", JAX_DEFAULT_MATMUL_PRECISION="highest")
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    metrics = workdir / "metrics.jsonl"
    killed = False
    deadline = time.time() + 600
    while time.time() < deadline and proc.poll() is None and not killed:
        if metrics.exists():
            for line in metrics.read_text().splitlines():
                record = json.loads(line)
                if record.get("stage") == stage and record.get("epoch") == epoch and "train/loss" in record:
                    proc.send_signal(signal.SIGKILL)
                    killed = True
                    break
        time.sleep(0.02)
    proc.wait()
    assert killed, proc.stderr.read().decode()[-3000:]
    assert not (workdir / "results.json").exists()


def _assert_resumed_like(reference: dict, resumed: dict) -> None:
    # Same batches, dropout masks, optimizer and BatchNorm state; the killed run compiled its steps in
    # another process, so float32 reductions may be ordered differently: equal to ~1e-5 relative.
    for key in ("mae", "rmse", "r2", "stage1_best_val_mae", "stage2_best_val_mae"):
        np.testing.assert_allclose(resumed[key], reference[key], rtol=1e-4, err_msg=key)
    assert resumed["stage1_best_epoch"] == reference["stage1_best_epoch"]


@pytest.mark.slow
def test_resume_after_kills_in_both_stages_ends_like_an_uninterrupted_run(root, finished_run, tmp_path):
    """kill -9 in stage 1, rerun, kill -9 in stage 2, rerun: the numbers of an uninterrupted run.

    Each rerun also takes over the lock the killed run left. The probed model keeps the stage-1
    model's encoder, parameters and BatchNorm statistics bit for bit, while the head's BatchNorm
    statistics train (official: ``model.eval(); regressor.train()``).
    """
    _, reference = finished_run
    workdir = tmp_path / "killed"
    _kill_during(root, workdir, stage=1, epoch=2)
    _kill_during(root, workdir, stage=2, epoch=1)
    config = _config(root)
    _assert_resumed_like(reference, loop.train_and_evaluate(config, workdir))
    template = {"model": model_state_dict(build_model(config.model, seed=int(config.seed)))}
    best = {}
    for stage in (1, 2):
        ckpts = RunCheckpoints(workdir / "checkpoints" / f"stage{stage}", async_save=False)
        best[stage] = ckpts.restore_best(template)[0]["model"]
        ckpts.close()
    chex.assert_trees_all_equal(best[1]["encoder"], best[2]["encoder"])
    for norm in ("norm1", "norm2"):
        for stat in ("mean", "var"):
            assert not np.array_equal(best[1]["head"][norm][stat], best[2]["head"][norm][stat])


def test_evaluate_mode_reproduces_the_run(root, finished_run, tmp_path):
    workdir, reference = finished_run
    results = loop.evaluate_checkpoint(_config(root), tmp_path / "eval", str(workdir))
    np.testing.assert_allclose(results["mae"], reference["mae"], rtol=1e-6)
    np.testing.assert_allclose(results["ba_bias"], reference["ba_bias"], rtol=1e-6)
    for name in ("test_evaluate_scatter.png", "test_evaluate_bland_altman.png"):
        assert (tmp_path / "eval" / name).is_file(), name
    # the run's calibration.json fits these weights: used as it is, not fitted again
    assert not (tmp_path / "eval" / "calibration.json").exists()
    for key in ("interval_coverage", "interval_mean_width", "interval_calibration", "ef_category_confusion"):
        assert results[key] == reference[key], key


@pytest.mark.slow
def test_a_workdir_from_before_calibration_resumes_and_evaluates_with_intervals(root, finished_run, tmp_path):
    """A finished run without calibration.json and without eval.interval_level in config.json (as runs
    trained before EF intervals are): --mode=evaluate fits one on its validation split, and training run
    again into it resumes after its last epoch and writes the same calibration and bit-identical metrics."""
    workdir, reference = finished_run
    old = tmp_path / "old"
    shutil.copytree(workdir, old)
    fitted = json.loads((old / "calibration.json").read_text())
    (old / "calibration.json").unlink()
    saved = json.loads((old / "config.json").read_text())
    del saved["eval"]["interval_level"]
    (old / "config.json").write_text(json.dumps(saved))

    evaluated = loop.evaluate_checkpoint(_config(root), tmp_path / "eval", str(old))
    again = json.loads((tmp_path / "eval" / "calibration.json").read_text())
    assert not (old / "calibration.json").exists()  # evaluate writes into its own workdir
    assert evaluated["interval_coverage"] == reference["interval_coverage"]

    resumed = loop.train_and_evaluate(_config(root), old)
    refitted = json.loads((old / "calibration.json").read_text())
    for calibration in (again, refitted):
        assert (
            calibration["bins"] == fitted["bins"]
            and calibration["weights_sha256"] == fitted["weights_sha256"]
        )
    for key in ("mae", "rmse", "r2", "ba_bias", "interval_coverage", "stage2_best_epoch"):
        assert resumed[key] == reference[key], key


def test_predict_on_a_short_video_pads_and_answers(root, finished_run, tmp_path):
    workdir, _ = finished_run
    from coreecho_jax.data.video import video_io

    video = video_io.read_video(next((root / "Videos").glob("*.avi")))
    short = tmp_path / "short.avi"
    video_io.write_video(short, video.frames[:20], fps=50.0)
    out = predict.predict_file(_config(root), short, workdir)
    assert len(out["ef_per_clip"]) == 3 and np.isfinite(out["ef_mean"])
    assert out["num_frames"] == 20 and "padded" in out["notes"][0]
    # the run's calibration.json belongs to these weights: an interval, [0, 100] with 5 calibration videos
    assert out["ef_interval"] == [0.0, 100.0] and out["interval_level"] == 0.9
    assert out["summary"] == f"EF {out['ef_mean']:.0f} [0, 100] (90 %)"
    assert any(note.startswith("EF interval [0, 100]: ") for note in out["notes"])


def test_bad_root_is_a_clear_error(tmp_path):
    config = _config(tmp_path / "nowhere")
    config.data.synthetic.enabled = False
    with pytest.raises(FileNotFoundError, match="nowhere"):
        loop.train_and_evaluate(config, tmp_path / "w")
