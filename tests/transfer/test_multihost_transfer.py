"""Transfer folds as 2 JAX processes under a simulated SLURM step (``srun``), like 1 process.

``main.py`` runs fold 0 of a quick transfer demo once as 2 processes x 1 CPU device into one shared
workdir (``run.distributed=True`` and the SLURM variables) and once as 1 process x 2 devices, all three
processes at the same time: CAMUS probing from an EchoNet run's checkpoint (``transfer.init``: the
weights a process restores must reach the other's devices), and HMC-QU fine-tuning from scratch (the
whole model trained: dropout and BatchNorm over the global batch, a classification). Process 0 alone
must speak and write the fold's files and the summary, every tested video must appear once, and the
outputs must be the one-process run's. A unit test covers the stale fold folder on several processes.
"""

import json
import re
from pathlib import Path

import jax
import numpy as np
import pytest

from configs import camus, camus_demo, hmcqu_demo
from coreecho_jax.checkpoints import manager as ckpt_lib
from coreecho_jax.models import build_model
from coreecho_jax.transfer import data as transfer_sets
from coreecho_jax.transfer import loop
from tests.multihost_procs import (
    Process,
    assert_all_succeeded,
    clean_env,
    free_port,
    read_csv,
    slurm_env,
    strict_json,
)
from tests.transfer.test_transfer import _finetune, _fold_run, _prepared, _stub_training


def write_run_workdir(config, path) -> None:
    """A run workdir as ``coreecho train`` leaves it, as far as ``transfer.init`` reads it: the model of
    ``config.model`` (seed 7) as the best checkpoint of stage 1, epoch 1."""
    model = build_model(config.model, seed=7)
    checkpoints = ckpt_lib.RunCheckpoints(path / "checkpoints" / "stage1")
    checkpoints.save_best(1, {"model": ckpt_lib.model_state_dict(model)}, {"epoch": 1})
    checkpoints.wait()
    checkpoints.close()


def transfer_args(config_name: str, workdir: Path, root: Path, extra: list[str]) -> list[str]:
    return [
        f"--config=configs/{config_name}.py:quick",
        f"--workdir={workdir}",
        f"--config.data.root={root}",
        *extra,
    ]


def start_like_one_process(tmp_path: Path, config_name: str, root: Path, extra: list[str]) -> list[Process]:
    """``main.py`` as 2 simulated ``srun`` tasks x 1 CPU device into ``tmp_path/multi`` and as 1 process
    x 2 devices into ``tmp_path/single``, all three at once; the processes, when all succeeded."""
    port = free_port()
    multi = transfer_args(config_name, tmp_path / "multi", root, extra) + ["--config.run.distributed=True"]
    procs = [Process(f"p{i}", multi, clean_env(**slurm_env(i, 2, port)), tmp_path) for i in range(2)]
    single = transfer_args(config_name, tmp_path / "single", root, extra)
    procs.append(Process("single", single, clean_env(devices=2), tmp_path))
    assert_all_succeeded(procs, timeout=1200)
    return procs


def assert_reported_like_one_process(procs: list[Process], tmp_path: Path, task: str, test_names) -> dict:
    """Process 0 alone speaks and writes the summary; every test video of fold 0 once, with the label,
    group and output of the 1-process run (rtol 1e-4, as tests/train/test_multihost.py); the fold's
    result.json (returned)."""
    multi, single = tmp_path / "multi", tmp_path / "single"
    assert f"{task} " in procs[0].stdout and "over folds [0]" in procs[0].stdout
    assert "over folds" not in procs[1].stdout  # (gloo itself prints a "[Gloo] Rank 1 ..." line there)
    assert "fold 0: " in procs[0].stderr and "fold 0: " not in procs[1].stderr
    for name in (
        "results.json",
        "table.md",
        "predictions.csv",
        "folds/fold0/inputs.json",
        "folds/fold0/result.json",
    ):
        assert (multi / name).is_file(), name
    masked = [re.sub(r"-?\d+\.\d+", "#", (d / "table.md").read_text()) for d in (multi, single)]
    assert masked[0] == masked[1]

    rows, ref_rows = read_csv(multi / "predictions.csv"), read_csv(single / "predictions.csv")
    assert [r["name"] for r in rows] == sorted(test_names)
    for row, ref in zip(rows, ref_rows, strict=True):
        assert (row["fold"], row["name"], row["group"], row["label"]) == (
            ref["fold"],
            ref["name"],
            ref["group"],
            ref["label"],
        )
        np.testing.assert_allclose(float(row["output"]), float(ref["output"]), rtol=1e-4, err_msg=row["name"])
    saved, reference = strict_json(multi / "results.json"), strict_json(single / "results.json")
    assert saved["folds"] == [0] and saved["init"] == reference["init"]
    for key, value in reference["summary"].items():
        if value["mean"] is not None:
            np.testing.assert_allclose(saved["summary"][key]["mean"], value["mean"], rtol=1e-4, err_msg=key)
    assert json.loads((multi / "config.json").read_text())["run"]["distributed"] is True
    return strict_json(multi / "folds" / "fold0" / "result.json")


@pytest.mark.slow
def test_main_py_under_srun_probes_a_camus_fold_like_one_process(tmp_path):
    """Probing from an EchoNet run (transfer.init): the restored weights reach the other's devices."""
    config = camus_demo.get_config("quick")
    root, init = tmp_path / "camus", tmp_path / "echonet_run"
    config.data.root = str(root)
    transfer_sets.write_synthetic("camus", config.data, tmp_path)  # once, before the processes read it
    write_run_workdir(config, init)
    # fold 0 of 4 tests 5 of the 20 patients: 2 eval batches of 4, one padded
    extra = ["--config.data.n_folds=4", f"--config.transfer.init={init}", "--config.probe.epochs=1"]
    procs = start_like_one_process(tmp_path, "camus_demo", root, extra)
    fold = assert_reported_like_one_process(
        procs, tmp_path, "camus", [f"patient{i:04d}" for i in range(1, 6)]
    )
    assert fold["init"] == f"{init}/checkpoints/stage1/best (epoch 1)"
    assert fold["sizes"] == {"train": 15, "val": 0, "test": 5}


@pytest.mark.slow
def test_main_py_under_srun_fine_tunes_an_hmcqu_fold_like_one_process(tmp_path):
    """Fine-tuning the whole model (dropout, BatchNorm over the global batch), a classification."""
    config = hmcqu_demo.get_config("quick")
    root = tmp_path / "hmcqu"
    config.data.root = str(root)
    data = transfer_sets.prepare("hmcqu", config.data, tmp_path / "prepare", progress=False)
    extra = ["--config.transfer.mode=finetune", "--config.finetune.epochs=1"]
    procs = start_like_one_process(tmp_path, "hmcqu_demo", root, extra)
    fold = assert_reported_like_one_process(procs, tmp_path, "hmcqu", data.folds[0].test)
    assert fold["sizes"]["test"] == len(data.folds[0].test)


def test_a_stale_fold_folder_moves_only_after_every_process_has_looked_at_it(tmp_path, monkeypatch):
    """On several processes process 0 moves a stale fold folder aside; a process that looked only after
    the move would find no stale folder, skip the barriers and meet the others' training instead."""
    monkeypatch.setattr(loop.FoldRun, "train_and_test", _stub_training)
    monkeypatch.setattr(jax, "process_count", lambda: 2)
    c = _finetune(camus.get_config())
    data = _prepared("camus", [50.0, 60.0, 70.0, 40.0], [([0, 1], [2, 3])])
    edited = _prepared("camus", [50.0, 60.0, 70.0, 45.0], [([0, 1], [2, 3])])
    work = tmp_path / "work"
    fold_dir = work / "folds" / "fold0"
    fold_dir.mkdir(parents=True)
    (fold_dir / "inputs.json").write_text(json.dumps(_fold_run(c, work, data).inputs))
    (fold_dir / "checkpoints" / "latest" / "1").mkdir(parents=True)
    (fold_dir / "checkpoints" / "latest" / "1" / "state").write_text("weights")
    barriers = []
    monkeypatch.setattr(
        loop.multihost_utils,
        "sync_global_devices",
        lambda name: barriers.append((name, (fold_dir / "checkpoints").is_dir())),
    )
    result = _fold_run(c, work, edited).run(recompute_stale=True)
    assert result["recomputed"]["old_folder"] == str(work / "folds" / "fold0.stale-1")
    # the first barrier is met while the old folder is still in place, the second after the move
    assert barriers == [
        ("coreecho_jax stale check fold 0", True),
        ("coreecho_jax stale fold 0", False),
    ]
