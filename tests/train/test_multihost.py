"""``main.py`` as 2 JAX processes (2 CPU devices each, gloo collectives) ends like 1 process with 4 devices.

The processes are given their multi-host settings explicitly, as on machines without a cluster
manager: process 0 by ``--config.run.coordinator/num_processes/process_id``, process 1 by the
``JAX_COORDINATOR_ADDRESS``, ``JAX_NUM_PROCESSES`` and ``JAX_PROCESS_ID`` environment. A tiny run (two
stage-1 steps, one stage-2 step, validation each epoch, the test protocol) goes once as 2 processes x
2 devices into one shared workdir and once as 1 process x 4 devices, all three processes at the same
time. Process 0 must write strict JSON and the per-video CSV, and the test predictions of every video
must match the one-process run to float32 rounding.
"""

import numpy as np
import pytest

from coreecho_jax.data import synthetic
from coreecho_jax.data.echonet import echonet_tfds
from tests.multihost_procs import Process, assert_all_succeeded, clean_env, free_port, read_csv, strict_json


def tiny_run(root, data_dir, workdir) -> list[str]:
    """The demo config cut to seconds: 4-frame 32x32 clips, one full-batch step per epoch, no dropout.

    The global batch holds every training video (8), so each step sees the same videos whatever the
    number of processes, and without dropout a run does not depend on how rows fall on devices.
    """
    overrides = {
        "data.root": root,
        "data.data_dir": data_dir,
        "data.synthetic.enabled": False,
        "data.frames": 4,
        "data.image_size": 32,
        "data.shuffle_buffer": 16,
        "model.dropout": 0.0,
        "model.head_dropout": 0.0,
        "stage1.epochs": 2,
        "stage1.batch_size": 8,
        "stage1.lr_decay_epoch": 1,
        "stage2.epochs": 1,
        "stage2.batch_size": 8,
        "eval.batch_size": 4,
        "eval.bootstrap": 50,
        "run.log_every": 1,
    }
    return ["--config=configs/demo.py", f"--workdir={workdir}"] + [
        f"--config.{k}={v}" for k, v in overrides.items()
    ]


@pytest.mark.slow
def test_two_main_processes_with_explicit_settings_evaluate_like_one(tmp_path):
    root, data_dir = tmp_path / "root", tmp_path / "tfds"
    # 8 training videos (one full batch: every step sees the same videos however processes split
    # them), 3 validation and 5 test videos (2 processes x 2 per batch: padded rows and a blank batch).
    synthetic.write_echonet_dataset(
        root, n_videos=16, seed=0, min_frames=40, max_frames=60, split_fractions=(8, 3, 5), progress=False
    )
    echonet_tfds.prepare_echonet(root, data_dir, workers=1)  # once, before the processes read it
    multi, single = tmp_path / "multi", tmp_path / "single"
    coordinator = f"localhost:{free_port()}"
    by_flags = ["--config.run.distributed=True", f"--config.run.coordinator={coordinator}"]
    by_flags += ["--config.run.num_processes=2", "--config.run.process_id=0"]
    by_env = {"JAX_COORDINATOR_ADDRESS": coordinator, "JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": "1"}
    procs = [
        Process("p0", tiny_run(root, data_dir, multi) + by_flags, clean_env(devices=2), tmp_path),
        Process(
            "p1",
            tiny_run(root, data_dir, multi) + ["--config.run.distributed=True"],
            clean_env(devices=2, **by_env),
            tmp_path,
        ),
        Process("single", tiny_run(root, data_dir, single), clean_env(devices=4), tmp_path),
    ]
    assert_all_succeeded(procs, timeout=1200)

    # Process 0 alone reports: the test table is printed once.
    assert "Test results (" in procs[0].stdout and "Test results (" not in procs[1].stdout
    saved = strict_json(multi / "results.json")
    assert saved["n"] == 5 and saved["clips_per_video"] == 3
    reference = strict_json(single / "results.json")
    for key in ("mae", "rmse", "mae_ci_low", "mae_ci_high", "stage1_best_val_mae", "stage2_best_val_mae"):
        np.testing.assert_allclose(saved[key], reference[key], rtol=1e-4, err_msg=key)
    np.testing.assert_allclose(saved["r2"], reference["r2"], atol=1e-4)
    assert (saved["stage1_best_epoch"], saved["stage2_best_epoch"]) == (
        reference["stage1_best_epoch"],
        reference["stage2_best_epoch"],
    )

    # Each test video once, in file-name order, with the same starts, labels and clip predictions.
    rows = read_csv(multi / "test_predictions_final.csv")
    ref_rows = read_csv(single / "test_predictions_final.csv")
    names = [r["FileName"] for r in rows]
    assert names == [r["FileName"] for r in ref_rows] == sorted(names)
    assert len(set(names)) == 5
    for row, ref in zip(rows, ref_rows):
        for key in ("EF", "start_0", "start_1", "start_2"):
            assert row[key] == ref[key], (row["FileName"], key)
        for key in ("EF_pred_clip_0", "EF_pred_clip_1", "EF_pred_clip_2"):
            np.testing.assert_allclose(float(row[key]), float(ref[key]), rtol=1e-4, err_msg=key)
