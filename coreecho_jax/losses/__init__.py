"""Losses. ``rnc``: the Rank-N-Contrast loss (``from coreecho_jax.losses import rnc; rnc.rnc_loss(...)``)."""

from coreecho_jax.losses import rnc

__all__ = ["rnc"]
