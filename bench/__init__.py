"""Timings and measurements beside the tests (not tests themselves): one question per script, listed
with its command in ``bench/README.md``.

Run each script from the repository root as a module, ``python -m bench.<script> ...``: the scripts
import one another as ``bench.<script>`` and the library as ``coreecho_jax``, as the tests do.
"""

from __future__ import annotations

import platform
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def command_line(module: str, argv: Sequence[str] | None = None) -> str:
    """The command that ran ``module`` (e.g. ``bench.gpu``) with ``argv`` (default: this process's
    arguments), as the reports record it: ``python -m bench.gpu --smoke``."""
    return shlex.join(["python", "-m", module, *(sys.argv[1:] if argv is None else argv)])


def cpu_model() -> str:
    """The CPU's model name (the first ``model name`` of ``/proc/cpuinfo``), else what
    :func:`platform.processor` says, else ``unknown``: the reports' machine line."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def paper_model_config(**overrides: Any) -> dict[str, Any]:
    """The paper config's model fields (``configs/echonet.py``: UniFormer-S, the official head's dropout
    and output bias) with ``overrides`` (e.g. ``preset``, ``dtype``, ``seed``), for
    :func:`coreecho_jax.models.coreecho.build_coreecho`."""
    from configs import echonet
    from coreecho_jax.models.coreecho import MODEL_CONFIG_KEYS

    model = echonet.get_config().model.to_dict()
    return {**{k: model[k] for k in MODEL_CONFIG_KEYS if k in model}, "seed": 0, **overrides}
