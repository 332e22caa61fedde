"""Pure step functions of CoReEcho training and evaluation, compiled once with ``nnx.jit``.

Layouts: ``video`` is ``[B, V, T, H, W, C]`` (V views per video: 2 in stage 1, 1 in stage 2, K clips at
evaluation), ``ef`` is ``[B]`` in percent. Views are flattened view-major, exactly as the official code
concatenates them (rows 0..B-1 are view 0, rows B..2B-1 view 1), so the RnC loss and the head's
BatchNorm see the same 2B rows in the same order.

Stage 1 (one optimizer over all parameters, as one joint step on L_RnC + L1 with sg(E)):
``loss = rnc_weight * rnc(E, y) + l1(head(stop_gradient(E)), y)``: the encoder receives only the RnC
gradient and the head only the L1 gradient. ``rnc_weight = 0`` is the paper's L1-only baseline: no
stop-gradient, L1 trains encoder and head together.

Stage 2 (MLP probing): the encoder runs in eval mode under ``stop_gradient``; the optimizer and the
gradient cover the head's parameters only, so the encoder has neither gradients nor optimizer state.

Modes belong to the steps, not to the caller: each training step runs on an ``nnx.view`` of the model
in its own modes (stage 1: every module in train mode; stage 2: the encoder in eval mode, running
BatchNorm statistics and no dropout, the head in train mode, as the official ``train_second_stage.py``
``model.eval(); regressor.train()``), whatever modes the model object carries, and checks them when
it is traced. The view shares the model's variables, so parameter, BatchNorm and RNG updates land
in the model. The steps donate the model's and the optimizer's buffers: after a step, arrays read
from the model before it are deleted (copy them, e.g. ``np.array``, to keep them).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax
from flax import nnx
from flax.nnx import filterlib

from coreecho_jax.losses import rnc
from coreecho_jax.losses.heads import l1_loss

HEAD = nnx.PathContains("head")
HEAD_PARAMS = nnx.All(nnx.Param, HEAD)
ALL_PARAMS = nnx.Param
# Modules each stage runs in train mode (batch statistics, dropout); all others run in eval mode.
STAGE1_TRAIN = ...  # everything
STAGE2_TRAIN = HEAD

_TRAIN = {"deterministic": False, "use_running_average": False}
_EVAL = {"deterministic": True, "use_running_average": True}


def in_modes(model: nnx.Module, train: filterlib.Filter) -> nnx.Module:
    """A view of ``model`` (same variables) with the modules selected by ``train`` in train mode
    and every other module in eval mode; checked with :func:`check_modes`."""
    view = nnx.view(model, **_EVAL)
    view = nnx.view(view, only=train, **_TRAIN)
    check_modes(view, train)
    return view


def check_modes(model: nnx.Module, train: filterlib.Filter) -> None:
    """Raises RuntimeError naming each Dropout/BatchNorm-like module whose mode differs from ``train``.

    A module is in train mode when ``deterministic`` and ``use_running_average`` are False. Called at
    trace time inside the steps, so it costs nothing per step.
    """
    selects = filterlib.to_predicate(train)
    wrong = []
    for path, module in nnx.iter_modules(model):
        expected = bool(selects(path, module))
        for attr in _TRAIN:
            if hasattr(module, attr) and (not getattr(module, attr)) != expected:
                wrong.append(f"{'/'.join(map(str, path))}.{attr}={getattr(module, attr)}")
    if wrong:
        raise RuntimeError(f"modules in the wrong train/eval mode for this step: {', '.join(wrong)}")


@dataclasses.dataclass(frozen=True)
class LossSpec:
    """Static loss settings (hashable: part of the compiled step's cache key)."""

    temperature: float = 1.0
    rnc_weight: float = 1.0
    implementation: str = "auto"


def flatten_clips(video: jax.Array, ef: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``[B, V, ...]`` clips and ``[B]`` labels -> ``[V*B, ...]`` rows in ``rnc.view_major`` order, ``[V*B]`` labels."""
    return rnc.view_major(video), jnp.tile(ef, video.shape[1])


def stage1_loss(model: nnx.Module, video: jax.Array, ef: jax.Array, spec: LossSpec):
    x, y = flatten_clips(video, ef)
    use_rnc = spec.rnc_weight > 0
    prediction, embedding = model(x, detach_embedding=use_rnc)
    l1 = l1_loss(prediction, y)
    metrics = {"l1": l1}
    total = l1
    if use_rnc:
        r = rnc.rnc_loss(embedding, y, temperature=spec.temperature, implementation=spec.implementation)
        metrics["rnc"] = r
        total = spec.rnc_weight * r + l1
    metrics["loss"] = total
    return total, metrics


def stage2_loss(model: nnx.Module, video: jax.Array, ef: jax.Array):
    prediction, _ = model(video[:, 0], detach_embedding=True)
    l1 = l1_loss(prediction, ef)
    return l1, {"l1": l1, "loss": l1}


@nnx.jit(static_argnames=("spec",), donate_argnames=("model", "optimizer"))
def stage1_step(model: nnx.Module, optimizer: nnx.Optimizer, batch: dict, spec: LossSpec) -> dict:
    """One stage-1 update on ``batch = {'video': [B,2,T,H,W,C], 'ef': [B]}``, every module in train
    mode, of the parameters the optimizer holds (``ALL_PARAMS``); returns scalar metrics (device arrays)."""
    model = in_modes(model, STAGE1_TRAIN)
    grad_fn = nnx.value_and_grad(stage1_loss, argnums=nnx.DiffState(0, optimizer.wrt), has_aux=True)
    (_, metrics), grads = grad_fn(model, batch["video"], batch["ef"], spec)
    optimizer.update(model, grads)
    metrics["grad_norm"] = optax.tree.norm(grads)
    return metrics


@nnx.jit(donate_argnames=("model", "optimizer"))
def stage2_step(model: nnx.Module, optimizer: nnx.Optimizer, batch: dict) -> dict:
    """One probing update of the head (train mode) on view 0 of ``batch``; the encoder is frozen and
    in eval mode (running BatchNorm statistics, no dropout). The gradient covers the parameters the
    optimizer holds (``HEAD_PARAMS``). Returns scalar metrics (device arrays)."""
    model = in_modes(model, STAGE2_TRAIN)
    grad_fn = nnx.value_and_grad(stage2_loss, argnums=nnx.DiffState(0, optimizer.wrt), has_aux=True)
    (_, metrics), grads = grad_fn(model, batch["video"], batch["ef"])
    optimizer.update(model, grads)
    return metrics


def step_decay_schedule(
    lr: float, steps_per_epoch: int, decay_epoch: int | None, decay_rate: float
) -> optax.Schedule:
    """Constant ``lr``, times ``decay_rate`` from epoch ``decay_epoch`` on (official adjust_learning_rate)."""
    if not decay_epoch or decay_rate == 1.0:
        return optax.constant_schedule(lr)
    return optax.piecewise_constant_schedule(lr, {decay_epoch * steps_per_epoch: decay_rate})


def make_optimizer(
    model: nnx.Module, schedule: optax.Schedule | float, weight_decay: float, wrt=ALL_PARAMS
) -> nnx.Optimizer:
    """AdamW as ``torch.optim.AdamW`` (betas 0.9/0.999, eps 1e-8, decay on every selected parameter)."""
    tx = optax.adamw(schedule, b1=0.9, b2=0.999, eps=1e-8, weight_decay=weight_decay)
    return nnx.Optimizer(model, tx, wrt=wrt)


def bind(step: Callable, *args) -> Callable:
    """``step`` with its model/optimizer arguments bound and their graph traversal cached."""
    return nnx.cached_partial(step, *args)
