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

Call the steps with the model already in the right mode (``model.train()``; stage 2 additionally
``model.encoder.eval()``; evaluation ``model.eval()``): modes are Python attributes, fixed at trace time.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from coreecho_jax.losses import rnc
from coreecho_jax.losses.heads import l1_loss

HEAD_PARAMS = nnx.All(nnx.Param, nnx.PathContains("head"))
ALL_PARAMS = nnx.Param


@dataclasses.dataclass(frozen=True)
class LossSpec:
    """Static loss settings (hashable: part of the compiled step's cache key)."""

    temperature: float = 1.0
    rnc_weight: float = 1.0
    implementation: str = "auto"


def flatten_views(video: jax.Array, ef: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``[B, V, ...]`` clips and ``[B]`` labels -> ``[V*B, ...]`` view-major rows and ``[V*B]`` labels."""
    b, v = video.shape[:2]
    x = jnp.swapaxes(video, 0, 1).reshape((v * b,) + video.shape[2:])
    return x, jnp.tile(ef, v)


def stage1_loss(model: nnx.Module, video: jax.Array, ef: jax.Array, spec: LossSpec):
    x, y = flatten_views(video, ef)
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


@nnx.jit(static_argnames=("spec",))
def stage1_step(model: nnx.Module, optimizer: nnx.Optimizer, batch: dict, spec: LossSpec) -> dict:
    """One stage-1 update on ``batch = {'video': [B,2,T,H,W,C], 'ef': [B]}``; returns scalar metrics."""
    grad_fn = nnx.value_and_grad(stage1_loss, argnums=nnx.DiffState(0, ALL_PARAMS), has_aux=True)
    (_, metrics), grads = grad_fn(model, batch["video"], batch["ef"], spec)
    optimizer.update(model, grads)
    metrics["grad_norm"] = optax.tree.norm(grads)
    return metrics


@nnx.jit
def stage2_step(model: nnx.Module, optimizer: nnx.Optimizer, batch: dict) -> dict:
    """One probing update of the head on view 0 of ``batch``; the encoder is frozen."""
    grad_fn = nnx.value_and_grad(stage2_loss, argnums=nnx.DiffState(0, HEAD_PARAMS), has_aux=True)
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
