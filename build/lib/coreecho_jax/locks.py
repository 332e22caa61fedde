"""Exclusive file locks that name their holder: one run per workdir, one preparation per data folder.

:class:`HolderLock` is an ``fcntl.flock`` on a small file that holds the holder's pid, host and start
time as JSON while it is held and is emptied on a clean release. The kernel drops the lock when its
process dies, so a non-empty file found by the next holder was left by a process that died holding it
(:meth:`HolderLock.acquire` returns that record). ``acquire(wait=False)`` raises :class:`LockBusy`
naming the holder; ``acquire(wait=True)`` reports the holder once through ``on_wait`` and blocks
until the lock is free.

``flock`` is advisory and local: it holds between processes of one machine and on file systems that
pass it through (local disks, most NFSv4 and Lustre mounts).
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any


class LockBusy(Exception):
    """Another live process holds the lock; ``holder`` is what its lock file says (may be empty)."""

    def __init__(self, path: Path, holder: dict):
        super().__init__(f"{path} is held by {describe_holder(holder)}")
        self.path = path
        self.holder = holder


class HolderLock:
    """An exclusive ``flock`` on ``path`` with the holder written inside (see the module doc)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self, *, wait: bool = False, on_wait: Callable[[dict], None] | None = None) -> dict:
        """Takes the lock; returns the record of a holder that died holding it (``{}`` after a clean release).

        Args:
            wait: block until the lock is free (``on_wait(holder)`` is called once first) instead of
                raising :class:`LockBusy`.
            on_wait: called with the current holder's record before blocking.

        Raises:
            LockBusy: ``wait=False`` and another process holds the lock.
            OSError: the lock file cannot be created (e.g. a read-only folder) or locked (``ENOLCK``).
        """
        if self._fd is not None:
            raise RuntimeError(f"{self.path}: already held by this object")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = read_holder(fd)
                if not wait:
                    raise LockBusy(self.path, holder) from None
                if on_wait is not None:
                    on_wait(holder)
                fcntl.flock(fd, fcntl.LOCK_EX)
            previous = read_holder(fd)
            holder = {"pid": os.getpid(), "host": socket.gethostname(), "started": now()}
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(holder).encode(), 0)
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        return previous

    def release(self) -> None:
        """Empties the lock file (a clean end) and drops the lock. The file stays: see ``acquire``."""
        if self._fd is None:
            return
        os.ftruncate(self._fd, 0)
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> HolderLock:
        self.acquire()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()


def read_holder(fd: int) -> dict:
    """The holder record in an open lock file: ``{}`` when empty, ``{'unreadable': text}`` when not JSON."""
    raw = os.pread(fd, 4096, 0)
    if not raw.strip():
        return {}
    try:
        holder = json.loads(raw)
    except ValueError:
        return {"unreadable": raw[:80].decode(errors="replace")}
    return holder if isinstance(holder, dict) else {}


def describe_holder(holder: Mapping[str, Any]) -> str:
    """``pid N on host H, started T`` (or what is known) for a holder record."""
    if not holder:
        return "holder unknown"
    if "unreadable" in holder:
        return f"lock file reads {holder['unreadable']!r}"
    return f"pid {holder.get('pid')} on host {holder.get('host')}, started {holder.get('started')}"


def now() -> str:
    """Local time as ``2026-12-02T10:00:00+0000``, the form lock records use."""
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")
