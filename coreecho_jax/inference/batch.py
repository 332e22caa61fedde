"""EF for a folder or a manifest: one CSV row per file, the files decoded in worker processes ahead of
the model (``coreecho predict-folder``).

::

    from coreecho_jax.inference.batch import predict_folder
    m = coreecho_jax.from_pretrained("weights/echonet")
    predict_folder(m, "archive/", "preds.csv", workers=2)      # or a CSV with a ``path`` column

What is read (:func:`list_inputs`): a folder, searched recursively (hidden files and folders left out,
every other file taken: a DICOM is recognised by its content, the 128-byte preamble and ``DICM``, not by
its name, and anything else goes to FFmpeg, which judges by content too); or a CSV whose ``path`` column
names the files (relative to the CSV's folder); or one video file.

What is written (:data:`COLUMNS`): one row per file, in the order listed, as each is done: the file, its
size and modification time, ``ok`` or ``error``, the EF (%) and its interval, category, clip spread,
shift percentile, frames, fps, crop (``region``: the DICOM's ultrasound region tags; ``sector``: found
from the moving image; ``none``), the share of colour pixels, the quality flags (codes of
:data:`coreecho_jax.predict.FLAGS` and :data:`ERROR_FLAGS`, ``;``-separated), the error of a file that
failed (one bad file never stops the run), a DICOM's study, series and SOP instance UIDs, transfer
syntax and number of ultrasound regions, and the weights that predicted. ``cardiobench=True`` adds
``FileName,EF_pred`` (:data:`CARDIOBENCH_COLUMNS`) for CardioBench-style scoring. Numbers are written
so that they read back exactly (Python's shortest round-trip form); a row equals
``EchoModel.predict`` of its file.

How: the model is loaded and compiled once (one shape, K clips of one size); worker processes (started
with ``spawn``: they import no JAX) decode and prepare the videos (:func:`coreecho_jax.inference.quality.prepare`)
while the model predicts, at most ``workers * prefetch`` decoded videos held at any time
(:func:`decode_ahead`), so memory does not grow with the number of files. A worker that dies (a decoder
that crashes, the system killing it for memory) costs its file an error row; the pool is started again.
A progress bar shows the rate and the time left.

Rerun: a file whose path, size and modification time (and the weights) match a row of ``out_csv``
is skipped; a changed file is predicted again and its old row replaced; ``retry_errors`` also redoes
the rows that ended in an error. Rows are flushed one by one, so an interrupted run keeps what it did.

numpy, OpenCV, pydicom and tqdm only (the model is passed in): the workers import this module.
"""

from __future__ import annotations

import collections
import concurrent.futures
import csv
import dataclasses
import itertools
import multiprocessing
import os
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import cv2
import ml_collections

from coreecho_jax.data.video import dicom, video_io
from coreecho_jax.data.video.video_types import NotAnEchoVideoError
from coreecho_jax.errors import CoreEchoError, DataError
from coreecho_jax.inference import quality
from coreecho_jax.inference.video_clips import VideoClips

#: The CSV's columns (module doc), in order.
COLUMNS = (
    "file",
    "path",
    "size_bytes",
    "mtime_ns",
    "status",
    "summary",
    "ef",
    "ef_low",
    "ef_high",
    "interval_level",
    "category",
    "clip_spread",
    "shift_percentile",
    "num_frames",
    "fps",
    "crop",
    "colour_fraction",
    "flags",
    "error",
    "study_uid",
    "series_uid",
    "sop_uid",
    "transfer_syntax",
    "regions",
    "weights",
)
#: ``cardiobench=True`` appends these: the file name without its video or DICOM suffix (as
#: EchoNet-Dynamic's FileList.csv names a video) and the EF (%), empty for a file that failed.
CARDIOBENCH_COLUMNS = ("FileName", "EF_pred")
#: Flags of a row that ended in an error, besides its ``error`` text: every code a failed row can carry
#: (:class:`Decoded` refuses any other).
ERROR_FLAGS = {
    "not_echo_cine": "no echo loop: a DICOM object without pixel data or of another modality, a still image, "
    "a loop too short",
    "no_decoder": "a DICOM transfer syntax no installed plugin decodes (the error names what to install)",
    "unreadable": "a missing, unreadable or undecodable file (not a video, truncated, damaged)",
    "worker_died": "the decoding process died on this file (a crashing decoder, or killed for memory)",
    "internal_error": "an unexpected error (a bug: please report it with the file)",
}
#: Suffixes left out of CardioBench's ``FileName`` (EchoNet-Dynamic names videos without ``.avi``).
NAME_SUFFIXES = (".avi", ".mp4", ".mov", ".mkv", ".m4v", *dicom.DICOM_SUFFIXES)
#: Default decoded videos held per worker (:func:`decode_ahead`'s window is ``workers * prefetch``).
PREFETCH = 2
#: The manifest's column of paths.
PATH_COLUMN = "path"


class WorkerStartError(CoreEchoError, RuntimeError):
    """The decoding processes could not start (the message says the likely cause)."""


class Predictor(Protocol):
    """What :func:`predict_folder` needs of a model: an ``EchoModel`` (``coreecho_jax.from_pretrained``)."""

    name: str
    config: ml_collections.ConfigDict
    clips_per_video: int
    weights_sha256: str
    has_head: bool

    def predict_prepared(self, prepared: VideoClips) -> Any:
        """A ``Prediction`` of a prepared video."""
        ...


# ----------------------------------------------------------------------------------------------- inputs


@dataclasses.dataclass(frozen=True)
class InputFile:
    """A file to predict: ``name`` as listed (relative to the folder, or the manifest's text), ``path``
    absolute, and its rerun key (``size``, ``mtime_ns``; None when it cannot be read)."""

    name: str
    path: Path
    size: int | None
    mtime_ns: int | None

    @classmethod
    def of(cls, name: str, path: Path) -> InputFile:
        try:
            stat = path.stat()
        except OSError:
            return cls(name, path, None, None)
        return cls(name, path, int(stat.st_size), int(stat.st_mtime_ns))


def list_inputs(inputs: str | os.PathLike, *, exclude: Iterable[str | os.PathLike] = ()) -> list[InputFile]:
    """The files ``inputs`` names (module doc), in a stable order, ``exclude`` left out.

    Raises:
        DataError: no such folder or file; an empty folder; a manifest without a ``path`` column, with an
            empty or a repeated path (naming the row).
    """
    source = Path(inputs)
    skip = {Path(p).absolute() for p in exclude}
    if source.is_dir():
        files = [f for f in _folder_files(source) if f.path not in skip]
        if not files:
            raise DataError(f"{source}: no files found in this folder (hidden files are left out)")
        return files
    if source.is_file() and source.suffix.lower() == ".csv":
        return _manifest_files(source)
    if source.is_file():
        return [InputFile.of(str(source), source.absolute())]
    raise DataError(f"{source}: no such folder or file; expected a folder of videos, a CSV or a video")


def _folder_files(folder: Path) -> list[InputFile]:
    """Every file under ``folder`` (not hidden, not in a hidden folder), sorted by relative path."""
    found = []
    for root, dirs, names in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in names:
            path = Path(root) / name
            if not name.startswith(".") and path.is_file():
                found.append(path)
    found.sort(key=lambda p: p.relative_to(folder).as_posix())
    return [InputFile.of(p.relative_to(folder).as_posix(), p.absolute()) for p in found]


def _manifest_files(manifest: Path) -> list[InputFile]:
    """The files of a manifest's ``path`` column, relative paths taken from the manifest's folder."""
    try:
        with open(manifest, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            if PATH_COLUMN not in (reader.fieldnames or []):
                raise DataError(
                    f"{manifest}: no {PATH_COLUMN!r} column (columns: {', '.join(reader.fieldnames or [])}); "
                    f"a manifest names its videos in a column called {PATH_COLUMN}"
                )
            rows = [(line, (row[PATH_COLUMN] or "").strip()) for line, row in enumerate(reader, 2)]
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise DataError(f"{manifest}: not a readable CSV file ({e})") from None
    files, seen = [], {}
    for line, text in rows:
        if not text:
            raise DataError(f"{manifest}, row {line}: empty {PATH_COLUMN}")
        path = Path(text).expanduser()
        path = (path if path.is_absolute() else manifest.parent / path).absolute()
        if path in seen:
            raise DataError(f"{manifest}, row {line}: {text} is listed again (first in row {seen[path]})")
        seen[path] = line
        files.append(InputFile.of(text, path))
    if not files:
        raise DataError(f"{manifest}: lists no files")
    return files


# ------------------------------------------------------------------------------------------- decoding


@dataclasses.dataclass(frozen=True)
class Decoded:
    """A worker's answer for one file: the prepared video, or the error that stopped it with its flag
    (:data:`ERROR_FLAGS`) and, for a DICOM, its UIDs and facts when the header could be read."""

    prepared: VideoClips | None = None
    error: str | None = None
    flag: str | None = None
    dicom: Mapping[str, Any] | None = None

    def __post_init__(self) -> None:
        if self.flag is not None and self.flag not in ERROR_FLAGS:  # the docs' table lists every code
            raise ValueError(
                f"Decoded: flag {self.flag!r} is not one of ERROR_FLAGS ({', '.join(ERROR_FLAGS)})"
            )


@dataclasses.dataclass(frozen=True)
class DecodeSettings:
    """What every worker prepares a video with: the model's config, K and the crop / fps choices."""

    config: ml_collections.ConfigDict
    k: int
    crop: video_io.CropMode | None = None
    target_fps: float | None = None


_SETTINGS: DecodeSettings | None = None


def init_worker(settings: DecodeSettings) -> None:
    """A worker's start: its settings, and one OpenCV thread (the processes are the parallelism)."""
    global _SETTINGS
    _SETTINGS = settings
    cv2.setNumThreads(1)
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)  # the row says why a file failed


def decode_file(path: Path) -> Decoded:
    """Prepares one file with the worker's settings (:func:`init_worker`); errors become a
    :class:`Decoded` with the error, never an exception (module doc)."""
    s = _SETTINGS
    if s is None:
        raise RuntimeError("decode_file: init_worker was not called in this process")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the notes of the result say the same (fps far from training)
            return Decoded(quality.prepare(s.config, path, s.k, crop=s.crop, target_fps=s.target_fps))
    except NotAnEchoVideoError as e:
        return Decoded(error=str(e), flag="not_echo_cine", dicom=_dicom_of(path))
    except dicom.NoDecoderError as e:
        return Decoded(error=str(e), flag="no_decoder", dicom=_dicom_of(path))
    except (CoreEchoError, OSError) as e:
        return Decoded(error=str(e), flag="unreadable", dicom=_dicom_of(path))
    except Exception as e:  # one bad file never stops the run; the row says it is a bug
        return Decoded(
            error=f"{path}: unexpected {type(e).__name__} while decoding: {e} (a bug: please report it)",
            flag="internal_error",
        )


def _dicom_of(path: Path) -> dict[str, Any] | None:
    """The DICOM facts of a file that failed, when it is a DICOM whose header reads."""
    try:
        if path.is_file() and video_io.is_dicom_path(path):
            facts = dicom.dicom_facts(path)
            return {field: getattr(facts, field) for field in quality.DICOM_FIELDS}
    except CoreEchoError:
        pass
    return None


class InlineExecutor(concurrent.futures.Executor):
    """Runs each job at once in this process (``workers=0``: no worker processes, e.g. to debug)."""

    def submit(self, fn: Callable, /, *args: Any, **kwargs: Any) -> concurrent.futures.Future:
        future: concurrent.futures.Future = concurrent.futures.Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as e:
            future.set_exception(e)
        return future


_END = object()  # the end of decode_ahead's jobs


def _submitted(
    executor: concurrent.futures.Executor, decode: Callable[[Any], Any], job: Any
) -> concurrent.futures.Future:
    """``executor.submit(decode, job)``; when a process died since the last look (the pool raises at
    submit), a future holding that error: the job is then handled at the head like one that died running."""
    try:
        return executor.submit(decode, job)
    except concurrent.futures.process.BrokenProcessPool as broken:
        future: concurrent.futures.Future = concurrent.futures.Future()
        future.set_exception(broken)
        return future


def decode_ahead(
    jobs: Iterable[Any],
    decode: Callable[[Any], Any],
    new_executor: Callable[[], concurrent.futures.Executor],
    window: int,
    *,
    died: Callable[[Any], Any] | None = None,
) -> Iterator[tuple[Any, Any]]:
    """``(job, decode(job))`` in the order of ``jobs``, each decoded ahead on the executor.

    At most ``window`` jobs are submitted and not yet taken by the consumer, the one it holds counted: a
    new job is submitted only when the consumer asks for the next result, i.e. once it is done with the
    previous one. So no more than ``window`` decoded results exist at any time (memory stays bounded).

    When the executor's processes break (one died), the job at the head runs again alone in a new
    executor: if it dies alone, it was the cause and gets ``died(job)``; the others are submitted again.

    Args:
        jobs: what to decode (read lazily).
        decode: a picklable function (it runs in the executor's processes).
        new_executor: makes the executor (again, after its processes broke).
        window: ``>= 1``.
        died: ``job -> result`` for a job whose process died while it ran alone (None: raise).
    """
    if window < 1:
        raise ValueError(f"decode_ahead: window must be >= 1, got {window}")
    todo = iter(jobs)
    first = next(todo, _END)
    if first is _END:
        return
    todo = itertools.chain([first], todo)
    pending: collections.deque = collections.deque()
    executor = new_executor()

    def submit(job: Any) -> None:
        pending.append((job, _submitted(executor, decode, job)))

    def restart() -> None:
        nonlocal executor
        executor.shutdown(wait=True, cancel_futures=True)
        executor = new_executor()

    try:
        for job in itertools.islice(todo, window):
            submit(job)
        while pending:
            job, future = pending.popleft()
            try:
                result = future.result()
            except concurrent.futures.process.BrokenProcessPool:
                rest = [j for j, _ in pending]
                pending.clear()
                restart()
                try:
                    result = executor.submit(decode, job).result()
                except concurrent.futures.process.BrokenProcessPool:
                    if died is None:
                        raise
                    restart()
                    result = died(job)
                for j in rest:
                    submit(j)
            yield job, result
            del result
            following = next(todo, _END)
            if following is not _END:
                submit(following)
    finally:
        executor.shutdown(wait=True, cancel_futures=True)


def process_pool(workers: int, settings: DecodeSettings) -> Callable[[], concurrent.futures.Executor]:
    """The factory of ``workers`` spawned decoding processes (:func:`init_worker`), or of an
    :class:`InlineExecutor` for ``workers=0``."""
    if workers == 0:

        def inline() -> concurrent.futures.Executor:
            init_worker(settings)
            return InlineExecutor()

        return inline
    context = multiprocessing.get_context("spawn")  # a fresh interpreter: no JAX, no XLA threads inherited

    def pool() -> concurrent.futures.Executor:
        executor = concurrent.futures.ProcessPoolExecutor(
            workers, mp_context=context, initializer=init_worker, initargs=(settings,)
        )
        try:
            executor.submit(os.getpid).result()
        except concurrent.futures.process.BrokenProcessPool:
            executor.shutdown(wait=False, cancel_futures=True)
            raise WorkerStartError(
                "the decoding processes could not start; a script that calls predict_folder with workers > 0 "
                "must do so under if __name__ == '__main__': (multiprocessing starts each worker by "
                "importing the script), or pass workers=0"
            ) from None
        return executor

    return pool


# ------------------------------------------------------------------------------------------------- rows


def _number(x: float | int | None) -> str:
    """The shortest text that reads back as the same number; empty for None."""
    return "" if x is None else repr(x) if isinstance(x, float) else str(x)


def file_name(name: str) -> str:
    """CardioBench's ``FileName``: the file's name without a video or DICOM suffix (:data:`NAME_SUFFIXES`)."""
    path = Path(name)
    return path.stem if path.suffix.lower() in NAME_SUFFIXES else path.name


def row_of(
    file: InputFile,
    weights: str,
    *,
    prediction: Any = None,
    failed: Decoded | None = None,
    cardiobench: bool = False,
) -> dict[str, str]:
    """The CSV row of ``file``: from its ``Prediction``, or from the :class:`Decoded` that failed (given
    instead)."""
    row = dict.fromkeys(COLUMNS, "")
    row.update(
        file=file.name,
        path=str(file.path),
        size_bytes=_number(file.size),
        mtime_ns=_number(file.mtime_ns),
        weights=weights,
    )
    facts: Mapping[str, Any] | None
    if failed is None:
        lo, hi = prediction.ef_interval or (None, None)
        row.update(
            status="ok",
            summary=prediction.summary,
            ef=_number(prediction.ef),
            ef_low=_number(lo),
            ef_high=_number(hi),
            interval_level=_number(prediction.interval_level),
            category=prediction.category or "",
            clip_spread=_number(prediction.clip_spread),
            shift_percentile=_number(prediction.shift_percentile),
            num_frames=_number(prediction.num_frames),
            fps=_number(prediction.fps),
            crop=prediction.crop or "",
            colour_fraction=_number(prediction.colour_fraction),
            flags=";".join(prediction.flags),
        )
        facts = prediction.record.get("dicom")
    else:
        row.update(status="error", error=failed.error or "", flags=failed.flag or "")
        facts = failed.dicom
    if facts:
        row.update(
            study_uid=facts.get("study_uid") or "",
            series_uid=facts.get("series_uid") or "",
            sop_uid=facts.get("sop_uid") or "",
            transfer_syntax=facts.get("transfer_syntax") or "",
            regions=_number(facts.get("regions")),
        )
    if cardiobench:
        row.update(FileName=file_name(file.name), EF_pred=row["ef"])
    return row


class ResultsCsv:
    """``out_csv``: the rows a rerun may keep (read once), then the new rows appended one by one.

    Raises:
        DataError: an existing file with other columns (another version or other options).
    """

    def __init__(self, path: str | os.PathLike, columns: Sequence[str]):
        self.path = Path(path)
        self.columns = tuple(columns)
        self.rows: dict[str, dict[str, str]] = {}
        if self.path.exists():
            self.rows = self._read()

    def _read(self) -> dict[str, dict[str, str]]:
        try:
            with open(self.path, newline="", encoding="utf-8") as f:
                reader = csv.DictReader(f)
                if tuple(reader.fieldnames or ()) != self.columns:
                    raise DataError(
                        f"{self.path}: exists with other columns ({', '.join(reader.fieldnames or [])}) than this "
                        f"run writes ({', '.join(self.columns)}); choose another output file, or remove it"
                    )
                # a row cut short by an interrupted run (a missing field) is left out: its file is redone
                return {row["path"]: row for row in reader if None not in row.values()}
        except (OSError, UnicodeDecodeError, csv.Error) as e:
            raise DataError(f"{self.path}: not a readable CSV file ({e})") from None

    def is_done(self, file: InputFile, weights: str, retry_errors: bool) -> bool:
        """Whether a kept row covers ``file`` as it is now (same size, modification time and weights)."""
        row = self.rows.get(str(file.path))
        return (
            row is not None
            and file.size is not None
            and row["size_bytes"] == _number(file.size)
            and row["mtime_ns"] == _number(file.mtime_ns)
            and row["weights"] == weights
            and not (retry_errors and row["status"] == "error")
        )

    def start(self, redo: Iterable[InputFile]) -> None:
        """Writes the header and every kept row except those of ``redo`` (replaced, atomically)."""
        drop = {str(f.path) for f in redo}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, self.columns)
            writer.writeheader()
            writer.writerows(row for path, row in self.rows.items() if path not in drop)
        os.replace(tmp, self.path)
        self.rows = {}

    def append(self, row: Mapping[str, str]) -> None:
        with open(self.path, "a", newline="", encoding="utf-8") as f:
            csv.DictWriter(f, self.columns).writerow(row)


# ------------------------------------------------------------------------------------------ the command


@dataclasses.dataclass(frozen=True)
class FolderSummary:
    """What :func:`predict_folder` did: rows written (``predicted`` ok, ``failed`` errors), files
    ``skipped`` (done before), the CSV, the wall time (s)."""

    out_csv: Path
    predicted: int
    failed: int
    skipped: int
    seconds: float

    def line(self) -> str:
        return (
            f"{self.out_csv}: {self.predicted} predicted, {self.failed} failed (see the error column), "
            f"{self.skipped} skipped (done before) in {self.seconds:.0f} s"
        )


def default_workers() -> int:
    """One decoding process per core but one (the model's), at least 1."""
    return max(1, (os.cpu_count() or 2) - 1)


def predict_folder(
    model: Predictor,
    inputs: str | os.PathLike,
    out_csv: str | os.PathLike,
    *,
    workers: int | None = None,
    prefetch: int = PREFETCH,
    cardiobench: bool = False,
    retry_errors: bool = False,
    progress: bool = True,
    **prepare: Any,
) -> FolderSummary:
    """The EF of every file ``inputs`` names, one row each in ``out_csv`` (module doc).

    Args:
        model: ``coreecho_jax.from_pretrained(...)``.
        inputs: a folder (recursive), a CSV with a ``path`` column, or one video file.
        out_csv: the CSV written (rows of an earlier run kept, see the module doc).
        workers: decoding processes (default :func:`default_workers`; 0: decode in this process).
        prefetch: decoded videos held per worker ahead of the model (the memory bound's factor).
        cardiobench: append ``FileName,EF_pred``.
        retry_errors: redo the files whose earlier row is an error.
        progress: a progress bar with rate and time left (stderr).
        prepare: ``crop`` and ``target_fps``, as ``EchoModel.predict`` takes them.

    Raises:
        DataError: see :func:`list_inputs` and :class:`ResultsCsv`; ``workers`` < 0 or ``prefetch`` < 1.
        WeightsError: an encoder without an EF head.
    """
    from tqdm.auto import tqdm

    from coreecho_jax.inference import runs, weights_folder  # the model's side: JAX (never in a worker)

    workers = default_workers() if workers is None else int(workers)
    if workers < 0 or prefetch < 1:
        raise DataError(f"predict_folder: needs workers >= 0 and prefetch >= 1, got {workers} and {prefetch}")
    if not model.has_head:
        raise weights_folder.WeightsError(f"{model.name}: {runs.NO_HEAD}")
    settings = DecodeSettings(model.config, int(model.clips_per_video), **prepare)
    started = time.perf_counter()
    out = Path(out_csv)
    files = list_inputs(inputs, exclude=(out, out.with_name(out.name + ".tmp")))
    columns = COLUMNS + (CARDIOBENCH_COLUMNS if cardiobench else ())
    results = ResultsCsv(out, columns)
    weights = model.weights_sha256[:16]
    todo = [f for f in files if not results.is_done(f, weights, retry_errors)]
    results.start(redo=todo)
    window = workers * prefetch if workers else 1
    counts: collections.Counter = collections.Counter()
    with tqdm(total=len(todo), unit="video", disable=not progress or not todo, dynamic_ncols=True) as bar:
        stream = decode_ahead(todo, _decode_input, process_pool(workers, settings), window, died=_died)
        for file, decoded in stream:
            row = _row(model, file, decoded, weights, cardiobench)
            results.append(row)
            counts[row["status"]] += 1
            bar.update(1)
            bar.set_postfix(failed=counts["error"], refresh=False)
    return FolderSummary(
        out, counts["ok"], counts["error"], len(files) - len(todo), time.perf_counter() - started
    )


def _decode_input(file: InputFile) -> Decoded:
    """:func:`decode_file` of an :class:`InputFile` (the job :func:`predict_folder` sends to a worker)."""
    return decode_file(file.path)


def _died(file: InputFile) -> Decoded:
    """The answer for a file whose decoding process died while it ran alone (:func:`decode_ahead`)."""
    return Decoded(
        error=f"{file.path}: the decoding process died on this file (a crashing decoder, or killed for memory)",
        flag="worker_died",
        dicom=_dicom_of(file.path),
    )


def _row(
    model: Predictor, file: InputFile, decoded: Decoded, weights: str, cardiobench: bool
) -> dict[str, str]:
    """The row of one decoded file: the model's prediction, or the error (its own, or the model's)."""
    if decoded.prepared is None:
        return row_of(file, weights, failed=decoded, cardiobench=cardiobench)
    try:
        prediction = model.predict_prepared(decoded.prepared)
    except (CoreEchoError, OSError) as e:
        failed = Decoded(
            error=f"{file.path}: {e}", flag="unreadable", dicom=decoded.prepared.video.metadata.get("dicom")
        )
        return row_of(file, weights, failed=failed, cardiobench=cardiobench)
    return row_of(file, weights, prediction=prediction, cardiobench=cardiobench)
