"""Transfer folds as trained models: the loader this module registers into the one ``load_run``.

:func:`coreecho_jax.inference.runs.load_run` (re-exported here, with :class:`TrainedModel`) loads an
EchoNet run, a ``.pth`` or an imported folder itself; importing this module teaches it the transfer
folds. A transfer fold is ``<workdir>/folds/fold<k>``, its ``checkpoints`` folder, or the transfer
workdir itself when it holds one fold. The model is the one the fold tested: the encoder and the fresh
head of the fold's task (CAMUS: the EF regression head; HMC-QU: one MI logit) restored from the fold's
best checkpoint when the fold had a validation set (the loop saves a best one only then), else from
its latest (the last epoch). The config is the transfer workdir's ``config.json`` (``task`` camus or
hmcqu, the ``data.*`` preparation and normalisation); a given config changes only how the model
computes (``model.dtype``, ``remat``, ``depthwise``, ``attention``:
:data:`~coreecho_jax.checkpoints.saved_config.MODEL_RUNTIME_FIELDS`). A fold without ``result.json``
(unfinished) is refused, and so is a restored epoch other than the ``tested_epoch`` the fold's
``result.json`` records.

The module lives in ``analysis`` rather than ``inference`` because a fold's model needs the transfer
package (the fresh head of :func:`coreecho_jax.transfer.steps.fresh_head`, the architecture of
:func:`coreecho_jax.transfer.loop.model_config`, the optimizer of the fold's checkpoint layout), which
sits above ``inference`` in the package order (``tests/test_imports.py``).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import ml_collections
from absl import logging

from coreecho_jax.checkpoints import manager as ckpt_lib
from coreecho_jax.checkpoints import saved_config
from coreecho_jax.errors import CheckpointError, ConfigError
from coreecho_jax.inference.runs import TrainedModel, load_run, register_loader
from coreecho_jax.models.coreecho import CoReEcho

__all__ = ["TrainedModel", "find_fold", "load_run", "load_transfer_fold", "transfer_task_names"]


def transfer_task_names() -> tuple[str, ...]:
    """Every transfer task a fold can have (CAMUS, HMC-QU, a manifest cohort's ``custom_regression`` /
    ``custom_classification``): :mod:`coreecho_jax.transfer.tasks`' records, imported on first use."""
    from coreecho_jax.transfer import tasks as transfer_tasks

    return transfer_tasks.names()


_FOLD_DIR = re.compile(r"fold(\d+)")


def find_fold(source: str | Path) -> tuple[Path, int] | None:
    """``(transfer workdir, fold)`` when ``source`` names a transfer fold (module doc), else None.

    Raises:
        CheckpointError: a transfer workdir that holds no fold, or several (name one).
    """
    path = Path(source)
    if path.name == "checkpoints" and _FOLD_DIR.fullmatch(path.parent.name):
        path = path.parent
    if _FOLD_DIR.fullmatch(path.name) and path.parent.name == "folds":
        workdir = path.parent.parent
        if _task(workdir) in transfer_task_names():
            return workdir, int(_FOLD_DIR.fullmatch(path.name).group(1))
        return None
    if path.is_dir() and _task(path) in transfer_task_names():
        folds = sorted(
            int(m.group(1)) for p in (path / "folds").glob("fold*") if (m := _FOLD_DIR.fullmatch(p.name))
        )
        if len(folds) != 1:
            found = ", ".join(f"fold{k}" for k in folds) or "none"
            raise CheckpointError(
                f"{path}: a transfer workdir with {len(folds)} folds ({found}); name one: {path}/folds/fold<k>"
            )
        return path, folds[0]
    return None


def _task(workdir: Path) -> str | None:
    saved = saved_config.read_run_config(workdir)
    return None if saved is None else str(saved.get("task", "echonet"))


def _with_runtime_fields(
    saved: ml_collections.ConfigDict, given: ml_collections.ConfigDict | None
) -> ml_collections.ConfigDict:
    if given is not None and "model" in given:
        for field in saved_config.MODEL_RUNTIME_FIELDS:
            if field in given.model and field in saved.model:
                saved.model[field] = given.model[field]
    return saved


def _fold_model(config: ml_collections.ConfigDict, fold_dir: Path) -> tuple[CoReEcho, str]:
    """The model fold ``fold_dir`` tested, restored from its checkpoints (module doc)."""
    from coreecho_jax.models import build_model
    from coreecho_jax.train import steps as train_steps
    from coreecho_jax.transfer import loop as transfer_loop
    from coreecho_jax.transfer import steps as transfer_steps
    from coreecho_jax.transfer import tasks as transfer_tasks

    result_path = fold_dir / "result.json"
    if not result_path.is_file():
        raise CheckpointError(
            f"{fold_dir}: the fold has not finished (no result.json); finish its training first (the same "
            f"command resumes it), so that its checkpoint is the model it tested"
        )
    tested = transfer_loop.numbered_from_one(json.loads(result_path.read_text())).get("tested_epoch")
    mode = str(config.transfer.mode)
    model = build_model(transfer_loop.model_config(config), seed=int(config.seed))
    transfer_steps.fresh_head(  # the head's structure; its values are restored below
        model,
        transfer_tasks.get(str(config.task)).kind,
        seed=0,
        dropout=float(config.model.head_dropout),
        bias_init=0.0,
        dropout_rng=str(config.model.dropout_rng),
    )
    ckpts = ckpt_lib.RunCheckpoints(fold_dir / "checkpoints", read_only=True)
    try:
        restored, which = ckpts.restore_best({"model": ckpt_lib.model_state_dict(model)}), "best"
        if restored is None:  # no validation set: the fold tested its last epoch, the latest checkpoint
            optimizer = train_steps.make_optimizer(
                model, 0.0, 0.0, transfer_steps.optimizer_params(mode)
            )  # only for the checkpoint's layout
            template = {
                "model": ckpt_lib.model_state_dict(model),
                "opt": ckpt_lib.optimizer_state_dict(optimizer),
            }
            restored, which = ckpts.restore_latest(template), "latest"
    finally:
        ckpts.close()
    if restored is None:
        raise CheckpointError(
            f"{fold_dir / 'checkpoints'}: no checkpoint (neither best/ nor latest/ holds one)"
        )
    state, meta = restored
    if tested is not None and meta.get("epoch") != tested:
        raise CheckpointError(
            f"{fold_dir / 'checkpoints'}/{which}: holds epoch {meta.get('epoch')}, but {result_path} says the "
            f"fold tested epoch {tested}; the checkpoint is not the tested model"
        )
    ckpt_lib.load_model_state_dict(model, state["model"])
    model.eval()
    return model, f"{fold_dir / 'checkpoints'}/{which} (epoch {meta.get('epoch')}, {mode})"


def load_transfer_fold(
    workdir: str | Path, fold: int, config: ml_collections.ConfigDict | None = None
) -> TrainedModel:
    """Fold ``fold`` of the transfer workdir ``workdir`` (module doc)."""
    workdir = Path(workdir)
    saved = saved_config.read_run_config(workdir)
    if saved is None or str(saved.get("task")) not in transfer_task_names():
        raise ConfigError(
            f"{workdir}: not a transfer workdir (no config.json with a task of {', '.join(transfer_task_names())})"
        )
    fold_dir = workdir / "folds" / f"fold{fold}"
    if not fold_dir.is_dir():
        raise CheckpointError(f"{fold_dir}: no such fold in the transfer workdir")
    cfg = _with_runtime_fields(ml_collections.ConfigDict(saved), config)
    if (workdir / "config_changes.jsonl").is_file():
        logging.warning(
            "%s: config_changes.jsonl lists config changes accepted on resume; Grad-CAM uses config.json",
            workdir,
        )
    model, origin = _fold_model(cfg, fold_dir)
    return TrainedModel(model, cfg, origin, fold_dir, str(cfg.task), workdir, fold)


def _load_fold(config: ml_collections.ConfigDict | None, source: Path) -> TrainedModel | None:
    """The registered loader: the fold ``source`` names, or None when it names none."""
    fold = find_fold(source)
    return None if fold is None else load_transfer_fold(*fold, config=config)


register_loader(_load_fold)
