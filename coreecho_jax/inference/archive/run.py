"""EF over an archive on Apache Beam (``coreecho predict-archive``): ``coreecho predict-folder``'s rows,
computed by a Beam pipeline whose workers each load the model once (module doc of
:mod:`coreecho_jax.inference.archive`).

What the driver (this process) does, in order: checks the pipeline options (:func:`pipeline_options`:
an option Beam does not know is one line), lists the files (:func:`coreecho_jax.inference.batch.list_inputs`:
a folder, recursively, or a CSV manifest with a ``path`` column), loads the model once (to check it has
an EF head, and for the weights column a rerun compares), leaves out the files an earlier run of
``out_csv`` covers (as ``predict_folder`` does), writes the rest as shards of a few files into a
temporary folder beside ``out_csv`` (``.<name>.beam``), runs the pipeline
(:func:`coreecho_jax.inference.archive.transforms.expand`), then reads the rows back and writes
``out_csv`` at once (the kept rows, then the new ones in the listing's order), and a Parquet file beside
it when asked. The temporary folder is removed whatever happens; a failed pipeline writes no CSV.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import json
import logging
import math
import os
import shutil
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from coreecho_jax import logs
from coreecho_jax.data.corpus import runners
from coreecho_jax.data.video import video_io
from coreecho_jax.errors import ConfigError, CoreEchoError
from coreecho_jax.inference import batch

#: The most files in one shard (the unit a worker takes; its files are decoded ahead of the model).
SHARD_FILES = 16
#: Shards per worker at least, when the archive is small (so that the workers finish together).
SHARDS_PER_WORKER = 4
#: Where Beam is described to the user (the one-line errors point there).
DOCS = "docs/archive.md"
#: Parquet types of the columns that hold numbers (the others are text, as in the CSV).
INT_COLUMNS = ("size_bytes", "mtime_ns", "num_frames", "regions")
FLOAT_COLUMNS = (
    *("ef", "ef_low", "ef_high", "interval_level", "clip_spread", "shift_percentile", "fps"),
    *("colour_fraction", "EF_pred"),
)


class BeamMissingError(CoreEchoError, ImportError):
    """apache-beam (the optional extra) is not installed."""


class ArchiveError(CoreEchoError, RuntimeError):
    """The Beam pipeline failed (the message gives its root error); no CSV was written."""


@dataclasses.dataclass(frozen=True)
class ArchiveOptions:
    """How :func:`predict_archive` runs.

    Attributes:
        workers: worker processes of the default runner (the DirectRunner in multi-processing mode);
            default: the cores. Each loads the model once and has one decoding process.
        beam_options: more Beam pipeline options, ``--name=value`` each (another runner and its options:
            ``docs/archive.md``); they override the defaults.
        prefetch: decoded videos held ahead of the model per worker.
        shard_files: files per shard (default: at most :data:`SHARD_FILES`, fewer for a small archive).
        cardiobench, retry_errors: as :func:`coreecho_jax.inference.batch.predict_folder`.
        parquet: also write ``out_csv`` with ``.parquet`` for its suffix (needs pyarrow, which
            apache-beam brings): the same columns and rows, numbers as int64 / float64 (null when empty).
        crop, target_fps: as ``EchoModel.predict``.
    """

    workers: int | None = None
    beam_options: tuple[str, ...] = ()
    prefetch: int = batch.PREFETCH
    shard_files: int | None = None
    cardiobench: bool = False
    retry_errors: bool = False
    parquet: bool = False
    crop: video_io.CropMode | None = None
    target_fps: float | None = None

    def default_workers(self) -> int:
        return self.workers if self.workers is not None else os.cpu_count() or 1


def require_beam() -> None:
    """Raises :class:`BeamMissingError` (one line saying what to install) when apache-beam is missing."""
    try:
        runners.import_beam()
    except ModuleNotFoundError as e:
        if (e.name or "").split(".")[0] != "apache_beam":
            raise
        raise BeamMissingError(
            "EF over an archive on Beam needs apache-beam, which this install lacks: pip install -r "
            f"requirements-beam.txt (see {DOCS})"
        ) from None


def pipeline_options(flags: Sequence[str] = (), *, workers: int = 1) -> Any:
    """Beam ``PipelineOptions`` of ``flags`` over the DirectRunner with ``workers`` processes (later flags
    win; :func:`coreecho_jax.data.corpus.runners.pipeline_options`, the workers logging errors only).

    Raises:
        BeamMissingError: no apache-beam.
        BeamOptionsError: a flag not shaped ``--name[=value]``, an option Beam does not know (Beam itself
            would only warn and drop it), a bad value (Beam would exit), an unknown runner.
    """
    require_beam()
    return runners.pipeline_options(flags, workers=workers, log_level="ERROR", docs=DOCS)


def shards(files: Sequence[tuple[int, batch.InputFile]], workers: int, size: int | None = None) -> list[list]:
    """``files`` cut into shards of ``size`` (default: :data:`SHARD_FILES`, fewer when that leaves less
    than :data:`SHARDS_PER_WORKER` shards per worker), in order."""
    if size is None:
        size = max(1, min(SHARD_FILES, math.ceil(len(files) / (SHARDS_PER_WORKER * workers))))
    return [list(files[i : i + size]) for i in range(0, len(files), size)]


@contextlib.contextmanager
def _scratch(out: Path) -> Iterator[Path]:
    """A fresh hidden folder beside ``out`` for the shards and the rows, removed on the way out."""
    folder = out.parent / f".{out.name}.beam"
    shutil.rmtree(folder, ignore_errors=True)  # a crashed run's leftovers are never read
    folder.mkdir(parents=True)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _worker_errors_hidden() -> contextlib.AbstractContextManager[None]:
    """Within the block, the DirectRunner's copies of its workers' error records are dropped: a failed
    pipeline is one :class:`ArchiveError` line (its cause keeps Beam's whole error)."""
    return logs.dropped(
        runners.JOB_SERVICE_LOGGER,
        lambda record: record.levelno >= logging.ERROR and str(record.msg).startswith("Worker: "),
    )


def _run_pipeline(
    load: Callable[[], batch.Predictor],
    todo: Sequence[tuple[int, batch.InputFile]],
    scratch: Path,
    settings: batch.DecodeSettings,
    options: ArchiveOptions,
    beam_options: Any,
) -> list[dict[str, str]]:
    """The rows of ``todo`` from the Beam pipeline, in ``todo``'s order."""
    import apache_beam as beam

    from coreecho_jax.inference.archive import transforms

    shards_path = scratch / "shards.jsonl"
    with open(shards_path, "w", encoding="utf-8") as f:
        for shard in shards(todo, options.default_workers(), options.shard_files):
            f.write(transforms.shard_line(shard) + "\n")
    handler = transforms.EchoModelHandler(load, cardiobench=options.cardiobench)
    try:
        with (
            runners.workers_quiet(),
            _worker_errors_hidden(),
            beam.Pipeline(options=beam_options) as pipeline,
        ):
            transforms.expand(
                pipeline, str(shards_path), str(scratch / "rows"), settings, handler, options.prefetch
            )
    except CoreEchoError:
        raise
    except Exception as e:
        raise ArchiveError(
            f"the Beam pipeline failed and no CSV was written: {runners.failure_line(e)}"
        ) from e
    rows = dict(_read_rows(scratch.glob("rows*")))
    missing = [f.path for i, f in todo if i not in rows]
    if missing:  # a runner that lost rows: never write a CSV that looks complete
        raise ArchiveError(
            f"the Beam pipeline returned no row for {len(missing)} files (first: {missing[0]})"
        )
    return [rows[i] for i, _ in todo]


def _read_rows(paths: Iterable[Path]) -> Iterator[tuple[int, dict[str, str]]]:
    for path in paths:
        with open(path, encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    index, row = json.loads(line)
                    yield int(index), row


def write_csv(path: Path, columns: Sequence[str], rows: Iterable[Mapping[str, str]]) -> None:
    """``rows`` as a CSV with ``columns``, written whole to a temporary file, then renamed into place."""
    tmp = path.with_name(path.name + ".tmp")
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, columns)
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, path)


def write_parquet(path: Path, columns: Sequence[str], rows: Sequence[Mapping[str, str]]) -> None:
    """The CSV's rows as Parquet: :data:`INT_COLUMNS` int64, :data:`FLOAT_COLUMNS` float64 (an empty
    field is null), the rest text; written to a temporary file, then renamed into place.

    Raises:
        BeamMissingError: no pyarrow (apache-beam brings it).
    """
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ModuleNotFoundError:
        raise BeamMissingError(f"{path}: Parquet needs pyarrow (pip install pyarrow)") from None
    arrays = {}
    for column in columns:
        texts = [row[column] for row in rows]
        if column in INT_COLUMNS:
            arrays[column] = pa.array([int(t) if t else None for t in texts], pa.int64())
        elif column in FLOAT_COLUMNS:
            arrays[column] = pa.array([float(t) if t else None for t in texts], pa.float64())
        else:
            arrays[column] = pa.array(texts, pa.string())
    tmp = path.with_name(path.name + ".tmp")
    pq.write_table(pa.table(arrays), tmp)
    os.replace(tmp, path)


def predict_archive(
    load: Callable[[], batch.Predictor],
    inputs: str | os.PathLike,
    out_csv: str | os.PathLike,
    options: ArchiveOptions | None = None,
) -> batch.FolderSummary:
    """The EF of every file ``inputs`` names, one row each in ``out_csv``, computed on Beam (module doc).

    Args:
        load: gives the model; called once here and once in each worker process, so it must pickle (a
            module-level function, or ``functools.partial(coreecho_jax.from_pretrained, folder, ...)``).
        inputs: a folder (recursive), a CSV with a ``path`` column, or one video file. Every worker
            reads these paths: on a cluster, a file system they all mount.
        out_csv: the CSV: ``predict_folder``'s columns and rows (a rerun skips the files done).
        options: :class:`ArchiveOptions`.

    Raises:
        BeamMissingError: no apache-beam. BeamOptionsError: see :func:`pipeline_options`.
        DataError: see :func:`coreecho_jax.inference.batch.list_inputs` and ``ResultsCsv``.
        WeightsError: an encoder without an EF head. ArchiveError: the pipeline failed.
    """
    from coreecho_jax.inference import runs, weights_folder  # the model's side: JAX

    options = options or ArchiveOptions()
    if options.prefetch < 1 or (options.shard_files or 1) < 1:
        raise ConfigError(
            f"predict_archive: needs prefetch >= 1 and shard_files >= 1, got {options.prefetch} and "
            f"{options.shard_files}"
        )
    beam_options = pipeline_options(options.beam_options, workers=options.default_workers())
    started = time.perf_counter()
    out = Path(out_csv)
    parquet = out.with_suffix(".parquet")
    exclude = (out, out.with_name(out.name + ".tmp"), parquet, parquet.with_name(parquet.name + ".tmp"))
    files = batch.list_inputs(inputs, exclude=exclude)
    model = load()
    if not model.has_head:
        raise weights_folder.WeightsError(f"{model.name}: {runs.NO_HEAD}")
    settings = batch.DecodeSettings(
        model.config, int(model.clips_per_video), crop=options.crop, target_fps=options.target_fps
    )
    columns = batch.COLUMNS + (batch.CARDIOBENCH_COLUMNS if options.cardiobench else ())
    results = batch.ResultsCsv(out, columns)
    weights = model.weights_sha256[:16]
    del model  # the workers load their own
    todo = [(i, f) for i, f in enumerate(files) if not results.is_done(f, weights, options.retry_errors)]
    new_rows = []
    if todo:
        with _scratch(out) as scratch:
            new_rows = _run_pipeline(load, todo, scratch, settings, options, beam_options)
    redone = {str(f.path) for _, f in todo}
    rows = [row for path, row in results.rows.items() if path not in redone] + new_rows
    write_csv(out, columns, rows)
    if options.parquet:
        logs.watch(parquet)  # named by the command's closing line
        write_parquet(parquet, columns, rows)
    failed = sum(row["status"] == "error" for row in new_rows)
    return batch.FolderSummary(
        out, len(new_rows) - failed, failed, len(files) - len(todo), time.perf_counter() - started
    )
