"""Transfer learning as the paper's Tables 4 and 5: cross-validated MLP probing or fine-tuning.

``run_transfer(config, workdir)`` is what ``main.py`` calls for ``configs/camus.py`` and
``configs/hmcqu.py``. Data flows:

  download -> ``data.transfer_sets.prepare`` (one clip per video, cached) -> folds
  -> per fold: encoder from ``transfer.init`` + a fresh head -> ``transfer.steps.transfer_step`` over
     ``data.cycles.train_batches`` (sharded on the ``data`` mesh) -> Orbax checkpoints of the fold
  -> the fold's held-out patients through the evaluator -> ``folds/fold<k>/result.json`` + predictions
  -> ``transfer.report``: mean +- std over folds, baselines, the paper's rows -> ``results.json``,
     ``table.md``, ``predictions.csv``.

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
import functools
import json
import math
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
from tqdm import tqdm

from coreecho_jax import config_check, seeds
from coreecho_jax.checkpoints import loading, saved_config
from coreecho_jax.checkpoints import manager as ckpt_lib
from coreecho_jax.data import cycles
from coreecho_jax.data.folds import Fold
from coreecho_jax.data.transfer_sets import PreparedSet, prepare
from coreecho_jax.errors import CheckpointError, ConfigError, DataError
from coreecho_jax.evaluation import plots
from coreecho_jax.evaluation import steps as eval_steps
from coreecho_jax.evaluation.evaluator import Evaluator
from coreecho_jax.evaluation.results import json_ready, write_json
from coreecho_jax.models import build_model
from coreecho_jax.models import rngs as rng_lib
from coreecho_jax.models.coreecho import CoReEcho
from coreecho_jax.train import loop as train_loop
from coreecho_jax.train import mesh as mesh_lib
from coreecho_jax.train import steps as train_steps
from coreecho_jax.train.writer import MetricWriter
from coreecho_jax.transfer import provenance, report
from coreecho_jax.transfer import steps as transfer_steps

KIND = {"camus": "regression", "hmcqu": "classification"}
#: Architecture fields taken from a run workdir's config.json when ``transfer.init`` names one.
ARCHITECTURE_FIELDS = ("preset", "dims", "depth", "head_dim", "mlp_ratio")


def _say(line: str) -> None:
    if jax.process_index() == 0:
        tqdm.write(line)


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
    _say(f"the architecture of transfer.init's run is trained ({'; '.join(changed)})")
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
            f"transfer.init = {init!r}: no such file or folder (expected a coreecho-jax run workdir, best.pth, "
            "a Kinetics-400 .pth or an imported folder; '' for a random encoder)"
        )
    if not init and config.transfer.mode == "probe" and not config.transfer.probe_random_encoder:
        problems.append(
            "transfer.init is empty with transfer.mode = 'probe': that probes a random encoder, no row of the "
            "paper; pass --config.transfer.init=<run workdir | best.pth | K400 .pth>, or "
            "--config.transfer.mode=finetune for the paper's Scratch row "
            "(--config.transfer.probe_random_encoder=True runs it as a control)"
        )
    if problems:
        raise ConfigError("\n".join(problems))


def check_folds(config: ml_collections.ConfigDict, data: PreparedSet, chosen: Sequence[int]) -> None:
    """Before any training: HMC-QU needs both classes in the set and in each chosen fold's training
    videos (DataError naming the counts); each chosen fold needs one training batch (ConfigError)."""
    if data.task == "hmcqu":
        mi = int(np.sum(data.labels == 1))
        if mi in (0, len(data.labels)):
            raise DataError(
                f"the HMC-QU set read has {mi} MI and {len(data.labels) - mi} normal videos "
                f"(data.subset = {str(config.data.subset)!r}, data.view = {str(config.data.view)!r}): a "
                "classifier needs both classes; its accuracy and specificity would be 100 without meaning"
            )
        one_class = []
        for k in chosen:
            labels = data.labels[data.rows(data.folds[k].train)]
            mi = int(np.sum(labels == 1))
            if mi in (0, len(labels)):
                one_class.append(
                    f"fold {k}: its {len(labels)} training videos are {mi} MI and {len(labels) - mi} normal"
                )
        if one_class:
            raise DataError(
                "; ".join(one_class) + ": a classifier needs both classes in training (check data.fold_file "
                "or data.folds)"
            )
    mode = str(config.transfer.mode)
    batch = int(config[mode].batch_size)
    small = [k for k in chosen if len(data.folds[k].train) < batch]
    if small:
        sizes = ", ".join(f"fold {k}: {len(data.folds[k].train)}" for k in small)
        raise ConfigError(
            f"{mode}.batch_size = {batch}: more than the training videos of a fold ({sizes}); choose a "
            "smaller batch"
        )


def protocol_line(config: ml_collections.ConfigDict, data: PreparedSet, chosen: Sequence[int]) -> str:
    """The evaluation protocol in a line (printed, and in results.json)."""
    n = len(data.folds)
    scheme = str(config.data.folds)
    if data.task == "camus" and scheme == "split_files" and n == 1:
        text = (
            "1 fold, not a 10-fold cross-validation: data.folds = split_files and the split files hold one "
            "split (the 2023 release's subgroup_{training,validation,testing}.txt), whose testing list is "
            "reported"
        )
    else:
        text = f"{n}-fold cross-validation (data.folds = {scheme!r})"
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
        self.kind = KIND[data.task]
        self.mode = str(config.transfer.mode)
        self.hp = config[self.mode]
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
        origin = loading.initialize_from(model, str(self.config.transfer.init))
        train_labels = self.data.labels[self.train_rows]
        transfer_steps.fresh_head(
            model,
            self.kind,
            seed=seeds.derive(seed, self.fold.index, seeds.HEAD_INIT),
            dropout=float(self.config.model.head_dropout),
            bias_init=float(train_labels.mean()) if self.kind == "regression" else None,
            dropout_rng=str(self.config.model.dropout_rng),
        )
        return model, origin

    def _replicate(self, *trees: nnx.Object) -> None:
        for tree in trees:
            nnx.update(tree, mesh_lib.replicate(nnx.state(tree), self.mesh))

    # ---------------------------------------------------------------------------------- predictions
    def predict(self, model: CoReEcho, rows: np.ndarray) -> tuple[list[str], np.ndarray, np.ndarray]:
        """Names, labels and outputs (EF %, or MI probability) of ``rows``, in name order."""
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
        eval_config = ml_collections.ConfigDict({"n_clips": 1, "bootstrap": 0})
        result = Evaluator(lambda b: host_fn(b["video"]), eval_config).predict(batches)
        outputs = result.prediction
        if self.kind == "classification":
            outputs = 1.0 / (1.0 + np.exp(-outputs))  # logits -> MI probability
        return list(result.filenames), result.labels, outputs

    def selection_score(self, labels: np.ndarray, outputs: np.ndarray) -> float:
        """Lower is better: validation MAE (EF %) or log loss (MI)."""
        if self.kind == "regression":
            return float(np.mean(np.abs(outputs - labels)))
        p = np.clip(outputs, 1e-7, 1 - 1e-7)
        return float(-np.mean(labels * np.log(p) + (1 - labels) * np.log(1 - p)))

    # ---------------------------------------------------------------------------------- provenance
    def stale_reason(self) -> str | None:
        """Why the fold folder's work (a result or checkpoints) is not of the current inputs; None when
        it is, or when the folder holds no work."""
        if not provenance.holds_work(self.dir):
            return None
        diffs = provenance.differences(provenance.recorded_inputs(self.dir), self.inputs)
        return "; ".join(diffs) or None

    def set_aside(self, reason: str, recompute: bool) -> dict:
        """Refuses a stale fold folder (StaleFoldError) or, with ``recompute``, moves it aside whole."""
        target = provenance.stale_path(self.dir)
        if not recompute:
            raise provenance.StaleFoldError(
                f"{self.dir} was computed from other data than the current set ({reason}); pass "
                f"--allow_config_change to compute fold {self.fold.index} again (the folder moves to "
                f"{target.name}), or use another --workdir"
            )
        if jax.process_index() == 0:
            self.dir.rename(target)
        if jax.process_count() > 1:
            multihost_utils.sync_global_devices(f"coreecho_jax stale fold {self.fold.index}")
        logging.warning("fold %d: %s; computed again (the old folder is %s)", self.fold.index, reason, target)
        _say(f"fold {self.fold.index}: computed from other data ({reason}); computing it again")
        return {"because": reason, "old_folder": str(target)}

    def with_metrics(self, result: dict) -> dict:
        """``result`` with its metrics and baseline computed now from its stored predictions."""
        predictions = result["predictions"]
        result.update(
            report.fold_metrics(
                self.data.task,
                np.array([p["label"] for p in predictions], np.float64),
                np.array([p["output"] for p in predictions], np.float64),
                [p["group"] for p in predictions],
                train_labels=self.data.labels[self.train_rows],
                threshold=float(self.config.eval.threshold),
                inclusive=bool(self.config.eval.threshold_inclusive),
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
            _say(f"fold {self.fold.index}: finished earlier ({done})")
            return self.with_metrics(json.loads(done.read_text()))
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
        """Trains the fold (from its latest checkpoint if any) and tests it; the result without metrics."""
        t0 = time.perf_counter()
        model, origin = self.build_model()
        self._replicate(model)
        batch = int(self.hp.batch_size)
        steps_per_epoch = len(self.train_rows) // batch
        cap = int(self.config.run.max_steps_per_epoch)
        if cap > 0:
            steps_per_epoch = min(steps_per_epoch, cap)
        optimizer = train_steps.make_optimizer(
            model,
            float(self.hp.lr),
            float(self.hp.weight_decay),
            transfer_steps.optimizer_params(self.mode),
        )
        ckpts = ckpt_lib.RunCheckpoints(self.dir / "checkpoints")
        start, history, best = 0, [], math.inf
        restored = ckpts.restore_latest(
            {"model": ckpt_lib.model_state_dict(model), "opt": ckpt_lib.optimizer_state_dict(optimizer)}
        )
        if restored is not None:
            state, meta = restored
            ckpt_lib.load_model_state_dict(model, state["model"])
            ckpt_lib.load_optimizer_state_dict(optimizer, state["opt"])
            start, history, best = meta["epoch"] + 1, meta["history"], meta["best_val"]
            _say(f"fold {self.fold.index}: resuming after epoch {start}")
        self._replicate(model, optimizer)
        writer = MetricWriter(self.dir) if jax.process_index() == 0 else None
        epochs = int(self.hp.epochs)
        bar = tqdm(
            total=epochs * steps_per_epoch,
            initial=start * steps_per_epoch,
            desc=f"fold {self.fold.index} ({self.mode})",
            leave=False,
            disable=jax.process_index() != 0,
        )
        run_step = train_steps.bind(transfer_steps.transfer_step, model, optimizer)
        augment = (
            cycles.AffineSpec(
                float(self.config.data.affine_degrees),
                float(self.config.data.affine_translate),
                tuple(self.config.data.affine_scale),
            )
            if self.config.data.augment
            else None
        )
        seed = int(self.config.seed)
        for epoch in range(start, epochs):
            rng_lib.reseed(model, seeds.derive(seed, self.fold.index, epoch, seeds.TRANSFER_DROPOUT))
            losses = []
            batches = cycles.train_batches(
                self.data.clips,
                self.data.labels,
                self.train_rows,
                batch,
                seed=seed,
                fold=self.fold.index,
                epoch=epoch,
                mean=self.mean,
                std=self.std,
                augment=augment,
                process_index=jax.process_index(),
                process_count=jax.process_count(),
            )
            for i, host_batch in enumerate(batches):
                if i >= steps_per_epoch:
                    break
                sharded = mesh_lib.shard_batch(host_batch, self.mesh)
                losses.append(run_step(sharded, self.kind, self.mode)["loss"])
                bar.update(1)
            loss = float(np.mean(jax.device_get(losses)))
            if not math.isfinite(loss):
                raise FloatingPointError(
                    f"non-finite loss in fold {self.fold.index}, epoch {epoch}; the last good checkpoint is "
                    f"kept in {self.dir / 'checkpoints'}"
                )
            record = {"epoch": epoch, "loss": loss}
            improved = False
            if len(self.val_rows):
                _, labels, outputs = self.predict(model, self.val_rows)
                record["val_score"] = self.selection_score(labels, outputs)
                improved = record["val_score"] <= best
                best = min(best, record["val_score"])
            history.append(json_ready(record))
            meta = {"epoch": epoch, "history": history, "best_val": best}
            state = {
                "model": ckpt_lib.model_state_dict(model),
                "opt": ckpt_lib.optimizer_state_dict(optimizer),
            }
            if improved:
                ckpts.save_best(epoch + 1, {"model": state["model"]}, meta)
            ckpts.save_latest(epoch + 1, state, meta)
            if writer is not None:
                writer.write(
                    (epoch + 1) * steps_per_epoch, {f"epoch/{k}": v for k, v in record.items()}, epoch=epoch
                )
        bar.close()
        ckpts.wait()
        tested_epoch = epochs - 1
        if len(self.val_rows):
            restored_best = ckpts.restore_best({"model": ckpt_lib.model_state_dict(model)})
            if restored_best is None:
                raise CheckpointError(f"fold {self.fold.index}: no best checkpoint in {ckpts.directory}")
            ckpt_lib.load_model_state_dict(model, restored_best[0]["model"])
            self._replicate(model)
            tested_epoch = restored_best[1]["epoch"]
        ckpts.close()
        if writer is not None:
            writer.close()
        names, labels, outputs = self.predict(model, self.test_rows)
        groups = [self.data.groups[i] for i in self.data.rows(tuple(names))]
        return {
            "fold": self.fold.index,
            "sizes": {"train": len(self.fold.train), "val": len(self.fold.val), "test": len(self.fold.test)},
            "init": origin,
            "tested_epoch": tested_epoch,
            "epoch_chosen_on": "validation set"
            if len(self.val_rows)
            else "fixed epoch count (no validation set)",
            "history": history,
            "seconds": time.perf_counter() - t0,
            "predictions": [
                {"name": n, "label": float(y), "output": float(o), "group": g}
                for n, y, o, g in zip(names, labels, outputs, groups)
            ],
            "inputs": self.inputs,
        }


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


def write_predictions_csv(results: Sequence[dict], path: Path) -> None:
    """Every tested video of every fold: fold, name, group, label, output (EF % or MI probability)."""
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["fold", "name", "group", "label", "output"])
        for r in results:
            for p in r["predictions"]:
                w.writerow([r["fold"], p["name"], p["group"], p["label"], f"{p['output']:.6f}"])


def pooled_metrics(
    config: ml_collections.ConfigDict, task: str, results: Sequence[dict]
) -> tuple[dict, dict]:
    """The model's and the baseline's metrics over every tested video of ``results`` at once."""
    predictions = [p for r in results for p in r["predictions"]]
    labels = np.array([p["label"] for p in predictions], np.float64)
    outputs = np.array([p["output"] for p in predictions], np.float64)
    if task == "camus":
        groups = [p["group"] for p in predictions]
        train_means = np.array([r["train_mean_ef"] for r in results for _ in r["predictions"]])
        baseline = report.regression_metrics(labels, train_means, groups)
        for group in report.QUALITY_GROUPS:  # one constant per fold: a pooled r would only rank folds
            baseline[f"{group}/corr"] = math.nan
            baseline["notes"][f"{group}/corr"] = "the train-mean baseline predicts one constant per fold"
        return report.regression_metrics(labels, outputs, groups), baseline
    threshold = float(config.eval.threshold)
    inclusive = bool(config.eval.threshold_inclusive)
    majority = np.array([r["majority_class"] for r in results for _ in r["predictions"]], np.float64)
    return (
        report.classification_metrics(labels, outputs, threshold, inclusive=inclusive),
        report.classification_metrics(labels, majority, threshold, inclusive=inclusive),
    )


def summarize(config: ml_collections.ConfigDict, data: PreparedSet, results: Sequence[dict]) -> dict:
    """results.json's content: per-fold metrics, their mean +- std, the baseline, pooled metrics, table."""
    task = data.task
    n = len(results)
    model = report.summarize_folds([r["model"] for r in results])
    baseline = report.summarize_folds([r["baseline"] for r in results])
    pooled, pooled_baseline = pooled_metrics(config, task, results)
    mode = str(config.transfer.mode)
    init = str(config.transfer.init) or "scratch"
    label = f"ours: {'MLP probing' if mode == 'probe' else 'fine-tuning'}, {Path(init).name or init}"
    if task == "camus":
        rows = {
            label: model,
            f"{label}, pooled": report.as_row(pooled, n),
            "train-mean EF baseline": baseline,
            "train-mean EF baseline, pooled": report.as_row(pooled_baseline, n),
        }
        comparison = report.CAMUS_COMPARISON
    else:
        rows = {label: model, "majority-class baseline": baseline}
        comparison = report.HMCQU_COMPARISON
    return {
        "task": task,
        "mode": mode,
        "init": results[0]["init"] if results else init,
        "data": data.source,
        "protocol": protocol_line(config, data, [r["fold"] for r in results]),
        "folds": [r["fold"] for r in results],
        "summary": model,
        "baseline": baseline,
        "pooled": pooled,
        "pooled_baseline": pooled_baseline,
        "paper_comparison": comparison,
        "per_fold": [
            {k: v for k, v in r.items() if k not in ("predictions", "history", "inputs")} for r in results
        ],
        "table": report.format_table(task, rows, n),
    }


def run_transfer(
    config: ml_collections.ConfigDict, workdir: str | Path, *, allow_config_change: bool = False
) -> dict:
    """Runs every chosen fold (module doc) with the config checked and the workdir held, as CoReEcho
    training does (:func:`coreecho_jax.train.loop.run_in_workdir`). ``config.json`` records the
    architecture that is trained (:func:`resolve_model`). ``allow_config_change`` also recomputes fold
    folders computed from other data (:meth:`FoldRun.set_aside`)."""
    config_check.check_config(config)
    check_setting(config)
    config = resolve_model(config)
    run = functools.partial(_run, recompute_stale=allow_config_change)
    return train_loop.run_in_workdir(run, config, workdir, allow_config_change=allow_config_change)


def _run(config: ml_collections.ConfigDict, workdir: Path, *, recompute_stale: bool = False) -> dict:
    mesh = mesh_lib.make_mesh()
    _check_batches(config, mesh)
    data = _prepare(config, workdir)
    _say(
        data.source
        + (f"; {len(data.skipped)} videos left out (see preparation_report.json)" if data.skipped else "")
    )
    chosen = parse_folds(config.transfer.folds, len(data.folds))
    check_folds(config, data, chosen)
    _say(protocol_line(config, data, chosen))
    digests = provenance.video_digests(data)
    results = []
    for k in chosen:
        result = FoldRun(config, workdir, data, data.folds[k], mesh, digests).run(
            recompute_stale=recompute_stale
        )
        results.append(result)
        key = "all/mae" if data.task == "camus" else "accuracy"
        _say(f"fold {k}: {key} {result['model'][key]:.3f} (baseline {result['baseline'][key]:.3f})")
    provenance.check_tested_once(results, data.names)
    summary = summarize(config, data, results)
    if jax.process_index() == 0:
        write_json(summary, workdir / "results.json")
        (workdir / "table.md").write_text(
            f"{summary['table']}\n\n{summary['protocol']}. {summary['paper_comparison']}\n"
        )
        write_predictions_csv(results, workdir / "predictions.csv")
        if data.task == "camus":  # predicted vs true EF and Bland-Altman of every tested patient
            labels = [p["label"] for r in results for p in r["predictions"]]
            outputs = [p["output"] for r in results for p in r["predictions"]]
            plots.write_agreement_plots(
                labels, outputs, workdir, "camus", title=f"CAMUS {summary['mode']}, folds pooled"
            )
        print(f"\n{data.task} {summary['mode']} over folds {summary['folds']} ({workdir / 'results.json'})")
        print(summary["table"])
        print(summary["protocol"], flush=True)
    logging.info("transfer finished: %s", workdir)
    return summary
