"""The workdir guard: one run at a time, resumed only under the config it started with."""

import ast
import json
import logging
import os

import pytest

from configs import camus, hmcqu
from coreecho_jax.errors import ConfigError, WorkdirError
from coreecho_jax.locks import HolderLock, LockBusy
from coreecho_jax.train import loop as train_loop
from coreecho_jax.train import workdir as workdir_lib
from tests.conftest import quick_config
from tests.paths import REPO


def _enter(path, config, **kwargs):
    """Claims and releases the workdir, as a run that ends at once."""
    with workdir_lib.claim(path, config, **kwargs):
        pass


def _finished_run(path, config):
    """A workdir as a finished run leaves it: config.json (written by the guard) and results.json."""
    with workdir_lib.claim(path, config):
        (path / "results.json").write_text(json.dumps({"mae": 5.0}))
    return (path / "config.json").read_bytes()


def test_a_new_run_writes_its_config_and_a_matching_rerun_resumes(tmp_path):
    config = quick_config()
    saved = _finished_run(tmp_path, config)
    assert json.loads(saved)["seed"] == config.seed
    _enter(tmp_path, quick_config())
    assert (tmp_path / "config.json").read_bytes() == saved
    assert not (tmp_path / "config_changes.jsonl").exists()


def test_a_changed_config_is_refused_naming_each_field(tmp_path):
    saved = _finished_run(tmp_path, quick_config())
    config = quick_config()
    config.seed = 1
    config.stage1.lr = 0.5
    with pytest.raises(workdir_lib.ConfigMismatchError) as info:
        _enter(tmp_path, config)
    message = str(info.value)
    assert "finished run" in message and "--allow_config_change" in message
    assert "seed: 0 -> 1" in message and "stage1.lr: 0.001 -> 0.5" in message
    assert (tmp_path / "config.json").read_bytes() == saved
    assert isinstance(info.value, WorkdirError)


def test_fields_that_do_not_change_results_may_differ(tmp_path):
    saved = _finished_run(tmp_path, quick_config())
    config = quick_config()
    config.run.log_every = 100
    config.data.root = "/elsewhere"
    config.run.stages = "2"
    config.eval.batch_size = 8
    _enter(tmp_path, config)
    assert (tmp_path / "config.json").read_bytes() == saved


def test_an_allowed_change_is_recorded_and_the_saved_config_kept(tmp_path):
    saved = _finished_run(tmp_path, quick_config())
    config = quick_config()
    config.stage2.lr = 0.5
    _enter(tmp_path, config, allow_config_change=True)
    assert (tmp_path / "config.json").read_bytes() == saved
    (entry,) = [json.loads(line) for line in (tmp_path / "config_changes.jsonl").read_text().splitlines()]
    assert entry["changes"] == {"stage2.lr": [0.001, 0.5]}


def test_checkpoints_without_a_saved_config_cannot_be_checked(tmp_path):
    (tmp_path / "checkpoints" / "stage1").mkdir(parents=True)
    with pytest.raises(workdir_lib.ConfigMismatchError, match="config.json"):
        _enter(tmp_path, quick_config())


def test_a_second_holder_is_refused_naming_the_first_pid(tmp_path):
    first = workdir_lib.WorkdirLock(tmp_path)
    first.acquire()
    with pytest.raises(workdir_lib.WorkdirLockedError, match=f"pid {os.getpid()} on host"):
        workdir_lib.WorkdirLock(tmp_path).acquire()
    first.release()
    with workdir_lib.WorkdirLock(tmp_path):  # released: free again
        pass
    assert (tmp_path / ".lock").read_text() == ""


def test_a_stale_lock_of_a_killed_run_is_taken_over(tmp_path, caplog):
    stale = {"pid": 4194999, "host": "gone", "started": "2026-01-01T00:00:00+0000"}
    (tmp_path / ".lock").write_text(json.dumps(stale))  # what a killed run leaves: content, no flock
    with caplog.at_level(logging.WARNING), workdir_lib.claim(tmp_path, quick_config()):
        holder = json.loads((tmp_path / ".lock").read_text())
        assert holder["pid"] == os.getpid()
    assert "stale lock" in caplog.text and "pid 4194999 on host gone" in caplog.text


def test_the_non_primary_processes_only_check(tmp_path):
    config = quick_config()
    _enter(tmp_path, config, primary=False)
    assert not (tmp_path / "config.json").exists() and not (tmp_path / ".lock").exists()
    _finished_run(tmp_path, config)
    config.seed = 3
    with pytest.raises(workdir_lib.ConfigMismatchError, match="seed: 0 -> 3"):
        _enter(tmp_path, config, primary=False)


def test_a_run_saved_before_the_ablation_switches_existed_resumes_without_a_change():
    current = {"data": {"augment": True, "independent_views": True, "frames": 16}}
    assert workdir_lib.config_differences({"data": {"frames": 16}}, current) == {}
    current["data"]["augment"] = False
    assert workdir_lib.config_differences({"data": {"frames": 16}}, current) == {
        "data.augment": (True, False)
    }


def test_a_start_that_computed_nothing_leaves_its_config_to_the_corrected_command(tmp_path, caplog):
    _enter(tmp_path, quick_config())  # a start that failed after claiming: config.json only
    (tmp_path / "prepared").mkdir()  # caches and empty checkpoint folders are no results
    (tmp_path / "checkpoints" / "stage1" / "latest").mkdir(parents=True)
    (tmp_path / "folds" / "fold0" / "checkpoints" / "best").mkdir(parents=True)
    corrected = quick_config()
    corrected.stage1.batch_size = 2
    with caplog.at_level(logging.WARNING):
        _enter(tmp_path, corrected)
    assert json.loads((tmp_path / "config.json").read_text())["stage1"]["batch_size"] == 2
    assert "computed nothing" in caplog.text and "stage1.batch_size: 4 -> 2" in caplog.text
    assert not (tmp_path / "config_changes.jsonl").exists()


@pytest.mark.parametrize(
    "result",
    [
        "results.json",
        "checkpoints/stage1/latest/1/state",
        "folds/fold3/result.json",
        "folds/fold0/checkpoints/latest/2/meta",
    ],
)
def test_a_workdir_holding_a_checkpoint_or_a_result_keeps_its_config(tmp_path, result):
    saved = quick_config()
    _enter(tmp_path, saved)
    (tmp_path / result).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / result).write_text("{}")
    assert workdir_lib.holds_results(tmp_path)
    changed = quick_config()
    changed.stage1.batch_size = 2
    with pytest.raises(workdir_lib.ConfigMismatchError, match="stage1.batch_size: 4 -> 2"):
        _enter(tmp_path, changed)
    assert json.loads((tmp_path / "config.json").read_text())["stage1"]["batch_size"] == 4


def test_a_corrected_command_runs_after_a_start_that_failed_inside_the_run(tmp_path):
    """The guard every training shares (train.loop.run_in_workdir): the run raises after the claim, as
    EchoNet training does for a batch that does not divide over the devices."""

    def fails(config, workdir):
        raise ConfigError("stage1.batch_size=6 does not divide over 4 devices")

    bad = quick_config()
    bad.stage1.batch_size = 6
    with pytest.raises(ConfigError, match="does not divide over 4 devices"):
        train_loop.run_in_workdir(fails, bad, tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["stage1"]["batch_size"] == 6
    ran = train_loop.run_in_workdir(
        lambda config, workdir: {"batch": config.stage1.batch_size}, quick_config(), tmp_path
    )
    assert ran == {"batch": 4}
    assert json.loads((tmp_path / "config.json").read_text())["stage1"]["batch_size"] == 4


def test_transfer_runs_saved_before_the_threshold_rule_predicted_mi_at_or_above_it():
    current = {"eval": {"threshold": 0.5, "threshold_inclusive": False}}
    assert workdir_lib.config_differences({"eval": {"threshold": 0.5}}, current) == {
        "eval.threshold_inclusive": (True, False)
    }
    probe = {"transfer": {"probe_random_encoder": True}}
    assert workdir_lib.config_differences({"transfer": {"probe_random_encoder": False}}, probe) == {}


def test_the_package_has_one_lock_implementation():
    """Only ``coreecho_jax/locks.py`` takes file locks; the workdir lock is a HolderLock underneath."""
    users = []
    for path in sorted((REPO / "coreecho_jax").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            names += [node.module] if isinstance(node, ast.ImportFrom) else []
            if "fcntl" in names:
                users.append(str(path.relative_to(REPO)))
    assert users == ["coreecho_jax/locks.py"]


def test_the_workdir_lock_and_the_shared_lock_exclude_each_other(tmp_path):
    with workdir_lib.WorkdirLock(tmp_path):
        with pytest.raises(LockBusy) as info:
            HolderLock(tmp_path / workdir_lib.LOCK_FILE).acquire()
        assert info.value.holder["pid"] == os.getpid()
    held = pytest.raises(workdir_lib.WorkdirLockedError, match=f"pid {os.getpid()} on host")
    with HolderLock(tmp_path / workdir_lib.LOCK_FILE), held:
        workdir_lib.WorkdirLock(tmp_path).acquire()


@pytest.mark.parametrize(
    ("task", "other_fields"),
    [
        ("camus", {"subset": "", "fold_file": "", "fold_seed": 0}),
        ("hmcqu", {"split_dir": ""}),
    ],
)
def test_a_transfer_run_saved_with_the_other_dataset_s_fields_resumes(tmp_path, task, other_fields):
    """Before configs/transfer.py each transfer config carried the other dataset's data fields (unread):
    a workdir saved then resumes under the current config, which lacks them; any other field still counts."""
    config = {"camus": camus, "hmcqu": hmcqu}[task].get_config()
    old = workdir_lib.config_record(config)
    old["data"].update(other_fields)
    assert not set(other_fields) & set(config.data)
    (tmp_path / "config.json").write_text(json.dumps(old))
    (tmp_path / "results.json").write_text(json.dumps({"mae": 5.0}))
    _enter(tmp_path, config)
    assert json.loads((tmp_path / "config.json").read_text()) == old  # kept as saved
    old["data"]["frames"] = 8
    assert workdir_lib.config_differences(old, workdir_lib.config_record(config)) == {
        "data.frames": (8, config.data.frames)
    }
    # a field the task reads still counts when the current config lacks it
    own = "split_dir" if task == "camus" else "subset"
    saved = workdir_lib.config_record(config)
    del config.data[own]
    assert workdir_lib.config_differences(saved, workdir_lib.config_record(config)) == {
        f"data.{own}": (saved["data"][own], "(absent)")
    }
