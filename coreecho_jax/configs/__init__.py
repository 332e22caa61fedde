"""The built-in configs and the one loader of a ``--config`` value.

Each ``coreecho_jax/configs/<name>.py`` has ``get_config(arg=None)`` and comments every field it sets
(the checkout's ``configs/`` is a link to this folder, so ``--config=configs/demo.py`` names the same file):

* ``echonet``: the paper's EchoNet-Dynamic run; ``demo``: it on synthetic data (``demo:quick``).
* ``transfer.py``: what the transfer configs share (no config itself); ``camus`` and ``hmcqu`` add each
  dataset's own fields; ``camus_demo`` and ``hmcqu_demo`` shrink them (``:quick``); ``custom``: your own
  cohort from a manifest CSV (``custom:classification``), ``custom_demo`` a synthetic one.

:func:`load` reads ``--config=<spec>``: a built-in name (``demo``, ``demo:quick``, ``camus``), reachable
from any directory, or a path to a Python file (``configs/demo.py:quick``, ``/my/own.py``) with a
``get_config``; ``:<variant>`` is passed to ``get_config`` as ml_collections' ``--config=file.py:arg`` does.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.util
import re
from pathlib import Path

import ml_collections

from coreecho_jax.errors import ConfigError

#: This folder: the built-in config files.
FOLDER = Path(__file__).resolve().parent


def check_variant(arg: str | None, variants: tuple[str, ...], name: str) -> str:
    """The ``--config=<name>:<arg>`` variant ("" for none), or a ConfigError naming the known ones."""
    arg = (arg or "").strip()
    if arg and arg not in variants:
        known = ", ".join(f"{name}:{v}" for v in variants) or "none"
        raise ConfigError(f"--config={name}:{arg}: unknown variant {arg!r}; known: {known}")
    return arg


def names() -> list[str]:
    """The built-in config names: the files of this folder that define ``get_config`` (sorted)."""
    return sorted(
        p.stem
        for p in FOLDER.glob("*.py")
        if not p.stem.startswith("_") and re.search(r"^def get_config\(", p.read_text(), re.M)
    )


def split_spec(spec: str) -> tuple[str, str | None]:
    """``"demo:quick"`` -> ``("demo", "quick")``; ``"configs/demo.py"`` -> ``("configs/demo.py", None)``.

    The variant follows the last ``:`` after the file name, so a Windows drive (``C:\\c.py``) stays a path.
    """
    head, colon, tail = spec.rpartition(":")
    if not colon or "/" in tail or "\\" in tail or tail.endswith(".py"):
        return spec, None
    return head, tail


def is_path(name: str) -> bool:
    """Whether a ``--config`` value (without its variant) names a file rather than a built-in config."""
    return name.endswith(".py") or "/" in name or "\\" in name


def load(spec: str, flag: str = "config") -> ml_collections.ConfigDict:
    """The config ``--<flag>=<spec>`` names (module doc), not yet locked.

    A path to a built-in file (``configs/demo.py``) imports the built-in module, so both spellings give
    the same config; another file is executed as ml_collections executes a config file.

    Raises:
        ConfigError: no such built-in name or file (the built-in names listed, the nearest suggested), a
            file without ``get_config``, a ``get_config`` that returns no ConfigDict, an unknown variant.
    """
    name, variant = split_spec(spec.strip())
    module = _module(name, spec, flag) if is_path(name) else _builtin(name, spec, flag)
    get_config = getattr(module, "get_config", None)
    if not callable(get_config):
        raise ConfigError(f"--{flag}={spec}: {name} has no get_config() (see coreecho_jax/configs/demo.py)")
    config = get_config(variant) if variant is not None else get_config()
    if not isinstance(config, ml_collections.ConfigDict):
        raise ConfigError(f"--{flag}={spec}: get_config() returned {type(config).__name__}, not a ConfigDict")
    return config


def _builtin(name: str, spec: str, flag: str):
    known = names()
    if name not in known:
        near = difflib.get_close_matches(name, known, n=1)
        hint = f"; did you mean {near[0]}?" if near else ""
        raise ConfigError(
            f"--{flag}={spec}: no built-in config {name!r} (built-in: {', '.join(known)}; or give a path "
            f"to a .py file){hint}"
        )
    return importlib.import_module(f"{__name__}.{name}")


def _module(file: str, spec: str, flag: str):
    path = Path(file).expanduser()
    if not path.is_file():
        raise ConfigError(
            f"--{flag}={spec}: no such file (expected a Python file such as configs/demo.py, or a built-in "
            f"name: {', '.join(names())})"
        )
    if path.resolve().parent == FOLDER and path.stem in names():
        return importlib.import_module(f"{__name__}.{path.stem}")
    module_spec = importlib.util.spec_from_file_location(f"_{flag}_{path.stem}", path)
    if module_spec is None or module_spec.loader is None:
        raise ConfigError(f"--{flag}={spec}: not a Python file (expected a file such as configs/demo.py)")
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


def source_file(spec: str) -> Path:
    """The file a ``--config`` value names (after :func:`load` accepted it)."""
    name, _ = split_spec(spec.strip())
    return Path(name).expanduser().resolve() if is_path(name) else FOLDER / f"{name}.py"


def _bases(file: Path, seen: list[Path]) -> list[Path]:
    """``file`` after the built-in config files it imports (``from coreecho_jax.configs import a, b``),
    bases first (depth first, each once)."""
    text = file.read_text()
    for group in re.findall(r"^from coreecho_jax\.configs import ([\w, ]+)$", text, re.M):
        for base in (FOLDER / f"{n.strip()}.py" for n in group.split(",")):
            if base.is_file() and base not in seen:
                _bases(base, seen)
    if file not in seen:
        seen.append(file)
    return seen


def field_comments(spec: str) -> dict[str, str]:
    """``{"data.frames": "frames per clip (official --frames 36)", ...}``: the end-of-line comments of the
    ``c.<field> = ...  # comment`` lines of the config file ``spec`` names and of the built-in files it
    builds on, for ``--help``; the last file's comment on a field wins (a derived config's comment on a
    field it sets says why; a variant may change the value again)."""
    comments: dict[str, str] = {}
    for file in _bases(source_file(spec), []):
        for line in file.read_text().splitlines():
            if m := re.match(r"\s*c\.([\w.]+)\s*=.*?\s#\s*(.+)$", line):
                comments[m.group(1)] = m.group(2).strip()
    return comments
