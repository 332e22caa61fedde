"""Random-number streams for building and training the models.

``make_rngs(seed)`` returns ``nnx.Rngs`` with a ``params`` stream (initialisation) and a ``dropout``
stream (Dropout / DropPath masks). The default key implementation is ``'rbg'`` (XLA's
RngBitGenerator) rather than JAX's default threefry: on XLA:CPU every threefry draw compiles into a
large unrolled kernel, which made building a tiny UniFormer take ~45 s and compiling a train-mode
forward ~20 s on 2 shared cores, against ~8 s and ~5 s with 'rbg' (2026-11-27). The streams differ
from threefry's and, per JAX's documentation, 'rbg' bits are not guaranteed identical across
backends or JAX versions; pass ``impl='threefry2x32'`` where bit-reproducibility across machines matters.
"""

from __future__ import annotations

import jax
from flax import nnx

RNG_IMPLS = ("rbg", "unsafe_rbg", "threefry2x32")


def make_rngs(seed: int = 0, *, impl: str = "rbg") -> nnx.Rngs:
    """``nnx.Rngs(params=key(seed), dropout=key(seed + 1))`` with keys of the given implementation."""
    if impl not in RNG_IMPLS:
        raise ValueError(f"rng impl must be one of {RNG_IMPLS}, got {impl!r}")
    return nnx.Rngs(params=jax.random.key(seed, impl=impl), dropout=jax.random.key(seed + 1, impl=impl))
