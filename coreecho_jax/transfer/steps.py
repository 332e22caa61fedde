"""The transfer training step and the transfer model: a CoReEcho encoder with a fresh head.

* ``probe`` (the paper's MLP probing): the encoder is frozen in eval mode (running BatchNorm
  statistics, no dropout, no gradient, no optimizer state); only the fresh head trains, in train mode,
  as CoReEcho's own stage 2 (:data:`coreecho_jax.train.steps.STAGE2_TRAIN`).
* ``finetune``: every module in train mode, every parameter updated.

Losses (the paper's): MSE for CAMUS EF (in %), binary cross-entropy on one logit for HMC-QU MI.
"""

from __future__ import annotations

import jax
from flax import nnx

from coreecho_jax.losses.heads import binary_cross_entropy, mse_loss
from coreecho_jax.models.coreecho import CoReEcho
from coreecho_jax.models.head import ClassificationHead, RegressionHead
from coreecho_jax.models.rngs import make_rngs
from coreecho_jax.train import steps as train_steps

MODES = ("probe", "finetune")
KINDS = ("regression", "classification")


def optimizer_params(mode: str):
    """The parameters ``mode`` trains: the head's (probe) or all (finetune)."""
    return train_steps.HEAD_PARAMS if mode == "probe" else train_steps.ALL_PARAMS


def fresh_head(
    model: CoReEcho, kind: str, *, seed: int, dropout: float, bias_init: float | None, dropout_rng: str
) -> None:
    """Replaces ``model.head`` by a freshly initialised CoReEcho head (in place).

    ``kind="regression"``: one output whose bias starts at ``bias_init`` (the fold's mean training
    EF, as CoReEcho starts its EchoNet head at 55.6 %, about that set's mean); ``"classification"``:
    one logit, bias 0.
    """
    rngs = make_rngs(seed)
    dim = model.head.dim
    unbiased = model.head.norm1.unbiased_running_var
    if kind == "regression":
        model.head = RegressionHead(
            dim,
            dropout=dropout,
            out_bias_init=bias_init,
            dropout_rng=dropout_rng,
            unbiased_running_var=unbiased,
            rngs=rngs,
        )
    elif kind == "classification":
        model.head = ClassificationHead(
            dim, dropout=dropout, dropout_rng=dropout_rng, unbiased_running_var=unbiased, rngs=rngs
        )
    else:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")


def transfer_loss(model: nnx.Module, video: jax.Array, label: jax.Array, kind: str, mode: str):
    """``video [B, T, H, W, C]``, ``label [B]`` -> (loss, metrics)."""
    output, _ = model(video, detach_embedding=mode == "probe")
    loss = mse_loss(output, label) if kind == "regression" else binary_cross_entropy(output, label)
    return loss, {"loss": loss}


@nnx.jit(static_argnames=("kind", "mode"), donate_argnames=("model", "optimizer"))
def transfer_step(model: nnx.Module, optimizer: nnx.Optimizer, batch: dict, kind: str, mode: str) -> dict:
    """One update on ``batch = {'video': [B, T, H, W, C], 'label': [B]}`` in the modes of ``mode``
    (module doc); returns scalar metrics (device arrays)."""
    model = train_steps.in_modes(
        model, train_steps.STAGE2_TRAIN if mode == "probe" else train_steps.STAGE1_TRAIN
    )
    grad_fn = nnx.value_and_grad(transfer_loss, argnums=nnx.DiffState(0, optimizer.wrt), has_aux=True)
    (_, metrics), grads = grad_fn(model, batch["video"], batch["label"], kind, mode)
    optimizer.update(model, grads)
    return metrics
