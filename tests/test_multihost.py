"""Two real JAX processes (2 CPU devices each, gloo collectives) end like one process with 4 devices.

A tiny run (two stage-1 steps, one stage-2 step, validation each epoch, the test protocol) in
``tests/multihost_worker.py``: once as 2 processes x 2 devices, once as 1 process x 4 devices, all
three processes at the same time. Every process must report the same summary, process 0 must write
strict JSON and the per-video CSV, and the test predictions of every video must match the
one-process run to float32 rounding.
"""

import csv
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from coreecho_jax.data import echonet_tfds, synthetic
from tests.paths import REPO

WORKER = REPO / "tests" / "multihost_worker.py"
# Fast CPU compilation (the run is compile-bound); the same flags for both runs, so the same numerics.
FAST_COMPILE = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _start(process_id, num_processes, devices, port, root, data_dir, workdir):
    env = dict(os.environ, XLA_FLAGS=FAST_COMPILE, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=str(REPO))
    args = [str(a) for a in (process_id, num_processes, devices, port, root, data_dir, workdir)]
    log = open(workdir.parent / f"{workdir.name}_{process_id}.log", "w")  # noqa: SIM115 (closed by the caller)
    return subprocess.Popen(
        [sys.executable, str(WORKER), *args], cwd=REPO, env=env, stdout=log, stderr=log
    ), log


def _log_tail(path: Path, chars: int = 3000) -> str:
    """The end of a worker's log without native stack frames (lines ``    @ 0x...``)."""
    lines = [line for line in path.read_text().splitlines() if not line.startswith("    @")]
    return "\n".join(lines)[-chars:]


def _wait_all(procs, timeout: float) -> None:
    """Waits for every process; the first that fails stops the others (they would wait in a collective)."""
    deadline = time.time() + timeout
    while time.time() < deadline and any(p.poll() is None for p, _ in procs):
        if any(p.poll() not in (None, 0) for p, _ in procs):
            break
        time.sleep(0.5)
    failed = [log.name for p, log in procs if p.poll() not in (None, 0)]
    stopped = [log.name for p, log in procs if p.poll() is None]
    for p, log in procs:
        if p.poll() is None:
            p.kill()
        p.wait()
        log.close()
    if failed or stopped:
        tails = "\n\n".join(f"{name}:\n{_log_tail(Path(name))}" for name in failed)
        pytest.fail(f"failed: {failed}; stopped (timeout or a failed peer): {stopped}\n{tails}")


def _strict_json(path: Path) -> dict:
    def refuse(token):
        raise AssertionError(f"{path} holds the non-standard JSON token {token}")

    return json.loads(path.read_text(), parse_constant=refuse)


def _csv(path: Path) -> list[dict]:
    with open(path) as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_two_processes_evaluate_like_one(tmp_path):
    root, data_dir = tmp_path / "root", tmp_path / "tfds"
    # 8 training videos (one full batch: every step sees the same videos however processes split
    # them), 3 validation and 5 test videos (2 processes x 2 per batch: padded rows and a blank batch).
    synthetic.write_echonet_dataset(
        root, n_videos=16, seed=0, min_frames=40, max_frames=60, split_fractions=(8, 3, 5), progress=False
    )
    echonet_tfds.prepare_echonet(root, data_dir, workers=1)  # once, before the processes read it
    multi, single = tmp_path / "multi", tmp_path / "single"
    port, port1 = _free_port(), _free_port()
    procs = [_start(i, 2, 2, port, root, data_dir, multi) for i in range(2)]
    procs.append(_start(0, 1, 4, port1, root, data_dir, single))
    _wait_all(procs, timeout=1200)

    # Every process computed the same summary from the gathered predictions; process 0 wrote the files.
    summaries = [_strict_json(multi / f"summary_{i}.json") for i in range(2)]
    assert summaries[0] == summaries[1]
    saved = _strict_json(multi / "results.json")
    assert saved == summaries[0] and saved["n"] == 5 and saved["clips_per_video"] == 3
    reference = _strict_json(single / "results.json")
    for key in ("mae", "rmse", "mae_ci_low", "mae_ci_high", "stage1_best_val_mae", "stage2_best_val_mae"):
        np.testing.assert_allclose(saved[key], reference[key], rtol=1e-4, err_msg=key)
    np.testing.assert_allclose(saved["r2"], reference["r2"], atol=1e-4)
    assert (saved["stage1_best_epoch"], saved["stage2_best_epoch"]) == (
        reference["stage1_best_epoch"],
        reference["stage2_best_epoch"],
    )

    # Each test video once, in file-name order, with the same starts, labels and clip predictions.
    rows, ref_rows = _csv(multi / "test_predictions_final.csv"), _csv(single / "test_predictions_final.csv")
    names = [r["FileName"] for r in rows]
    assert names == [r["FileName"] for r in ref_rows] == sorted(names)
    assert len(set(names)) == 5
    for row, ref in zip(rows, ref_rows):
        for key in ("EF", "start_0", "start_1", "start_2"):
            assert row[key] == ref[key], (row["FileName"], key)
        for key in ("EF_pred_clip_0", "EF_pred_clip_1", "EF_pred_clip_2"):
            np.testing.assert_allclose(float(row[key]), float(ref[key]), rtol=1e-4, err_msg=key)
