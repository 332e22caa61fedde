"""Timings and measurements beside the tests (not tests themselves): one question per script, listed
with its command in ``bench/README.md``.

Run each script from the repository root as a module, ``python -m bench.<script> ...``: the scripts
import one another as ``bench.<script>`` and the library as ``coreecho_jax``, as the tests do.
"""

from __future__ import annotations

import shlex
import sys
from collections.abc import Sequence


def command_line(module: str, argv: Sequence[str] | None = None) -> str:
    """The command that ran ``module`` (e.g. ``bench.gpu``) with ``argv`` (default: this process's
    arguments), as the reports record it: ``python -m bench.gpu --smoke``."""
    return shlex.join(["python", "-m", module, *(sys.argv[1:] if argv is None else argv)])
