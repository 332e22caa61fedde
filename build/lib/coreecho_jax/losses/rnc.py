"""Rank-N-Contrast (RnC) loss (Zha et al., NeurIPS 2023), as used by CoReEcho (MICCAI 2024).

RnC pulls embeddings together in the order of their regression labels. For an anchor row ``i`` and
every other row ``m`` it contrasts ``m`` against all rows whose label is at least as far from
``i``'s label as ``m``'s is::

    L = 1 / (n (n - 1)) * sum_i sum_{m != i} -log( s(i, m) / sum_{l in S(i, m)} s(i, l) )
    s(i, l)  = exp(-||E_i - E_l||_2 / tau)
    S(i, m)  = { l != i : d(y_i, y_l) >= d(y_i, m) }          (m itself and label ties included)

with ``n = 2N`` rows (two augmented views of ``N`` videos), plain (not squared) Euclidean feature
distance, un-normalised features and the L1 label distance ``d``. This is exactly ``RnCLoss`` of
``kaiwenzha/Rank-N-Contrast`` (``loss.py``), copied unchanged into CoReEcho's ``coreecho/loss.py``;
the defaults here reproduce it.

Layouts
    * ``features [N, 2, D]`` + ``labels [N]`` or ``[N, K]`` (the official layout: sample, view, dim).
      Internally it is flattened **view-major**, like the official ``cat([f[:, 0], f[:, 1]])``:
      rows ``0..N-1`` are view 0 of samples ``0..N-1`` and rows ``N..2N-1`` are view 1.
    * ``features [2N, D]`` + ``labels [2N]`` or ``[2N, K]``: already flat, any row order (the loss
      does not care which rows are views of the same video; the pairing only enters through the
      labels). This is what an encoder applied to ``concat([clips_view0, clips_view1])`` returns.

Differences from the official code (all of them make it more robust; values agree wherever the
official code is finite)
    * Stable: every denominator is a log-sum-exp shifted by the maximum over its own (masked,
      off-diagonal) candidate set. The official code's row-max shift is a no-op (the diagonal logit
      0 is always the max), so it returns ``-inf`` with NaN gradients once ``distance / tau`` exceeds
      about 103 in float32 (745 in float64); this loss stays finite and exact there.
    * NaN-free gradients at zero distances (the diagonal, identical views): a double-``where`` safe
      norm gives the zero gradient that torch's ``norm`` backward gives.
    * ``valid`` masks padded rows (neither anchors nor candidates, mean over valid pairs only), so a
      padded global batch gives the same loss as the unpadded one.
    * 1-D labels are accepted (the official code needs ``[N, K]``; with ``[N]`` it silently
      mis-shapes them).

Temperature
    The default ``temperature=2.0`` is the official ``RnCLoss`` constructor default and the
    Rank-N-Contrast README value. **CoReEcho's training command passes ``--temp 1.0``**, so pass
    ``temperature=1.0`` to reproduce CoReEcho (the project configs do).

Two implementations, one contract (the derivation is in ``docs/rnc.md``)
    * :func:`rnc_loss_pairwise`: the ``[n, n, n]`` membership mask ``l in S(i, m)``, each set reduced
      with its own max as shift (:mod:`coreecho_jax.losses.rnc_pairwise`): O(n^3), the fastest form
      for small batches (CoReEcho's 2N = 32) and the fastest to compile.
    * :func:`rnc_loss_sorted`: O(n^2 log n) time, O(n^2) memory, for large batches
      (:mod:`coreecho_jax.losses.rnc_sorted`): every ``S(i, m)`` is a prefix of the anchor's
      candidates ordered by label distance, so every denominator is a prefix sum; exact for any
      logit spread (a stable fallback takes the rows ``exp`` could underflow).
    * :func:`rnc_loss` picks one by batch size (``implementation='auto'``: pairwise for
      ``2N <= 64``, where it is as fast or faster and compiles in ~0.3 s instead of ~2 s) or by name.

All forms are jitted, accept any float dtype (bfloat16 / float16 inputs are computed in float32,
float64 stays float64), are differentiable with respect to ``features`` (labels get no gradient)
and agree with each other and with the official code's float64 values (``tests/fixtures/rnc``).

Pairwise feature distances
    ``pairwise_distance='difference'`` forms ``E_i - E_j`` (exact, ``[n, n, D]`` work);
    ``'gram'`` uses ``|a|^2 + |b|^2 - 2 a.b`` on mean-centred features with a matmul (much faster
    for large ``n``; float32 loses resolution for near-duplicate rows, so squared distances below
    the rounding floor ``8 eps (|a|^2 + |b|^2)`` are treated as 0). ``'auto'`` uses the difference
    form while ``n * n * D <= 2**23`` (e.g. 2N <= 128 at D = 512) and the Gram form above.

Example::

    import jax
    import jax.numpy as jnp
    from coreecho_jax.losses import rnc

    emb = jax.random.normal(jax.random.key(0), (16, 2, 512))   # [N videos, 2 views, D]
    ef = jnp.linspace(20.0, 70.0, 16)                           # [N] ejection fraction, percent
    loss = rnc.rnc_loss(emb, ef, temperature=1.0)               # CoReEcho setting
    grads = jax.grad(rnc.rnc_loss)(emb, ef, temperature=1.0)    # [16, 2, 512]

    # Flat layout, e.g. encoder(concat([view0, view1])) -> [2N, D], labels repeated view-major:
    flat = jnp.concatenate([emb[:, 0], emb[:, 1]])               # [32, 512]
    loss_flat = rnc.rnc_loss(flat, jnp.concatenate([ef, ef]), temperature=1.0)  # == loss

    # A padded global batch: padded rows are ignored.
    loss_pad = rnc.rnc_loss(emb, ef, valid=jnp.arange(16) < 12, temperature=1.0)
"""

from __future__ import annotations

import functools
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from coreecho_jax.losses.rnc_pairwise import pairwise_term_sum
from coreecho_jax.losses.rnc_sorted import label_order_term_sum, per_anchor_sort_term_sum, row_block

__all__ = [
    "FEATURE_SIMILARITIES",
    "IMPLEMENTATIONS",
    "LABEL_DISTANCES",
    "PAIRWISE_DISTANCES",
    "flatten_views",
    "view_major",
    "rnc_loss",
    "rnc_loss_pairwise",
    "rnc_loss_sorted",
]

FeatureSimilarity = Literal["l2", "l2_squared", "cosine"]
LabelDistance = Literal["l1", "l2"]
Implementation = Literal["auto", "pairwise", "sorted"]
PairwiseDistance = Literal["auto", "difference", "gram"]

FEATURE_SIMILARITIES: tuple[str, ...] = ("l2", "l2_squared", "cosine")
LABEL_DISTANCES: tuple[str, ...] = ("l1", "l2")
IMPLEMENTATIONS: tuple[str, ...] = ("auto", "pairwise", "sorted")
PAIRWISE_DISTANCES: tuple[str, ...] = ("auto", "difference", "gram")

# 'auto' choices (measured on a 2-core CPU with bench/bench_rnc.py).
PAIRWISE_MAX_ROWS = 64  # implementation='auto': pairwise form up to this many rows n = 2N
DIFFERENCE_MAX_ELEMENTS = 2**23  # pairwise_distance='auto': difference form while n * n * D <= this


# ----------------------------------------------------------------------------------------------
# Input handling
# ----------------------------------------------------------------------------------------------


def _check_choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"rnc_loss: {name}={value!r} is not one of {allowed}")


def view_major(x: jax.Array) -> jax.Array:
    """``[N, V, ...]`` -> ``[V*N, ...]``: row ``v * N + s`` is view ``v`` of sample ``s``.

    The one home of the official row order (``torch.cat([f[:, 0], f[:, 1]])`` in ``train_first_stage.py``),
    used for the RnC features here and for the clips of a training batch in ``train.steps``.
    """
    n, v = x.shape[:2]
    return jnp.swapaxes(x, 0, 1).reshape((v * n,) + tuple(x.shape[2:]))


def flatten_views(
    features: jax.Array, labels: jax.Array, valid: jax.Array | None = None
) -> tuple[jax.Array, jax.Array, jax.Array | None]:
    """Bring RnC inputs to the flat layout ``F [n, D]``, ``y [n, K]``, ``valid [n]`` (``n = 2N``).

    ``features [N, 2, D]`` (official layout) is flattened view-major, as the official
    ``cat([f[:, 0], f[:, 1]])``: row ``v * N + s`` is view ``v`` of sample ``s``. Its labels are
    ``[N]`` or ``[N, K]`` and are repeated for both views; ``valid`` is ``[N]`` (one flag per sample)
    or ``[N, 2]``. ``features [n, D]`` is already flat: labels ``[n]`` or ``[n, K]``, ``valid [n]``.
    Raises ``ValueError`` naming the offending shape otherwise.
    """
    f_shape = tuple(features.shape)
    y_shape = tuple(labels.shape)
    if len(f_shape) == 3:
        n_samples, n_views, _ = f_shape
        if n_views != 2:
            raise ValueError(
                f"rnc_loss: features of shape {f_shape} look like the official [N, 2, D] layout but "
                f"axis 1 has {n_views} views; expected exactly 2 (or pass flat [2N, D] features)"
            )
        if y_shape not in ((n_samples,),) and not (len(y_shape) == 2 and y_shape[0] == n_samples):
            raise ValueError(
                f"rnc_loss: features {f_shape} ([N, 2, D], N={n_samples}) need labels of shape "
                f"[N] or [N, K], i.e. ({n_samples},) or ({n_samples}, K); got labels {y_shape}"
            )
        flat = view_major(features)
        y = labels.reshape(n_samples, -1)
        y = jnp.concatenate([y, y], axis=0)
        if valid is not None:
            v_shape = tuple(valid.shape)
            if v_shape == (n_samples,):
                valid = jnp.concatenate([valid, valid], axis=0)
            elif v_shape == (n_samples, 2):
                valid = jnp.concatenate([valid[:, 0], valid[:, 1]], axis=0)
            else:
                raise ValueError(
                    f"rnc_loss: features {f_shape} ([N, 2, D]) need valid of shape [N] = "
                    f"({n_samples},) or [N, 2]; got valid {v_shape}"
                )
        return flat, y, valid
    if len(f_shape) == 2:
        n_rows = f_shape[0]
        if not (y_shape == (n_rows,) or (len(y_shape) == 2 and y_shape[0] == n_rows)):
            raise ValueError(
                f"rnc_loss: flat features {f_shape} ([2N, D], 2N={n_rows}) need labels of shape "
                f"[2N] or [2N, K], i.e. ({n_rows},) or ({n_rows}, K); got labels {y_shape}"
            )
        if valid is not None and tuple(valid.shape) != (n_rows,):
            raise ValueError(
                f"rnc_loss: flat features {f_shape} need valid of shape [2N] = ({n_rows},); "
                f"got valid {tuple(valid.shape)}"
            )
        return features, labels.reshape(n_rows, -1), valid
    raise ValueError(
        f"rnc_loss: features must be [N, 2, D] (sample, view, dim) or flat [2N, D]; got shape {f_shape}"
    )


def _replicated(a: jax.Array) -> jax.Array:
    """``a`` replicated if it is sharded along an *explicit* mesh axis (``jax.make_mesh``'s default
    axis type): the loss compares every row with every other, so it needs the whole batch, and
    explicit sharding does not insert that all-gather by itself. Auto-axis (GSPMD) and unsharded
    arrays pass through unchanged."""
    sharding = getattr(jax.typeof(a), "sharding", None)
    if not isinstance(sharding, jax.sharding.NamedSharding) or sharding.mesh.empty:
        return a
    explicit = any(t == jax.sharding.AxisType.Explicit for t in sharding.mesh.axis_types)
    if not explicit or all(axis is None for axis in sharding.spec):
        return a
    return jax.sharding.reshard(a, jax.sharding.NamedSharding(sharding.mesh, jax.sharding.PartitionSpec()))


def _compute_dtype(dtype: np.dtype) -> np.dtype:
    """float32 for half precision and integers, the input dtype for float32 / float64."""
    dtype = np.dtype(dtype)
    if jnp.issubdtype(dtype, jnp.floating) and dtype.itemsize >= 4:
        return dtype
    return np.dtype(np.float32)


# ----------------------------------------------------------------------------------------------
# Pairwise quantities
# ----------------------------------------------------------------------------------------------


def _safe_sqrt(sq: jax.Array) -> jax.Array:
    """sqrt with a zero (not NaN) gradient at 0: the double-``where`` trick."""
    positive = sq > 0
    return jnp.where(positive, jnp.sqrt(jnp.where(positive, sq, 1.0)), 0.0)


@jax.custom_vjp
def _squared_distances_difference(x: jax.Array) -> jax.Array:
    """``[n, n]`` squared Euclidean distances from the exact differences ``x_i - x_j``.

    The forward pass is one fused ``[n, n, D]`` reduction (exact, as the official code). The
    backward pass ``dx_i = 2 sum_j (G + G^T)_ij (x_i - x_j)`` is one matmul (:func:`_distance_grad`):
    XLA:CPU's autodiff of the broadcast form is ~100x slower, and the two agree to ~2e-7 relative.
    """
    diff = x[:, None, :] - x[None, :, :]
    return jnp.sum(diff * diff, axis=-1)


def _squared_distances_difference_fwd(x: jax.Array) -> tuple[jax.Array, jax.Array]:
    return _squared_distances_difference(x), x


def _squared_distances_difference_bwd(x: jax.Array, cotangent: jax.Array) -> tuple[jax.Array]:
    return (_distance_grad(x, cotangent),)


_squared_distances_difference.defvjp(_squared_distances_difference_fwd, _squared_distances_difference_bwd)


def _distance_grad(x: jax.Array, cotangent: jax.Array) -> jax.Array:
    """Gradient of ``sum(G * ||x_i - x_j||^2)`` (``G`` the cotangent): ``2 sum_j (G + G^T)_ij (x_i - x_j)``
    as one matmul. Translating ``x`` does not change it, so the Gram form passes its centred rows."""
    sym = cotangent + cotangent.T
    return 2.0 * (jnp.sum(sym, axis=1)[:, None] * x - jnp.matmul(sym, x, precision=lax.Precision.HIGHEST))


@jax.custom_vjp
def _squared_distances_gram(x: jax.Array, valid: jax.Array) -> jax.Array:
    """``[n, n]`` squared distances from ``|a|^2 + |b|^2 - 2 a.b`` on mean-centred rows.

    Centring on the mean of the valid rows leaves distances unchanged and keeps the norms, and so
    the rounding floor, small. Values below ``8 eps (|a|^2 + |b|^2)`` cannot be told apart from 0
    and are set to 0 (zero distance, zero gradient); the diagonal is exactly 0. One matmul forward,
    one backward (:func:`_distance_grad`).
    """
    return _squared_distances_gram_fwd(x, valid)[0]


def _squared_distances_gram_fwd(x: jax.Array, valid: jax.Array):
    weights = valid.astype(x.dtype)
    mean = jnp.sum(x * weights[:, None], axis=0) / jnp.maximum(jnp.sum(weights), 1.0)
    xc = x - mean
    norms = jnp.sum(xc * xc, axis=-1)
    gram = jnp.matmul(xc, xc.T, precision=lax.Precision.HIGHEST)
    scale = norms[:, None] + norms[None, :]
    sq = scale - 2.0 * gram
    zero = (sq <= 8.0 * jnp.finfo(x.dtype).eps * scale) | jnp.eye(x.shape[0], dtype=bool)
    return jnp.where(zero, 0.0, sq), (xc, zero)


def _squared_distances_gram_bwd(residuals, cotangent: jax.Array):
    xc, zero = residuals
    return _distance_grad(xc, jnp.where(zero, 0.0, cotangent)), None


_squared_distances_gram.defvjp(_squared_distances_gram_fwd, _squared_distances_gram_bwd)


def _logits(
    x: jax.Array,
    valid: jax.Array,
    temperature: jax.Array,
    similarity: str,
    distance_method: str,
) -> jax.Array:
    """``[n, n]`` logits ``sim(x_i, x_j) / tau``; ``-||x_i - x_j||_2 / tau`` for 'l2'."""
    if similarity == "cosine":
        norms = _safe_sqrt(jnp.sum(x * x, axis=-1, keepdims=True))
        unit = x / jnp.maximum(norms, 1e-12)
        cos = jnp.matmul(unit, unit.T, precision=lax.Precision.HIGHEST)
        return cos / temperature
    n, dim = x.shape
    if distance_method == "auto":
        distance_method = "difference" if n * n * dim <= DIFFERENCE_MAX_ELEMENTS else "gram"
    if distance_method == "difference":
        sq = _squared_distances_difference(x)
    else:
        sq = _squared_distances_gram(x, valid)
    if similarity == "l2_squared":
        return -sq / temperature
    return -_safe_sqrt(sq) / temperature


def _label_distances(y: jax.Array, kind: str) -> jax.Array:
    """``[n, n]`` label distances (no gradient): L1 (official) or L2 over the label dim ``K``."""
    y = lax.stop_gradient(y)
    diff = y[:, None, :] - y[None, :, :]
    if kind == "l1" or y.shape[-1] == 1:
        return jnp.sum(jnp.abs(diff), axis=-1)
    return jnp.sqrt(jnp.sum(diff * diff, axis=-1))


# ----------------------------------------------------------------------------------------------
# Core (jitted) and public functions
# ----------------------------------------------------------------------------------------------


@functools.partial(
    jax.jit, static_argnames=("similarity", "label_distance", "implementation", "distance_method")
)
def _rnc_flat(
    x: jax.Array,
    y: jax.Array,
    valid: jax.Array | None,
    temperature: jax.Array,
    *,
    similarity: str,
    label_distance: str,
    implementation: str,
    distance_method: str,
) -> jax.Array:
    """RnC loss of flat ``x [n, D]``, ``y [n, K]``, ``valid [n]`` (or None); see :func:`rnc_loss`."""
    n = x.shape[0]
    dtype = _compute_dtype(x.dtype)
    x = x.astype(dtype)
    y = y.astype(_compute_dtype(y.dtype))
    valid = jnp.ones((n,), bool) if valid is None else valid.astype(bool)
    temperature = jnp.asarray(temperature, dtype)

    y = jnp.where(valid[:, None], y, 0)  # padded rows' labels play no role; keep them finite

    if implementation == "auto":
        implementation = "pairwise" if n <= PAIRWISE_MAX_ROWS else "sorted"
    if implementation == "sorted" and y.shape[1] == 1:
        implementation = "sorted_label_order"
    if implementation.startswith("sorted_label_order"):
        # internal spelling 'sorted_label_order[:mode][@rows]': rows per block, 'full' = all at once
        form, _, rows_spec = implementation.partition("@")
        mode = form.partition(":")[2] or "auto"
        block = row_block(n) if not rows_spec else None if rows_spec == "full" else int(rows_spec)
        # the loss is invariant to a joint permutation of the rows: sort them by label once
        rows = jnp.argsort(y[:, 0], stable=True)
        x, y, valid = x[rows], y[rows], valid[rows]
        logits = _logits(x, valid, temperature, similarity, distance_method)
        total = label_order_term_sum(logits, lax.stop_gradient(y[:, 0]), valid, mode, block)
    else:
        logits = _logits(x, valid, temperature, similarity, distance_method)
        ld = _label_distances(y, label_distance)
        cand = valid[None, :] & ~jnp.eye(n, dtype=bool)
        pair = valid[:, None] & cand
        if implementation == "pairwise":
            total = pairwise_term_sum(logits, ld, cand, pair)
        else:
            total = per_anchor_sort_term_sum(logits, ld, cand, pair)
    n_valid = jnp.sum(valid.astype(dtype))
    return total / jnp.maximum(n_valid * (n_valid - 1.0), 1.0)


def rnc_loss(
    features: jax.Array,
    labels: jax.Array,
    *,
    temperature: float | jax.Array = 2.0,
    valid: jax.Array | None = None,
    feature_similarity: FeatureSimilarity = "l2",
    label_distance: LabelDistance = "l1",
    implementation: Implementation = "auto",
    pairwise_distance: PairwiseDistance = "auto",
) -> jax.Array:
    """Rank-N-Contrast loss (scalar, mean over valid ordered pairs ``(i, m)``, ``i != m``).

    Args:
      features: ``[N, 2, D]`` (sample, view, dim; the official layout) or flat ``[2N, D]``
        embeddings, any float dtype. See the module docstring for the row order.
      labels: ``[N]`` / ``[N, K]`` with ``[N, 2, D]`` features, ``[2N]`` / ``[2N, K]`` with flat ones
        (e.g. EF in percent). No gradient flows into them.
      temperature: ``tau > 0``. Default 2.0 as the official ``RnCLoss``; CoReEcho trains with 1.0.
      valid: optional bool mask, ``[N]`` (or ``[N, 2]``) for ``[N, 2, D]`` features, ``[2N]`` for
        flat ones. Invalid (padded) rows are neither anchors nor candidates; the mean runs over
        ``n_valid (n_valid - 1)`` pairs. With fewer than 2 valid rows the loss is 0.
      feature_similarity: 'l2' (official, ``-||a - b||``), 'l2_squared' (``-||a - b||^2``) or
        'cosine' (``<a, b> / (|a| |b|)``), each divided by ``tau``.
      label_distance: 'l1' (official, sum over ``K``) or 'l2' (Euclidean over ``K``).
      implementation: 'pairwise', 'sorted', or 'auto' (pairwise for ``2N <= 64``).
      pairwise_distance: 'difference', 'gram' or 'auto'; see the module docstring.

    Returns:
      The loss as a scalar, float32 for half-precision inputs, else the input dtype.
    """
    for name, value, allowed in (
        ("feature_similarity", feature_similarity, FEATURE_SIMILARITIES),
        ("label_distance", label_distance, LABEL_DISTANCES),
        ("implementation", implementation, IMPLEMENTATIONS),
        ("pairwise_distance", pairwise_distance, PAIRWISE_DISTANCES),
    ):
        _check_choice(name, value, allowed)
    if isinstance(temperature, (int, float)) and not temperature > 0:
        raise ValueError(f"rnc_loss: temperature must be > 0, got {temperature}")
    features = _replicated(jnp.asarray(features))
    labels = _replicated(jnp.asarray(labels))
    if valid is not None:
        valid = _replicated(jnp.asarray(valid))
    x, y, valid = flatten_views(features, labels, valid)
    return _rnc_flat(
        x,
        y,
        valid,
        temperature,
        similarity=feature_similarity,
        label_distance=label_distance,
        implementation=implementation,
        distance_method=pairwise_distance,
    )


rnc_loss_pairwise = functools.partial(rnc_loss, implementation="pairwise")
rnc_loss_pairwise.__doc__ = ":func:`rnc_loss` with the ``[n, n, n]`` mask form (O(n^3) time and memory)."

rnc_loss_sorted = functools.partial(rnc_loss, implementation="sorted")
rnc_loss_sorted.__doc__ = (
    ":func:`rnc_loss` with the per-anchor sort + prefix log-sum-exp form (O(n^2 log n))."
)
