"""Losses.

* ``rnc``         the Rank-N-Contrast loss: ``from coreecho_jax.losses import rnc; rnc.rnc_loss(...)``
* ``heads``       the head losses, L1 (EF regression) and logistic (MI): ``coreecho_jax.losses.heads``
"""

from coreecho_jax.losses import rnc

__all__ = ["rnc"]
