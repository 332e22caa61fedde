"""JAX's persistent compilation cache for prediction: a second process does not compile the model again.

XLA's compiled forward pass is written to disk the first time and read back by the next process that
traces the same function with the same shapes, devices and JAX version (JAX keys the cache on all of
them), so ``coreecho predict`` and ``from_pretrained(...).predict`` skip the compilation from the
second run on. Tracing still happens in every process; only XLA's compilation is skipped.

Where, in order (:func:`cache_dir`):

1. an explicit ``setting`` (a folder, or False for off);
2. ``$COREECHO_COMPILE_CACHE``: a folder, or ``0`` / ``off`` / ``false`` / ``no`` / ``none`` for off;
3. a folder the process already gave JAX itself (``JAX_COMPILATION_CACHE_DIR`` or
   ``jax.config.update("jax_compilation_cache_dir", ...)``): left as it is;
4. ``<data home>/jax_compilation_cache`` (:func:`coreecho_jax.data.home.data_home`).

JAX's own warning holds: the cache is trusted, so never point it at a folder others may write.
"""

from __future__ import annotations

import os
from pathlib import Path

import jax
from jax.experimental.compilation_cache import compilation_cache

from coreecho_jax.data.home import data_home
from coreecho_jax.errors import ConfigError

#: Environment variable: the cache folder, or one of :data:`OFF_WORDS`.
CACHE_ENV = "COREECHO_COMPILE_CACHE"
OFF_WORDS = ("0", "off", "false", "no", "none")
#: The cache's folder under the data home.
CACHE_SUBDIR = "jax_compilation_cache"
#: Compilations shorter than this are not written (JAX's default, 1 s, would leave out the forward of a
#: small model; the model's forward takes seconds, the many tiny eager ops each a few milliseconds).
MIN_COMPILE_SECONDS = 0.2

CacheSetting = str | os.PathLike | bool | None


def cache_dir(setting: CacheSetting = None) -> Path | None:
    """The cache folder ``setting`` and the environment choose (module doc), or None for off.

    Args:
        setting: a folder; False for off; None or True: the environment decides.

    Raises:
        ConfigError: ``$COREECHO_COMPILE_CACHE`` or ``setting`` names something that is not a folder.
    """
    if setting is False:
        return None
    if setting not in (None, True):
        return _folder(Path(setting).expanduser(), "the compilation cache setting")
    value = os.environ.get(CACHE_ENV)
    if value is not None:
        if value.strip().lower() in OFF_WORDS or not value.strip():
            return None
        return _folder(Path(value).expanduser(), f"${CACHE_ENV}")
    own = jax.config.jax_compilation_cache_dir
    return Path(own) if own else data_home() / CACHE_SUBDIR


def parse_setting(text: str | None) -> CacheSetting:
    """A command's ``--compile_cache`` value as a setting: empty or None: the default (None); one of
    :data:`OFF_WORDS`: off (False); anything else: a folder."""
    if text is None or not text.strip():
        return None
    return False if text.strip().lower() in OFF_WORDS else text


def _folder(path: Path, where: str) -> Path:
    if path.exists() and not path.is_dir():
        raise ConfigError(
            f"{where}: {path} exists and is not a folder; give a folder for the compilation cache or "
            f"{CACHE_ENV}=off"
        )
    return path.absolute()


def enable(setting: CacheSetting = None, *, min_compile_seconds: float = MIN_COMPILE_SECONDS) -> Path | None:
    """Turns the persistent compilation cache on at :func:`cache_dir` (or off); returns the folder or None.

    Process-wide (JAX's config). Switching from one folder to another within a process resets JAX's
    cache object, so the next compilation opens the new folder.

    Raises:
        ConfigError: see :func:`cache_dir`.
    """
    folder = cache_dir(setting)
    current = jax.config.jax_compilation_cache_dir
    wanted = None if folder is None else str(folder)
    if current != wanted:
        if current:
            compilation_cache.reset_cache()
        jax.config.update("jax_compilation_cache_dir", wanted)
    if folder is not None:
        jax.config.update("jax_persistent_cache_min_compile_time_secs", float(min_compile_seconds))
        jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return folder
