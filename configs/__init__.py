"""The shipped configs. Each ``configs/<name>.py`` has ``get_config(arg=None)``, which
``--config=configs/<name>.py[:<variant>]`` calls (ml_collections), and comments every field it sets.

* ``echonet.py``: the paper's EchoNet-Dynamic run; ``demo.py``: it on synthetic data (``:quick``).
* ``transfer.py``: what the transfer configs share (no config itself); ``camus.py`` and ``hmcqu.py``
  add each dataset's own fields; ``camus_demo.py`` and ``hmcqu_demo.py`` shrink them (``:quick``).
"""

from coreecho_jax.errors import ConfigError


def check_variant(arg: str | None, variants: tuple[str, ...], config_file: str) -> str:
    """The ``--config=<file>:<arg>`` variant name ("" for none), or a ConfigError naming the known ones."""
    arg = (arg or "").strip()
    if arg and arg not in variants:
        known = ", ".join(f"{config_file}:{v}" for v in variants) or "none"
        raise ConfigError(f"--config={config_file}:{arg}: unknown variant {arg!r}; known: {known}")
    return arg
