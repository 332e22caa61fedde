"""Tasks for the guarded-worker tests (coreecho_jax.data.corpus.guard), run in its child process.

Kept out of the test modules so that the child imports only numpy (no pytest, no TensorFlow).
"""

from __future__ import annotations

import os
import sys
import time

import numpy as np


def echo(text: str, repeat: int = 1) -> tuple[dict, bytes]:
    """The text back in the header and ``repeat`` copies of it as the payload; the child's pid too."""
    return {"text": text, "pid": os.getpid()}, text.encode() * repeat


def sleep(seconds: float) -> tuple[dict, bytes]:
    """Hangs for ``seconds`` (a decode that never ends)."""
    time.sleep(seconds)
    return {"slept": seconds}, b""


def allocate(mib: int) -> tuple[dict, bytes]:
    """Touches ``mib`` MiB (a decode that eats memory)."""
    block = np.ones(mib << 20, np.uint8)
    return {"sum": int(block[:: 1 << 20].sum())}, b""


def fail(message: str) -> tuple[dict, bytes]:
    """Raises like a decoder meeting a damaged file."""
    raise ValueError(message)


def crash() -> tuple[dict, bytes]:
    """Dies without answering (a decoder that segfaults)."""
    os._exit(3)


def tensorflow_modules() -> tuple[dict, bytes]:
    """Imports the corpus reader as its guarded child does and says which TensorFlow modules are loaded."""
    from coreecho_jax.data.corpus import reading

    reading.warm_up()
    loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "tensorflow_datasets"))
    return {"reading": "coreecho_jax.data.corpus.reading" in sys.modules, "tensorflow": loaded[:5]}, b""
