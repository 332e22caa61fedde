"""The training loop: stage 1 (RnC + L1), stage 2 (MLP probing), test evaluation; resumable.

``train_and_evaluate(config, workdir)`` is what ``main.py`` calls. Data flows:

  prepared TFDS split -> tf.data batches (host numpy) -> global arrays on the ``data`` mesh
  -> jitted step (``train.steps``) -> metrics.jsonl / TensorBoard -> Orbax checkpoints (latest, best)
  -> multi-clip validation each epoch -> the best checkpoint -> multi-clip test evaluation.

A run killed at any point and started again with the same command resumes after the last finished
epoch and ends with the same numbers: the input pipeline is a pure function of (seed, epoch), dropout
is reseeded from (seed, stage, epoch), and the optimizer and BatchNorm state are restored.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import ml_collections
import numpy as np
from absl import logging
from flax import nnx
from jax.experimental import multihost_utils
from tqdm import tqdm

from coreecho_jax.checkpoints import loading
from coreecho_jax.checkpoints import manager as ckpt_lib
from coreecho_jax.data import datasets
from coreecho_jax.evaluation import multiclip
from coreecho_jax.evaluation import steps as eval_steps
from coreecho_jax.evaluation.evaluator import Evaluator, PredictFn
from coreecho_jax.evaluation.results import format_results, write_json
from coreecho_jax.models import build_model
from coreecho_jax.train import mesh as mesh_lib
from coreecho_jax.train import steps
from coreecho_jax.train.writer import MetricWriter


@dataclasses.dataclass
class StageSettings:
    """What differs between the two stages of CoReEcho."""

    stage: int
    epochs: int
    batch_size: int
    lr: float
    weight_decay: float
    decay_epoch: int | None
    decay_rate: float
    views: int


def stage_settings(config: ml_collections.ConfigDict, stage: int) -> StageSettings:
    if stage == 1:
        s = config.stage1
        return StageSettings(
            1, s.epochs, s.batch_size, s.lr, s.weight_decay, s.lr_decay_epoch, s.lr_decay_rate, views=2
        )
    s = config.stage2
    return StageSettings(2, s.epochs, s.batch_size, s.lr, s.weight_decay, None, 1.0, views=1)


def loss_spec(config: ml_collections.ConfigDict) -> steps.LossSpec:
    return steps.LossSpec(
        temperature=float(config.loss.temperature),
        rnc_weight=float(config.loss.rnc_weight),
        implementation=str(config.loss.implementation),
    )


def _dropout_seed(seed: int, stage: int, epoch: int) -> int:
    return int(np.random.SeedSequence([seed, stage, epoch]).generate_state(1)[0])


class Trainer:
    """Holds the pieces one run shares: config, workdir, mesh, data, model, writer."""

    def __init__(
        self,
        config: ml_collections.ConfigDict,
        workdir: str | Path,
        *,
        model: nnx.Module | None = None,
        write_metrics: bool = True,
    ):
        """Prepares the data and the model (``config.model`` + ``init_from`` unless ``model`` is given)."""
        self.config = config
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        mesh_lib.initialize_distributed(bool(config.run.distributed))
        self.mesh = mesh_lib.make_mesh()
        self.data = datasets.prepare(config, self.workdir)
        if model is None:
            model = build_model(config.model, seed=int(config.seed))
            logging.info("model initialised from %s", loading.initialize_from(model, config.model.init_from))
        self.model = model
        self._replicate_model()
        self.writer = MetricWriter(self.workdir) if write_metrics and jax.process_index() == 0 else None

    # ----------------------------------------------------------------------------------------- helpers
    def _replicate_model(self) -> None:
        state = nnx.state(self.model)
        nnx.update(self.model, mesh_lib.replicate(state, self.mesh))

    def _log(self, step: int, scalars: dict, **context) -> None:
        if self.writer is not None:
            self.writer.write(step, scalars, **context)

    def _state(self, optimizer: nnx.Optimizer | None) -> dict:
        state = {"model": ckpt_lib.model_state_dict(self.model)}
        if optimizer is not None:
            state["opt"] = ckpt_lib.optimizer_state_dict(optimizer)
        return state

    def _load_state(self, state: dict, optimizer: nnx.Optimizer | None) -> None:
        ckpt_lib.load_model_state_dict(self.model, state["model"])
        if optimizer is not None and "opt" in state:
            ckpt_lib.load_optimizer_state_dict(optimizer, state["opt"])
        self._replicate_model()
        if optimizer is not None:
            nnx.update(optimizer, mesh_lib.replicate(nnx.state(optimizer), self.mesh))

    def predict_fn(self) -> PredictFn:
        """This process's eval batch -> its ``[B, K]`` predictions of the current model (eval mode).

        The batch is sharded over every device of every process; the prediction comes back as this
        process's rows, in the order of its batch.
        """
        self.model.eval()
        predict = steps.bind(eval_steps.predict_step, self.model)
        spec = mesh_lib.data_sharding(self.mesh).spec

        def fn(batch):
            video = mesh_lib.shard_batch({"video": batch["video"]}, self.mesh)["video"]
            out = multihost_utils.global_array_to_host_local_array(predict(video), self.mesh, spec)
            return np.asarray(out)

        return fn

    def predict_batches(self, batches) -> multiclip.VideoPredictions:
        """Multi-clip predictions of every process's videos over eval batches, in file-name order."""
        return Evaluator(self.predict_fn(), self.config.eval).predict(batches)

    # ------------------------------------------------------------------------------------------ stages
    def run_stage(self, settings: StageSettings) -> dict:
        """Trains one stage to its end (resuming if possible); leaves the best epoch's model loaded."""
        config = self.config
        stage = settings.stage
        local_batch = mesh_lib.local_batch_size(settings.batch_size, self.mesh)
        steps_per_epoch = self.data.num_train_batches(local_batch * jax.process_count())
        if config.run.max_steps_per_epoch:
            steps_per_epoch = min(steps_per_epoch, int(config.run.max_steps_per_epoch))
        schedule = steps.step_decay_schedule(
            settings.lr, steps_per_epoch, settings.decay_epoch, settings.decay_rate
        )
        wrt = steps.ALL_PARAMS if stage == 1 else steps.HEAD_PARAMS
        optimizer = steps.make_optimizer(self.model, schedule, settings.weight_decay, wrt)
        ckpts = ckpt_lib.RunCheckpoints(self.workdir / "checkpoints" / f"stage{stage}")

        start_epoch, best_mae, history = 0, math.inf, []
        restored = ckpts.restore_latest(self._state(optimizer))
        if restored is not None:
            state, meta = restored
            self._load_state(state, optimizer)
            start_epoch, best_mae, history = meta["epoch"] + 1, meta["best_val_mae"], meta["history"]
            logging.info(
                "stage %d: resuming after epoch %d (best val MAE %.3f)", stage, meta["epoch"], best_mae
            )
        else:
            nnx.update(optimizer, mesh_lib.replicate(nnx.state(optimizer), self.mesh))

        spec = loss_spec(config)
        if stage == 1:
            step_fn = steps.bind(steps.stage1_step, self.model, optimizer)
            run_step = lambda batch: step_fn(batch, spec)
        else:
            run_step = steps.bind(steps.stage2_step, self.model, optimizer)

        for epoch in range(start_epoch, settings.epochs):
            nnx.reseed(self.model, dropout=_dropout_seed(int(config.seed), stage, epoch))
            self.model.train()
            if stage == 2:
                self.model.encoder.eval()
            train_metrics = self._train_epoch(run_step, stage, epoch, settings, local_batch, steps_per_epoch)
            val = self.validate(epoch)
            record = {
                "stage": stage,
                "epoch": epoch,
                **train_metrics,
                "val_mae": val["mae"],
                "val_rmse": val["rmse"],
                "val_r2": val["r2"],
            }
            history.append(record)
            improved = val["mae"] <= best_mae  # ties go to the later epoch, as in the official code
            if improved:
                best_mae = val["mae"]
            meta = {"stage": stage, "epoch": epoch, "best_val_mae": best_mae, "history": history}
            state = self._state(optimizer)
            if improved:
                ckpts.save_best(epoch + 1, {"model": state["model"]}, meta)
            ckpts.save_latest(epoch + 1, state, meta)
            self._log(
                (epoch + 1) * steps_per_epoch,
                {
                    **{f"epoch/train_{k}": v for k, v in train_metrics.items()},
                    **{f"epoch/val_{k}": val[k] for k in ("mae", "rmse", "r2", "pearson")},
                    "epoch/best_val_mae": best_mae,
                },
                stage=stage,
                epoch=epoch,
            )
            logging.info(
                "stage %d epoch %d: train loss %.4f | val MAE %.3f RMSE %.3f R2 %.3f%s",
                stage,
                epoch,
                train_metrics.get("loss", float("nan")),
                val["mae"],
                val["rmse"],
                val["r2"],
                "  (best)" if improved else "",
            )
            print(
                f"stage {stage} epoch {epoch + 1}/{settings.epochs}: loss {train_metrics.get('loss', float('nan')):.4f}"
                f"  val MAE {val['mae']:.3f}  RMSE {val['rmse']:.3f}  R2 {val['r2']:.3f}"
                f"{'  *best*' if improved else ''}",
                flush=True,
            )

        ckpts.wait()
        best = ckpts.restore_best({"model": ckpt_lib.model_state_dict(self.model)})
        if best is None:
            raise RuntimeError(f"stage {stage} finished without a best checkpoint in {ckpts.directory}")
        self._load_state(best[0], None)
        ckpts.close()
        return {"best_val_mae": best_mae, "best_epoch": best[1]["epoch"], "history": history}

    def _train_epoch(
        self,
        run_step: Callable,
        stage: int,
        epoch: int,
        settings: StageSettings,
        local_batch: int,
        steps_per_epoch: int,
    ) -> dict:
        ds = self.data.train_batches(local_batch, views=settings.views, epoch=epoch, stage=stage)
        sums: dict[str, float] = {}
        count = 0
        t0 = time.perf_counter()
        bar = tqdm(
            total=steps_per_epoch,
            desc=f"stage {stage} epoch {epoch + 1}/{settings.epochs}",
            leave=False,
            disable=jax.process_index() != 0,
        )
        global_step = epoch * steps_per_epoch
        for i, batch in enumerate(ds):
            if i >= steps_per_epoch:
                break
            sharded = mesh_lib.shard_batch({"video": batch["video"], "ef": batch["ef"]}, self.mesh)
            metrics = {k: float(v) for k, v in run_step(sharded).items()}
            step = global_step + i + 1
            if not all(math.isfinite(v) for v in metrics.values()):
                raise FloatingPointError(
                    f"non-finite loss at stage {stage}, epoch {epoch}, step {step}: {metrics}; the last good "
                    f"checkpoint is kept in {self.workdir / 'checkpoints' / f'stage{stage}'}"
                )
            for k, v in metrics.items():
                sums[k] = sums.get(k, 0.0) + v
            count += 1
            clips = (i + 1) * settings.batch_size * settings.views / (time.perf_counter() - t0)
            bar.set_postfix(loss=f"{metrics['loss']:.4f}", clips_s=f"{clips:.1f}")
            bar.update(1)
            if step % max(1, int(self.config.run.log_every)) == 0:
                self._log(step, {f"train/{k}": v for k, v in metrics.items()}, stage=stage, epoch=epoch)
        bar.close()
        if count == 0:
            raise ValueError("the training split produced no batch; is it smaller than one batch?")
        elapsed = time.perf_counter() - t0
        out = {k: v / count for k, v in sums.items()}
        out.update(
            steps=count, seconds=elapsed, clips_per_s=count * settings.batch_size * settings.views / elapsed
        )
        return out

    def validate(self, epoch: int) -> dict:
        """Val MAE on predictions averaged over ``eval.n_clips`` clips drawn afresh from (seed, epoch)."""
        batches = self.data.eval_batches("val", self.data.val_starts(epoch))
        _, summary = Evaluator(self.predict_fn(), self.config.eval, bootstrap=0).run(batches)
        return summary

    def test(self, tag: str) -> dict:
        """The test protocol: fixed starts, K clips per video, CIs; process 0 writes the per-video CSV."""
        first = jax.process_index() == 0
        starts = self.data.test_starts() if first else None  # process 0 draws and saves them if needed
        if jax.process_count() > 1:  # the others read the file only once it is complete
            multihost_utils.sync_global_devices("coreecho_jax test starts")
        if not first:
            starts = self.data.test_starts()
        evaluator = Evaluator(
            self.predict_fn(),
            self.config.eval,
            seed=int(self.config.seed),
            train_mean=self.data.train_mean_ef(),
        )
        result, summary = evaluator.run(self.data.eval_batches("test", starts))
        if first:
            multiclip.write_csv(result, self.workdir / f"test_predictions_{tag}.csv")
        return summary


def _stages(config: ml_collections.ConfigDict) -> list[int]:
    stages = sorted({int(s) for s in str(config.run.stages).split(",") if s.strip()})
    if not stages or any(s not in (1, 2) for s in stages):
        raise ValueError(f"run.stages must list 1 and/or 2, got {config.run.stages!r}")
    return stages


def save_config(config: ml_collections.ConfigDict, workdir: Path) -> None:
    if jax.process_index() == 0:
        (workdir / "config.json").write_text(config.to_json_best_effort(indent=2))


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str | Path) -> dict:
    """Runs the configured stages (resuming where a previous run stopped) and the test evaluation."""
    workdir = Path(workdir)
    trainer = Trainer(config, workdir)
    save_config(config, workdir)
    report: dict[str, Any] = {}
    for stage in _stages(config):
        if stage == 2 and 1 not in _stages(config) and not config.model.init_from:
            raise ValueError("stage 2 alone needs model.init_from (a stage-1 checkpoint or .pth)")
        report[f"stage{stage}"] = trainer.run_stage(stage_settings(config, stage))
    results = trainer.test(tag="final")
    results.update({f"{k}_best_val_mae": v["best_val_mae"] for k, v in report.items()})
    results.update({f"{k}_best_epoch": v["best_epoch"] for k, v in report.items()})
    if jax.process_index() == 0:
        write_json(results, workdir / "results.json")
        print(f"\nTest results ({workdir / 'results.json'})\n" + format_results(results), flush=True)
    if trainer.writer is not None:
        trainer.writer.close()
    return results


def evaluate_checkpoint(
    config: ml_collections.ConfigDict, workdir: str | Path, checkpoint: str | None
) -> dict:
    """The test protocol on any checkpoint: a run workdir, an imported folder or a CoReEcho ``.pth``."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    model, origin = loading.load_for_inference(config, checkpoint or workdir)
    trainer = Trainer(config, workdir, model=model, write_metrics=False)
    results = trainer.test(tag="evaluate")
    results["checkpoint"] = origin
    if jax.process_index() == 0:
        write_json(results, workdir / "results_evaluate.json")
        print(f"\nTest results of {origin}\n" + format_results(results), flush=True)
    return results
