"""The machine's data home: where prepared data, synthetic sets and the compilation cache are shared.

Standard library only (no TensorFlow, no JAX), so that the prediction path can name the folder too.
"""

from __future__ import annotations

import os
from pathlib import Path

#: Environment variable naming the machine's shared data folder (see :func:`data_home`).
DATA_HOME_ENV = "COREECHO_DATA_DIR"


def data_home() -> Path:
    """The folder prepared data is shared in: ``$COREECHO_DATA_DIR``, else ``$XDG_CACHE_HOME/coreecho_jax``,
    else ``~/.cache/coreecho_jax`` (absolute; not created here)."""
    if os.environ.get(DATA_HOME_ENV):
        return Path(os.environ[DATA_HOME_ENV]).expanduser().absolute()
    cache = os.environ.get("XDG_CACHE_HOME") or "~/.cache"
    return Path(cache).expanduser().absolute() / "coreecho_jax"
