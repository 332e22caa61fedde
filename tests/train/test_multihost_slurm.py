"""``main.py`` as 2 JAX processes under a simulated SLURM step (``srun``), CPU devices, gloo collectives.

Both processes run the quick demo (cut to 2 steps per epoch) into one shared workdir with nothing but
``--config.run.distributed=True`` and the SLURM variables: the multi-host start must come before any
other JAX call, the dropout streams must reach every process, process 0 alone must write the results,
and every test video must appear once.
"""

import json

import pytest

from coreecho_jax.configs import demo
from coreecho_jax.data.echonet import inputs
from tests.multihost_procs import (
    Process,
    assert_all_succeeded,
    clean_env,
    free_port,
    read_csv,
    slurm_env,
    strict_json,
)


@pytest.mark.slow
def test_main_py_under_srun_trains_the_quick_demo_into_one_workdir(tmp_path):
    workdir = tmp_path / "run"
    args = [
        "--config=configs/demo.py:quick",
        f"--workdir={workdir}",
        "--config.run.distributed=True",
        "--config.stage1.epochs=1",
        "--config.run.max_steps_per_epoch=2",
    ]
    port = free_port()
    procs = [Process(f"p{i}", args, clean_env(**slurm_env(i, 2, port)), tmp_path) for i in range(2)]
    assert_all_succeeded(procs, timeout=900)

    # Process 0 alone speaks and writes: the epoch lines (the log, stderr) and the table (stdout) once,
    # each metrics row once.
    out0, out1 = procs[0].stdout, procs[1].stdout
    assert "Test results (" in out0 and "stage 2 epoch 1/1: loss" in procs[0].stderr
    assert "Test results (" not in out1 and "epoch" not in out1 and "epoch" not in procs[1].stderr
    records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    keys = [(r["stage"], r["step"], any(k.startswith("epoch/") for k in r)) for r in records]
    assert sorted(keys) == [
        (s, step, epoch) for s in (1, 2) for step, epoch in ((1, False), (2, False), (2, True))
    ]

    # Every test video of the synthetic set exactly once, in file-name order, in the CSV and the count.
    # (the synthetic set lives in the session's shared data home, COREECHO_DATA_DIR, as for any run)
    filelist = read_csv(inputs.synthetic_root(demo.get_config("quick")) / "FileList.csv")
    test_names = sorted(r["FileName"] for r in filelist if r["Split"] == "TEST")
    rows = read_csv(workdir / "test_predictions_final.csv")
    assert [r["FileName"] for r in rows] == test_names and len(test_names) == 5
    assert strict_json(workdir / "results.json")["n"] == 5
