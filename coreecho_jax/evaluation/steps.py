"""Inference steps, compiled once with ``nnx.jit``: EF predictions and encoder embeddings of clips.

Used by validation, the test protocol, ``coreecho evaluate`` and ``predict`` alike. Call them with the
model in eval mode (``model.eval()``): modes are Python attributes, fixed at trace time.
Layout: ``video`` is ``[B, K, T, H, W, C]`` (K clips per video), normalised as the clip sampler makes it.
"""

from __future__ import annotations

import jax
from flax import nnx


@nnx.jit
def predict_step(model: nnx.Module, video: jax.Array) -> jax.Array:
    """``[B, K, T, H, W, C]`` clips -> ``[B, K]`` predictions (eval mode expected)."""
    b, k = video.shape[:2]
    prediction, _ = model(video.reshape((b * k,) + video.shape[2:]), detach_embedding=True)
    return prediction.reshape(b, k)


@nnx.jit
def embed_step(model: nnx.Module, video: jax.Array) -> jax.Array:
    """``[B, K, T, H, W, C]`` clips -> ``[B, K, D]`` encoder embeddings (eval mode expected)."""
    b, k = video.shape[:2]
    embedding = model.encoder(video.reshape((b * k,) + video.shape[2:]))
    return embedding.reshape(b, k, -1)
