"""Checks a run's config against the machine and the data before any training work.

A batch size that cannot run is found here, right after data preparation, with one
:class:`~coreecho_jax.errors.ConfigError` naming every bad field and its valid values, instead of
after an epoch of training (or in the middle of validation).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import ml_collections

from coreecho_jax.errors import ConfigError

# Smallest training batch per stage (videos): stage 2 feeds one clip per video to the head, whose
# BatchNorm needs more than one value per channel in train mode (as torch.nn.BatchNorm1d).
_MIN_TRAIN_BATCH = {1: 1, 2: 2}


def _multiples(m: int, lo: int = 1, hi: int | None = None) -> str:
    """'m, 2m, 3m, ...' from the first multiple >= lo (up to hi when given)."""
    first = m * max(1, math.ceil(lo / m))
    if hi is not None:
        values = list(range(first, hi + 1, m))
        if len(values) > 4:
            return f"{values[0]}, {values[1]}, {values[2]}, ..., {values[-1]}"
        return ", ".join(map(str, values))
    return f"{first}, {first + m}, {first + 2 * m}, ..."


def check_batch_sizes(
    config: ml_collections.ConfigDict,
    *,
    stages: Sequence[int],
    num_devices: int,
    num_processes: int,
    num_train_batches: Callable[[int], int],
    train_videos: int,
) -> None:
    """Raises one ConfigError listing every batch size of the run that cannot work.

    Each global batch (``stage<k>.batch_size`` of the stages that run, ``eval.batch_size``; videos)
    must split evenly over ``num_devices`` devices and ``num_processes`` processes. A training batch
    must also give at least one full batch of the train split (``num_train_batches``, the loop's
    steps-per-epoch formula; ``train_videos`` videos) and, in stage 2, hold at least 2 videos. Eval
    batches pad the last one, so only divisibility applies to them.
    """
    m = math.lcm(num_devices, num_processes)
    where = f"{num_devices} devices" + (f" and {num_processes} processes" if num_processes > 1 else "")
    fields = [(f"stage{s}", s) for s in stages] + [("eval", None)]
    problems = []
    for section, stage in fields:
        name = f"{section}.batch_size"
        value = config[section].batch_size
        lo = _MIN_TRAIN_BATCH[stage] if stage else 1
        if not isinstance(value, int) or isinstance(value, bool) or value < lo:
            problems.append(
                f"{name}={value!r} must be an integer >= {lo}; use a multiple of {m} ({_multiples(m, lo)})"
            )
            continue
        if value % m:
            problems.append(
                f"{name}={value} does not divide over {where}; use a multiple of {m} ({_multiples(m, lo)})"
            )
            continue
        if stage and num_train_batches(value) < 1:
            fits = [b for b in range(m, train_videos + 1, m) if b >= lo and num_train_batches(b) >= 1]
            hint = (
                f"use a multiple of {m} up to {fits[-1]} ({_multiples(m, lo, fits[-1])})"
                if fits
                else (f"no batch size fits {where}: add training videos or use fewer devices")
            )
            problems.append(
                f"{name}={value} is larger than the training split ({train_videos} videos), so an epoch "
                f"has no step; {hint}"
            )
    if problems:
        raise ConfigError("batch sizes that cannot run here: " + "; ".join(problems))
