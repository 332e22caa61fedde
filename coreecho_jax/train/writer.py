"""Where run metrics go: ``metrics.jsonl`` (one JSON object a line) and TensorBoard event files."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path


class MetricWriter:
    """Appends scalars to ``<workdir>/metrics.jsonl`` and to TensorBoard under ``<workdir>/tensorboard``."""

    def __init__(self, workdir: str | Path, *, tensorboard: bool = True):
        workdir = Path(workdir)
        workdir.mkdir(parents=True, exist_ok=True)
        self._jsonl = open(workdir / "metrics.jsonl", "a", buffering=1)  # noqa: SIM115 (open for the run; close())
        self._tb = None
        if tensorboard:
            from flax.metrics import tensorboard as tb  # imports TensorFlow, so only where it is wanted

            self._tb = tb.SummaryWriter(str(workdir / "tensorboard"))

    def write(self, step: int, scalars: Mapping[str, float], **context) -> None:
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
