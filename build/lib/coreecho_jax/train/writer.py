"""Where run metrics go: ``metrics.jsonl`` (one JSON object a line) and TensorBoard event files.

The event files are written with the ``tensorboard`` package's record writer and protos, without
TensorFlow (which only the input pipeline in ``coreecho_jax.data`` imports).
"""

from __future__ import annotations

import itertools
import json
import math
import os
import socket
import time
from collections.abc import Mapping
from pathlib import Path

from tensorboard.compat.proto import event_pb2, summary_pb2
from tensorboard.summary.writer.record_writer import RecordWriter

_FILE_IDS = itertools.count()  # two writers of one process in one second get distinct files


class EventFileWriter:
    """Scalars to one TensorBoard event file ``<logdir>/events.out.tfevents.<time>.<host>.<pid>.<n>``.

    Each scalar is an ``Event`` with a ``Summary.Value(simple_value=...)``; the file is TensorFlow's
    record format (length, masked CRC32C, payload, masked CRC32C), which TensorBoard reads.
    """

    def __init__(self, logdir: str | Path):
        logdir = Path(logdir)
        logdir.mkdir(parents=True, exist_ok=True)
        now = time.time()
        self.path = logdir / (
            f"events.out.tfevents.{int(now):010d}.{socket.gethostname()}.{os.getpid()}.{next(_FILE_IDS)}"
        )
        self._records = RecordWriter(open(self.path, "wb"))  # noqa: SIM115 (closed by close())
        self._write(event_pb2.Event(wall_time=now, file_version="brain.Event:2"))

    def _write(self, event: event_pb2.Event) -> None:
        self._records.write(event.SerializeToString())

    def scalar(self, tag: str, value: float, step: int) -> None:
        summary = summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag=tag, simple_value=float(value))])
        self._write(event_pb2.Event(wall_time=time.time(), step=int(step), summary=summary))

    def flush(self) -> None:
        self._records.flush()

    def close(self) -> None:
        if not self._records.closed:
            self._records.close()


class MetricWriter:
    """Appends scalars to ``<workdir>/metrics.jsonl`` and to TensorBoard under ``<workdir>/tensorboard``."""

    def __init__(self, workdir: str | Path, *, tensorboard: bool = True):
        workdir = Path(workdir)
        workdir.mkdir(parents=True, exist_ok=True)
        self._jsonl = open(workdir / "metrics.jsonl", "a", buffering=1)  # noqa: SIM115 (open for the run; close())
        self._tb = EventFileWriter(workdir / "tensorboard") if tensorboard else None

    def write(self, step: int, scalars: Mapping[str, float], **context) -> None:
        """One ``metrics.jsonl`` line ``{"step", **context, **scalars}``; non-finite values as strings."""
        record = {"step": int(step), **context}
        for key, value in scalars.items():
            value = float(value)
            record[key] = value if math.isfinite(value) else str(value)
            if self._tb is not None:
                self._tb.scalar(key, value, step)
        self._jsonl.write(json.dumps(record) + "\n")

    def flush(self) -> None:
        self._jsonl.flush()
        if self._tb is not None:
            self._tb.flush()

    def close(self) -> None:
        self._jsonl.close()
        if self._tb is not None:
            self._tb.close()
