"""What a person reads (coreecho_jax.logs): a quick training run's whole output, the verbosity switch,
and each piece on its own (bars, the closing line, the filters, the compile line, the small-run note)."""

import json
import logging
import re
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from coreecho_jax import logs
from coreecho_jax.checkpoints.manager import RunCheckpoints
from tests.conftest import run_main, run_python
from tests.paths import REPO

EPOCH_LINE = re.compile(r"^stage (\d) epoch (\d+)/(\d+): loss .* val MAE [\d.]+ .*?(\*best\*)?$")
INFO_LINE = re.compile(r"^I\d{4} \d\d:\d\d:\d\d")  # absl's INFO prefix: I1207 05:12:52.493330 ...
WARNING_LINE = re.compile(r"^W\d{4} [\d:.]+ +\d+ [^\]]+\] (.*)$")


def _lines(stream: str) -> list[str]:
    """The lines of a captured stream, progress-bar redraws (``\\r``) split off, blanks dropped."""
    return [line.strip() for line in re.split(r"[\r\n]", stream) if line.strip()]


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    """``main.py`` on the quick demo (2 + 1 epochs of 1 step) with its own data folder, so it writes the
    synthetic set and prepares it: (workdir, data folder, the finished process)."""
    base = tmp_path_factory.mktemp("quick")
    workdir, data = base / "run", base / "data"
    done = run_main(
        f"--config={REPO / 'configs' / 'demo.py'}:quick",
        f"--workdir={workdir}",
        "--config.stage1.epochs=2",
        "--config.stage1.lr_decay_epoch=1",
        "--config.run.max_steps_per_epoch=1",
        "--config.eval.bootstrap=0",
        env={"COREECHO_DATA_DIR": str(data)},
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return workdir, data, done


@pytest.mark.slow  # a subprocess of main.py: the quick demo, compiled (~1-2 min on 2 cores)
def test_a_quick_run_logs_one_line_per_epoch_and_no_library_chatter(quick_run):
    workdir, data, done = quick_run
    err = _lines(done.stderr)
    # No download wording (nothing downloads), no TFDS bars or config notice, no Orbax or TF chatter,
    # no library INFO.
    for text in (
        "Downloading",
        "downloaded and prepared",
        "Generating splits",
        "Shuffling",
        "Using custom data configuration",
        "read only",
        "save_interval_steps",
        "oneDNN",
        "absl::InitializeLog",
    ):
        assert text not in done.stderr + done.stdout, text
    assert not [line for line in err if INFO_LINE.match(line)]
    preparing = [line for line in err if line.startswith(("preparing EchoNet-Dynamic from", "prepared "))]
    assert [line.split()[0] for line in preparing] == ["preparing", "prepared"], preparing
    # Each warning once.
    warned = [m.group(1) for line in err if (m := WARNING_LINE.match(line))]
    assert len(warned) == len(set(warned)), warned
    # One compile line per step function, before its first step; one line per epoch.
    compiling = [line for line in err if line.endswith(": compiling (first step only)")]
    assert compiling == [
        "stage 1 training step: compiling (first step only)",
        "evaluation step: compiling (first step only)",
        "stage 2 training step: compiling (first step only)",
    ]
    said = [line for line in err if EPOCH_LINE.match(line) or line in compiling]
    assert said[0] == compiling[0] and said.index(compiling[2]) == 4  # after stage 1's two epochs
    epochs = [EPOCH_LINE.match(line).groups() for line in err if EPOCH_LINE.match(line)]
    assert [(int(s), int(e), int(n)) for s, e, n, _ in epochs] == [(1, 1, 2), (1, 2, 2), (2, 1, 1)]
    # The log is on stderr; stdout holds the answer: the table, under the small-run note.
    out = done.stdout.strip().splitlines()
    assert out[0].startswith(f"Test results ({workdir / 'results.json'})")
    assert out[1] == logs.small_run_note(5)
    assert "epoch" not in done.stdout and "compiling" not in done.stdout
    # The closing line names every file written: the run's, the synthetic set, the prepared dataset.
    closing = err[-1]
    assert closing.startswith(
        f"wrote: {workdir}: calibration.json, config.json, metrics.jsonl, results.json, "
    )
    for name in (
        "test_final_scatter.png",
        "test_predictions_final.csv",
        "training_curves.png",
        "tensorboard/",
    ):
        assert name in closing, name
    checkpoints = int(re.search(r"checkpoints/ \((\d+) files\)", closing).group(1))
    assert checkpoints == sum(1 for p in (workdir / "checkpoints").rglob("*") if p.is_file())
    assert (
        f"{data / 'tfds' / 'echonet_dynamic'} (" in closing and f"{data / 'synthetic'}/echonet_n40" in closing
    )
    results = json.loads((workdir / "results.json").read_text())
    assert results["small_run_note"] == logs.small_run_note(5)


@pytest.mark.slow  # a subprocess of main.py: the quick demo, compiled (~1-2 min on 2 cores)
def test_epochs_are_numbered_alike_in_the_log_metrics_results_and_checkpoints(quick_run):
    workdir, _, done = quick_run
    epochs = [EPOCH_LINE.match(line).groups() for line in _lines(done.stderr) if EPOCH_LINE.match(line)]
    logged = [(int(s), int(e)) for s, e, _, _ in epochs]
    best_logged = {int(s): int(e) for s, e, _, best in epochs if best}  # the last *best* of each stage
    records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    assert [(r["stage"], r["epoch"]) for r in records if "epoch/val_mae" in r] == logged
    assert {(r["stage"], r["epoch"]) for r in records} == set(logged)  # the step records too
    results = json.loads((workdir / "results.json").read_text())
    assert {1: results["stage1_best_epoch"], 2: results["stage2_best_epoch"]} == best_logged
    for stage, last in ((1, 2), (2, 1)):
        folder = workdir / "checkpoints" / f"stage{stage}"
        assert [p.name for p in (folder / "latest").iterdir() if p.name.isdigit()] == [str(last)]
        assert [p.name for p in (folder / "best").iterdir() if p.name.isdigit()] == [str(best_logged[stage])]
    assert (
        f"best (epoch {best_logged[2]})"
        in json.loads((workdir / "calibration.json").read_text())["checkpoint"]
    )


@pytest.mark.slow  # a subprocess of main.py: the quick demo, compiled (~1-2 min on 2 cores)
def test_verbosity_1_brings_the_library_info_and_chatter_back(quick_run):
    workdir, data, quiet = quick_run
    done = run_main(
        f"--config={REPO / 'configs' / 'demo.py'}:quick",
        f"--workdir={workdir.parent / 'data_mode'}",
        "--mode=data",
        "--verbosity=1",
        env={"COREECHO_DATA_DIR": str(data)},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert [line for line in _lines(done.stderr) if INFO_LINE.match(line)]
    assert "Using custom data configuration" in done.stderr  # TFDS's notice, hidden by default
    assert "Using custom data configuration" not in quiet.stderr


# --------------------------------------------------------------------------------------- the pieces
def test_progress_bars_never_nest():
    outer = logs.progress(desc="outer", total=3)
    inner = logs.progress(desc="inner", total=2)
    assert not outer.disable and inner.disable  # drawn: the outer bar only
    inner.close()
    outer.close()
    assert list(logs.progress(range(2), desc="iterated")) == [0, 1]  # closes itself at the end
    after = logs.progress(desc="after", total=1)
    assert not after.disable
    after.close()


def test_the_closing_line_names_the_files_written_since_the_block_began(tmp_path, capsys):
    run = tmp_path / "run"
    (run / "old").mkdir(parents=True)
    (run / "kept.json").write_text("{}")
    (run / "changed.json").write_text("{}")
    (run / "old" / "a.bin").write_text("a")
    elsewhere = tmp_path / "figure.png"
    with logs.closing(run):
        (run / "changed.json").write_text('{"x": 1}')
        (run / "new.csv").write_text("a,b\n")
        (run / ".lock").write_text("pid")  # a lock file is no output
        with logs.closing(run / "ckpt"):  # an inner command inside the outer root: listed once
            (run / "ckpt" / "1").mkdir(parents=True)
            (run / "ckpt" / "1" / "state").write_text("s")
            (run / "ckpt" / "1" / "meta").write_text("m")
        with logs.closing(elsewhere):  # an inner command: its file joins the outer line
            elsewhere.write_bytes(b"png")
        assert capsys.readouterr().err == ""
    assert capsys.readouterr().err == f"wrote: {run}: changed.json, new.csv, ckpt/ (2 files); {elsewhere}\n"
    with logs.closing(run):
        pass
    assert capsys.readouterr().err == "wrote: no file\n"
    with pytest.raises(RuntimeError), logs.closing(run):
        (run / "partial.json").write_text("{")
        raise RuntimeError("failed")
    assert capsys.readouterr().err == ""  # a failed command ends with its error, not with "wrote:"
    with logs.closing(run):
        logs.watch(tmp_path / "data", summary=True)
        (tmp_path / "data" / "x").mkdir(parents=True)
        (tmp_path / "data" / "x" / "shard-0").write_text("0")
    assert capsys.readouterr().err == f"wrote: {tmp_path / 'data'} (1 file)\n"


def test_the_quiet_filter_hides_the_known_chatter_and_repeated_warnings_only():
    code = textwrap.dedent(
        """
        import logging, sys
        from absl import logging as absl_logging
        from coreecho_jax import logs

        def tfds_notice():  # a record as TFDS's dataset_builder.py logs it
            record = logging.LogRecord("absl", logging.WARNING, "/site/tensorflow_datasets/core/dataset_builder.py",
                                       1414, "Using custom data configuration: %s", ("cfg",), None)
            logging.getLogger("absl").handle(record)

        for level in (0, 1):
            logs.configure(level)
            print(f"-- verbosity {level}", file=sys.stderr, flush=True)
            tfds_notice()
            absl_logging.warning("Using custom data configuration of ours, level %d", level)
            absl_logging.warning("a real warning %d", level)
            absl_logging.warning("a real warning %d", level)
            absl_logging.info("library info %d", level)
            logging.getLogger("jax._src.xla_bridge").info("python info %d", level)
        """
    )
    done = run_python(code)
    assert done.returncode == 0, done.stderr
    quiet, verbose = done.stderr.split("-- verbosity 1\n")
    quiet_messages = [line.split("] ", 1)[1] for line in quiet.splitlines() if "] " in line]
    assert quiet_messages == ["Using custom data configuration of ours, level 0", "a real warning 0"]
    verbose_messages = [line.split("] ", 1)[1] for line in verbose.splitlines() if "] " in line]
    assert verbose_messages == [
        "Using custom data configuration: cfg",
        "Using custom data configuration of ours, level 1",
        "a real warning 1",
        "library info 1",
        "python info 1",
    ]


def test_tensorflow_s_import_lines_are_hidden_only_when_quiet():
    code = textwrap.dedent(
        """
        import os, sys
        from coreecho_jax import logs

        native = (
            b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\\n"
            b"I0000 00:00:1796620363.084056 2223 port.cc:153] oneDNN custom operations are on. ...\\n"
            b"a line of its own\\n"
        )
        for level in (0, 1):
            logs.configure(level)
            with logs.native_chatter_hidden():
                os.write(2, native)
                print("python's stderr", file=sys.stderr)
            print("--", file=sys.stderr, flush=True)
        """
    )
    done = run_python(code)
    assert done.returncode == 0, done.stderr
    quiet, verbose, _ = done.stderr.split("--\n")
    assert quiet == "a line of its own\npython's stderr\n"
    assert "oneDNN custom operations are on" in verbose and "absl::InitializeLog" in verbose


def test_the_compile_line_comes_once_and_only_when_jax_compiles(capsys):
    double = jax.jit(lambda x: 2.0 * x + 0.5)
    step = logs.first_call_compiles("double step", double)
    np.testing.assert_allclose(step(jnp.ones(3)), 2.5)
    step(jnp.ones(3))
    assert capsys.readouterr().err == "double step: compiling (first step only)\n"
    again = logs.first_call_compiles("double step", double)  # compiled already: nothing to say
    again(jnp.ones(3))
    assert capsys.readouterr().err == ""
    again_new_shape = logs.first_call_compiles("double step, 4", double)
    again_new_shape(jnp.ones(4))
    assert capsys.readouterr().err == "double step, 4: compiling (first step only)\n"


def test_reading_a_finished_run_read_only_says_nothing_about_orbax_s_options(tmp_path, caplog):
    ckpts = RunCheckpoints(tmp_path, async_save=False)
    ckpts.save_best(1, {"model": {"w": np.zeros(2)}}, {"epoch": 1})
    ckpts.close()
    caplog.set_level(logging.INFO)
    reader = RunCheckpoints(tmp_path, read_only=True)
    _, meta = reader.restore_best({"model": {"w": np.zeros(2)}})
    reader.close()
    assert meta == {"epoch": 1}
    said = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert not [m for m in said if "read only" in m or "save_interval_steps" in m], said


def test_a_small_run_says_so_beside_its_table():
    assert logs.small_run_note(5) == (
        "note: 5 test videos (< 30): a smoke run; these numbers say nothing about the model"
    )
    assert logs.small_run_note(1).startswith("note: 1 test video (< 30)")
    assert logs.small_run_note(29) is not None and logs.small_run_note(30) is None


def test_the_module_imports_neither_jax_nor_tensorflow():
    done = run_python(
        "import sys; import coreecho_jax.logs; print(sorted(m for m in ('jax', 'tensorflow') if m in sys.modules))"
    )
    assert done.returncode == 0 and done.stdout.strip() == "[]", done.stderr
