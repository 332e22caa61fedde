"""What tests of :mod:`coreecho_jax.inference.archive` send to Beam's worker processes: importable there
without importing the test modules."""

from __future__ import annotations

import os
from pathlib import Path

import coreecho_jax
from coreecho_jax.inference.weights_folder import WeightsError


def counting_load(marker: str, folder: str):
    """``from_pretrained(folder)``, after appending this process's id to ``marker`` (one line per load)."""
    with open(marker, "a") as f:
        f.write(f"{os.getpid()}\n")
    return coreecho_jax.from_pretrained(folder, compilation_cache=False)


def loads(marker: str | Path) -> list[int]:
    """The process ids :func:`counting_load` wrote, one per load."""
    path = Path(marker)
    return [int(line) for line in path.read_text().split()] if path.exists() else []


def load_here_only(driver: int, folder: str):
    """``from_pretrained(folder)`` in the process ``driver``; elsewhere (a Beam worker) a WeightsError."""
    if os.getpid() != driver:
        raise WeightsError(f"{folder}: changed since the driver read it")
    return coreecho_jax.from_pretrained(folder, compilation_cache=False)
