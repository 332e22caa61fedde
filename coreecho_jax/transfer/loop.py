"""Transfer learning as the paper's Tables 4 and 5: cross-validated MLP probing or fine-tuning.

``run_transfer(config, workdir)`` is what ``coreecho train`` (and ``coreecho transfer``) calls for
``--config=camus`` and ``--config=hmcqu``. Data flows:

  ``config.task`` -> its record (``transfer.tasks``: reader, kind, metrics, table, paper rows)
  download -> ``transfer.data.prepare`` (one clip per video, cached) -> folds
  -> per fold: encoder from ``transfer.init`` + a fresh head -> ``transfer.steps.transfer_step`` over
     ``data.transfer.cycles.train_batches`` (sharded on the ``data`` mesh), epochs resumable
     (``train.epochs.ResumableEpochs``) -> Orbax checkpoints of the fold
  -> the fold's held-out patients through the task's evaluator (``evaluation.transfer``)
     -> ``folds/fold<k>/result.json`` + predictions
  -> ``transfer.report``: mean +- std over folds, baselines, the paper's rows -> ``results.json``,
     ``table.md``, ``predictions.csv``; a regression's calibrated EF intervals (``transfer.intervals``:
     fitted on each fold's validation videos, else cross-fitted on the other folds' tested videos).

Nothing here branches on a dataset: what differs between CAMUS, HMC-QU and any other task is in its
record, what differs between probing and fine-tuning in ``transfer.steps.MODES``.

Epochs are fixed (``<mode>.epochs``) and the model of the last epoch is tested, unless the fold has a
separate validation set (the CAMUS split files): then the epoch with the best validation score (MAE
for EF, log loss for MI) is tested. The reported fold is never used for a choice.

Resumable per fold and within a fold: a finished fold's ``result.json`` is read, not rerun; an
unfinished fold restores its latest epoch. Every random draw (order, augmentation, dropout, head
initialisation) is a function of (seed, fold, epoch), so a killed and resumed run ends with the same
table. Both only when the fold folder records the same inputs as the current set
(:mod:`coreecho_jax.transfer.provenance`: names per role, a digest of each video's label and clip). A
fold folder computed from other data (an edited label, a patient no longer readable, another download,
another fold file) is refused with :class:`~coreecho_jax.transfer.provenance.StaleFoldError`; with
``allow_config_change`` it is moved aside (``folds/fold<k>.stale-<n>``, kept whole) and the fold is
computed again from scratch, its old checkpoints not resumed. Refused by default, as a changed config
is: a workdir holds one experiment, data that changed under it is as often an accident (a half-copied
download, a file that broke and drops a patient, a wrong ``data.root``) as an intent, and recomputing
would replace hours of training without being asked. The per-fold metrics are recomputed from the
stored predictions at every run, so the reported numbers follow the current metric rules.
"""

from __future__ import annotations

import copy
import csv
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import ml_collections
import numpy as np
from absl import logging
from flax import nnx
from jax.experimental import multihost_utils

from coreecho_jax import config_check, logs, seeds
from coreecho_jax.checkpoints import manager as ckpt_lib
from coreecho_jax.checkpoints import saved_config
from coreecho_jax.data.transfer import cycles
from coreecho_jax.data.transfer.folds import Fold
from coreecho_jax.errors import ConfigError, DataError
from coreecho_jax.evaluation import conformal, plots
from coreecho_jax.evaluation import steps as eval_steps
from coreecho_jax.evaluation import transfer as transfer_eval
from coreecho_jax.evaluation.results import json_ready, write_json
from coreecho_jax.models import build_model
from coreecho_jax.models import rngs as rng_lib
from coreecho_jax.models.coreecho import CoReEcho
from coreecho_jax.train import epochs as epochs_lib
from coreecho_jax.train import init_weights
from coreecho_jax.train import loop as train_loop
from coreecho_jax.train import mesh as mesh_lib
from coreecho_jax.train import steps as train_steps
from coreecho_jax.train.writer import MetricWriter
from coreecho_jax.transfer import intervals as transfer_intervals
from coreecho_jax.transfer import provenance, report, tasks
from coreecho_jax.transfer import steps as transfer_steps
from coreecho_jax.transfer.data import PreparedSet, prepare

#: Architecture fields taken from a run workdir's config.json when ``transfer.init`` names one.
ARCHITECTURE_FIELDS = ("preset", "dims", "depth", "head_dim", "mlp_ratio")


def numbered_from_one(result: dict) -> dict:
    """A fold's ``result.json`` in today's numbering (epochs from 1, :mod:`coreecho_jax.train.epochs`):
    one written before (its history starts at epoch 0) gets ``tested_epoch`` and each history
    record's ``epoch`` one more; any other comes back as it is."""
    history = result.get("history") or []
    if not history or history[0].get("epoch") != 0:
        return result
    renumbered = [{**r, "epoch": r["epoch"] + 1} for r in history]
    return {**result, "tested_epoch": int(result["tested_epoch"]) + 1, "history": renumbered}


def parse_folds(value: Any, n_folds: int) -> list[int]:
    """``transfer.folds``: "" (every fold) or a comma list of 0-based fold numbers, e.g. "0,3"."""
    text = str(value).strip()
    if not text:
        return list(range(n_folds))
    try:
        chosen = sorted({int(x) for x in text.split(",") if x.strip()})
    except ValueError:
        chosen = []
    if not chosen or any(not 0 <= k < n_folds for k in chosen):
        raise ConfigError(
            f"transfer.folds = {value!r}: expected '' or fold numbers in 0..{n_folds - 1}, e.g. '0,3'"
        )
    return chosen


def model_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """``config.model``, with the architecture of the run ``transfer.init`` names when it is a run workdir."""
    model = ml_collections.ConfigDict(config.model.to_dict())
    init = str(config.transfer.init)
    saved = saved_config.read_run_config(init) if init and Path(init).is_dir() else None
    if saved and isinstance(saved.get("model"), dict):
        for key in ARCHITECTURE_FIELDS:
            if key in saved["model"] and key in model:
                model[key] = saved["model"][key]
    return model


def resolve_model(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """A copy of ``config`` whose ``model`` is :func:`model_config`'s: the architecture that is trained,
    so that ``config.json`` records it. Each field taken from ``transfer.init``'s run is logged."""
    model = model_config(config)
    changed = [
        f"model.{k}: {config.model[k]!r} -> {model[k]!r}"
        for k in ARCHITECTURE_FIELDS
        if k in model and json.dumps(model[k]) != json.dumps(config.model[k])
    ]
    if not changed:
        return config
    logs.say(f"the architecture of transfer.init's run is trained ({'; '.join(changed)})")
    resolved = copy.deepcopy(config)
    resolved.model = model
    return resolved


def check_setting(config: ml_collections.ConfigDict) -> None:
    """Raises ConfigError (one line per problem) for a ``transfer.init`` that names nothing, and for
    probing a random encoder (no row of the paper) unless ``transfer.probe_random_encoder`` asks for it."""
    problems = []
    init = str(config.transfer.init)
    if init and not Path(init).exists():
        problems.append(
            f"transfer.init = {init!r}: no such file or folder (expected a coreecho-jax run workdir, a weights folder, "
            "best.pth, a Kinetics-400 .pth or an imported folder; '' for a random encoder)"
        )
    frozen = transfer_steps.MODES[str(config.transfer.mode)].frozen_encoder
    if not init and frozen and not config.transfer.probe_random_encoder:
        problems.append(
            "transfer.init is empty with transfer.mode = 'probe': that probes a random encoder, no row of the "
            "paper; pass --config.transfer.init=<run workdir | best.pth | K400 .pth>, or "
            "--config.transfer.mode=finetune for the paper's Scratch row "
            "(--config.transfer.probe_random_encoder=True runs it as a control)"
        )
    if problems:
        raise ConfigError("\n".join(problems))


def check_folds(config: ml_collections.ConfigDict, data: PreparedSet, chosen: Sequence[int]) -> None:
    """Before any training: a classification task needs both classes in the set and in each chosen
    fold's training videos (DataError naming the counts); each chosen fold needs one training batch
    (ConfigError)."""
    task = tasks.get(data.task)
    if task.kind.binary:
        _check_both_classes(config, data, chosen, task)
    mode = str(config.transfer.mode)
    batch = int(config[mode].batch_size)
    small = [k for k in chosen if len(data.folds[k].train) < batch]
    if small:
        sizes = ", ".join(f"fold {k}: {len(data.folds[k].train)}" for k in small)
        raise ConfigError(
            f"{mode}.batch_size = {batch}: more than the training videos of a fold ({sizes}); choose a "
            "smaller batch"
        )


def _check_both_classes(
    config: ml_collections.ConfigDict, data: PreparedSet, chosen: Sequence[int], task: tasks.Task
) -> None:
    positive, negative = task.classes
    n = int(np.sum(data.labels == 1))
    if n in (0, len(data.labels)):
        raise DataError(
            f"the {task.title} set read has {n} {positive} and {len(data.labels) - n} {negative} videos "
            f"({task.describe_data(config.data)}): a classifier needs both classes; its accuracy and "
            "specificity would be 100 without meaning"
        )
    one_class = []
    for k in chosen:
        labels = data.labels[data.rows(data.folds[k].train)]
        n = int(np.sum(labels == 1))
        if n in (0, len(labels)):
            one_class.append(
                f"fold {k}: its {len(labels)} training videos are {n} {positive} and {len(labels) - n} {negative}"
            )
    if one_class:
        raise DataError(
            "; ".join(one_class) + f": a classifier needs both classes in training (check {task.fold_fields})"
        )


def evaluator(task: tasks.Task, config: ml_collections.ConfigDict) -> transfer_eval.TransferEvaluator:
    """The task's evaluator, a classification's at ``eval.threshold`` and ``eval.threshold_inclusive``."""
    return task.evaluator(
        threshold=float(config.eval.threshold), inclusive=bool(config.eval.threshold_inclusive)
    )


def protocol_line(config: ml_collections.ConfigDict, data: PreparedSet, chosen: Sequence[int]) -> str:
    """The evaluation protocol in a line (printed, and in results.json)."""
    n = len(data.folds)
    scheme = str(config.data.folds)
    text = (
        tasks.get(data.task).protocol_note(scheme, n)
        or f"{n}-fold cross-validation (data.folds = {scheme!r})"
    )
    if len(chosen) < n:
        text += f"; folds {list(chosen)} run (transfer.folds)"
    return text


class FoldRun:
    """Trains and tests one fold (resuming if possible), or reads it back when it is finished."""

    def __init__(
        self,
        config: ml_collections.ConfigDict,
        workdir: Path,
        data: PreparedSet,
        fold: Fold,
        mesh,
        digests: dict[str, str] | None = None,
    ):
        self.config = config
        self.data = data
        self.fold = fold
        self.mesh = mesh
        self.inputs = provenance.fold_inputs(fold, digests or provenance.video_digests(data))
        self.task = tasks.get(data.task)
        self.evaluator = evaluator(self.task, config)
        self.mode = transfer_steps.MODES[str(config.transfer.mode)]
        self.hp = config[self.mode.name]
        self.dir = workdir / "folds" / f"fold{fold.index}"
        self.train_rows = data.rows(fold.train)
        self.val_rows = data.rows(fold.val)
        self.test_rows = data.rows(fold.test)
        self.mean = list(config.data.mean)
        self.std = list(config.data.std)

    # ------------------------------------------------------------------------------------- the model
    def build_model(self) -> tuple[CoReEcho, str]:
        """The encoder ``transfer.init`` names (or a random one) with a fresh head for this fold."""
        seed = int(self.config.seed)
        model = build_model(model_config(self.config), seed=seed)
        origin = init_weights.initialize_from(model, str(self.config.transfer.init))
        transfer_steps.fresh_head(
            model,
            self.task.kind,
            seed=seeds.derive(seed, self.fold.index, seeds.HEAD_INIT),
            dropout=float(self.config.model.head_dropout),
            bias_init=self.task.kind.bias_init(self.data.labels[self.train_rows]),
            dropout_rng=str(self.config.model.dropout_rng),
        )
        return model, origin

    def _replicate(self, *trees: nnx.Object) -> None:
        for tree in trees:
            nnx.update(tree, mesh_lib.replicate(nnx.state(tree), self.mesh))

    @staticmethod
    def _state(model: CoReEcho, optimizer: nnx.Optimizer) -> dict:
        return {"model": ckpt_lib.model_state_dict(model), "opt": ckpt_lib.optimizer_state_dict(optimizer)}

    # ---------------------------------------------------------------------------------- predictions
    def predict(self, model: CoReEcho, rows: np.ndarray) -> tuple[list[str], np.ndarray, np.ndarray]:
        """Names, labels and outputs (after the task's link: EF %, or MI probability) of ``rows``, in
        name order."""
        model.eval()
        step = train_steps.bind(eval_steps.predict_step, model)
        host_fn = mesh_lib.host_local_fn(step, self.mesh)
        batches = cycles.eval_batches(
            self.data.clips,
            self.data.labels,
            self.data.names,
            rows,
            int(self.config.eval.batch_size),
            mean=self.mean,
            std=self.std,
            process_index=jax.process_index(),
            process_count=jax.process_count(),
        )
        predict = logs.first_call_compiles(
            f"fold {self.fold.index} evaluation step", lambda b: host_fn(b["video"])
        )
        return self.evaluator.predict(predict, batches)

    # ---------------------------------------------------------------------------------- provenance
    def stale_reason(self) -> str | None:
        """Why the fold folder's work (a result or checkpoints) is not of the current inputs; None when
        it is, or when the folder holds no work."""
        if not provenance.holds_work(self.dir):
            return None
        diffs = provenance.differences(provenance.recorded_inputs(self.dir), self.inputs)
        return "; ".join(diffs) or None

    def set_aside(self, reason: str, recompute: bool) -> dict:
        """Refuses a stale fold folder (StaleFoldError) or, with ``recompute``, moves it aside whole.

        On several processes process 0 moves it between two barriers: every process has looked at the
        folder before it moves (a process that looked after the move would find no stale folder, skip
        these barriers and meet the others' training instead), and none goes on before it has moved."""
        target = provenance.stale_path(self.dir)
        if not recompute:
            raise provenance.StaleFoldError(
                f"{self.dir} was computed from other data than the current set ({reason}); pass "
                f"--allow_config_change to compute fold {self.fold.index} again (the folder moves to "
                f"{target.name}), or use another --workdir"
            )
        if jax.process_count() > 1:  # every process has read the folder before it moves
            multihost_utils.sync_global_devices(f"coreecho_jax stale check fold {self.fold.index}")
        if jax.process_index() == 0:
            self.dir.rename(target)
        if jax.process_count() > 1:
            multihost_utils.sync_global_devices(f"coreecho_jax stale fold {self.fold.index}")
        logging.warning("fold %d: %s; computed again (the old folder is %s)", self.fold.index, reason, target)
        logs.say(f"fold {self.fold.index}: computed from other data ({reason}); computing it again")
        return {"because": reason, "old_folder": str(target)}

    def with_metrics(self, result: dict) -> dict:
        """``result`` with its metrics and baseline computed now from its stored predictions."""
        predictions = result["predictions"]
        result.update(
            self.evaluator.fold(
                np.array([p["label"] for p in predictions], np.float64),
                np.array([p["output"] for p in predictions], np.float64),
                [p["group"] for p in predictions],
                self.data.labels[self.train_rows],
            )
        )
        return json_ready(result)

    # ------------------------------------------------------------------------------------- training
    def run(self, *, recompute_stale: bool = False) -> dict:
        """The fold's result: read back when its folder records the current inputs, else trained
        (resumed from its own checkpoints) and tested. A folder of other inputs: :meth:`set_aside`."""
        done = self.dir / provenance.RESULT_FILE
        reason = self.stale_reason()
        recomputed = self.set_aside(reason, recompute_stale) if reason else None
        if recomputed is None and done.is_file():
            logs.say(f"fold {self.fold.index}: finished earlier ({done})")
            return self.with_metrics(numbered_from_one(json.loads(done.read_text())))
        if jax.process_index() == 0:
            self.dir.mkdir(parents=True, exist_ok=True)
            write_json(self.inputs, self.dir / provenance.INPUTS_FILE)
        result = self.train_and_test()
        if recomputed is not None:
            result["recomputed"] = recomputed
        result = self.with_metrics(result)
        if jax.process_index() == 0:
            write_json(result, done)
        return result

    def train_and_test(self) -> dict:
        """Trains the fold (from its latest checkpoint if any) and tests the model of its best epoch (on
        the validation set) or of its last; the result without metrics."""
        t0 = time.perf_counter()
        model, origin = self.build_model()
        self._replicate(model)
        optimizer = train_steps.make_optimizer(
            model, float(self.hp.lr), float(self.hp.weight_decay), self.mode.wrt
        )
        epochs = epochs_lib.ResumableEpochs(
            self.dir / "checkpoints", f"fold {self.fold.index}", best_key="best_val"
        )
        restored = epochs.restore_latest(self._state(model, optimizer))
        if restored is not None:
            ckpt_lib.load_model_state_dict(model, restored["model"])
            ckpt_lib.load_optimizer_state_dict(optimizer, restored["opt"])
            logs.say(f"fold {self.fold.index}: resuming after epoch {epochs.start}")
        self._replicate(model, optimizer)
        self.train(model, optimizer, epochs)
        has_val = len(self.val_rows) > 0
        best = epochs.finish({"model": ckpt_lib.model_state_dict(model)} if has_val else None)
        tested_epoch = int(self.hp.epochs)  # the last epoch's number (from 1)
        if best is not None:
            ckpt_lib.load_model_state_dict(model, best[0]["model"])
            self._replicate(model)
            tested_epoch = best[1]
        names, labels, outputs = self.predict(model, self.test_rows)
        groups = [self.data.groups[i] for i in self.data.rows(tuple(names))]
        val_predictions = []
        if has_val:  # the tested model's outputs on the validation set: what its intervals are fitted on
            val_names, val_labels, val_outputs = self.predict(model, self.val_rows)
            val_predictions = [
                {"name": n, "label": float(y), "output": float(o)}
                for n, y, o in zip(val_names, val_labels, val_outputs)
            ]
        return {
            "fold": self.fold.index,
            "sizes": {"train": len(self.fold.train), "val": len(self.fold.val), "test": len(self.fold.test)},
            "init": origin,
            "tested_epoch": tested_epoch,
            "epoch_chosen_on": "validation set" if has_val else "fixed epoch count (no validation set)",
            "history": epochs.history,
            "seconds": time.perf_counter() - t0,
            "predictions": [
                {"name": n, "label": float(y), "output": float(o), "group": g}
                for n, y, o, g in zip(names, labels, outputs, groups)
            ],
            "val_predictions": val_predictions,
            "inputs": self.inputs,
        }

    def train(self, model: CoReEcho, optimizer: nnx.Optimizer, epochs: epochs_lib.ResumableEpochs) -> None:
        """The fold's remaining epochs, each saved (scored on the validation set when the fold has one)."""
        steps_per_epoch = epochs_lib.steps_per_epoch(
            len(self.train_rows) // int(self.hp.batch_size), int(self.config.run.max_steps_per_epoch)
        )
        total = int(self.hp.epochs)
        writer = MetricWriter(self.dir) if jax.process_index() == 0 else None
        bar = logs.progress(
            desc=f"fold {self.fold.index} ({self.mode.name})",
            total=total * steps_per_epoch,
            initial=epochs.start * steps_per_epoch,
        )
        step = train_steps.bind(transfer_steps.transfer_step, model, optimizer)
        run_step = logs.first_call_compiles(f"fold {self.fold.index} training step", step)
        with bar:
            for epoch in epochs.remaining(total):  # from 0; records, JSON and checkpoints number from 1
                rng_lib.reseed(
                    model, seeds.derive(int(self.config.seed), self.fold.index, epoch, seeds.TRANSFER_DROPOUT)
                )
                record: dict[str, Any] = {
                    "epoch": epoch + 1,
                    "loss": self.train_epoch(run_step, epoch, steps_per_epoch, bar),
                }
                score = None
                if len(self.val_rows):
                    _, labels, outputs = self.predict(model, self.val_rows)
                    score = record["val_score"] = self.evaluator.selection_score(labels, outputs)
                epochs.save(epoch, record, self._state(model, optimizer), score)
                if writer is not None:
                    writer.write(
                        (epoch + 1) * steps_per_epoch,
                        {f"epoch/{k}": v for k, v in record.items()},
                        epoch=epoch + 1,
                    )
        if writer is not None:
            writer.close()

    def train_epoch(self, run_step, epoch: int, steps_per_epoch: int, bar: Any) -> float:
        """One epoch (index ``epoch``, from 0) of at most ``steps_per_epoch`` steps; its mean loss.
        FloatingPointError when it is not finite (the last good checkpoint is kept)."""
        augment = (
            cycles.AffineSpec(
                float(self.config.data.affine_degrees),
                float(self.config.data.affine_translate),
                tuple(self.config.data.affine_scale),
            )
            if self.config.data.augment
            else None
        )
        batches = cycles.train_batches(
            self.data.clips,
            self.data.labels,
            self.train_rows,
            int(self.hp.batch_size),
            seed=int(self.config.seed),
            fold=self.fold.index,
            epoch=epoch,
            mean=self.mean,
            std=self.std,
            augment=augment,
            process_index=jax.process_index(),
            process_count=jax.process_count(),
        )
        losses = []
        for i, host_batch in enumerate(batches):
            if i >= steps_per_epoch:
                break
            sharded = mesh_lib.shard_batch(host_batch, self.mesh)
            losses.append(run_step(sharded, self.task.kind.name, self.mode.name)["loss"])
            bar.update(1)
        loss = float(np.mean(jax.device_get(losses)))
        if not np.isfinite(loss):
            raise FloatingPointError(
                f"non-finite loss in fold {self.fold.index}, epoch {epoch + 1}; the last good checkpoint is "
                f"kept in {self.dir / 'checkpoints'}"
            )
        return loss


def _prepare(config: ml_collections.ConfigDict, workdir: Path) -> PreparedSet:
    """Process 0 prepares (or finds) the clips first; the others then read its cache."""
    if jax.process_index() == 0:
        data = prepare(str(config.task), config.data, workdir)
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices("coreecho_jax transfer data")
    if jax.process_index() != 0:
        data = prepare(str(config.task), config.data, workdir, progress=False)
    return data


def _check_batches(config: ml_collections.ConfigDict, mesh) -> None:
    problems = []
    for name in (f"{config.transfer.mode}.batch_size", "eval.batch_size"):
        value = config_check.get_field(config, name)
        if value % mesh.size:
            problems.append(f"{name} = {value}: must be a multiple of the {mesh.size} devices")
    if problems:
        raise ConfigError("\n".join(problems))


def write_predictions_csv(
    results: Sequence[dict], path: Path, bounds: dict[str, tuple[float, float]] | None = None
) -> None:
    """Every tested video of every fold: fold, name, group, label, output (EF % or MI probability) and,
    with ``bounds`` (a regression's calibrated intervals, :mod:`coreecho_jax.transfer.intervals`),
    lower and upper (EF %; empty for a video without an interval)."""
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(
            ["fold", "name", "group", "label", "output", *(["lower", "upper"] if bounds is not None else [])]
        )
        for r in results:
            for p in r["predictions"]:
                row = [r["fold"], p["name"], p["group"], p["label"], f"{p['output']:.6f}"]
                if bounds is not None:
                    row += [f"{x:.4f}" for x in bounds[p["name"]]] if p["name"] in bounds else ["", ""]
                w.writerow(row)


def summarize(
    config: ml_collections.ConfigDict,
    data: PreparedSet,
    results: Sequence[dict],
    intervals: transfer_intervals.Intervals | None = None,
) -> dict:
    """results.json's content: per-fold metrics, their mean +- std, the baseline, pooled metrics, table
    and, with ``intervals``, their summary (coverage, width, what each fold's were fitted on)."""
    task = tasks.get(data.task)
    n = len(results)
    model = report.summarize_folds([r["model"] for r in results])
    baseline = report.summarize_folds([r["baseline"] for r in results])
    pooled, pooled_baseline = evaluator(task, config).pooled(results)
    mode = transfer_steps.MODES[str(config.transfer.mode)]
    init = str(config.transfer.init) or "scratch"
    label = f"ours: {mode.title}, {Path(init).name or init}"
    rows = report.table_rows(task, label, model, baseline, (pooled, pooled_baseline), n)
    return {
        "task": task.name,
        "mode": mode.name,
        "init": results[0]["init"] if results else init,
        "data": data.source,
        "protocol": protocol_line(config, data, [r["fold"] for r in results]),
        "folds": [r["fold"] for r in results],
        "summary": model,
        "baseline": baseline,
        "pooled": pooled,
        "pooled_baseline": pooled_baseline,
        "paper_comparison": task.comparison,
        "per_fold": [
            {k: v for k, v in r.items() if k not in ("predictions", "val_predictions", "history", "inputs")}
            for r in results
        ],
        "table": report.format_table(task, rows, n),
        **({"intervals": intervals.summary} if intervals is not None else {}),
        **_small_run(results),
    }


def _small_run(results: Sequence[dict]) -> dict:
    """``{"small_run_note": ...}`` when the folds tested too few videos to mean anything, else ``{}``."""
    note = logs.small_run_note(sum(len(r["predictions"]) for r in results))
    return {"small_run_note": note} if note else {}


def run_transfer(
    config: ml_collections.ConfigDict, workdir: str | Path, *, allow_config_change: bool = False
) -> dict:
    """Runs every chosen fold (module doc) with the config checked and the workdir held, as CoReEcho
    training does (:func:`coreecho_jax.train.loop.claimed_workdir`). ``config.json`` records the
    architecture that is trained (:func:`resolve_model`). ``allow_config_change`` also recomputes fold
    folders computed from other data (:meth:`FoldRun.set_aside`). Ends with the ``wrote: ...`` line
    (:func:`logs.closing`)."""
    config_check.check_config(config)
    check_setting(config)
    config = resolve_model(config)
    with (
        logs.closing(workdir),
        train_loop.claimed_workdir(config, workdir, allow_config_change=allow_config_change) as held,
    ):
        return cross_validate(config, held, recompute_stale=allow_config_change)


def cross_validate(
    config: ml_collections.ConfigDict, workdir: Path, *, recompute_stale: bool = False
) -> dict:
    """The chosen folds of ``config.task`` in ``workdir`` (held by the caller), then the summary:
    results.json, table.md, predictions.csv and, for a regression, the agreement plots."""
    mesh = mesh_lib.make_mesh()
    _check_batches(config, mesh)
    data = _prepare(config, workdir)
    task = tasks.get(data.task)
    logs.say(
        data.source
        + (f"; {len(data.skipped)} videos left out (see preparation_report.json)" if data.skipped else "")
    )
    chosen = parse_folds(config.transfer.folds, len(data.folds))
    check_folds(config, data, chosen)
    logs.say(protocol_line(config, data, chosen))
    digests = provenance.video_digests(data)
    results = []
    for k in chosen:
        result = FoldRun(config, workdir, data, data.folds[k], mesh, digests).run(
            recompute_stale=recompute_stale
        )
        results.append(result)
        key = task.headline
        logs.say(f"fold {k}: {key} {result['model'][key]:.3f} (baseline {result['baseline'][key]:.3f})")
    provenance.check_tested_once(results, data.names)
    intervals = interval_estimates(config, task, results)
    summary = summarize(config, data, results, intervals)
    if jax.process_index() == 0:
        _write_summary(task, summary, results, workdir, intervals)
    logging.info("transfer finished: %s", workdir)
    return summary


def interval_estimates(
    config: ml_collections.ConfigDict, task: tasks.Task, results: Sequence[dict]
) -> transfer_intervals.Intervals | None:
    """The calibrated intervals of the tested videos when the task's kind has them (a regression), at
    ``eval.interval_level`` (0.9 when the config has no such field)."""
    if task.kind.intervals is None:
        return None
    level = float(config.eval.get("interval_level", conformal.DEFAULT_LEVEL))
    return task.kind.intervals(results, level)


def _write_summary(
    task: tasks.Task,
    summary: dict,
    results: Sequence[dict],
    workdir: Path,
    intervals: transfer_intervals.Intervals | None = None,
) -> None:
    """results.json, table.md, predictions.csv and (a regression) the pooled agreement plots and the
    intervals' line; printed."""
    write_json(summary, workdir / "results.json")
    lines = [summary["table"], ""]
    if intervals is not None:
        lines += [intervals.line(), ""]
    note = summary.get("small_run_note")
    if note:
        lines += [note, ""]
    lines.append(f"{summary['protocol']}. {summary['paper_comparison']}")
    (workdir / "table.md").write_text("\n".join(lines) + "\n")
    write_predictions_csv(
        results, workdir / "predictions.csv", intervals.bounds if intervals is not None else None
    )
    if task.kind.agreement_plots:  # predicted vs true and Bland-Altman of every tested video
        labels = [p["label"] for r in results for p in r["predictions"]]
        outputs = [p["output"] for r in results for p in r["predictions"]]
        plots.write_agreement_plots(
            labels, outputs, workdir, task.name, title=f"{task.title} {summary['mode']}, folds pooled"
        )
    print(f"\n{task.name} {summary['mode']} over folds {summary['folds']} ({workdir / 'results.json'})")
    if note:
        print(note)
    print(summary["table"])
    if intervals is not None:
        print(intervals.line())
    print(summary["protocol"], flush=True)
