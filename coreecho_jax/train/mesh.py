"""The one mesh helper: a 1-D ``data`` mesh over every device, batches sharded on it, state replicated.

The same code runs on one CPU, on 8 GPUs, or on many hosts (after ``distributed.start``):
each host feeds its local slice of the global batch, ``jax.make_array_from_process_local_data`` builds
the global array, and everything under ``jit`` (the RnC loss, BatchNorm statistics) sees the global batch.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from coreecho_jax.errors import ConfigError
from coreecho_jax.models import rngs as rng_lib

DATA_AXIS = "data"


def make_mesh(num_devices: int | None = None) -> jax.sharding.Mesh:
    """A 1-D mesh named ``data`` over the first ``num_devices`` devices (default: all)."""
    n = num_devices or jax.device_count()
    if n > jax.device_count():
        raise ValueError(f"asked for a mesh of {n} devices but only {jax.device_count()} are visible")
    # Auto axes: GSPMD propagates the batch sharding through the model (reshapes of the view axis,
    # BatchNorm and RnC reductions over the global batch) without per-op sharding annotations.
    return jax.make_mesh(
        (n,), (DATA_AXIS,), devices=jax.devices()[:n], axis_types=(jax.sharding.AxisType.Auto,)
    )


def data_sharding(mesh: jax.sharding.Mesh) -> NamedSharding:
    """Leading (batch) axis split over ``data``; the other axes whole."""
    return NamedSharding(mesh, P(DATA_AXIS))


def replicated(mesh: jax.sharding.Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def local_batch_size(global_batch: int, mesh: jax.sharding.Mesh) -> int:
    """Videos each host must feed; the global batch must split evenly over the devices."""
    if global_batch % mesh.size:
        raise ConfigError(
            f"batch size {global_batch} does not divide over {mesh.size} devices; "
            f"choose a multiple of {mesh.size}"
        )
    return global_batch // jax.process_count()


def shard_batch(batch: dict[str, Any], mesh: jax.sharding.Mesh) -> dict[str, Any]:
    """Host-local numpy batch -> global ``jax.Array`` sharded on ``data``. Non-numeric leaves are dropped."""
    sharding = data_sharding(mesh)
    out = {}
    for key, value in batch.items():
        value = np.asarray(value)
        if value.dtype.kind in "biuf":
            out[key] = jax.make_array_from_process_local_data(sharding, value)
    return out


def replicate(tree: Any, mesh: jax.sharding.Mesh) -> Any:
    """Places every array of ``tree`` on all devices of ``mesh`` (parameters, optimizer state, keys).

    On several processes an array held on this process's devices alone goes by its value: jax 0.10
    refuses to move an array committed to them (what an Orbax restore into a fresh model or optimizer
    gives: the checkpoint a run resumes from, ``transfer.init``) onto devices of other processes ("does
    not support cross-host device transfers"). Every process holds the same value (the same
    checkpoint, the same seed)."""
    sharding = replicated(mesh)
    if not sharding.is_fully_addressable:
        tree = jax.tree.map(lambda x: np.asarray(x) if _process_local(x) else x, tree)
    return rng_lib.device_put(tree, sharding)


def _process_local(x: Any) -> bool:
    """An array on this process's devices only, not a PRNG key (:func:`rng_lib.device_put` places those)."""
    return (
        isinstance(x, jax.Array)
        and x.is_fully_addressable
        and not jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)
    )


def host_local_fn(
    fn: Callable[[jax.Array], jax.Array], mesh: jax.sharding.Mesh
) -> Callable[[np.ndarray], np.ndarray]:
    """``fn`` (global ``[B, ...]`` array -> ``[B, ...]`` array, e.g. a jitted eval step with its model
    bound) as a host function: this process's rows in, this process's rows of the result out (numpy),
    the batch sharded over every device of every process."""
    spec = data_sharding(mesh).spec

    def host_fn(rows: np.ndarray) -> np.ndarray:
        x = jax.make_array_from_process_local_data(data_sharding(mesh), np.asarray(rows))
        return np.asarray(multihost_utils.global_array_to_host_local_array(fn(x), mesh, spec))

    return host_fn
