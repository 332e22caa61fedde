"""Apache Beam pipeline options for a preparation, checked before any work starts. No TensorFlow.

Default (no ``--runner`` given): the DirectRunner in multi-processing mode with ``workers`` worker
processes, on this machine, offline::

    --runner=DirectRunner --direct_running_mode=multi_processing --direct_num_workers=<workers>
    --default_sdk_harness_log_level=WARNING

Other runners are the same pipeline with other flags (the docs page lists them for Dataflow, Flink and
Spark); flags given by the caller override the defaults. An option Beam does not know, a bad value or
an unknown runner is one :class:`BeamOptionsError` line (Beam itself would drop an unknown option with a
warning, or exit the process on a bad value).

The shape of a preparation split on Beam (:func:`split_transform`), shared by the EchoNet and the
corpus builders: the work items are written as JSON lines into the dataset's temporary folder
(:func:`write_lines`; read back with ``ReadFromText``, so a large corpus does not travel inside the
pipeline graph), redistributed, and each goes through the builder's per-item function, which returns
``(row, example or None)``. Examples go to TFDS's writer (keyed, so the output does not depend on the
worker count); the rows, the report of each item, travel as pipeline data into text shards
(``WriteToText``) that the builder reads back (:func:`read_lines`) after the pipeline ran, because
metadata written inside Beam workers is lost. Files go through Beam's ``FileSystems``: local folders,
``gs://``, ``s3://`` and ``hdfs://`` alike.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from coreecho_jax import logs
from coreecho_jax.errors import ConfigError, CoreEchoError

#: The log level of the Beam workers (their INFO lines, several per worker and bundle, are Beam's
#: bookkeeping; a file's refusal is a report row, not a worker log line).
WORKER_LOG_LEVEL = "WARNING"

#: What Beam's worker processes write to the stderr they share with the command, before their log level
#: applies (each worker, at start), hidden at verbosity 0 with TensorFlow's import lines
#: (:func:`workers_quiet`): a missing Google Cloud client Beam does not need here, its handler notice, its
#: staging notice, and a DirectRunner flag its workers do not parse.
WORKER_CHATTER: tuple[str, ...] = (
    "apitools not found, and bigquery client libraries are not available",
    "Logging handler created.",
    "No semi_persistent_directory found",
    "direct_runner_use_stacked_bundle",  # "Discarding unparseable args: [...]", quoted as repr when relayed
)

#: The logger through which the DirectRunner's job service relays its workers' log lines.
JOB_SERVICE_LOGGER = "apache_beam.runners.portability.local_job_service"

#: The page with each runner's options.
DOCS = "docs/beam.md"


class BeamOptionsError(ConfigError):
    """A Beam pipeline option is unknown, malformed or names an unknown runner."""


def default_flags(workers: int, log_level: str = WORKER_LOG_LEVEL) -> list[str]:
    """The DirectRunner in multi-processing mode with ``workers`` processes, logging at ``log_level``."""
    if workers < 1:
        raise BeamOptionsError(f"Beam workers must be >= 1, got {workers}")
    return [
        "--runner=DirectRunner",
        "--direct_running_mode=multi_processing",
        f"--direct_num_workers={workers}",
        f"--default_sdk_harness_log_level={log_level}",
    ]


def pipeline_options(
    flags: Sequence[str] = (), *, workers: int = 1, log_level: str = WORKER_LOG_LEVEL, docs: str = DOCS
) -> Any:
    """``apache_beam`` ``PipelineOptions`` of ``flags`` on top of :func:`default_flags` (module doc); the
    one check of Beam flags, for the preparations and for ``predict-archive``.

    Args:
        flags: ``--name=value`` flags as ``tfds build --beam_pipeline_options`` takes them (split on
            commas there; a list here). Later flags win over the defaults.
        workers: worker processes of the default DirectRunner (ignored by other runners).
        log_level: the workers' log level unless a flag sets it.
        docs: the page an unknown option's message points to.

    Raises:
        BeamOptionsError: a flag that does not start with ``--``, an option Beam does not know, a
            bad value, or an unknown runner (each named).
    """
    beam = import_beam()
    from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

    flags = [str(f) for f in flags]
    bad = [f for f in flags if not f.startswith("--")]
    if bad:
        raise BeamOptionsError(f"Beam pipeline options look like --name=value, got {' '.join(bad)}")
    options = PipelineOptions(default_flags(workers, log_level) + flags)
    errors = io.StringIO()
    try:  # Beam warns of unknown options and drops them; they are refused below
        with (
            contextlib.redirect_stderr(errors),
            logs.hidden("Discarding unparseable args", logger="apache_beam.options.pipeline_options"),
        ):
            known = options.get_all_options()
            every = options.get_all_options(retain_unknown_options=True)
    except SystemExit:  # argparse exits on a bad value; its message is the last line it printed
        said = [
            line.split("error:", 1)[1].strip() for line in errors.getvalue().splitlines() if "error:" in line
        ]
        message = said[-1] if said else "a bad value"
        raise BeamOptionsError(f"Beam pipeline options {' '.join(flags)}: {message}") from None
    unknown = sorted(set(every) - set(known))
    if unknown:
        raise BeamOptionsError(
            f"Beam does not know the pipeline option {', '.join('--' + u for u in unknown)}; check its "
            f"spelling and your runner's options ({docs})"
        )
    runner = options.view_as(StandardOptions).runner
    try:
        beam.runners.create_runner(runner)
    except (ValueError, ImportError) as err:
        raise BeamOptionsError(f"Beam runner {runner!r}: {str(err).splitlines()[0]}") from None
    return options


#: Tag of the report rows beside the examples.
ROWS = "rows"


def write_lines(path: str, items: Iterable[dict[str, Any]]) -> None:
    """Writes ``items`` as JSON lines to ``path`` (any Beam file system)."""
    from apache_beam.io.filesystems import FileSystems

    with FileSystems.create(path) as f:
        for item in items:
            f.write(json.dumps(item).encode() + b"\n")


def read_lines(pattern: str) -> list[dict[str, Any]]:
    """The JSON lines of every file matching ``pattern`` (shards ``prefix*``), in no particular order."""
    from apache_beam.io.filesystems import FileSystems

    out = []
    for match in FileSystems.match([pattern])[0].metadata_list:
        with FileSystems.open(match.path) as f:
            out += [json.loads(line) for line in f.read().decode().splitlines() if line.strip()]
    return out


def delete(paths: Sequence[str]) -> None:
    """Deletes files or folders (any Beam file system); missing ones are ignored."""
    from apache_beam.io.filesystems import FileSystems

    existing = [p for p in paths if FileSystems.exists(p)]
    if existing:
        FileSystems.delete(existing)


def _emit(line: str, task: Callable[..., tuple[dict, Any]], kwargs: dict[str, Any]) -> Iterator[Any]:
    from apache_beam import pvalue

    row, example = task(json.loads(line), **kwargs)
    yield pvalue.TaggedOutput(ROWS, json.dumps(row))
    if example is not None:
        yield row["key"], example


def split_transform(
    items_path: str, rows_prefix: str, fn: Callable[..., tuple[dict, Any]], **kwargs: Any
) -> Any:
    """The PTransform of one split (module doc): items of ``items_path`` -> ``fn(item, **kwargs)``.

    ``fn`` returns ``(row, example or None)``; ``row["key"]`` is the example's key. Rows are written
    to ``rows_prefix-*`` shards; the examples are the transform's output, for TFDS's writer.
    """
    import apache_beam as beam

    def expand(pipeline: Any) -> Any:
        out = (
            pipeline
            | "ReadItems" >> beam.io.ReadFromText(items_path)
            | "Spread" >> beam.Reshuffle()
            | "Prepare" >> beam.FlatMap(_emit, task=fn, kwargs=kwargs).with_outputs(ROWS, main="examples")
        )
        _ = out[ROWS] | "WriteRows" >> beam.io.WriteToText(rows_prefix)
        return out.examples

    return beam.ptransform_fn(expand)()


_ERROR_LINE = re.compile(r"^\s*([A-Za-z_][\w.]*(?:Error|Exception|Exit)): .+$")


def failure_line(err: BaseException) -> str:
    """The last ``SomeError: message`` line of a failed pipeline's error (Beam wraps the workers'
    tracebacks into one RuntimeError), else the error's first line."""
    text = str(err)
    lines = [line.strip() for line in text.splitlines() if _ERROR_LINE.match(line)]
    return lines[-1] if lines else f"{type(err).__name__}: {(text.splitlines() or [''])[0]}"


@contextlib.contextmanager
def workers_quiet() -> Iterator[None]:
    """Around a pipeline run: at verbosity 0 (:func:`coreecho_jax.logs.configure`), the workers'
    :data:`WORKER_CHATTER` and TensorFlow's import lines are dropped, from the stderr they share with
    this process and from the lines the DirectRunner's job service relays; the rest (a worker's traceback
    among it) is passed on when the run ends."""
    with (
        logs.relayed_chatter_hidden(WORKER_CHATTER, JOB_SERVICE_LOGGER),
        logs.native_chatter_hidden(logs.NATIVE_CHATTER + WORKER_CHATTER),
    ):
        yield


def import_beam() -> Any:
    """``apache_beam``, imported without its warning that Google Cloud's clients are missing (they are
    needed by Dataflow only, whose install brings them). Raises ``ModuleNotFoundError`` without it."""
    with logs.hidden("apitools not found", logger="root"):
        import apache_beam

    return apache_beam


@contextlib.contextmanager
def preparation_run(where: str, error: type[CoreEchoError]) -> Iterator[None]:
    """Around a preparation on Beam: its workers quiet (:func:`workers_quiet`) and its failure one line
    (:func:`one_line_failures`)."""
    with one_line_failures(where, error), workers_quiet():
        yield


@contextlib.contextmanager
def one_line_failures(where: str, error: type[CoreEchoError]) -> Iterator[None]:
    """Re-raises a failed Beam preparation as ``error``: one line naming ``where`` and the root error.

    The library's own errors pass unchanged. TFDS removes its temporary folder on the way out, so
    nothing of the failed run is left for a later run to trust.
    """
    try:
        yield
    except CoreEchoError:
        raise
    except Exception as err:
        line = failure_line(err)
        hint = ""
        if "generated examples is 0" in line:
            hint = (
                " (no file of that split could be prepared; prepare without Beam, or a few of its files, "
                "to list each file's reason)"
            )
        raise error(f"{where}: the Beam preparation failed and nothing was kept: {line}{hint}") from err
