"""One task at a time in a child process, under a time and a memory limit. No TensorFlow.

A corpus holds files written by many scanners; a damaged one can make a decoder loop without end or
allocate without bound. Each preparation worker (a thread of the in-process path, a Beam ``DoFn``
instance in a Beam worker) therefore owns one :class:`GuardedWorker`: a Python child started once
(``python -m coreecho_jax.data.corpus.guard <module:function> <memory MiB>``) that imports the task's
function, caps its own address space (``RLIMIT_AS`` = its size after the imports + ``memory_mb``) and
answers one request at a time. The parent waits at most ``timeout_s`` for each answer; a late child
is killed, a dead one (killed by the kernel, a crash in a decoder) is reaped, the task fails with
:class:`TaskFailed` naming the limit, and the next task starts a fresh child. The price is one
interpreter start per worker (about a second), not one per file.

Why a child process and not Beam's own mechanisms: the Python SDK has no per-element limit that
skips and reports the element. ``--element_processing_timeout_minutes`` makes the whole SDK worker
exit, and the runner retries the bundle (the same damaged file again) until the job fails; the
DirectRunner, the default here, has no limit at all. A thread cannot be stopped and shares the
worker's memory. A child process can be killed and limited under every runner that runs Python on
POSIX workers (DirectRunner multi-processing, Dataflow, Flink, Spark portable workers), and it dies
with its worker (it exits when its stdin closes).

``RLIMIT_AS`` is enforced by Linux; elsewhere (macOS) the limit is not set and :attr:`memory_limited`
is False (the time limit still holds).

Before the limit is set, the child calls the task module's ``warm_up()`` when it has one, so that what
the first task would load lazily (decoder plugins, OpenCV's buffers: tens of MiB of address space) does
not count against the budget of a file.

Protocol, over the child's stdin and stdout (JSON and raw bytes, no pickle): a request is one JSON
line of keyword arguments; an answer is a 4-byte big-endian length + a JSON header, then an 8-byte
length + a payload. The task returns ``(header, payload)``; a failure is the header
``{"error": line, "kind": name}``. The child's own stdout is moved to stderr, so a stray print cannot
corrupt an answer.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import select
import signal
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any, BinaryIO

from coreecho_jax.errors import DataError

#: Seconds a child may take to import its task and report ready (imports are slow on a busy machine).
START_TIMEOUT_S = 300.0
#: Seconds a child is given to exit after its stdin closes, before it is killed.
CLOSE_TIMEOUT_S = 5.0
#: ``kind`` of the failures the parent itself detects.
KIND_TIMEOUT = "timeout"
KIND_DIED = "worker_died"
KIND_MEMORY = "memory"


class TaskFailed(DataError):
    """A task failed: its own error line, or the limit it ran into. ``kind`` names the class of failure."""

    def __init__(self, message: str, kind: str):
        super().__init__(message)
        self.kind = kind


class GuardStartError(DataError):
    """The child process could not start (bad task name, a memory budget too small to start in)."""


def _describe_exit(returncode: int | None) -> str:
    if returncode is None:
        return "still running"
    if returncode < 0:
        try:
            return f"killed by signal {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exit code {returncode}"


class GuardedWorker:
    """A child process running ``target`` (``'package.module:function'``) one request at a time.

    Args:
        target: the task; it takes the request's keys as keyword arguments and returns
            ``(header: dict, payload: bytes)``; it raises for a failure (the error's text becomes
            the failure line, :class:`MemoryError` the kind ``memory``).
        timeout_s: seconds one request may take (from sending it to the whole answer).
        memory_mb: MiB the child may grow beyond its size after importing the task; None = no limit.
        start_timeout_s: seconds the child may take to import the task and report ready.

    Use as a context manager, or call :meth:`close`.
    """

    def __init__(
        self,
        target: str,
        *,
        timeout_s: float,
        memory_mb: int | None,
        start_timeout_s: float = START_TIMEOUT_S,
    ):
        if timeout_s <= 0:
            raise DataError(f"guarded worker: timeout_s must be > 0 seconds, got {timeout_s!r}")
        if memory_mb is not None and memory_mb <= 0:
            raise DataError(f"guarded worker: memory_mb must be > 0 MiB or None, got {memory_mb!r}")
        self.target = target
        self.timeout_s = float(timeout_s)
        self.memory_mb = memory_mb
        self.start_timeout_s = float(start_timeout_s)
        self.memory_limited: bool | None = None  # known once a child has started
        self.starts = 0  # children started (1 + restarts after failures)
        self._proc: subprocess.Popen | None = None
        self._stderr: BinaryIO | None = None

    # ------------------------------------------------------------------ lifecycle

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        paths = [p for p in sys.path if p and os.path.isdir(p)]
        env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
        for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            env[name] = "1"  # one file at a time per child: no thread pools to reserve memory for
        return env

    def _start(self) -> None:
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 - kept open for the child; closed in _kill
        command = [sys.executable, "-m", __name__, self.target, str(self.memory_mb or 0)]
        self._proc = subprocess.Popen(
            command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            env=self._env(),
            bufsize=0,
        )
        self.starts += 1
        try:
            header, _ = self._read_answer(time.monotonic() + self.start_timeout_s)
        except _NoAnswer as err:
            tail = self._stderr_tail()
            self._kill()
            raise GuardStartError(
                f"the guarded worker for {self.target} did not start ({err.what}; memory budget "
                f"{self.memory_mb} MiB): {tail or 'no output'}"
            ) from None
        self.memory_limited = bool(header.get("memory_limited"))

    def _stderr_tail(self, chars: int = 600) -> str:
        if self._stderr is None:
            return ""
        with contextlib.suppress(OSError, ValueError):
            self._stderr.seek(0)
            text = self._stderr.read().decode(errors="replace").strip()
            return " | ".join(text[-chars:].splitlines()[-6:])
        return ""

    def _kill(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            with contextlib.suppress(OSError):
                proc.kill()
            with contextlib.suppress(OSError, subprocess.TimeoutExpired):
                proc.wait(CLOSE_TIMEOUT_S)
            for stream in (proc.stdin, proc.stdout):
                with contextlib.suppress(OSError):
                    stream.close()
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None

    def close(self) -> None:
        """Lets the child finish (its stdin closes) and reaps it; kills it after :data:`CLOSE_TIMEOUT_S`."""
        proc = self._proc
        if proc is not None:
            with contextlib.suppress(OSError):
                proc.stdin.close()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(CLOSE_TIMEOUT_S)
        self._kill()

    def __enter__(self) -> GuardedWorker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ one task

    def run(self, **request: Any) -> tuple[dict[str, Any], bytes]:
        """Runs one task; returns its ``(header, payload)``.

        Raises:
            TaskFailed: the task raised (its line and kind), ran past ``timeout_s`` (kind
                ``timeout``; the child is killed) or its process died (kind ``worker_died``, e.g.
                over the memory limit); the next call starts a fresh child.
            GuardStartError: a child could not be started at all.
        """
        if self._proc is None or self._proc.poll() is not None:
            self._kill()
            self._start()
        line = json.dumps(request).encode() + b"\n"
        try:
            self._proc.stdin.write(line)
            self._proc.stdin.flush()
            header, payload = self._read_answer(time.monotonic() + self.timeout_s)
        except _Late:
            self._kill()
            raise TaskFailed(
                f"took longer than the time limit of {self.timeout_s:g} s per file; stopped", KIND_TIMEOUT
            ) from None
        except (_Died, BrokenPipeError):
            proc = self._proc
            returncode = None if proc is None else proc.wait()
            self._kill()
            raise TaskFailed(
                f"the decoding process died ({_describe_exit(returncode)}), e.g. past the memory limit "
                f"of {self.memory_mb} MiB per file",
                KIND_DIED,
            ) from None
        if "error" in header:
            if header.get("kind") == KIND_MEMORY:
                self._kill()  # a child that ran out of memory may hold a fragmented heap: start afresh
            raise TaskFailed(str(header["error"]), str(header.get("kind", "error")))
        return header, payload

    def _read_exact(self, n: int, deadline: float) -> bytes:
        fd = self._proc.stdout.fileno()
        chunks, got = [], 0
        while got < n:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                raise _Late("no answer in time")
            chunk = os.read(fd, min(n - got, 1 << 22))
            if not chunk:
                raise _Died("the process ended")
            chunks.append(chunk)
            got += len(chunk)
        return b"".join(chunks)

    def _read_answer(self, deadline: float) -> tuple[dict[str, Any], bytes]:
        (size,) = struct.unpack(">I", self._read_exact(4, deadline))
        header = json.loads(self._read_exact(size, deadline))
        (size,) = struct.unpack(">Q", self._read_exact(8, deadline))
        return header, self._read_exact(size, deadline) if size else b""


class _NoAnswer(Exception):
    def __init__(self, what: str):
        self.what = what


class _Late(_NoAnswer):
    """No answer before the deadline."""


class _Died(_NoAnswer):
    """The child closed its output (it ended)."""


# ---------------------------------------------------------------------- the child


def _send(out: BinaryIO, header: dict[str, Any], payload: bytes = b"") -> None:
    data = json.dumps(header).encode()
    out.write(struct.pack(">I", len(data)) + data + struct.pack(">Q", len(payload)))
    out.write(payload)
    out.flush()


def _limit_memory(memory_mb: int) -> bool:
    """Caps the address space at its current size + ``memory_mb`` MiB; False where it cannot (no /proc)."""
    try:
        import resource

        with open("/proc/self/statm") as f:
            size = int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    except (ImportError, OSError, ValueError):
        return False
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    limit = size + (memory_mb << 20)
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    return True


def _load(target: str) -> Callable[..., tuple[dict[str, Any], bytes]]:
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


#: How native libraries say they could not allocate (OpenCV raises ``cv2.error``, not MemoryError).
_OUT_OF_MEMORY = ("Insufficient memory", "Failed to allocate", "Unable to allocate", "std::bad_alloc")


def _failure(err: BaseException) -> dict[str, str]:
    text = str(err).strip().replace("\n", " ") or type(err).__name__
    if isinstance(err, MemoryError) or any(words in text for words in _OUT_OF_MEMORY):
        return {"error": f"ran out of memory (over the worker's limit): {text}", "kind": KIND_MEMORY}
    kind = getattr(err, "kind", None) or type(err).__name__
    if not isinstance(err, DataError):
        text = f"{type(err).__name__}: {text}"
    return {"error": text, "kind": kind}


def main(argv: list[str]) -> None:
    """The child: ``python -m coreecho_jax.data.corpus.guard <module:function> <memory MiB, 0 = none>``."""
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # stray prints of the task go to stderr, not into the answers
    task = _load(argv[0])
    with contextlib.suppress(ImportError):
        import cv2

        cv2.setNumThreads(1)
    warm_up = getattr(sys.modules[task.__module__], "warm_up", None)
    if callable(warm_up):
        warm_up()  # what the first task would load lazily, loaded before the memory limit
    memory_mb = int(argv[1])
    _send(out, {"ready": True, "memory_limited": memory_mb > 0 and _limit_memory(memory_mb)})
    for line in sys.stdin.buffer:
        try:
            header, payload = task(**json.loads(line))
        except Exception as err:  # every failure of a file (MemoryError included) becomes its report line
            header, payload = _failure(err), b""
        _send(out, header, payload)


if __name__ == "__main__":
    main(sys.argv[1:])
