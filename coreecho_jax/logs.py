"""What a person reads while a command runs: progress bars, one-line messages, the libraries' chatter.

Streams: **stdout** carries what a command answers (predict's JSON, the result tables); **stderr**
carries the log: progress bars, :func:`say` lines, warnings and, at the end of a command, the
:func:`closing` line ``wrote: ...`` naming every file it wrote. So ``predict > ef.json`` stays clean.

Quiet by default (:func:`configure` with ``verbosity=0``, what the entry points call):

* one bar at a time (:func:`progress`): a bar asked for while another is open is not drawn, so
  bars never nest; in a file (stderr not a terminal) a bar redraws at most every 30 s;
* one line per epoch, and a ``<what>: compiling (first step only)`` line when JAX traces or compiles
  inside :func:`compiling` (before a compilation that can take a minute, not after every step);
* each warning once (the same text again is dropped), Python warnings of a category once;
* the known-harmless library chatter hidden: TensorFlow's import lines (oneDNN, CPU features) and
  TFDS's "Using custom data configuration" (:data:`CHATTER`); library INFO logs off.

``verbosity=1`` (``-v 1`` / ``--verbosity=1``) brings the library INFO logs and the chatter back,
``2`` adds DEBUG. Library users who never call :func:`configure` get the libraries' own defaults;
:func:`say`, :func:`progress` and :func:`closing` work the same.

This module imports neither JAX nor TensorFlow (JAX is looked up only once a caller imported it).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import os
import sys
import tempfile
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

#: ``--verbosity`` levels: 0 quiet (default), 1 library INFO and chatter, 2 DEBUG.
QUIET, INFO, DEBUG = 0, 1, 2

#: Known-harmless library log messages hidden at verbosity 0: ``(file name the record comes from,
#: start of its message format)``. Only these: any other library warning is shown (once).
CHATTER: tuple[tuple[str, str], ...] = (
    # TFDS, each time a builder with our own config is made (we always pass one: EchonetDynamicConfig)
    ("dataset_builder.py", "Using custom data configuration"),
)

#: Lines TensorFlow's C++ code writes to the stderr file descriptor while it is imported (before its
#: logging is set up, so ``TF_CPP_MIN_LOG_LEVEL`` does not reach them), hidden at verbosity 0.
NATIVE_CHATTER: tuple[str, ...] = (
    "All log messages before absl::InitializeLog() is called are written to STDERR",
    "oneDNN custom operations are on",
    "This TensorFlow binary is optimized to use available CPU instructions",
    "To enable the following instructions:",
)

#: Below this many test videos the metrics describe a smoke run, not a model: a note says so beside
#: the table (:func:`small_run_note`). The quick variants test 2-5 videos; the demo 64, EchoNet 1,276.
SMALL_RUN_VIDEOS = 30

#: Seconds between two redraws of a bar when stderr is a file, not a terminal.
FILE_REDRAW_S = 30.0

_verbosity: int | None = None  # None: configure() never called (a library user)
_open_bars = 0


# ------------------------------------------------------------------------------------ configuring
class _Filter(logging.Filter):
    """Drops the :data:`CHATTER` records (at verbosity 0) and a WARNING whose text was shown already."""

    def __init__(self) -> None:
        super().__init__("coreecho_jax.logs")
        self.quiet = True
        self.seen: set[tuple[int, str]] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        if self.quiet and record.levelno < logging.ERROR:
            name = os.path.basename(record.pathname or "")
            if any(name == file and str(record.msg).startswith(start) for file, start in CHATTER):
                return False
        if record.levelno == logging.WARNING:
            key = (record.levelno, record.getMessage())
            if getattr(record, "coreecho_first", False):  # the first one, at the root's next handler
                return True
            if key in self.seen:
                return False
            self.seen.add(key)
            record.coreecho_first = True
        return True


_FILTER = _Filter()
_saved: dict[str, Any] = {}  # the levels and warning filters before configure(), for reset()


def configure(verbosity: int = QUIET) -> None:
    """Sets up the log of a command (module doc); the entry points call it once, after parsing flags.

    ``verbosity``: 0 (or less) quiet, 1 library INFO logs and chatter, 2 and more DEBUG.
    """
    from absl import logging as absl_logging

    global _verbosity
    if _verbosity is None:  # what reset() returns to
        _saved.update(
            root_level=logging.getLogger().level,
            absl_level=absl_logging.get_verbosity(),
            warnings=list(warnings.filters),
        )
    _verbosity = max(QUIET, int(verbosity))
    quiet = _verbosity == QUIET
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2" if quiet else "0")  # TensorFlow not imported yet
    level = {QUIET: logging.WARNING, INFO: logging.INFO}.get(_verbosity, logging.DEBUG)
    root = logging.getLogger()
    if not root.handlers:  # no absl app.run: absl's format, without its "before flag parsing" notice
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(absl_logging.PythonFormatter())
        root.addHandler(handler)
    absl_level = {QUIET: absl_logging.WARNING, INFO: absl_logging.INFO}.get(_verbosity, absl_logging.DEBUG)
    absl_logging.set_verbosity(absl_level)  # the "absl" logger: absl.logging calls (ours, Orbax, TFDS)
    root.setLevel(level)  # Python loggers (JAX, ours in coreecho_jax.data)
    _FILTER.quiet = quiet
    _FILTER.seen.clear()  # "once" counts within one command
    for handler in root.handlers:
        if _FILTER not in handler.filters:
            handler.addFilter(_FILTER)
    for category in (UserWarning, RuntimeWarning):
        warnings.filterwarnings("once", category=category)


def reset() -> None:
    """Undoes :func:`configure` for a host that runs several commands in one process (a notebook,
    a test session): the quiet filter leaves every handler, the seen warnings are forgotten, the root
    and absl levels and Python's warning filters return to what they were before."""
    global _verbosity
    if _verbosity is None:
        return
    from absl import logging as absl_logging

    for handler in logging.getLogger().handlers:
        handler.removeFilter(_FILTER)
    _FILTER.seen.clear()
    logging.getLogger().setLevel(_saved["root_level"])
    absl_logging.set_verbosity(_saved["absl_level"])
    warnings.filters[:] = _saved["warnings"]
    _verbosity = None


@contextlib.contextmanager
def dropped(logger: str, drop: Callable[[logging.LogRecord], bool]) -> Iterator[None]:
    """Within the block, ``logger``'s records for which ``drop(record)`` holds are not emitted."""

    def keep(record: logging.LogRecord) -> bool:
        return not drop(record)

    target = logging.getLogger(logger)
    target.addFilter(keep)  # logging takes a callable as a filter
    try:
        yield
    finally:
        target.removeFilter(keep)


def hidden(start: str, logger: str = "absl") -> contextlib.AbstractContextManager[None]:
    """Within the block, drops ``logger``'s records whose message format begins with ``start``: for a
    library warning that our own call causes on purpose (e.g. Orbax's on a read-only manager)."""
    return dropped(logger, lambda record: str(record.msg).startswith(start))


def relayed_chatter_hidden(chatter: Sequence[str], logger: str) -> contextlib.AbstractContextManager[None]:
    """Within the block and at verbosity 0, drops ``logger``'s records whose text contains one of
    ``chatter``: for a library that relays its worker processes' log lines through a logger of its own
    (Beam's job service). Does nothing unless :func:`configure` set verbosity 0."""
    if _verbosity != QUIET:
        return contextlib.nullcontext()
    return dropped(logger, lambda record: any(c in record.getMessage() for c in chatter))


@contextlib.contextmanager
def native_chatter_hidden(chatter: Sequence[str] = NATIVE_CHATTER) -> Iterator[None]:
    """Around an import of TensorFlow (or a run of worker processes that write to the same stderr): at
    verbosity 0, the lines containing one of ``chatter`` (default :data:`NATIVE_CHATTER`) written to file
    descriptor 2 are dropped and everything else written there is passed on after the block. Does
    nothing unless :func:`configure` set verbosity 0."""
    if _verbosity != QUIET:
        yield
        return
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no real stderr (an embedding host): nothing to filter
        yield
        return
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            with contextlib.suppress(OSError, ValueError):
                sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            lines = captured.read().decode(errors="replace").splitlines(keepends=True)
            kept = "".join(line for line in lines if not any(text in line for text in chatter))
            if kept:
                os.write(2, kept.encode())


# -------------------------------------------------------------------------------- lines and bars
def _primary() -> bool:
    """Whether this process speaks: process 0 of a multi-host run, else always. Asks JAX only once its
    multi-host runtime is up (earlier, a JAX call would start its backends too soon)."""
    jax = sys.modules.get("jax")
    if jax is None or not jax.distributed.is_initialized():
        return True
    return jax.process_index() == 0


def say(line: str) -> None:
    """One line for people on stderr (process 0 only), above any progress bar."""
    if not _primary():
        return
    from tqdm import tqdm

    tqdm.write(line, file=sys.stderr)


def _interactive() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


@functools.cache
def _bar_class() -> type:
    """tqdm, counting the open bars (:func:`progress` draws one at a time)."""
    from tqdm import tqdm

    class Bar(tqdm):
        counted = False

        def close(self) -> None:
            global _open_bars
            if self.counted:
                self.counted = False
                _open_bars -= 1
            super().close()

    return Bar


def progress(
    iterable: Iterable | None = None,
    *,
    desc: str,
    total: int | None = None,
    unit: str = "it",
    initial: int = 0,
) -> Any:
    """A progress bar on stderr (a ``tqdm``: iterate it, or ``update``/``set_postfix``/``close`` it).

    Not drawn on other processes than 0, nor while another bar of this module is open: bars never
    nest (the outer bar stays, e.g. the ablation runs around each run's epochs). Closes itself at the
    end of the iteration; a bar used by hand is closed with ``close()`` (or as a context manager).
    """
    global _open_bars
    shown = _open_bars == 0 and _primary()
    interactive = _interactive()
    bar = _bar_class()(
        iterable,
        desc=desc,
        total=total,
        unit=unit,
        initial=initial,
        leave=False,
        file=sys.stderr,
        disable=not shown,
        mininterval=0.1 if interactive else FILE_REDRAW_S,
        ncols=None if interactive else 100,
    )
    if shown:
        bar.counted = True
        _open_bars += 1
    return bar


# ------------------------------------------------------------------------------------ compilation
_COMPILE_EVENTS = ("/jax/core/compile/jaxpr_trace_duration", "/jax/core/compile/backend_compile_duration")
_armed: list[str] = []  # the innermost compiling() block still to announce; empty: none
_listening = False


def _on_jax_event(event: str, value: float, **kwargs: Any) -> None:
    """JAX's monitoring hook: a trace or a compilation starts (``record_scalar`` at its start)."""
    if event in _COMPILE_EVENTS and _armed and _armed[-1]:
        what = _armed[-1]
        _armed[-1] = ""  # once per block
        say(f"{what}: compiling (first step only)")


@contextlib.contextmanager
def compiling(what: str) -> Iterator[None]:
    """Around the first call of a jitted step: says ``<what>: compiling (first step only)`` when, and
    only when, JAX traces or compiles inside the block, before it does (a cached step says nothing)."""
    global _listening
    import jax

    if not _listening:
        jax.monitoring.register_scalar_listener(_on_jax_event)
        _listening = True
    _armed.append(what)
    try:
        yield
    finally:
        _armed.pop()


def first_call_compiles(what: str, fn: Callable) -> Callable:
    """``fn`` whose first call runs inside :func:`compiling` (``what``); later calls as they are."""
    called = False

    def wrapped(*args: Any, **kwargs: Any) -> Any:
        nonlocal called
        if called:
            return fn(*args, **kwargs)
        called = True
        with compiling(what):
            return fn(*args, **kwargs)

    return wrapped


# ------------------------------------------------------------------------------- files written
def _snapshot(root: Path) -> dict[Path, tuple[int, int, int]]:
    """``{file: (inode, size, mtime ns)}`` of the file ``root`` or of every file under the folder ``root``."""
    if root.is_file():
        st = root.stat()
        return {root: (st.st_ino, st.st_size, st.st_mtime_ns)}
    found = {}
    for folder, _, names in os.walk(root):
        for name in names:
            path = Path(folder) / name
            with contextlib.suppress(OSError):  # removed meanwhile (e.g. a temporary file)
                st = path.stat()
                found[path] = (st.st_ino, st.st_size, st.st_mtime_ns)
    return found


@dataclasses.dataclass
class _Watched:
    root: Path
    before: dict[Path, tuple[int, int, int]]
    summary: bool  # show the folder and a count, not the files (e.g. the prepared data)


_watched: list[_Watched] | None = None  # the roots of the open closing() block; None: no block


def watch(root: str | Path, *, summary: bool = False) -> None:
    """Adds ``root`` (a folder or a file) to the files the open :func:`closing` block reports (nothing
    without one): what is written there from now on is listed. ``summary``: the folder and a count."""
    if _watched is None:
        return
    root = Path(root).absolute()
    if any(root == w.root or w.root in root.parents for w in _watched):  # listed already
        return
    _watched.append(_Watched(root, _snapshot(root), summary))


def _count(n: int) -> str:
    return f"{n} file{'s' if n != 1 else ''}"


def _describe(w: _Watched) -> str | None:
    """``root: a, b, dir/ (n files)``: the files written under ``w.root`` since it was watched."""
    written = sorted(p for p, key in _snapshot(w.root).items() if w.before.get(p) != key)
    if not written:
        return None
    if w.root.is_file():
        return str(w.root)
    if w.summary:
        return f"{w.root} ({_count(len(written))})"
    groups: dict[str, list[Path]] = {}
    for path in written:
        top = path.relative_to(w.root).parts[0]
        if not top.startswith("."):  # lock files
            groups.setdefault(top, []).append(path)
    files = [top for top, paths in groups.items() if paths == [w.root / top]]
    folders = [f"{top}/ ({_count(len(paths))})" for top, paths in groups.items() if paths != [w.root / top]]
    if not files and not folders:
        return None
    return f"{w.root}: {', '.join(files + folders)}"


def written_line(watched: Sequence[_Watched]) -> str:
    """``wrote: <root>: <files>; <root>: ...``, or ``wrote: no file``."""
    parts = [d for w in watched if (d := _describe(w))]
    return "wrote: " + ("; ".join(parts) if parts else "no file")


@contextlib.contextmanager
def closing(*roots: str | Path) -> Iterator[None]:
    """Around a command: when it ends without an error, :func:`say` ``wrote: ...`` naming the files
    written under ``roots`` (and under any root :func:`watch` added) since the block began: new or
    changed files, each folder below a root as ``name/ (n files)``. Nested blocks (an ablation's
    runs) add their roots to the outermost one, which alone says the line."""
    global _watched
    outermost = _watched is None
    if outermost:
        _watched = []
    for root in roots:
        watch(root)
    if not outermost:
        yield
        return
    try:
        yield
        say(written_line(_watched))
    finally:
        _watched = None


# ---------------------------------------------------------------------------------------- notes
def small_run_note(n_videos: int) -> str | None:
    """The note beside a result table tested on fewer than :data:`SMALL_RUN_VIDEOS` videos (None
    otherwise): its numbers describe a smoke run (e.g. a ``:quick`` variant), not a model."""
    if n_videos >= SMALL_RUN_VIDEOS:
        return None
    return (
        f"note: {n_videos} test video{'s' if n_videos != 1 else ''} (< {SMALL_RUN_VIDEOS}): a smoke run; "
        "these numbers say nothing about the model"
    )
