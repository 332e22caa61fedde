"""Starting ``main.py`` as several JAX processes on this machine, for the multi-host tests.

Each process runs on CPU devices in a clean environment: no cluster variables from the machine running
the tests (SLURM, Open MPI, Kubernetes, ``JAX_*`` settings) unless the test gives them.
"""

from __future__ import annotations

import csv
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.paths import REPO

# Fast CPU compilation (the runs are compile-bound); the same flags for every run, so the same numerics.
FAST_COMPILE = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"
_CLUSTER_PREFIXES = ("SLURM_", "OMPI_", "PMI_", "PMIX_", "PRTE_", "KUBERNETES_", "TPU_", "MEGASCALE_")
_JAX_SETTINGS = (
    "JAX_COORDINATOR_ADDRESS",
    "JAX_COORDINATOR_PORT",
    "JAX_NUM_PROCESSES",
    "JAX_PROCESS_ID",
    "JAX_LOCAL_DEVICE_IDS",
    "JAX_CPU_COLLECTIVES_IMPLEMENTATION",
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def clean_env(devices: int = 1, **extra: str) -> dict[str, str]:
    """This environment without cluster settings, on ``devices`` CPU devices, plus ``extra``."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(_CLUSTER_PREFIXES) and k not in _JAX_SETTINGS and k != "XLA_FLAGS"
    }
    env.update(
        XLA_FLAGS=f"{FAST_COMPILE} --xla_force_host_platform_device_count={devices}",
        JAX_PLATFORMS="cpu",
        JAX_DEFAULT_MATMUL_PRECISION="highest",
        TF_CPP_MIN_LOG_LEVEL="2",
    )
    env.update(extra)
    return env


def compile_cache_env(cache_dir: Path) -> dict[str, str]:
    """JAX's persistent compilation cache in ``cache_dir``, for every compilation: a run after the first
    reuses the first's executables (the same executables, so the same numerics). Several CPU processes:
    JAX writes entries from process 0 only and the other processes' keys differ (JAX 0.10 hashes each
    process's own device topology into them), so only process 0 compiles less."""
    return {
        "JAX_COMPILATION_CACHE_DIR": str(cache_dir),
        "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
        "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0",
    }


def slurm_env(process_id: int, num_processes: int, port: int) -> dict[str, str]:
    """A simulated ``srun`` task on this machine: every variable JAX's SLURM detection reads, and the
    coordinator port (otherwise derived from the job id) set to a free one."""
    return {
        "SLURM_JOB_ID": "4242",
        "SLURM_STEP_NODELIST": "localhost",
        "SLURM_NTASKS": str(num_processes),
        "SLURM_PROCID": str(process_id),
        "SLURM_LOCALID": str(process_id),
        "JAX_COORDINATOR_PORT": str(port),
    }


class Process:
    """One ``python main.py`` with its stdout and stderr in files next to ``log_dir/<name>``."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], log_dir: Path):
        self.name = name
        self.stdout_path = log_dir / f"{name}.out"
        self.stderr_path = log_dir / f"{name}.err"
        with open(self.stdout_path, "w") as out, open(self.stderr_path, "w") as err:
            self.popen = subprocess.Popen(
                [sys.executable, str(REPO / "main.py"), *args], cwd=REPO, env=env, stdout=out, stderr=err
            )

    @property
    def stdout(self) -> str:
        return self.stdout_path.read_text()

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text()

    def tail(self, chars: int = 3000) -> str:
        """The end of stderr without native stack frames (lines ``    @ 0x...``)."""
        lines = [line for line in self.stderr.splitlines() if not line.startswith("    @")]
        return "\n".join(lines)[-chars:]


def wait_all(procs: list[Process], timeout: float, *, stop_at_failure: bool = False) -> list[int]:
    """Waits for every process (at most ``timeout`` s) and returns their exit codes; a process still
    running then is killed and the test fails showing the logs. ``stop_at_failure``: the first process
    that fails stops the others at once (they would wait in a collective until JAX's timeout)."""
    deadline = time.time() + timeout
    while time.time() < deadline and any(p.popen.poll() is None for p in procs):
        if stop_at_failure and any(p.popen.poll() not in (None, 0) for p in procs):
            break
        time.sleep(0.5)
    stopped = [p.name for p in procs if p.popen.poll() is None]
    for p in procs:
        if p.popen.poll() is None:
            p.popen.kill()
        p.popen.wait()
    if stopped:
        logs = "\n\n".join(f"{p.name}:\n{p.tail()}" for p in procs)
        pytest.fail(f"stopped (timeout or a failed peer): {stopped}\n{logs}")
    return [p.popen.returncode for p in procs]


def wait_until(condition, procs: list[Process], timeout: float, what: str) -> float:
    """Polls ``condition()`` until it holds and returns the seconds waited; the test fails (showing the
    logs) when a process ends first or ``timeout`` s pass."""
    t0 = time.time()
    while not condition():
        ended = [p.name for p in procs if p.popen.poll() is not None]
        if ended or time.time() - t0 > timeout:
            for p in procs:
                if p.popen.poll() is None:
                    p.popen.kill()
                p.popen.wait()
            logs = "\n\n".join(f"{p.name}:\n{p.tail()}" for p in procs)
            pytest.fail(f"waiting for {what}: {'ended: ' + str(ended) if ended else 'timeout'}\n{logs}")
        time.sleep(0.2)
    return time.time() - t0


def assert_all_succeeded(procs: list[Process], timeout: float) -> None:
    codes = wait_all(procs, timeout, stop_at_failure=True)
    failed = [p for p, code in zip(procs, codes) if code != 0]
    if failed:
        pytest.fail("failed: " + "\n\n".join(f"{p.name}:\n{p.tail()}" for p in failed))


def error_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("error:")]


def strict_json(path: Path) -> dict:
    def refuse(token):
        raise AssertionError(f"{path} holds the non-standard JSON token {token}")

    return json.loads(path.read_text(), parse_constant=refuse)


def read_csv(path: Path) -> list[dict]:
    with open(path) as f:
        return list(csv.DictReader(f))
