"""Losses.

* ``rnc``         the Rank-N-Contrast loss: ``from coreecho_jax.losses import rnc; rnc.rnc_loss(...)``
* ``regression``  the head losses (import ``coreecho_jax.losses.regression``)
"""

from coreecho_jax.losses import rnc

__all__ = ["rnc"]
