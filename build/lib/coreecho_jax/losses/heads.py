"""Head losses: L1 for EF regression (``nn.L1Loss`` in the official code), MSE (the paper's CAMUS loss)
and the logistic loss for MI (HMC-QU)."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def _masked_mean(values: jax.Array, mask: jax.Array | None) -> jax.Array:
    if mask is None:
        return jnp.mean(values)
    mask = mask.astype(values.dtype)
    return jnp.sum(values * mask) / jnp.maximum(jnp.sum(mask), 1.0)


def l1_loss(prediction: jax.Array, target: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    """Mean absolute error over ``[B]`` predictions and targets (EF in percent); rows with mask 0 ignored."""
    prediction = prediction.astype(jnp.float32)
    return _masked_mean(jnp.abs(prediction - target.astype(jnp.float32)), mask)


def mse_loss(prediction: jax.Array, target: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    """Mean squared error over ``[B]`` predictions and targets (EF in percent, so in %^2)."""
    prediction = prediction.astype(jnp.float32)
    return _masked_mean(jnp.square(prediction - target.astype(jnp.float32)), mask)


def binary_cross_entropy(logit: jax.Array, target: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    """Mean logistic loss of ``[B]`` logits against 0/1 targets (``BCEWithLogitsLoss``)."""
    logit = logit.astype(jnp.float32)
    target = target.astype(jnp.float32)
    values = jnp.logaddexp(0.0, logit) - target * logit
    return _masked_mean(values, mask)
