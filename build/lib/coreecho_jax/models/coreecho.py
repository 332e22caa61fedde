"""The CoReEcho model: UniFormer encoder + MLP regression head, with the stop-gradient between them.

In stage 1 the encoder learns only from the Rank-N-Contrast loss on the embedding while the head
learns from an L1 loss on the *detached* embedding (``detach_embedding=True``, the default and the
paper's setting). ``detach_embedding=False`` lets the L1 gradient reach the encoder (the L1-only
ablation).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import jax
from flax import nnx

from coreecho_jax.models.head import RegressionHead
from coreecho_jax.models.rngs import make_rngs
from coreecho_jax.models.uniformer import UniFormer, UniFormerConfig, uniformer_config


class CoReEcho(nnx.Module):
    """``encoder`` (:class:`UniFormer`, no classifier) + ``head`` (:class:`RegressionHead`).

    ``__call__(x)`` takes clips ``[B, T, H, W, C]`` and returns ``(prediction [B], embedding [B, D])``:
    EF in percent and the float32 pooled embedding (D = ``config.dims[-1]``, 512 for UniFormer-S).
    The official model also keeps a dead ``Linear(512, 1)`` ``head`` inside the backbone whose output is
    never used; it is not built here (its checkpoint keys are ignored by the key map).
    """

    def __init__(
        self,
        config: UniFormerConfig,
        *,
        head_dropout: float,
        head_bias_init: float | None,
        rngs: nnx.Rngs,
    ):
        if config.num_classes is not None:
            config = dataclasses.replace(config, num_classes=None)
        self.encoder = UniFormer(config, rngs=rngs)
        self.head = RegressionHead(
            config.dims[-1],
            dropout=head_dropout,
            out_bias_init=head_bias_init,
            dropout_rng=config.dropout_rng,
            unbiased_running_var=config.unbiased_running_var,
            rngs=rngs,
        )

    def __call__(self, x: jax.Array, *, detach_embedding: bool = True) -> tuple[jax.Array, jax.Array]:
        embedding = self.encoder(x)
        z = jax.lax.stop_gradient(embedding) if detach_embedding else embedding
        return self.head(z), embedding


# Keys of build_coreecho passed on to uniformer_config; None means "keep the preset's value".
ENCODER_CONFIG_KEYS = (
    "dims",
    "depth",
    "head_dim",
    "mlp_ratio",
    "dropout",
    "drop_path",
    "dtype",
    "remat",
    "depthwise",
    "attention",
    "dropout_rng",
    "unbiased_running_var",
)
# Keys accepted by build_coreecho; None means "keep the default".
MODEL_CONFIG_KEYS = ("preset", *ENCODER_CONFIG_KEYS, "head_dropout", "head_bias_init", "seed", "rng_impl")


def _as_dict(config: Mapping[str, Any] | Any) -> dict[str, Any]:
    if hasattr(config, "to_dict"):  # ml_collections.ConfigDict
        config = config.to_dict()
    if not isinstance(config, Mapping):
        raise TypeError(f"model config must be a mapping or ConfigDict, got {type(config).__name__}")
    return dict(config)


def build_coreecho(config: Mapping[str, Any] | Any) -> CoReEcho:
    """Build :class:`CoReEcho` from a plain dict or ``ml_collections.ConfigDict`` (``config.model``).

    Keys (all optional; missing or None keeps the default):
      preset: UniFormer preset name, 'small' (default), 'base', 'tiny' or 'small_d1121'.
      dims, depth, head_dim, mlp_ratio, dropout, drop_path: override the preset's architecture.
      head_dropout: head Dropout rate (``model.head_dropout``; the official 0.4 lives in the configs).
      head_bias_init: initial final-layer bias (``model.head_bias_init``, EF %; None = torch default init).
      dtype: 'float32' (default) or 'bfloat16' compute dtype.
      remat: rematerialise each encoder stage (False).
      depthwise: 'auto' (default), 'lax', 'shifted' or 'shifted_autodiff'.
      attention: 'auto' (default), 'einsum', 'xla' or 'cudnn' (see ``resolve_attention``).
      dropout_rng: dropout mask generator for encoder and head, 'hash' (default) or 'jax'.
      unbiased_running_var: BatchNorm running variance updated torch-style (True, default) or
        Flax-style (False), encoder and head.
      seed: integer seed for parameter init and dropout (0).
      rng_impl: JAX key implementation of the init/dropout streams, 'rbg' (default, fast to compile on
        CPU) or 'threefry2x32' (see :mod:`coreecho_jax.models.rngs`).
    Unknown keys raise ValueError.
    """
    cfg = _as_dict(config)
    unknown = set(cfg) - set(MODEL_CONFIG_KEYS)
    if unknown:
        raise ValueError(f"unknown model config keys {sorted(unknown)}; accepted: {list(MODEL_CONFIG_KEYS)}")
    overrides = {k: cfg[k] for k in ENCODER_CONFIG_KEYS if cfg.get(k) is not None}
    encoder_cfg = uniformer_config(cfg.get("preset") or "small", **overrides)
    missing = [k for k in ("head_dropout", "head_bias_init") if k not in cfg]
    if missing:  # the head's facts live in the config only (configs/echonet.py: the official values)
        raise ValueError(
            f"model config lacks {missing}: the head's dropout and bias init come from the config"
        )
    head_kw = {"head_dropout": float(cfg["head_dropout"]), "head_bias_init": cfg["head_bias_init"]}
    rngs = make_rngs(int(cfg.get("seed") or 0), impl=cfg.get("rng_impl") or "rbg")
    return CoReEcho(encoder_cfg, rngs=rngs, **head_kw)


def build_model(model_config: Mapping[str, Any] | Any, seed: int = 0) -> CoReEcho:
    """A fresh CoReEcho model from ``config.model`` (``init_from`` is applied separately)."""
    cfg = _as_dict(model_config)
    cfg.pop("init_from", None)
    cfg["seed"] = seed
    return build_coreecho(cfg)
