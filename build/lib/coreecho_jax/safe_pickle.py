"""A restricted unpickler: only the globals of an allow-list, refused before anything is called.

A pickle runs code through the globals it names (``os.system``, ``builtins.eval``, ...): the pickle
machine imports them in ``find_class`` and calls them in REDUCE. :class:`RestrictedUnpickler` resolves
a ``(module, name)`` only through the mapping it is given, usually to a checked local stand-in, and
raises the caller's error for anything else, so a refused object is never imported, let alone called.
The ``.pth`` reader (:mod:`coreecho_jax.checkpoints.torch_pth`) and the start-index reader
(:mod:`coreecho_jax.data.echonet.start_indexes`) use it with their own allow-lists and errors.

``fix_imports`` is off: ``find_class`` sees the raw names of the GLOBAL opcode, so a protocol-2
``__builtin__ print`` is refused as such, never mapped to ``builtins.print`` first.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable, Mapping
from typing import Any, BinaryIO

from coreecho_jax.errors import CoreEchoError

Allowed = Mapping[tuple[str, str], Any]


class UnsafePickleError(CoreEchoError, pickle.UnpicklingError):
    """A pickle asks for a global or a construct outside its allow-list; nothing was called."""


def latin1_encode(text: Any, encoding: Any = "utf-8") -> bytes:
    """Checked stand-in for ``_codecs.encode``: protocol 2 spells ``bytes`` as ``encode(str, 'latin1')``,
    and only that form is allowed."""
    latin1 = isinstance(encoding, str) and encoding.lower().replace("-", "").replace("_", "") in (
        "latin1",
        "iso88591",
    )
    if not isinstance(text, str) or not latin1:
        raise UnsafePickleError(
            f"_codecs.encode is only allowed as encode(str, 'latin1'), got {encoding!r:.40}"
        )
    return text.encode("latin1")


def _no_persistent_ids(pid: Any) -> Any:
    raise UnsafePickleError(f"persistent id {pid!r:.80} in a pickle that allows none")


class RestrictedUnpickler(pickle.Unpickler):
    """``pickle.Unpickler`` whose ``find_class`` only looks ``(module, name)`` up in ``allowed``.

    Args:
        file: the pickle stream (binary).
        allowed: ``(module, name)`` -> the object to use for it (a checked stand-in, a class, a function).
        refuse: builds the error raised for a global outside ``allowed``, from ``(module, name)``.
        persistent_load: resolves persistent ids (torch storages); by default they are refused with
            :class:`UnsafePickleError`.
    """

    def __init__(
        self,
        file: BinaryIO,
        allowed: Allowed,
        *,
        refuse: Callable[[str, str], Exception],
        persistent_load: Callable[[Any], Any] = _no_persistent_ids,
    ) -> None:
        super().__init__(file, fix_imports=False, encoding="utf-8", errors="strict")
        self._allowed = allowed
        self._refuse = refuse
        self._persistent = persistent_load

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self._allowed[(module, name)]
        except KeyError:
            raise self._refuse(module, name) from None

    def persistent_load(self, pid: Any) -> Any:
        return self._persistent(pid)
