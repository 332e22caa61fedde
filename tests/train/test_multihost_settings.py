"""The multi-host start (``coreecho_jax.train.distributed``): where its settings come from, what a
missing or contradictory one says, and processes that disagree on the config. Seconds: no training."""

import jax
import pytest

from configs import camus, demo
from coreecho_jax import config_check
from coreecho_jax.errors import ConfigError
from coreecho_jax.train import distributed, workdir
from tests.multihost_procs import Process, clean_env, error_lines, free_port, wait_all

ALL_UNSET = (
    "run.coordinator=HOST:PORT (or JAX_COORDINATOR_ADDRESS), run.num_processes (or JAX_NUM_PROCESSES) "
    "and run.process_id (or JAX_PROCESS_ID)"
)


def _config(**run):
    c = demo.get_config("quick")
    for key, value in run.items():
        c.run[key] = value
    return c


def test_settings_come_from_the_config_first_then_the_jax_environment():
    env = {"JAX_COORDINATOR_ADDRESS": "envhost:2", "JAX_NUM_PROCESSES": "4", "JAX_PROCESS_ID": "3"}
    assert distributed.explicit_settings(_config(), env) == distributed.Settings("envhost:2", 4, 3)
    given = _config(coordinator="node001:61000", num_processes=8, process_id=0)
    assert distributed.explicit_settings(given, env) == distributed.Settings("node001:61000", 8, 0)
    unset = distributed.explicit_settings(_config(), {})
    assert unset == distributed.Settings(None, None, None)
    assert ", ".join(unset.unset()) == ALL_UNSET.replace(" and ", ", ")
    partly = distributed.explicit_settings(_config(coordinator="h:1"), {"JAX_PROCESS_ID": "0"})
    assert partly.unset() == ["run.num_processes (or JAX_NUM_PROCESSES)"]


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"JAX_NUM_PROCESSES": "two"}, "JAX_NUM_PROCESSES='two': must be an integer >= 1"),
        ({"JAX_NUM_PROCESSES": "0"}, "JAX_NUM_PROCESSES='0': must be an integer >= 1"),
        ({"JAX_PROCESS_ID": "-2"}, "JAX_PROCESS_ID='-2': must be an integer >= 0"),
        ({"JAX_COORDINATOR_ADDRESS": "node001"}, "JAX_COORDINATOR_ADDRESS='node001': must be HOST:PORT"),
    ],
)
def test_a_bad_jax_variable_is_one_line_naming_it(env, message):
    with pytest.raises(ConfigError) as e:
        distributed.explicit_settings(_config(), env)
    assert str(e.value).startswith(message) and "\n" not in str(e.value)


@pytest.mark.parametrize("make", [lambda: demo.get_config("quick"), camus.get_config])
def test_run_fields_are_checked_with_the_rest_of_the_config(make):
    c = make()
    assert config_check.run_problems(c) == []
    c.run.coordinator = "node001"
    c.run.num_processes = 0
    c.run.process_id = -3
    assert config_check.run_problems(c) == [
        "run.coordinator = 'node001': must be HOST:PORT of process 0, or '' (unset)",
        "run.num_processes = 0: must be an integer >= 1, or -1 (unset)",
        "run.process_id = -3: must be an integer >= 0, or -1 (unset)",
        "run.coordinator, run.num_processes, run.process_id set but run.distributed = False: "
        "set --config.run.distributed=True",
    ]
    c.run.update(distributed=True, coordinator="[::1]:1234", num_processes=2, process_id=2)
    with pytest.raises(ConfigError, match=r"^run.process_id = 2: must be < run.num_processes = 2$"):
        config_check.check_config(c)


def test_configs_without_the_new_fields_read_as_unset():
    c = demo.get_config("quick")
    for key in ("coordinator", "num_processes", "process_id", "distributed"):
        del c.run[key]
    assert config_check.run_problems(c) == []
    assert distributed.explicit_settings(c, {}) == distributed.Settings(None, None, None)


def test_the_multi_host_settings_do_not_block_a_resume():
    """Process 1 checks the ``config.json`` process 0 wrote; the next job may have another coordinator."""
    saved = workdir.config_record(_config(distributed=True, coordinator="a:1", num_processes=2, process_id=0))
    current = workdir.config_record(_config(distributed=True, process_id=1))
    assert workdir.config_differences(saved, current) == {}


def test_processes_that_disagree_are_named_with_the_first_differing_field():
    base = distributed.comparable_record(_config(distributed=True, process_id=0), "train")
    same = distributed.comparable_record(
        _config(distributed=True, process_id=1, coordinator="h:1", num_processes=3), "train"
    )
    assert distributed.disagreement([base, same]) is None  # per-process fields may differ
    other = _config(distributed=True, process_id=2)
    other.stage1.lr = 5e-4
    other.eval.bootstrap = 7
    line = distributed.disagreement([base, same, distributed.comparable_record(other, "train")])
    assert line.startswith(
        "the processes disagree on the config: process 2 has eval.bootstrap=7 where process 0 has 20 "
        "(and 1 more field(s)); start every process with the same --config"
    )
    moded = distributed.comparable_record(_config(distributed=True), "evaluate")
    assert "process 1 has --mode='evaluate' where process 0 has 'train'" in distributed.disagreement(
        [base, moded]
    )


def test_start_after_jax_is_in_use_says_so_and_chooses_gloo():
    jax.devices()  # this test process's backend is up, as in a notebook that used JAX first
    before = jax.config.jax_cpu_collectives_implementation
    jax.config.update("jax_cpu_collectives_implementation", None)
    try:
        with pytest.raises(ConfigError, match=r"JAX was already in use in this process") as e:
            distributed.start(
                _config(distributed=True, coordinator="localhost:1", num_processes=2, process_id=0)
            )
        assert "\n" not in str(e.value)
        assert jax.config.jax_cpu_collectives_implementation == "gloo"
    finally:
        jax.config.update("jax_cpu_collectives_implementation", before)


def test_start_without_distributed_does_nothing(monkeypatch):
    monkeypatch.setattr(jax.distributed, "initialize", lambda *a, **k: pytest.fail("initialize called"))
    distributed.start(_config())


def test_main_py_with_no_cluster_and_no_settings_is_one_line_naming_them(tmp_path):
    proc = Process(
        "alone",
        ["--config=configs/demo.py:quick", f"--workdir={tmp_path / 'w'}", "--config.run.distributed=True"],
        clean_env(),
        tmp_path,
    )
    assert wait_all([proc], timeout=300) == [1]
    assert error_lines(proc.stderr) == [
        f"error: run.distributed=True needs {ALL_UNSET}: no SLURM (srun), Open MPI (mpirun), Kubernetes or "
        "Cloud TPU environment gave them (docs/training.md: Several hosts)"
    ]
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "w").exists()  # nothing written before the start


def test_main_py_processes_with_different_configs_stop_with_one_line(tmp_path):
    coordinator = f"localhost:{free_port()}"
    procs = []
    for i, lr in enumerate(("0.001", "0.002")):
        args = [
            "--config=configs/demo.py:quick",
            f"--workdir={tmp_path / 'w'}",
            "--config.run.distributed=True",
            f"--config.run.coordinator={coordinator}",
            "--config.run.num_processes=2",
            f"--config.run.process_id={i}",
            f"--config.stage1.lr={lr}",
        ]
        procs.append(Process(f"p{i}", args, clean_env(), tmp_path))
    assert wait_all(procs, timeout=300) == [1, 1]
    expected = (
        "error: the processes disagree on the config: process 1 has stage1.lr=0.002 where process 0 has "
        "0.001; start every process with the same --config, --config.* overrides and --mode (only "
        "run.coordinator, run.num_processes, run.process_id, data.root, data.data_dir may differ)"
    )
    for proc in procs:
        assert error_lines(proc.stderr) == [expected], proc.tail()
    assert not (tmp_path / "w").exists()
