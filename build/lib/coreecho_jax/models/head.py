"""CoReEcho's shallow MLP head (``coreecho/regressor.py`` ``get_shallow_mlp_head``), Flax NNX.

``BatchNorm1d(C) -> Dropout(p) -> Linear(C, C) -> BatchNorm1d(C) -> GELU(exact) -> Dropout(p) -> Linear(C, k)``

The torch module is an ``nn.Sequential``, so its state_dict keys are indices: ``0.*`` = ``norm1``,
``2.*`` = ``fc1``, ``3.*`` = ``norm2``, ``6.*`` = ``fc2`` (see :mod:`coreecho_jax.checkpoints.key_map`).
Initialisation follows PyTorch's defaults (Linear weights and biases U(+-1/sqrt(fan_in)), BatchNorm
ones/zeros) except the final bias, set to ``out_bias_init`` (the config's ``model.head_bias_init``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from coreecho_jax.models.layers import BatchNorm, Dropout, torch_linear


class RegressionHead(nnx.Module):
    """The CoReEcho regressor on an embedding ``[B, dim]``.

    Returns ``[B]`` when ``num_outputs == 1`` (EF in percent for CoReEcho), else ``[B, num_outputs]``.
    ``out_bias_init=None`` keeps torch's default uniform init for the final bias. ``dropout_rng`` picks
    the mask generator (:class:`coreecho_jax.models.layers.Dropout`); ``unbiased_running_var=False``
    switches the BatchNorms to Flax's biased running-variance update. BatchNorm uses batch
    statistics in train mode (so a training batch needs at least 2 samples) and running statistics
    in eval mode; Dropout is active in train mode only.
    """

    def __init__(
        self,
        dim: int,
        *,
        dropout: float,
        out_bias_init: float | None,
        num_outputs: int = 1,
        dropout_rng: str = "hash",
        unbiased_running_var: bool = True,
        rngs: nnx.Rngs,
    ):
        if num_outputs < 1:
            raise ValueError(f"num_outputs must be positive, got {num_outputs}")
        self.dim = dim
        self.num_outputs = num_outputs
        self.norm1 = BatchNorm(dim, unbiased_running_var=unbiased_running_var)
        self.drop1 = Dropout(dropout, rng=dropout_rng, rngs=rngs)
        self.fc1 = torch_linear(dim, dim, rngs=rngs)
        self.norm2 = BatchNorm(dim, unbiased_running_var=unbiased_running_var)
        self.drop2 = Dropout(dropout, rng=dropout_rng, rngs=rngs)
        bias_init = None
        if out_bias_init is not None:
            value = float(out_bias_init)
            bias_init = lambda key, shape, dtype=jnp.float32: jnp.full(shape, value, dtype)
        self.fc2 = torch_linear(dim, num_outputs, bias_init=bias_init, rngs=rngs)

    def __call__(self, z: jax.Array) -> jax.Array:
        if z.ndim != 2 or z.shape[-1] != self.dim:
            raise ValueError(f"head expects embeddings [B, {self.dim}], got shape {z.shape}")
        z = z.astype(jnp.float32)
        z = self.fc1(self.drop1(self.norm1(z)))
        z = self.fc2(self.drop2(jax.nn.gelu(self.norm2(z), approximate=False)))
        return z[:, 0] if self.num_outputs == 1 else z


class ClassificationHead(RegressionHead):
    """The same MLP with one logit and a zero-initialised final bias (binary tasks such as HMC-QU MI).

    Returns logits ``[B]`` (apply ``jax.nn.sigmoid`` for probabilities)."""

    def __init__(
        self,
        dim: int,
        *,
        dropout: float,
        dropout_rng: str = "hash",
        unbiased_running_var: bool = True,
        rngs: nnx.Rngs,
    ):
        super().__init__(
            dim,
            dropout=dropout,
            out_bias_init=0.0,
            num_outputs=1,
            dropout_rng=dropout_rng,
            unbiased_running_var=unbiased_running_var,
            rngs=rngs,
        )
