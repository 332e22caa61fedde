"""The commands as a user meets them: ``coreecho`` (from any directory) and ``python main.py`` (the
checkout); one line per deliberate error, status 1; ``--help`` with status 0; the workdir guard; tracebacks
for bugs. Every run here but one (``coreecho data``, a quick synthetic set) fails before any data or model
work, so each takes seconds.
"""

import functools
import json
import os
import shutil
import subprocess
import sys

import pytest

from coreecho_jax import cli
from coreecho_jax.errors import ConfigError
from coreecho_jax.train import workdir as workdir_lib
from tests.conftest import quick_config, run_main
from tests.paths import REPO

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
    assert _error_lines(done) == ["--config=demo:slow: unknown variant 'slow'; known: demo:quick"]


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


def test_main_py_modes_are_the_commands():
    argv = ["--config=c.py", "--mode", "evaluate", "--workdir=w"]
    assert cli.mode_argv(argv) == ["evaluate", "--config=c.py", "--workdir=w"]
    assert cli.mode_argv(["--config=c.py"]) == ["train", "--config=c.py"]
    with pytest.raises(cli.UsageError, match="--mode=fit: unknown mode; expected one of train, evaluate"):
        cli.mode_argv(["--mode=fit"])


def test_main_py_unknown_mode_is_one_line(tmp_path):
    assert _error_lines(run_main(QUICK, f"--workdir={tmp_path}", "--mode=fit")) == [
        "--mode=fit: unknown mode; expected one of train, evaluate, predict, data, embed"
    ]


def test_cli_run_checks_the_mode_and_the_config_first(tmp_path):
    config = quick_config()
    with pytest.raises(ConfigError, match="predict needs --video"):
        cli.run("predict", config, str(tmp_path))
    with pytest.raises(ConfigError, match="unknown mode"):
        cli.run("fit", config, str(tmp_path))
    config.stage1.epochs = 0
    with pytest.raises(ConfigError, match="stage1.epochs = 0"):
        cli.run("train", config, str(tmp_path / "w"))
    assert not (tmp_path / "w").exists()


# ------------------------------------------------------------------------------------- the coreecho command
@functools.cache
def _installed_here() -> bool:
    """Whether a ``coreecho`` entry point is installed and runs this checkout (``pip install -e .``)."""
    exe = shutil.which("coreecho")
    if exe is None:
        return False
    code = "import coreecho_jax, pathlib; print(pathlib.Path(coreecho_jax.__file__).resolve().parent)"
    where = subprocess.run([sys.executable, "-c", code], cwd="/", capture_output=True, text=True, timeout=120)
    return where.returncode == 0 and where.stdout.strip() == str(REPO / "coreecho_jax")


def coreecho(*args: str, cwd, timeout: float = 300) -> subprocess.CompletedProcess:
    """``coreecho <args>`` run from ``cwd``: the installed entry point when it runs this checkout, else
    ``python -m coreecho_jax`` (the same command) with the checkout on ``PYTHONPATH``."""
    if _installed_here():
        command, env = [shutil.which("coreecho")], dict(os.environ)
    else:
        command = [sys.executable, "-m", "coreecho_jax"]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run(
        [*command, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env
    )


def test_help_exits_0_from_another_directory(tmp_path):
    done = coreecho("--help", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: coreecho <command>")
    for name in cli.COMMANDS:
        assert f"\n  {name} " in done.stdout
    done = coreecho("predict", "--help", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "--video=VALUE: The AVI, MP4 or DICOM file. (required)" in done.stdout
    assert "built-in: camus, camus_demo, custom, custom_demo, demo, echonet, hmcqu, hmcqu_demo" in done.stdout


@pytest.mark.parametrize("name", list(cli.COMMANDS))
def test_every_command_has_help_with_status_0(name, capsys):
    assert cli.main([name, "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: coreecho {name} [--flag=value ...]\n")
    assert f"example: coreecho {name} " in out
    for flag in cli.COMMANDS[name].spec().required:
        assert f"--{flag}=VALUE: " in out and "(required)" in out


def test_help_with_a_config_lists_its_fields_values_and_comments(capsys):
    assert cli.main(["train", "--help", "--config=demo:quick"]) == 0
    out = capsys.readouterr().out
    assert "\nconfig demo:quick (override a field with --config.<field>=<value>):\n" in out
    assert (
        "\n  seed = 0  # run seed: init, dropout, train order, val clip starts, bootstrap" in out
    )  # echonet.py's
    assert (
        "\n  model.preset = 'tiny'  # depth [1,1,1,1], dims [16,32,64,128], head_dim 16\n" in out
    )  # demo.py's
    assert "\n  data.mean" not in out  # an EchoNet config has no normalisation fields
    assert cli.main(["transfer", "--help", "--config=configs/camus_demo.py:quick"]) == 0
    out = capsys.readouterr().out
    assert "\n  data.mean = (40.94405" in out and "\n  task = 'camus'" in out


def _one_error_line(argv: list[str], capsys) -> str:
    with pytest.raises(SystemExit) as info:
        cli.main(argv)
    assert info.value.code == 1
    captured = capsys.readouterr()
    (line,) = captured.err.splitlines()
    assert line.startswith("error: ") and captured.out == ""
    return line[len("error: ") :]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["trian"], "unknown command 'trian'; did you mean train? (commands: train, transfer, evaluate,"),
        (["data", "--config=demo:quick", "--wrkdir=w"], "--wrkdir: unknown flag; did you mean --workdir?"),
        (["data", "--config=demo", "--workdir=w", "--config.sede=1"], "--config.sede: no such config field; did you"),
        (["data", "--config=demi", "--workdir=w"], "--config=demi: no built-in config 'demi' (built-in: camus,"),
        (["data", "--workdir=w"], "--config is required: a built-in name (camus, camus_demo, custom, custom_"),
        (["data", "--config=demo:quick"], "--workdir is required: "),
        (["data", "--config=demo:quick", "--workdir=w", "extra"], "unexpected argument 'extra': coreecho data takes"),
        (["ablate", "--config=demo:quick", "--workdir=w", "--table=4"], "--table=4: value should be one of <2|3>"),
        (["ablate", "--config=demo:quick", "--workdir=w", "--table=2", "--seeds=x"], "--seeds=x: expected an integer"),
        (["umap", "--runs=a", "--out=b", "--config=demo"], "--config: this command takes no config"),
        (["synthetic", "--root=r", "--with_2ch"], "--with_2ch: a flag of --dataset=camus, not of --dataset=echonet"),
        (["transfer", "--config=demo:quick", "--workdir=w"], "transfer takes a transfer config (camus, hmcqu,"),
        (["--workdir=w"], "unknown command '--workdir=w' (commands: train,"),
    ],
)  # fmt: skip
def test_a_bad_command_line_is_one_error_line_and_status_1(argv, message, capsys):
    assert _one_error_line(argv, capsys).startswith(message)


def test_a_bad_command_line_in_a_process_is_one_error_line(tmp_path):
    done = coreecho(
        "train", "--config=demo:quick", f"--workdir={tmp_path}", "--config.stage1.lrr=1", cwd=tmp_path
    )
    assert _error_lines(done) == ["--config.stage1.lrr: no such config field; did you mean stage1.lr?"]


def test_a_built_in_config_by_name_from_another_directory(tmp_path):
    """``coreecho data --config=demo:quick`` outside the checkout: the built-in config, its synthetic set
    in the (test session's) data home, the summary."""
    workdir = tmp_path / "w"
    done = coreecho("data", "--config=demo:quick", f"--workdir={workdir}", cwd=tmp_path, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    assert any(line.startswith("  train:    30 videos") for line in lines), done.stdout
    assert any(line.startswith("  video      (4, 2, 8, 32, 32, 3)") for line in lines), done.stdout
    assert "Traceback" not in done.stderr
