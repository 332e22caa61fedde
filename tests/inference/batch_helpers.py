"""Jobs that tests of :mod:`coreecho_jax.inference.batch` send to worker processes: importable by a spawned
process without importing the test modules (and their JAX)."""

from __future__ import annotations

import os
import sys

#: Modules a decoding worker must not load: JAX, the training side, TensorFlow.
HEAVY = ("jax", "jaxlib", "flax", "tensorflow", "coreecho_jax.train", "coreecho_jax.transfer")


def crash_on(job: str) -> str:
    """Ends the process at once for the job ``"crash"`` (as a crashing decoder would); else returns the job."""
    if job == "crash":
        os._exit(3)
    return job


def heavy_modules() -> list[str]:
    """The modules of :data:`HEAVY` this process has loaded."""
    return sorted(m for m in sys.modules if m.split(".")[0] in HEAVY or m.startswith(HEAVY))
