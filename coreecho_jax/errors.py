"""The errors this library raises on purpose, under one base class.

The ``coreecho`` command (:mod:`coreecho_jax.cli`) prints a :class:`CoreEchoError` as one line naming the
file or field and what was expected, and exits non-zero; anything else is a bug and keeps its traceback.
Each subpackage's own errors subclass one of these (and the built-in error a caller would catch before,
e.g. ``ValueError``).
"""

from __future__ import annotations

from collections.abc import Sequence

#: How many names an error or log line shows before "... (N in all)".
SHOWN = 10


class CoreEchoError(Exception):
    """Base of every error raised on purpose: bad input, bad config, damaged or unsafe files."""


class ConfigError(CoreEchoError, ValueError):
    """A config field is unknown, out of range or inconsistent with the run or the machine."""


class DataError(CoreEchoError, ValueError):
    """A dataset, video or label file is missing, unreadable or not in the expected layout."""


class CheckpointError(CoreEchoError, ValueError):
    """A checkpoint is missing, damaged, unsafe or does not fit the model."""


class WorkdirError(CoreEchoError, RuntimeError):
    """A workdir is in use by another run or holds a run that the current config would contradict."""


def shown(names: Sequence[str], limit: int = SHOWN) -> str:
    """``names`` for an error or log line: the first ``limit``, then ``... (N in all)`` if there are more."""
    more = f", ... ({len(names)} in all)" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more
