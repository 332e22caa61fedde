"""Random-number streams for building and training the models.

``make_rngs(seed)`` returns ``nnx.Rngs`` with a ``params`` stream (initialisation) and a ``dropout``
stream (Dropout / DropPath masks); ``reseed(model, seed)`` restarts the dropout streams (the loop does
so each epoch). The default key implementation is ``'rbg'`` (XLA's RngBitGenerator) rather than JAX's
default threefry: on XLA:CPU every threefry draw compiles into a large unrolled kernel, which made
building a tiny UniFormer take ~45 s and compiling a train-mode forward ~20 s on 2 shared cores, against
~8 s and ~5 s with 'rbg' (2026-11-27). The streams differ from threefry's and, per JAX's documentation,
'rbg' bits are not guaranteed identical across backends or JAX versions; pass ``impl='threefry2x32'``
where bit-reproducibility across machines matters. ``device_put`` places a tree holding keys, also on
the devices of several processes.
"""

from __future__ import annotations

import zlib
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

RNG_IMPLS = ("rbg", "unsafe_rbg", "threefry2x32")


def make_rngs(seed: int = 0, *, impl: str = "rbg") -> nnx.Rngs:
    """``nnx.Rngs(params=key(seed), dropout=key(seed + 1))`` with keys of the given implementation."""
    if impl not in RNG_IMPLS:
        raise ValueError(f"rng impl must be one of {RNG_IMPLS}, got {impl!r}")
    return nnx.Rngs(params=jax.random.key(seed, impl=impl), dropout=jax.random.key(seed + 1, impl=impl))


def _path_word(path: tuple) -> int:
    """A stable 31-bit number for a graph path (the same in every process and run)."""
    return zlib.crc32("/".join(map(str, path)).encode()) & 0x7FFFFFFF


def reseed(node: nnx.Module, seed: int, *, stream: str = "dropout") -> None:
    """Restarts every ``stream`` RngStream in ``node`` from ``seed``, in place.

    Each stream gets ``fold_in(key(seed), crc32(path))`` with its own key implementation ('rbg' stays
    'rbg', 'threefry2x32' stays threefry) and placement, and its counter reset to 0: the streams stay
    distinct and depend only on (seed, path). ``nnx.reseed(node, dropout=seed)`` would turn every
    stream into JAX's default implementation (threefry), whatever ``make_rngs`` chose.
    """
    for path, value in nnx.iter_graph(node):
        if isinstance(value, nnx.RngStream) and value.tag == stream:
            old = value.key[...]
            impl = jax.random.key_impl(old)
            key = jax.random.fold_in(jax.random.key(int(seed), impl=impl), _path_word(path))
            if old.shape:
                key = jax.random.split(key, old.shape)
            count = jnp.zeros(old.shape, jnp.uint32)
            value.key[...] = device_put(key, old.sharding)  # keep the placement (e.g. replicated)
            value.count[...] = jax.device_put(count, value.count[...].sharding)


def device_put(tree: Any, sharding: jax.sharding.Sharding) -> Any:
    """``jax.device_put(tree, sharding)`` that also places PRNG key arrays (the dropout streams) on a
    sharding spanning several processes, which jax 0.10's ``device_put`` refuses for keys: a key array
    travels as its raw ``key_data`` and is wrapped again with its own implementation."""
    leaves, treedef = jax.tree.flatten(tree)
    is_key = [
        isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key) for x in leaves
    ]
    raw = [jax.random.key_data(x) if key else x for x, key in zip(leaves, is_key)]
    placed = jax.device_put(raw, sharding)
    out = [
        jax.random.wrap_key_data(p, impl=jax.random.key_impl(x)) if key else p
        for x, p, key in zip(leaves, placed, is_key)
    ]
    return jax.tree.unflatten(treedef, out)
