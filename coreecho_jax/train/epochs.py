"""The resumable epochs every trainer shares: a CoReEcho stage (:meth:`coreecho_jax.train.loop.Trainer.run_stage`)
and a transfer fold (:class:`coreecho_jax.transfer.loop.FoldRun`). Both read it top to bottom::

    epochs = ResumableEpochs(folder, "stage 1", best_key="best_val_mae", meta={"stage": 1})
    state = epochs.restore_latest(template)    # the latest epoch's state, or None: start at epoch 0
    for epoch in epochs.remaining(total):      # 0, 1, ...: the index the seeds and the data take
        ...                                    # train one epoch, validate it
        improved = epochs.save(epoch, record, state, score)   # record["epoch"] = epoch + 1
    state, number = epochs.finish(template)    # the best epoch's model and number; checkpoints closed

Epoch numbers: the loops count epochs from 0 (the index that seeds dropout and the input pipeline);
everything a person reads numbers them from 1, the same everywhere: epoch ``n`` is the ``n``-th, its
log line says ``epoch n/total``, its records (``history``, ``metrics.jsonl``) say ``"epoch": n``, its
checkpoints are step ``n`` with ``"epoch": n`` in their meta, and ``results.json`` names the best or
tested epoch by ``n``. (Checkpoints written before this numbering hold ``"epoch": n - 1`` at step ``n``;
:mod:`~coreecho_jax.checkpoints.manager` reads them as ``n``, so their runs resume where they stopped.)

Checkpoints (:class:`~coreecho_jax.checkpoints.manager.RunCheckpoints`): ``latest/`` (the whole state,
e.g. model and optimizer) after every epoch, ``best/`` (the model alone) when the epoch's score is <=
the best so far (lower is better; a tie goes to the later epoch, as in the official code). An epoch
without a score (a transfer fold without validation set) is never the best. Each checkpoint's meta
holds the extra ``meta``, ``epoch``, the best score (under ``best_key``) and the ``history`` of epoch
records, from which a resumed run goes on.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from coreecho_jax.checkpoints import manager as ckpt_lib
from coreecho_jax.errors import CheckpointError
from coreecho_jax.evaluation.results import json_ready


def steps_per_epoch(full_batches: int, cap: int) -> int:
    """Steps of one training epoch: its full global batches (a last partial batch is dropped), at
    most ``cap`` when that is > 0 (``run.max_steps_per_epoch``)."""
    return min(full_batches, cap) if cap > 0 else full_batches


class ResumableEpochs:
    """The epochs of one training (a stage, a fold) and their checkpoints in ``directory`` (module doc).

    Args:
        directory: the training's checkpoint folder (``latest/`` and ``best/`` are made under it).
        name: the training in messages, e.g. ``"stage 1"`` or ``"fold 3"``.
        best_key: the meta key of the best score (``"best_val_mae"``, ``"best_val"``).
        meta: extra fields of every checkpoint's meta (e.g. ``{"stage": 1}``).

    Attributes:
        start: the index of the first epoch still to run = the number of epochs done (0, or the
            restored epoch's number).
        best: the best score so far (``inf`` before any).
        history: the epoch records so far (strict JSON: NaN -> null).
    """

    def __init__(
        self, directory: str | Path, name: str, *, best_key: str, meta: Mapping[str, Any] | None = None
    ):
        self.checkpoints = ckpt_lib.RunCheckpoints(directory)
        self.name = name
        self.best_key = best_key
        self.meta = dict(meta or {})
        self.start, self.best, self.history = 0, math.inf, []

    def restore_latest(self, template: dict) -> dict | None:
        """The state of the latest saved epoch, shaped like ``template`` (and :attr:`start`,
        :attr:`best`, :attr:`history` restored with it); None when no epoch was saved."""
        restored = self.checkpoints.restore_latest(template)
        if restored is None:
            return None
        state, meta = restored
        self.start, self.best, self.history = meta["epoch"], meta[self.best_key], meta["history"]
        return state

    def remaining(self, epochs: int) -> range:
        """The indexes (from 0) of the epochs still to run of ``epochs``."""
        return range(self.start, epochs)

    def save(self, epoch: int, record: Mapping[str, Any], state: dict, score: float | None = None) -> bool:
        """Ends the epoch of index ``epoch`` (number ``epoch + 1``): appends ``record`` to the history,
        saves ``state`` (``{"model": ..., ...}``) as the latest and, when ``score`` is <= the best so
        far, its model as the best, both at step ``epoch + 1``. Returns whether it was the best."""
        self.history.append(json_ready(record))
        improved = score is not None and score <= self.best
        if improved:
            self.best = score
        meta = {**self.meta, "epoch": epoch + 1, self.best_key: self.best, "history": self.history}
        if improved:
            self.checkpoints.save_best(epoch + 1, {"model": state["model"]}, meta)
        self.checkpoints.save_latest(epoch + 1, state, meta)
        return improved

    def finish(self, template: dict | None) -> tuple[dict, int] | None:
        """Waits for the saves, then (with a ``template`` of ``{"model": ...}``) restores the best epoch:
        ``(its state, its number)``; None without a template. Closes the checkpoints.

        Raises:
            CheckpointError: a template was given but no epoch was the best.
        """
        self.checkpoints.wait()
        best = None
        if template is not None:
            restored = self.checkpoints.restore_best(template)
            if restored is None:
                raise CheckpointError(
                    f"{self.name} finished without a best checkpoint in {self.checkpoints.directory}"
                )
            best = restored[0], restored[1]["epoch"]
        self.checkpoints.close()
        return best
