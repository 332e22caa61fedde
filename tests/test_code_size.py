"""The library's size rules (pyproject.toml: ruff C901, PLR0913, PLR0915), which .ci/run's ``ruff check .``
enforces: a new function over a limit fails, scripts and tests are exempt, each exception is justified."""

from __future__ import annotations

import subprocess
import sys
import tomllib

import pytest

from tests.paths import REPO

NINE_ARGUMENTS = "def f(a, b, c, d, e, g, h, i, j):\n    return a\n"
COMPLEX = (
    "def f(x):\n" + "".join(f"    if x == {i}:\n        return {i}\n" for i in range(13)) + "    return x\n"
)
LONG = "def f(x):\n" + "".join(f"    x = x + {i}\n" for i in range(51)) + "    return x\n"


def _ruff(source: str, path: str) -> set[str]:
    """The rule codes ``ruff check`` (the repository's config) reports for ``source`` as if at ``path``."""
    done = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--output-format", "concise", "--stdin-filename", path, "-"],
        input=source,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode in (0, 1), done.stderr
    return {line.split()[1] for line in done.stdout.splitlines() if line.startswith(path)}


@pytest.mark.parametrize(
    ("source", "rule"), [(NINE_ARGUMENTS, "PLR0913"), (COMPLEX, "C901"), (LONG, "PLR0915")]
)
def test_a_new_library_function_over_a_limit_fails_and_a_script_s_does_not(source, rule):
    assert _ruff(source, "coreecho_jax/analysis/new_module.py") == {rule}
    for path in ("bench/new_script.py", "tests/test_new.py", "configs/new.py"):
        assert _ruff(source, path) == set(), path


def test_each_library_exception_is_named_and_justified():
    text = (REPO / "pyproject.toml").read_text()
    ignores = tomllib.loads(text)["tool"]["ruff"]["lint"]["per-file-ignores"]
    library = {path: rules for path, rules in ignores.items() if path.startswith("coreecho_jax/")}
    assert library, "the exceptions are listed per file"
    lines = text.splitlines()
    for path, rules in library.items():
        assert set(rules) <= {"C901", "PLR0913", "PLR0915"}, path
        at = next(i for i, line in enumerate(lines) if line.startswith(f'"{path}"'))
        assert lines[at - 1].startswith("# "), f"{path}: no comment saying why"
        assert (REPO / path).is_file(), path
