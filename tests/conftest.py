"""Test session setup and shared helpers.

Four virtual CPU devices (for the data-parallel tests) and full-precision matmuls: XLA reads its flags
once, when the backend starts, so this runs before anything imports jax. Shared helpers:

* ``quick_config`` fixture: a fresh ``configs/demo.py:quick`` config (tiny model, 40 synthetic videos,
  few steps) for tests that run the real path end to end.
* :func:`run_main`: ``python main.py ...`` in a fresh interpreter, for tests of what a user sees.
* :func:`run_python`: a code snippet in a fresh interpreter (import side effects, module state).
"""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import sys
import tempfile

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=4")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Prepared data and synthetic sets that runs share (coreecho_jax.data.echonet.inputs.data_home) go to a folder
# of this test session, never to the user's cache; the subprocesses of run_main inherit it.
os.environ["COREECHO_DATA_DIR"] = tempfile.mkdtemp(prefix="coreecho_test_data_")

import jax
import ml_collections
import pytest

from tests.paths import REPO

jax.config.update("jax_default_matmul_precision", "highest")
atexit.register(shutil.rmtree, os.environ["COREECHO_DATA_DIR"], ignore_errors=True)


def quick_config() -> ml_collections.ConfigDict:
    """``configs/demo.py:quick``: the whole training path on a tiny synthetic set in seconds."""
    from configs import demo

    return demo.get_config("quick")


@pytest.fixture(name="quick_config")
def quick_config_fixture() -> ml_collections.ConfigDict:
    return quick_config()


def run_main(*args: str, timeout: float = 300, env: dict | None = None) -> subprocess.CompletedProcess:
    """``python main.py <args>`` from the repository root; stdout and stderr captured as text."""
    return subprocess.run(
        [sys.executable, str(REPO / "main.py"), *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def run_python(code: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """``python -c <code>`` from the repository root in a fresh interpreter; output captured as text."""
    return subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture(autouse=True)
def _logs_reset():
    """A command run in-process (``cli.main``) configures the log for the whole interpreter; each test
    starts from the libraries' defaults again, so one test's "each warning once" never hides the next
    test's warning from ``caplog``."""
    yield
    from coreecho_jax import logs

    logs.reset()
