"""The transfer training step and the transfer model: a CoReEcho encoder with a fresh head.

Two tables hold everything that differs between settings, so the step has no per-setting branch:

* :data:`MODES`, how much trains. ``probe`` (the paper's MLP probing): the encoder is frozen in eval
  mode (running BatchNorm statistics, no dropout, no gradient, no optimizer state); only the fresh head
  trains, in train mode, as CoReEcho's own stage 2 (:data:`coreecho_jax.train.steps.STAGE2_TRAIN`).
  ``finetune``: every module in train mode, every parameter updated.
* :data:`KINDS`, what the head predicts. ``regression`` (CAMUS EF in %): MSE, one output whose bias
  starts at the fold's mean training EF (as CoReEcho starts its EchoNet head at 55.6 %, about that
  set's mean). ``classification`` (HMC-QU MI): binary cross-entropy on one logit whose bias starts at
  0. The paper's losses. Each kind names its evaluator
  (:mod:`coreecho_jax.evaluation.transfer`: output link, selection score, baseline, metrics) and, a
  regression, its calibrated EF intervals (:mod:`coreecho_jax.transfer.intervals`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import numpy as np
from flax import nnx
from flax.nnx import filterlib

from coreecho_jax.evaluation import transfer as transfer_eval
from coreecho_jax.losses.heads import binary_cross_entropy, mse_loss
from coreecho_jax.models.coreecho import CoReEcho
from coreecho_jax.models.head import ClassificationHead, RegressionHead
from coreecho_jax.models.rngs import make_rngs
from coreecho_jax.train import steps as train_steps
from coreecho_jax.transfer import intervals as transfer_intervals


@dataclasses.dataclass(frozen=True)
class Mode:
    """How much of the model a transfer setting trains."""

    name: str
    title: str  # the setting in our table rows ("ours: MLP probing, <init>")
    wrt: filterlib.Filter  # the parameters the optimizer updates
    train_modules: filterlib.Filter  # the modules in train mode (the others run in eval mode)
    frozen_encoder: bool  # the encoder neither trains nor passes a gradient (its embedding detached)


@dataclasses.dataclass(frozen=True)
class Kind:
    """What the fresh head predicts and the loss it trains with (see the module doc)."""

    name: str
    loss: Callable[[jax.Array, jax.Array], jax.Array]  # (outputs [B], labels [B]) -> scalar
    head: Callable[
        ..., RegressionHead
    ]  # (dim, *, bias_init, dropout, dropout_rng, unbiased_running_var, rngs)
    bias_init: Callable[[np.ndarray], float | None]  # the head's output bias from the training labels
    evaluator: Callable[[Any, float, bool], transfer_eval.TransferEvaluator]  # (task, threshold, inclusive)
    binary: bool  # labels are 1 / 0: the set and each training fold need both classes
    agreement_plots: bool  # predicted vs true and Bland-Altman plots of the pooled outputs
    # (fold results, level) -> calibrated intervals of the tested videos (transfer.intervals); None: none
    intervals: Callable[[Any, float], transfer_intervals.Intervals] | None = None


def _regression_head(dim: int, *, bias_init: float | None, **kwargs) -> RegressionHead:
    return RegressionHead(dim, out_bias_init=bias_init, **kwargs)


def _classification_head(dim: int, *, bias_init: float | None, **kwargs) -> ClassificationHead:
    return ClassificationHead(dim, **kwargs)  # one logit, bias 0


MODES = {
    "probe": Mode("probe", "MLP probing", train_steps.HEAD_PARAMS, train_steps.STAGE2_TRAIN, True),
    "finetune": Mode("finetune", "fine-tuning", train_steps.ALL_PARAMS, train_steps.STAGE1_TRAIN, False),
}


def _regression_evaluator(task: Any, threshold: float, inclusive: bool) -> transfer_eval.RegressionEvaluator:
    return transfer_eval.RegressionEvaluator(task.groups)


def _classification_evaluator(
    task: Any, threshold: float, inclusive: bool
) -> transfer_eval.ClassificationEvaluator:
    return transfer_eval.ClassificationEvaluator(threshold, inclusive, task.classes)


KINDS = {
    "regression": Kind(
        "regression",
        mse_loss,
        _regression_head,
        lambda labels: float(labels.mean()),
        _regression_evaluator,
        binary=False,
        agreement_plots=True,
        intervals=transfer_intervals.cross_validated,
    ),
    "classification": Kind(
        "classification",
        binary_cross_entropy,
        _classification_head,
        lambda labels: None,
        _classification_evaluator,
        binary=True,
        agreement_plots=False,
    ),
}


def kind_of(kind: str | Kind) -> Kind:
    """The :class:`Kind` named ``kind`` (or ``kind`` itself); ValueError for an unknown name."""
    if isinstance(kind, Kind):
        return kind
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {tuple(KINDS)}, got {kind!r}")
    return KINDS[kind]


def optimizer_params(mode: str) -> filterlib.Filter:
    """The parameters ``mode`` trains: the head's (probe) or all (finetune)."""
    return MODES[mode].wrt


def fresh_head(
    model: CoReEcho,
    kind: str | Kind,
    *,
    seed: int,
    dropout: float,
    bias_init: float | None,
    dropout_rng: str,
) -> None:
    """Replaces ``model.head`` by a freshly initialised CoReEcho head of ``kind`` (in place).

    ``bias_init``: the regression output's starting bias (:attr:`Kind.bias_init` of the fold's training
    labels); a classification head's bias starts at 0 whatever it is.
    """
    model.head = kind_of(kind).head(
        model.head.dim,
        bias_init=bias_init,
        dropout=dropout,
        dropout_rng=dropout_rng,
        unbiased_running_var=model.head.norm1.unbiased_running_var,
        rngs=make_rngs(seed),
    )


def transfer_loss(model: nnx.Module, video: jax.Array, label: jax.Array, kind: str, mode: str):
    """``video [B, T, H, W, C]``, ``label [B]`` -> (loss, metrics)."""
    output, _ = model(video, detach_embedding=MODES[mode].frozen_encoder)
    loss = KINDS[kind].loss(output, label)
    return loss, {"loss": loss}


@nnx.jit(static_argnames=("kind", "mode"), donate_argnames=("model", "optimizer"))
def transfer_step(model: nnx.Module, optimizer: nnx.Optimizer, batch: dict, kind: str, mode: str) -> dict:
    """One update on ``batch = {'video': [B, T, H, W, C], 'label': [B]}`` in the modes of ``mode``
    (module doc); returns scalar metrics (device arrays)."""
    model = train_steps.in_modes(model, MODES[mode].train_modules)
    grad_fn = nnx.value_and_grad(transfer_loss, argnums=nnx.DiffState(0, optimizer.wrt), has_aux=True)
    (_, metrics), grads = grad_fn(model, batch["video"], batch["label"], kind, mode)
    optimizer.update(model, grads)
    return metrics
