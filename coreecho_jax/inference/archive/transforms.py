"""The Beam side of :mod:`coreecho_jax.inference.archive`: the model handler and the preparation step.

This module imports ``apache_beam`` (the optional extra), so only
:func:`~coreecho_jax.inference.archive.run.predict_archive` imports it, when it runs;
``import coreecho_jax.inference.archive`` does not.

The pipeline (:func:`expand`)::

    ReadFromText(shards.jsonl)      one line per shard: [[index, name, path, size, mtime_ns], ...]
    | Reshuffle                      the shards spread over the workers
    | ParDo(PrepareShard)            (index, InputFile, Decoded): each file decoded by the worker's
                                     decoding process (batch.decode_ahead, `prefetch` videos ahead)
    | RunInference(EchoModelHandler) (index, row): batch.predict_folder's row of each file
    | Map(json.dumps) | WriteToText  the rows as JSON lines, read back and ordered by the driver

The model handler loads the model once per worker process (``load_model``, kept by RunInference for the
process's life) and predicts one video per call (``max_batch_size=1``: K clips of one shape, compiled
once, as ``predict_folder`` does).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import apache_beam as beam
from apache_beam.ml.inference.base import ModelHandler, RunInference

from coreecho_jax.inference import batch

#: An element after preparation: the file's place in the listing, the file, its decoded video or error.
Prepared = tuple[int, batch.InputFile, batch.Decoded]
#: An element after inference: the file's place in the listing and its CSV row.
Row = tuple[int, dict[str, str]]
#: RunInference's metrics namespace (model loads, inferences, latencies).
METRICS_NAMESPACE = "coreecho_archive"


@dataclasses.dataclass(frozen=True)
class LoadedModel:
    """A worker's model and the weights column of its rows (the first 16 hex digits of its SHA-256)."""

    model: batch.Predictor
    weights: str


class EchoModelHandler(ModelHandler[Prepared, Row, LoadedModel]):
    """RunInference's handler: ``load`` gives the model (an ``EchoModel``; called once per worker
    process), each prepared file becomes ``batch.predict_folder``'s row (its prediction, or its error)."""

    def __init__(self, load: Callable[[], batch.Predictor], *, cardiobench: bool = False):
        super().__init__(min_batch_size=1, max_batch_size=1)
        self._load = load
        self._cardiobench = cardiobench

    def load_model(self) -> LoadedModel:
        model = self._load()
        return LoadedModel(model, model.weights_sha256[:16])

    def run_inference(
        self,
        batch_: Sequence[Prepared],
        model: LoadedModel,
        inference_args: dict[str, Any] | None = None,
    ) -> Iterable[Row]:
        return [
            (index, batch._row(model.model, file, decoded, model.weights, self._cardiobench))
            for index, file, decoded in batch_
        ]

    def get_num_bytes(self, batch_: Sequence[Prepared]) -> int:
        """The clips' bytes (Beam's default pickles the whole batch just to measure it)."""
        return sum(d.prepared.clips.nbytes for _, _, d in batch_ if d.prepared is not None)

    def get_metrics_namespace(self) -> str:
        return METRICS_NAMESPACE


class _Lent(concurrent.futures.Executor):
    """The worker's decoding process lent to ``batch.decode_ahead`` for one shard: its ``shutdown`` keeps
    the process for the next shard (a broken one is replaced when lent again)."""

    def __init__(self, pool: concurrent.futures.Executor):
        self._pool = pool

    def submit(self, fn: Callable, /, *args: Any, **kwargs: Any) -> concurrent.futures.Future:
        return self._pool.submit(fn, *args, **kwargs)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        pass


def _alive(pool: concurrent.futures.Executor) -> bool:
    try:
        pool.submit(os.getpid).result()
    except concurrent.futures.process.BrokenProcessPool:
        return False
    return True


class PrepareShard(beam.DoFn):
    """A shard's files decoded and prepared as ``coreecho predict-folder`` does
    (:func:`coreecho_jax.inference.batch.decode_file` in a spawned process that imports no JAX), at most
    ``prefetch`` videos ahead of the model; a file whose decoding process dies gets ``worker_died``'s
    error row and the process is started again."""

    def __init__(self, settings: batch.DecodeSettings, prefetch: int):
        self._settings = settings
        self._prefetch = prefetch
        self._pool: concurrent.futures.Executor | None = None

    def setup(self) -> None:
        self._pool = None

    def _lend(self) -> concurrent.futures.Executor:
        if self._pool is not None and not _alive(self._pool):
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
        if self._pool is None:
            self._pool = batch.process_pool(1, self._settings)()
        return _Lent(self._pool)

    def process(self, line: str) -> Iterator[Prepared]:
        shard = json.loads(line)
        indices = [index for index, *_ in shard]
        files = [batch.InputFile(name, Path(path), size, mtime) for _, name, path, size, mtime in shard]
        stream = batch.decode_ahead(files, batch._decode_input, self._lend, self._prefetch, died=batch._died)
        for index, (file, decoded) in zip(indices, stream):
            yield index, file, decoded

    def teardown(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None


def shard_line(shard: Sequence[tuple[int, batch.InputFile]]) -> str:
    """One line of the shards file (:func:`expand` reads it): ``[[index, name, path, size, mtime_ns], ...]``."""
    return json.dumps([[i, f.name, str(f.path), f.size, f.mtime_ns] for i, f in shard])


def expand(
    pipeline: beam.Pipeline,
    shards_path: str,
    rows_prefix: str,
    settings: batch.DecodeSettings,
    handler: EchoModelHandler,
    prefetch: int,
) -> None:
    """The pipeline of the module doc on ``pipeline``: shards of ``shards_path`` to row shards ``rows_prefix*``."""
    _ = (
        pipeline
        | "ReadShards" >> beam.io.ReadFromText(shards_path)
        | "Spread" >> beam.Reshuffle()
        | "Prepare" >> beam.ParDo(PrepareShard(settings, prefetch))
        | "Predict" >> RunInference(handler)
        | "AsJson" >> beam.Map(json.dumps)
        | "WriteRows" >> beam.io.WriteToText(rows_prefix)
    )
