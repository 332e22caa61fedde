"""A host killed mid-epoch: ``main.py`` as 2 JAX processes under a simulated SLURM step, one SIGKILLed.

The quick demo's stage 1 (EchoNet-like synthetic videos, 3 epochs of 7 steps, then the test; stage 2
left out for time, ``run.stages=1``) runs as 2 processes x 1 CPU device into one workdir. Once an
epoch's checkpoint is saved and the next epoch trains, process 1 is killed (SIGKILL: a host that
dies). What process 0 then does (observed with JAX 0.10 on CPU): its next collective fails at once
(gloo: "Connection reset by peer") and it prints the traceback, but its exit then waits in JAX's
shutdown barrier until the coordination service misses the dead process's heartbeats (up to JAX's
100 s heartbeat timeout) and aborts; the test kills it after a bounded wait, as a scheduler ends a job.
The same command run again as 2 processes resumes after the saved epoch (process 0's log says so) and
ends with the metrics and per-video predictions of an uninterrupted 2-process run.

JAX's persistent compilation cache (:func:`compile_cache_env`) is shared by the three runs, but on CPU
it speeds up process 0 only: JAX writes entries from process 0 alone and process 1's cache keys differ
(they hash its own device topology), so process 1 compiles every run afresh.
"""

import json
import signal
import time

import numpy as np
import pytest

from tests.multihost_procs import (
    Process,
    assert_all_succeeded,
    clean_env,
    compile_cache_env,
    free_port,
    read_csv,
    slurm_env,
    strict_json,
    wait_until,
)


def start(workdir, tmp_path, name: str, cache) -> list[Process]:
    """The same command on 2 simulated ``srun`` tasks (a fresh coordinator port, as a new job id gives)."""
    args = [
        "--config=configs/demo.py:quick",
        f"--workdir={workdir}",
        "--config.run.distributed=True",
        "--config.run.stages=1",
    ]
    port = free_port()
    return [
        Process(f"{name}{i}", args, clean_env(**slurm_env(i, 2, port), **compile_cache_env(cache)), tmp_path)
        for i in range(2)
    ]


def training_steps(workdir, stage: int, epoch: int) -> int:
    """Training steps of (stage, epoch) that process 0 logged in metrics.jsonl so far."""
    metrics = workdir / "metrics.jsonl"
    if not metrics.exists():
        return 0
    records = [json.loads(line) for line in metrics.read_text().splitlines() if line.endswith("}")]
    return sum(r.get("stage") == stage and r.get("epoch") == epoch and "train/loss" in r for r in records)


def saved_epochs(workdir, stage: int) -> list[int]:
    """The epochs (numbered from 1) of the stage's latest checkpoints Orbax has finished writing."""
    folder = workdir / "checkpoints" / f"stage{stage}" / "latest"
    return sorted(int(p.name) for p in folder.glob("*") if p.name.isdigit()) if folder.is_dir() else []


@pytest.mark.slow
def test_a_host_killed_mid_epoch_resumes_with_the_same_command_like_an_uninterrupted_run(tmp_path):
    cache = tmp_path / "jax_cache"
    reference, workdir = tmp_path / "reference", tmp_path / "killed"
    assert_all_succeeded(start(reference, tmp_path, "ref", cache), timeout=900)

    # Process 1 dies (SIGKILL) while stage-1 epoch e + 1 trains, epoch e >= 1 saved.
    procs = start(workdir, tmp_path, "run", cache)

    def mid_epoch() -> bool:
        saved = saved_epochs(workdir, 1)
        return bool(saved) and training_steps(workdir, 1, saved[-1] + 1) >= 1

    wait_until(mid_epoch, procs, timeout=600, what="a stage-1 epoch training after a saved one")
    procs[1].popen.send_signal(signal.SIGKILL)
    procs[1].popen.wait()
    saved = saved_epochs(workdir, 1)
    # Process 0's next collective fails (the peer's connection is gone) and it reports the error, but
    # its exit then waits for JAX's coordination service to miss the dead process's heartbeats (about
    # a minute); the job is over either way: it is killed after a bounded wait, as a scheduler would.
    t0 = time.time()
    while procs[0].popen.poll() is None and "Traceback" not in procs[0].stderr and time.time() - t0 < 60:
        time.sleep(0.2)
    reported = "Traceback" in procs[0].stderr
    if procs[0].popen.poll() is None:
        procs[0].popen.send_signal(signal.SIGKILL)
    assert procs[0].popen.wait() != 0 and reported, procs[0].tail()
    assert not (workdir / "results.json").exists()
    assert len(saved) == 1 and 1 <= saved[0] < 3, saved
    (epoch,) = saved

    # The same command again: both processes resume after the saved epoch, not from the start.
    again = start(workdir, tmp_path, "again", cache)
    assert_all_succeeded(again, timeout=900)
    assert f"stage 1: resuming after epoch {epoch} " in again[0].stderr, again[0].tail()
    assert "resuming" not in again[1].stderr
    records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    ref_records = [json.loads(line) for line in (reference / "metrics.jsonl").read_text().splitlines()]
    epochs = [r for r in records if "epoch/val_mae" in r]
    ref_epochs = [r for r in ref_records if "epoch/val_mae" in r]
    assert [(r["stage"], r["epoch"]) for r in epochs] == [(1, 1), (1, 2), (1, 3)]
    assert [(r["stage"], r["epoch"]) for r in ref_epochs] == [(1, 1), (1, 2), (1, 3)]
    for r, ref in zip(epochs, ref_epochs):
        np.testing.assert_allclose(r["epoch/val_mae"], ref["epoch/val_mae"], rtol=1e-4, err_msg=str(r))

    # The numbers of the uninterrupted run, to the resume tolerance of tests/train/test_train_e2e.py.
    resumed, expected = strict_json(workdir / "results.json"), strict_json(reference / "results.json")
    for key in ("mae", "rmse", "r2", "stage1_best_val_mae"):
        np.testing.assert_allclose(resumed[key], expected[key], rtol=1e-4, err_msg=key)
    assert resumed["stage1_best_epoch"] == expected["stage1_best_epoch"] and resumed["n"] == 5
    rows, ref_rows = (
        read_csv(workdir / "test_predictions_final.csv"),
        read_csv(reference / "test_predictions_final.csv"),
    )
    assert [r["FileName"] for r in rows] == [r["FileName"] for r in ref_rows]
    assert len({r["FileName"] for r in rows}) == 5
    for row, ref in zip(rows, ref_rows):
        for key in ("EF", "start_0", "start_1", "start_2"):
            assert row[key] == ref[key], (row["FileName"], key)
        for key in ("EF_pred_clip_0", "EF_pred_clip_1", "EF_pred_clip_2"):
            np.testing.assert_allclose(float(row[key]), float(ref[key]), rtol=1e-4, err_msg=key)
