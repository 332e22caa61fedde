"""main.py as a user meets it: one line per deliberate error, the workdir guard, tracebacks for bugs.

Every run here fails before any data or model work, so each takes seconds.
"""

import json
import os

import pytest

from coreecho_jax import cli
from coreecho_jax.errors import ConfigError
from coreecho_jax.train import workdir as workdir_lib
from tests.conftest import quick_config, run_main

QUICK = "--config=configs/demo.py:quick"


def _error_lines(done) -> list[str]:
    """stderr of a deliberate failure: only ``error: ...`` lines (absl may add nothing else)."""
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    lines = done.stderr.strip().splitlines()
    assert lines and all(line.startswith("error: ") for line in lines), done.stderr
    return [line[len("error: ") :] for line in lines]


def test_unknown_config_keys_get_one_line_each(tmp_path):
    done = run_main(QUICK, f"--workdir={tmp_path}", "--config.stage1.lrr=1", "--config.evall.seed=2")
    assert _error_lines(done) == [
        "--config.stage1.lrr: no such config field; did you mean stage1.lr?",
        "--config.evall.seed: no such config field; did you mean eval?",
    ]


def test_bad_values_fail_before_any_work_one_line_each(tmp_path):
    workdir = tmp_path / "w"
    done = run_main(
        QUICK,
        f"--workdir={workdir}",
        "--config.stage1.epochs=0",
        "--config.stage1.lr=-0.1",
        "--config.eval.n_clips=0",
    )
    assert _error_lines(done) == [
        "stage1.epochs = 0: must be an integer >= 1",
        "stage1.lr = -0.1: must be > 0",
        "eval.n_clips = 0: must be an integer >= 1",
    ]
    assert not workdir.exists()  # no synthetic set, no prepared data, no config.json


def test_an_unknown_variant_is_one_line(tmp_path):
    done = run_main("--config=configs/demo.py:slow", f"--workdir={tmp_path}")
    assert _error_lines(done) == [
        "--config=configs/demo.py:slow: unknown variant 'slow'; known: configs/demo.py:quick"
    ]


def test_rerun_of_a_finished_workdir_under_a_new_seed_is_refused(tmp_path):
    with workdir_lib.claim(tmp_path, quick_config()):
        (tmp_path / "results.json").write_text(json.dumps({"mae": 5.0}))
    saved = (tmp_path / "config.json").read_bytes()
    done = run_main(QUICK, f"--workdir={tmp_path}", "--config.seed=1", "--config.stage1.lr=0.5")
    lines = _error_lines(done)
    assert "finished run" in lines[0]
    assert "  seed: 0 -> 1" in lines and "  stage1.lr: 0.001 -> 0.5" in lines
    assert "--allow_config_change" in lines[-1]
    assert (tmp_path / "config.json").read_bytes() == saved


def test_a_second_run_into_a_held_workdir_stops_naming_the_holder(tmp_path):
    with workdir_lib.WorkdirLock(tmp_path):  # this test process plays the first run
        done = run_main(QUICK, f"--workdir={tmp_path}")
    (line,) = _error_lines(done)
    assert "is in use by another run" in line and f"pid {os.getpid()} on host" in line
    assert not (tmp_path / "config.json").exists()


def test_unexpected_errors_keep_their_traceback(tmp_path):
    broken = tmp_path / "broken.py"
    broken.write_text("def get_config():\n    raise RuntimeError('a bug in the config file')\n")
    done = run_main(f"--config={broken}", f"--workdir={tmp_path}")
    assert done.returncode != 0
    assert "Traceback" in done.stderr and "RuntimeError: a bug in the config file" in done.stderr


def test_command_line_scan_follows_ml_collections():
    path, names = cli.config_overrides(
        ["main.py", "--config", "c.py:quick", "--config.a.b=1", "--noconfig.run.distributed", "--workdir=w"]
    )
    assert path == "c.py:quick" and names == ["a.b", "run.distributed"]


def test_a_missing_or_foreign_config_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="no such file"):
        cli.check_command_line(["main.py", f"--config={tmp_path / 'missing.py'}:quick"])
    (tmp_path / "notes.txt").write_text("not python")
    with pytest.raises(ConfigError, match="not a Python file"):
        cli.check_command_line(["main.py", f"--config={tmp_path / 'notes.txt'}"])
    cli.check_command_line(["main.py", "--workdir=w"])  # no --config: absl reports the missing flag


def test_cli_run_checks_the_mode_and_the_config_first(tmp_path):
    config = quick_config()
    with pytest.raises(ConfigError, match="--mode=predict needs --video"):
        cli.run("predict", config, str(tmp_path))
    with pytest.raises(ConfigError, match="unknown mode"):
        cli.run("fit", config, str(tmp_path))
    config.stage1.epochs = 0
    with pytest.raises(ConfigError, match="stage1.epochs = 0"):
        cli.run("train", config, str(tmp_path / "w"))
    assert not (tmp_path / "w").exists()
