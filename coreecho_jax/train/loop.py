"""The training loop: stage 1 (RnC + L1), stage 2 (MLP probing), test evaluation; resumable.

``train_and_evaluate(config, workdir)`` is what ``coreecho train`` calls. Data flows:

  prepared TFDS split -> tf.data batches (host numpy) -> global arrays on the ``data`` mesh
  -> jitted step (``train.steps``) -> metrics.jsonl / TensorBoard -> Orbax checkpoints (latest, best)
  -> multi-clip validation each epoch -> the best checkpoint -> multi-clip test evaluation.

A run killed at any point and started again with the same command resumes after the last finished
epoch and ends with the same numbers: the input pipeline is a pure function of (seed, epoch), dropout
is reseeded from (seed, stage, epoch), and the optimizer and BatchNorm state are restored.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import jax
import ml_collections
import numpy as np
from absl import logging
from flax import nnx
from flax.nnx import filterlib
from jax.experimental import multihost_utils

from coreecho_jax import config_check, logs, seeds
from coreecho_jax.checkpoints import manager as ckpt_lib
from coreecho_jax.data.echonet import start_indexes
from coreecho_jax.errors import ConfigError
from coreecho_jax.evaluation import conformal, multiclip, plots
from coreecho_jax.evaluation import steps as eval_steps
from coreecho_jax.evaluation.evaluator import Evaluator, PredictFn, model_fingerprint
from coreecho_jax.evaluation.results import format_results, write_json
from coreecho_jax.inference.runs import load_run
from coreecho_jax.models import build_model
from coreecho_jax.models import rngs as rng_lib
from coreecho_jax.train import distributed, init_weights, preflight, steps
from coreecho_jax.train import epochs as epochs_lib
from coreecho_jax.train import mesh as mesh_lib
from coreecho_jax.train import workdir as workdir_lib
from coreecho_jax.train.writer import MetricWriter


@dataclasses.dataclass(frozen=True)
class StageSettings:
    """Everything that differs between the stages of CoReEcho (``Trainer.run_stage`` has no per-stage
    branch). The step function fixes the stage's train/eval modes (``steps.STAGE1_TRAIN``: everything
    trains; ``steps.STAGE2_TRAIN``: only the head, the encoder runs in eval mode)."""

    stage: int
    epochs: int
    batch_size: int  # videos per global step
    lr: float
    weight_decay: float
    decay_epoch: int | None  # lr x decay_rate from this epoch on; None: constant lr
    decay_rate: float
    views: int  # clips per video in a training batch
    wrt: filterlib.Filter = steps.ALL_PARAMS  # parameters the optimizer updates
    step: Callable = steps.stage1_step  # step(model, optimizer, batch, *step_args) -> metrics
    step_args: tuple = ()  # trailing (static) arguments of ``step``


def stage_settings(config: ml_collections.ConfigDict, stage: int) -> StageSettings:
    """Stage 1: RnC + L1 on 2 views, all parameters; stage 2: L1 probing of the head on 1 view."""
    if stage == 1:
        s = config.stage1
        decay = (s.lr_decay_epoch, s.lr_decay_rate)
        kind = {
            "views": 2,
            "wrt": steps.ALL_PARAMS,
            "step": steps.stage1_step,
            "step_args": (loss_spec(config),),
        }
    elif stage == 2:
        s = config.stage2
        decay = (None, 1.0)  # constant lr
        kind = {"views": 1, "wrt": steps.HEAD_PARAMS, "step": steps.stage2_step}
    else:
        raise ConfigError(f"stage must be 1 or 2, got {stage!r}")
    return StageSettings(int(stage), s.epochs, s.batch_size, s.lr, s.weight_decay, *decay, **kind)


def loss_spec(config: ml_collections.ConfigDict) -> steps.LossSpec:
    return steps.LossSpec(
        temperature=float(config.loss.temperature),
        rnc_weight=float(config.loss.rnc_weight),
        implementation=str(config.loss.implementation),
    )


def _host_metrics(pending: list[tuple[int, dict]], stage: int, epoch: int, checkpoints: Path) -> list[dict]:
    """Host floats of the pending ``(step, device metrics)`` (one transfer); FloatingPointError at
    the first step with a non-finite value. ``epoch``: the 1-based epoch number."""
    window = [{k: float(v) for k, v in m.items()} for m in jax.device_get([m for _, m in pending])]
    for (step, _), metrics in zip(pending, window):
        if not all(math.isfinite(v) for v in metrics.values()):
            raise FloatingPointError(
                f"non-finite loss at stage {stage}, epoch {epoch}, step {step}: {metrics}; the last good "
                f"checkpoint is kept in {checkpoints}"
            )
    return window


class Trainer:
    """Holds the pieces one run shares: config, workdir, mesh, data, model, writer."""

    def __init__(
        self,
        config: ml_collections.ConfigDict,
        workdir: str | Path,
        *,
        model: nnx.Module | None = None,
        write_metrics: bool = True,
        stages: Sequence[int] | None = None,
    ):
        """Prepares the data and the model (``config.model`` + ``init_from`` unless ``model`` is given).

        Before building the model, checks the batch sizes of ``stages`` (default: ``run.stages``; ``()``
        for evaluation only) and ``eval.batch_size`` against the mesh and the splits (ConfigError).
        """
        self.config = config
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        distributed.start(config)  # a no-op after the command's start
        self.mesh = mesh_lib.make_mesh()
        from coreecho_jax.data.echonet import inputs  # TensorFlow loads here, after the workdir guard

        self.data = inputs.prepare(config, self.workdir)
        preflight.check_batch_sizes(
            config,
            stages=_stages(config) if stages is None else stages,
            num_devices=self.mesh.size,
            num_processes=jax.process_count(),
            num_train_batches=self.data.num_train_batches,
            train_videos=len(self.data.videos("train")),
        )
        if model is None:
            model = build_model(config.model, seed=int(config.seed))
            logging.info(
                "model initialised from %s", init_weights.initialize_from(model, config.model.init_from)
            )
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
        host_fn = mesh_lib.host_local_fn(steps.bind(eval_steps.predict_step, self.model), self.mesh)
        return logs.first_call_compiles("evaluation step", lambda batch: host_fn(batch["video"]))

    def eval_batches(self, split: str, starts: dict, desc: str) -> Iterator[dict]:
        """:meth:`DataBundle.eval_batches` of ``split`` at ``starts`` behind a progress bar ``desc``."""
        total = math.ceil(len(starts) / int(self.config.eval.batch_size))
        return logs.progress(self.data.eval_batches(split, starts), desc=desc, total=total, unit="batch")

    def predict_batches(self, batches) -> multiclip.VideoPredictions:
        """Multi-clip predictions of every process's videos over eval batches, in file-name order."""
        return Evaluator(self.predict_fn(), self.config.eval).predict(batches)

    # ------------------------------------------------------------------------------------------ stages
    def run_stage(self, settings: StageSettings) -> dict:
        """Trains one stage to its end (resuming if possible); leaves the best epoch's model loaded."""
        stage = settings.stage
        local_batch = mesh_lib.local_batch_size(settings.batch_size, self.mesh)
        steps_per_epoch = self.steps_per_epoch(settings)
        schedule = steps.step_decay_schedule(
            settings.lr, steps_per_epoch, settings.decay_epoch, settings.decay_rate
        )
        optimizer = steps.make_optimizer(self.model, schedule, settings.weight_decay, settings.wrt)
        epochs = epochs_lib.ResumableEpochs(
            self.workdir / "checkpoints" / f"stage{stage}",
            f"stage {stage}",
            best_key="best_val_mae",
            meta={"stage": stage},
        )
        restored = epochs.restore_latest(self._state(optimizer))
        if restored is not None:
            self._load_state(restored, optimizer)
            logs.say(f"stage {stage}: resuming after epoch {epochs.start} (best val MAE {epochs.best:.3f})")
        else:
            nnx.update(optimizer, mesh_lib.replicate(nnx.state(optimizer), self.mesh))

        # The step sets its own train/eval modes (steps.in_modes), so the modes the model object was
        # left in (eval, after a validation) cannot leak into training. ``epoch`` counts from 0 (the
        # seeds and the input pipeline take it); logs, JSON and checkpoints number it from 1.
        run_step = steps.bind(settings.step, self.model, optimizer)
        for epoch in epochs.remaining(settings.epochs):
            rng_lib.reseed(self.model, seeds.derive(int(self.config.seed), stage, epoch))
            train_metrics = self.train_epoch(run_step, settings, epoch, local_batch, steps_per_epoch)
            val = self.validate(epoch)
            record = {
                "stage": stage,
                "epoch": epoch + 1,
                **train_metrics,
                "val_mae": val["mae"],
                "val_rmse": val["rmse"],
                "val_r2": val["r2"],
            }
            improved = epochs.save(epoch, record, self._state(optimizer), val["mae"])
            self._log(
                (epoch + 1) * steps_per_epoch,
                {
                    **{f"epoch/train_{k}": v for k, v in train_metrics.items()},
                    **{f"epoch/val_{k}": val[k] for k in ("mae", "rmse", "r2", "pearson")},
                    "epoch/best_val_mae": epochs.best,
                },
                stage=stage,
                epoch=epoch + 1,
            )
            logs.say(
                f"stage {stage} epoch {epoch + 1}/{settings.epochs}: loss {train_metrics['loss']:.4f}"
                f"  val MAE {val['mae']:.3f}  RMSE {val['rmse']:.3f}  R2 {val['r2']:.3f}"
                f"  ({train_metrics['clips_per_s']:.1f} clips/s){'  *best*' if improved else ''}"
            )

        best_state, best_epoch = epochs.finish({"model": ckpt_lib.model_state_dict(self.model)})
        self._load_state(best_state, None)
        return {"best_val_mae": epochs.best, "best_epoch": best_epoch, "history": epochs.history}

    def steps_per_epoch(self, settings: StageSettings) -> int:
        """Steps of one training epoch (:func:`epochs_lib.steps_per_epoch`: full global batches of the
        train split, at most ``run.max_steps_per_epoch``)."""
        return epochs_lib.steps_per_epoch(
            self.data.num_train_batches(settings.batch_size), int(self.config.run.max_steps_per_epoch)
        )

    def train_epoch(
        self,
        run_step: Callable,
        settings: StageSettings,
        epoch: int,
        local_batch: int,
        steps_per_epoch: int,
    ) -> dict:
        """One epoch (``epoch`` from 0) of ``run_step(batch, *settings.step_args)``; returns the mean
        of each metric and ``steps``, ``seconds``, ``clips_per_s``.

        The host reads the step metrics (device scalars) every ``run.log_every`` steps and at the end of
        the epoch, not after each step, so it never waits for the device in between; at each read it
        writes the mean over the steps read, updates the progress bar and stops the run at the first
        non-finite metric, naming its step.
        """
        stage = settings.stage
        ds = self.data.train_batches(local_batch, views=settings.views, epoch=epoch, stage=stage)
        log_every = max(1, int(self.config.run.log_every))
        sums: dict[str, float] = {}
        pending: list[tuple[int, dict]] = []  # (global step, device metrics) not read yet
        count = 0
        t0 = time.perf_counter()
        bar = logs.progress(desc=f"stage {stage} epoch {epoch + 1}/{settings.epochs}", total=steps_per_epoch)
        run = logs.first_call_compiles(f"stage {stage} training step", run_step)

        def read() -> None:
            window = _host_metrics(pending, stage, epoch + 1, self.workdir / "checkpoints" / f"stage{stage}")
            mean = {k: float(np.mean([m[k] for m in window])) for k in window[0]}
            for m in window:
                for k, v in m.items():
                    sums[k] = sums.get(k, 0.0) + v
            clips_s = count * settings.batch_size * settings.views / (time.perf_counter() - t0)
            bar.set_postfix(loss=f"{mean['loss']:.4f}", clips_s=f"{clips_s:.1f}", refresh=False)
            self._log(
                pending[-1][0], {f"train/{k}": v for k, v in mean.items()}, stage=stage, epoch=epoch + 1
            )
            pending.clear()

        with bar:
            for i, batch in enumerate(ds):
                if i >= steps_per_epoch:
                    break
                sharded = mesh_lib.shard_batch({"video": batch["video"], "ef": batch["ef"]}, self.mesh)
                step = epoch * steps_per_epoch + i + 1
                pending.append((step, run(sharded, *settings.step_args)))
                count += 1
                bar.update(1)
                if step % log_every == 0:
                    read()
            if pending:
                read()
        if count == 0:
            raise ConfigError(
                f"stage{stage}.batch_size={settings.batch_size}: the training split produced no batch"
            )
        elapsed = time.perf_counter() - t0
        out = {k: v / count for k, v in sums.items()}
        out.update(
            steps=count, seconds=elapsed, clips_per_s=count * settings.batch_size * settings.views / elapsed
        )
        return out

    def validate(self, epoch: int) -> dict:
        """Val MAE on predictions averaged over ``eval.n_clips`` clips drawn afresh from (seed, epoch)."""
        with self.eval_batches(
            "val", self.data.val_starts(epoch), f"validation, epoch {epoch + 1}"
        ) as batches:
            _, summary = Evaluator(self.predict_fn(), self.config.eval, bootstrap=0).run(batches)
        return summary

    def calibration_starts(self) -> dict:
        """K distinct starts per validation video drawn from ``eval.seed`` (the test protocol's kind of
        starts; another stream than the test's and the per-epoch validation's)."""
        d = self.config.data
        seed = seeds.derive(int(self.config.eval.seed), seeds.CALIBRATION_STARTS)
        return start_indexes.draw_start_indexes(
            self.data.videos("val"), int(self.config.eval.n_clips), int(d.frames), int(d.stride), seed
        )

    def calibrate(self, checkpoint: str) -> conformal.Calibration:
        """Conformal EF intervals of the current model fitted on the validation split at
        ``eval.interval_level`` (:mod:`coreecho_jax.evaluation.conformal`); ``checkpoint`` names the model."""
        with self.eval_batches("val", self.calibration_starts(), "EF intervals, validation") as batches:
            result = self.predict_batches(batches)
        k = result.clip_predictions.shape[1]
        return conformal.fit(
            result.labels,
            result.prediction,
            result.spread,
            clips_per_video=k,
            level=float(self.config.eval.interval_level),
            source=f"validation split: {len(result)} videos, {k} clips each at starts drawn from eval.seed",
            checkpoint=checkpoint,
            weights_sha256=model_fingerprint(self.model),
        )

    def save_calibration(self, calibration: conformal.Calibration) -> None:
        """Process 0 writes ``<workdir>/calibration.json``."""
        if jax.process_index() == 0:
            path = calibration.save(self.workdir / conformal.CALIBRATION_FILE)
            logs.say(f"EF intervals calibrated on the {calibration.source} ({path})")

    def test(self, tag: str, calibration: conformal.Calibration | None = None) -> dict:
        """The test protocol: fixed starts, K clips per video, CIs; process 0 writes the per-video CSV
        and the agreement plots ``test_<tag>_scatter.png``, ``test_<tag>_bland_altman.png``.

        Adds the weights' SHA-256, the EF category metrics and, with a ``calibration``, the coverage
        and width of its intervals (:func:`multiclip.clinical_summary`)."""
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
        with self.eval_batches("test", starts, "test") as batches:
            result, summary = evaluator.run(batches)
        summary["weights_sha256"] = model_fingerprint(self.model)  # the weights a calibration belongs to
        summary.update(
            multiclip.clinical_summary(
                result, calibration, n_resamples=evaluator.bootstrap, seed=evaluator.seed
            )
        )
        if first:
            multiclip.write_csv(result, self.workdir / f"test_predictions_{tag}.csv")
            plots.write_agreement_plots(
                result.labels, result.prediction, self.workdir, f"test_{tag}", title=f"test ({tag})"
            )
        return summary


def _stages(config: ml_collections.ConfigDict) -> list[int]:
    """The stages ``run.stages`` lists, e.g. "1,2" -> [1, 2]."""
    return config_check.parse_stages(config.run.stages)


def train_and_evaluate(
    config: ml_collections.ConfigDict, workdir: str | Path, *, allow_config_change: bool = False
) -> dict:
    """Runs the configured stages (resuming where a previous run stopped) and the test evaluation,
    in the workdir :func:`claimed_workdir` holds; ends with the ``wrote: ...`` line (:func:`logs.closing`)."""
    with (
        logs.closing(workdir),
        claimed_workdir(config, workdir, allow_config_change=allow_config_change) as held,
    ):
        trainer = Trainer(config, held)
        report = {
            f"stage{stage}": trainer.run_stage(stage_settings(config, stage)) for stage in _stages(config)
        }
        return _finish(trainer, report)


@contextlib.contextmanager
def claimed_workdir(
    config: ml_collections.ConfigDict, workdir: str | Path, *, allow_config_change: bool = False
) -> Iterator[Path]:
    """The workdir, held for one run: after the multi-host start (:func:`distributed.start`, before any
    other JAX call) and the config check, :func:`workdir_lib.claim` (one run at a time, ``config.json``
    written once by process 0, a resume only under the same config unless ``allow_config_change``).
    Shared by CoReEcho training and the transfer experiments."""
    distributed.start(config)
    config_check.check_config(config)
    workdir = Path(workdir)
    with workdir_lib.claim(
        workdir, config, allow_config_change=allow_config_change, primary=jax.process_index() == 0
    ):
        yield workdir


def run_in_workdir(
    run: Callable[[ml_collections.ConfigDict, Path], dict],
    config: ml_collections.ConfigDict,
    workdir: str | Path,
    *,
    allow_config_change: bool = False,
) -> dict:
    """``run(config, workdir)`` inside :func:`claimed_workdir`."""
    with claimed_workdir(config, workdir, allow_config_change=allow_config_change) as held:
        return run(config, held)


def _finish(trainer: Trainer, report: dict[str, dict]) -> dict:
    """After the stages (``report``: each one's :meth:`Trainer.run_stage` result): the calibration and
    the test of the loaded model, the last stage's best epoch (the one coreecho evaluate/predict load
    from the workdir); process 0 writes results.json and the training curves."""
    workdir = trainer.workdir
    last = list(report)[-1]
    origin = f"{workdir.resolve()}/checkpoints/{last}/best (epoch {report[last]['best_epoch']})"
    calibration = trainer.calibrate(origin)
    trainer.save_calibration(calibration)
    results = trainer.test(tag="final", calibration=calibration)
    results.update({f"{k}_best_val_mae": v["best_val_mae"] for k, v in report.items()})
    results.update({f"{k}_best_epoch": v["best_epoch"] for k, v in report.items()})
    _note_small_run(results)
    if jax.process_index() == 0:
        write_json(results, workdir / "results.json")
        history = [record for stage in report.values() for record in stage["history"]]
        plots.write_training_curves(history, workdir / "training_curves.png")
        _print_results(f"Test results ({workdir / 'results.json'})", results)
    if trainer.writer is not None:
        trainer.writer.close()
    return results


def evaluate_checkpoint(
    config: ml_collections.ConfigDict, workdir: str | Path, checkpoint: str | None
) -> dict:
    """The test protocol on any checkpoint: a run workdir, an imported folder or a CoReEcho ``.pth``;
    ends with the ``wrote: ...`` line (:func:`logs.closing`)."""
    distributed.start(config)  # before loading the model touches JAX
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    with logs.closing(workdir):
        return _evaluate(config, workdir, checkpoint)


def _evaluate(config: ml_collections.ConfigDict, workdir: Path, checkpoint: str | None) -> dict:
    source = checkpoint or workdir
    trained = load_run(config, source)  # the run's clip settings and model
    config, model, origin = trained.config, trained.model, trained.origin
    trainer = Trainer(config, workdir, model=model, write_metrics=False, stages=())
    calibration = _calibration_for(trainer, Path(source), workdir, origin)
    results = trainer.test(tag="evaluate", calibration=calibration)
    results["checkpoint"] = origin
    _note_small_run(results)
    if jax.process_index() == 0:
        write_json(results, workdir / "results_evaluate.json")
        _print_results(f"Test results of {origin}", results)
    return results


def _note_small_run(results: dict) -> None:
    """``results["small_run_note"]`` when the test set is too small to mean anything (:func:`logs.small_run_note`)."""
    if note := logs.small_run_note(int(results["n"])):
        results["small_run_note"] = note


def _print_results(title: str, results: dict) -> None:
    """The result table on stdout, under ``title`` and the small-run note when there is one."""
    note = results.get("small_run_note")
    print(f"\n{title}\n" + (f"{note}\n" if note else "") + format_results(results), flush=True)


def _calibration_for(trainer: Trainer, source: Path, workdir: Path, origin: str) -> conformal.Calibration:
    """The calibration of the evaluated model: ``calibration.json`` beside the checkpoint or in the
    evaluation workdir when it was fitted for these weights, K and ``eval.interval_level``; else one
    fitted now on the validation split and written to ``<workdir>/calibration.json``."""
    config = trainer.config
    fingerprint = model_fingerprint(trainer.model)
    reasons = []
    for path in dict.fromkeys([conformal.calibration_path(source), workdir / conformal.CALIBRATION_FILE]):
        calibration, reason = conformal.matching(
            path, fingerprint, int(config.eval.n_clips), float(config.eval.interval_level)
        )
        if calibration is not None:
            logs.say(f"EF intervals from {path}")
            return calibration
        reasons.append(reason)
    logging.info("fitting EF intervals on the validation split: %s", "; ".join(reasons))
    calibration = trainer.calibrate(origin)
    trainer.save_calibration(calibration)
    return calibration
