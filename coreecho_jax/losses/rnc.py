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

Two implementations, one contract
    * :func:`rnc_loss_pairwise` builds the ``[n, n, n]`` membership mask ``l in S(i, m)`` and reduces
      each set with its own max as shift, in one fused computation: O(n^3) time and memory, the
      fastest form for small batches (CoReEcho's 2N = 32) and the fastest to compile.
    * :func:`rnc_loss_sorted`: O(n^2 log n) time, O(n^2) memory, for large batches. Per anchor, the
      candidates ordered by label distance make every ``S(i, m)`` a prefix, so all denominators
      come from prefix sums; a tie group reads the prefix at its *last* member, so it sees every
      candidate with distance >= its own.

      - Scalar labels (``K = 1``, the RnC / CoReEcho case): the rows are sorted by label once.
        Anchor ``i``'s candidates then lie on two sides, ``S(i, m)`` is a prefix of the left side
        plus a suffix of the right side, and one side's bound is a binary search. Denominators come
        from row-max-shifted ``exp`` prefix / suffix sums with a hand-written backward pass. If a
        valid pair's logit lies more than 60 (float32; 600 in float64) below its row's max, where
        ``exp`` could underflow, a ``lax.cond`` switches the whole batch to an exact stable form
        (the pairwise one for 2N <= 128, else the per-anchor sort below), so extreme distances
        stay exact; only speed changes. The anchors are processed in blocks of
        ``SORTED_BLOCK_ELEMENTS // 2N`` rows (``lax.map``; 32 rows at 2N = 4096), so the
        searches and prefix sums work on cache-sized ``[rows, 2N]`` arrays, and under
        differentiation the same pass also forms the gradient w.r.t. the logits: about 1.5-2x
        faster than whole ``[2N, 2N]`` arrays at 2N = 4096, same values to float32 rounding.
      - Multi-dimensional labels: each anchor's candidates are sorted (``argsort``) and a
        ``logaddexp`` associative scan gives the prefix log-sum-exps.

      Ties are decided by the same float comparison ``d(y_i, y_l) >= d(y_i, y_m)`` as in the
      pairwise form (and the official code), including distinct labels whose distances round to
      the same float.
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
FALLBACK_PAIRWISE_MAX_ROWS = 128  # stable fallback of the sorted form: pairwise up to this n
DIFFERENCE_MAX_ELEMENTS = 2**23  # pairwise_distance='auto': difference form while n * n * D <= this
SORTED_BLOCK_ELEMENTS = 2**17  # sorted form: anchors per block = this // n (cache-sized blocks)


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
# The two reductions: sum over valid ordered pairs (i, m) of -logit[i, m] + lse_{S(i, m)} logit[i, :]
# ----------------------------------------------------------------------------------------------


def _pairwise_term_sum(logits: jax.Array, ld: jax.Array, cand: jax.Array, pair: jax.Array) -> jax.Array:
    """Sum of the RnC terms with the ``[n(i), n(m), n(l)]`` membership mask ``l in S(i, m)``.

    ``cand[i, l]``: ``l`` may be a candidate of anchor ``i`` (valid, ``l != i``); ``pair[i, m]``: the
    term ``(i, m)`` counts (both valid, ``m != i``). Each set is shifted by its own max, so no set
    underflows however large the distances.
    """
    member = cand[:, None, :] & (ld[:, None, :] >= ld[:, :, None])  # [i, m, l]
    row = logits[:, None, :]  # [i, 1, l]
    shift = jnp.max(jnp.where(member, row, -jnp.inf), axis=-1)  # [i, m]
    shift = lax.stop_gradient(jnp.where(pair, shift, 0.0))  # the lse does not depend on the shift
    # Non-members get exp(-inf) = 0 (a finite value with zero gradient, unlike a masked overflow).
    total = jnp.sum(jnp.exp(jnp.where(member, row - shift[:, :, None], -jnp.inf)), axis=-1)
    lse = shift + jnp.log(jnp.where(pair, total, 1.0))
    return jnp.sum(jnp.where(pair, lse - logits, 0.0))


def _row_scan(fn, x: jax.Array, reverse: bool = False) -> jax.Array:
    """Inclusive scan along axis 1 with ``associative_scan`` (XLA:CPU lowers ``lax.cumlogsumexp`` as
    an O(n^2)-per-row ``reduce_window``: 5 s at n = 4096)."""
    return lax.associative_scan(fn, x, reverse=reverse, axis=1)


def _per_anchor_sort_term_sum(
    logits: jax.Array, ld: jax.Array, cand: jax.Array, pair: jax.Array
) -> jax.Array:
    """Sum of the RnC terms via a per-anchor sort: O(n^2 log n) time, O(n^2) memory, any label dim.

    Per anchor, candidates are sorted by label distance, descending, with non-candidates last.
    ``S(i, m)`` is then the prefix up to the end of ``m``'s tie group, so the denominator of every
    member of a tie group is the prefix log-sum-exp (a ``logaddexp`` scan) read at the group's last
    element. Non-candidates sit after every candidate, so no prefix that is read includes them.
    """
    n = logits.shape[0]
    key = jnp.where(cand, ld, -jnp.inf)
    order = jnp.argsort(-key, axis=1, stable=True)
    key_s = jnp.take_along_axis(key, order, axis=1)
    logit_s = jnp.take_along_axis(logits, order, axis=1)
    pair_s = jnp.take_along_axis(pair, order, axis=1)
    prefix = _row_scan(jnp.logaddexp, logit_s)
    position = lax.broadcasted_iota(jnp.int32, (n, n), 1)
    is_last = jnp.concatenate([key_s[:, 1:] != key_s[:, :-1], jnp.ones((n, 1), bool)], axis=1)
    group_end = lax.cummin(jnp.where(is_last, position, n - 1), axis=1, reverse=True)
    lse = jnp.take_along_axis(prefix, group_end, axis=1)
    return jnp.sum(jnp.where(pair_s, lse - logit_s, 0.0))


# Scalar labels: one global sort instead of one per anchor --------------------------------------
#
# With rows sorted by label (z_0 <= ... <= z_{n-1}), anchor i's candidates split into a left side
# [0, c_i) (z_k <= z_i, distance non-increasing in k) and a right side [c_i, n) (distance
# non-decreasing). S(i, m) = {l: |z_i - z_l| >= r}, r = |z_i - z_m|, is then a prefix [0, a) of the
# left side plus a suffix [b, n) of the right side, and its sum is P[i, a] + Q[i, b] with P / Q the
# row prefix / suffix sums: no per-anchor sort. One side's bound is the edge of m's equal-label
# group; the other is a binary search. Every comparison is the float ``|z_i - z_k| >= r`` itself, so
# ties are exactly those of the pairwise form, including distinct labels whose distances round to
# the same float (the group edges are then extended over them).

# Largest logit spread below a row's max for which exp(logit - max) stays a normal float:
# the direct (exp-and-cumsum) path is exact there; wider rows take an exact stable form.
_DIRECT_SPREAD = {4: 60.0, 8: 600.0}


def _first_false(predicate, lo: jax.Array, hi: jax.Array, steps: int) -> jax.Array:
    """Elementwise binary search: first ``k`` in ``[lo, hi)`` with ``predicate(k)`` False (a true-prefix
    predicate), ``hi`` if none. ``steps >= bit_length(hi - lo)``. Branchless (one carried array):
    try to advance by ``2^(steps-1), ..., 2, 1`` while everything passed over satisfies the predicate."""
    # a loop, not unrolled: XLA would fuse the unrolled chain into each user and repeat it (10x)

    def body(s, pos):
        candidate = pos + jnp.left_shift(1, steps - 1 - s).astype(pos.dtype)
        return jnp.where((candidate <= hi) & predicate(candidate - 1), candidate, pos)

    return lax.fori_loop(0, steps, body, lo)


def _extend(index: jax.Array, can_move, move, first: jax.Array) -> jax.Array:
    """Apply ``move`` where ``can_move`` holds until it holds nowhere; ``first = can_move(index)``,
    passed in because callers get it cheaply. Usually it is all False and the loop body never runs."""

    def body(state):
        idx, moving = state
        idx = jnp.where(moving, move(idx), idx)
        return idx, can_move(idx)

    return lax.while_loop(lambda state: jnp.any(state[1]), body, (index, first))[0]


def _cumsum_rows(x: jax.Array, reverse: bool = False, block: int = 16) -> jax.Array:
    """Inclusive cumulative sum along axis 1 (``reverse``: from the right) as two small matmuls
    (in-block triangular, then block offsets). On XLA:CPU this is several times faster than
    ``jnp.cumsum`` / ``associative_scan`` for long rows and compiles in a fraction of the time; each
    output adds at most ``block`` terms to a block offset, as accurate as a pairwise summation."""
    rows, cols = x.shape
    block = min(block, cols)
    n_blocks = -(-cols // block)
    pad = n_blocks * block - cols
    padded = jnp.pad(x, ((0, 0), (pad, 0) if reverse else (0, pad))).reshape(rows, n_blocks, block)
    ones = jnp.ones((block, block), x.dtype)
    within = jnp.einsum(
        "rbk,kj->rbj", padded, jnp.tril(ones) if reverse else jnp.triu(ones), precision=lax.Precision.HIGHEST
    )
    block_ones = jnp.ones((n_blocks, n_blocks), x.dtype)
    offsets = jnp.matmul(
        within[:, :, 0] if reverse else within[:, :, -1],
        jnp.tril(block_ones, -1) if reverse else jnp.triu(block_ones, 1),
        precision=lax.Precision.HIGHEST,
    )
    out = (within + offsets[:, :, None]).reshape(rows, n_blocks * block)
    return out[:, pad:] if reverse else out[:, :cols]


def _prefix_sum_at(x: jax.Array, index: jax.Array) -> jax.Array:
    """``sum(x[i, :index[i, j]])`` for ``index`` in ``[0, n]`` (an exclusive prefix sum, gathered)."""
    inclusive = _cumsum_rows(x)
    return jnp.where(index > 0, jnp.take_along_axis(inclusive, index - 1, axis=1, mode="clip"), 0.0)


def _suffix_sum_at(x: jax.Array, index: jax.Array) -> jax.Array:
    """``sum(x[i, index[i, j]:])`` for ``index`` in ``[0, n]``."""
    inclusive = _cumsum_rows(x, reverse=True)
    return jnp.where(index < x.shape[1], jnp.take_along_axis(inclusive, index, axis=1, mode="clip"), 0.0)


def _group_edges(z: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Upper (exclusive) and lower edge ``[n]`` of each row's equal-label group in sorted ``z``."""
    upper = jnp.searchsorted(z, z, side="right").astype(jnp.int32)
    lower = jnp.searchsorted(z, z, side="left").astype(jnp.int32)
    return upper, lower


class _LabelOrder:
    """Index structure of the sorted labels ``z [n]`` shared by the forward and backward pass."""

    def __init__(
        self,
        z: jax.Array,
        valid: jax.Array,
        rows: jax.Array | None = None,
        edges: tuple[jax.Array, jax.Array] | None = None,
    ):
        """``rows [B]``: the anchors (row indices into ``z``) this structure covers, all ``n`` if None;
        indices ``>= n`` are padding anchors with no terms. ``edges``: :func:`_group_edges` of ``z``
        if already computed."""
        n = z.shape[0]
        self.n = n
        self.z = z
        self.position = jnp.arange(n, dtype=jnp.int32)
        self.upper, self.lower = _group_edges(z) if edges is None else edges
        if rows is None:
            rows, z_rows, valid_rows, upper_rows = self.position, z, valid, self.upper
        else:
            z_rows = jnp.take(z, rows, mode="clip")
            valid_rows = jnp.take(valid, rows, mode="fill", fill_value=False)
            upper_rows = jnp.take(self.upper, rows, mode="clip")
        self.z_rows = z_rows[:, None]  # [B, 1] anchor labels
        self.split = upper_rows[:, None]  # c_i: anchor i's left side is [0, c_i)
        self.right = self.position[None, :] >= self.split  # [i, m]: m on anchor i's right side
        off_diagonal = rows[:, None] != self.position[None, :]
        self.cand = valid[None, :] & off_diagonal
        self.pair = valid_rows[:, None] & self.cand
        self.radius = jnp.abs(self.z_rows - z[None, :])  # r[i, m] = |z_i - z_m|

    def distance_to(self, k: jax.Array) -> jax.Array:
        """``|z_i - z_k|`` for a ``[B(i), n]`` position array ``k`` (clipped into range)."""
        return jnp.abs(self.z_rows - jnp.take(self.z, k, mode="clip"))

    def outer_bounds(self) -> tuple[jax.Array, jax.Array]:
        """``S(i, m) = [0, a) u [b, n)``: ``a`` = #left with distance >= r, ``b`` = first right one.

        The side opposite to ``m`` needs a binary search; on ``m``'s own side the bound is the edge
        of ``m``'s equal-label group, pushed further only over distinct labels whose distance
        rounds to the same float (checked per column, so the usual case costs no gather)."""
        n, r, right, split, z = self.n, self.radius, self.right, self.split, self.z
        shape = r.shape
        dist = self.distance_to
        cross = _first_false(
            lambda k: (dist(k) < r) != right,
            jnp.where(right, 0, split),
            jnp.where(right, split, n),
            n.bit_length(),
        )
        upper = jnp.broadcast_to(self.upper[None, :], shape)
        z_upper = jnp.take(z, self.upper, mode="clip")[None, :]
        same_a = _extend(
            upper,
            lambda a: (a < split) & (dist(a) >= r),
            lambda a: jnp.take(self.upper, a, mode="clip"),
            (upper < split) & (jnp.abs(self.z_rows - z_upper) >= r),
        )
        lower = jnp.broadcast_to(self.lower[None, :], shape)
        z_below = jnp.take(z, self.lower - 1, mode="clip")[None, :]
        same_b = _extend(
            lower,
            lambda b: (b > split) & (dist(b - 1) >= r),
            lambda b: jnp.take(self.lower, b - 1, mode="clip"),
            (lower > split) & (jnp.abs(self.z_rows - z_below) >= r),
        )
        return jnp.where(right, cross, same_a), jnp.where(right, same_b, cross)

    def inner_bounds(self, a: jax.Array, b: jax.Array) -> tuple[jax.Array, jax.Array]:
        """``{m: r_m <= r_l} = [a', b')`` for every ``(i, l)``, from the outer bounds."""
        n, r, right = self.n, self.radius, self.right
        dist = self.distance_to
        start_a = jnp.where(right, a, self.lower[None, :])
        inner_a = _extend(
            start_a,
            lambda k: (k > 0) & (dist(k - 1) <= r),
            lambda k: jnp.take(self.lower, k - 1, mode="clip"),
            (start_a > 0) & (dist(start_a - 1) <= r),
        )
        start_b = jnp.where(right, self.upper[None, :], b)
        inner_b = _extend(
            start_b,
            lambda k: (k < n) & (dist(k) <= r),
            lambda k: jnp.take(self.upper, k, mode="clip"),
            (start_b < n) & (dist(start_b) <= r),
        )
        return inner_a, inner_b


def _row_max(logits: jax.Array, cand: jax.Array) -> jax.Array:
    top = jnp.max(jnp.where(cand, logits, -jnp.inf), axis=1, keepdims=True)
    return jnp.where(jnp.isfinite(top), top, 0.0)


def _use_direct(logits: jax.Array, row_max: jax.Array, pair: jax.Array) -> jax.Array:
    spread = _DIRECT_SPREAD[np.dtype(logits.dtype).itemsize]
    return jnp.all(jnp.where(pair, logits - row_max >= -spread, True))


def _direct_value(logits: jax.Array, order: _LabelOrder, a: jax.Array, b: jax.Array):
    """Direct-path forward for the rows of ``order``: ``(value, lse, row_max, e)`` with ``e`` the
    row-max-shifted ``exp`` of the candidates (0 elsewhere) and ``lse [B, n]`` each term's log
    denominator."""
    row_max = _row_max(logits, order.cand)
    e = jnp.where(order.cand, jnp.exp(logits - row_max), 0.0)
    total = _prefix_sum_at(e, a) + _suffix_sum_at(e, b)
    # total >= exp(-spread) wherever this path is chosen; the clamp only keeps the values finite
    # where it is not (a vmapped lax.cond evaluates both branches and differentiates both).
    total = jnp.maximum(total, jnp.finfo(total.dtype).tiny)
    lse = row_max + jnp.log(jnp.where(order.pair, total, 1.0))
    value = jnp.sum(jnp.where(order.pair, lse - logits, 0.0))
    return value, lse, row_max, e


def _direct_logit_grad(order: _LabelOrder, a, b, lse, row_max, e) -> jax.Array:
    """``d value / d logit [B, n]`` of the direct path:
    ``-pair[i, l] + cand[i, l] sum_{m: r_m <= r_l, pair} exp(logit[i, l] - lse[i, m])``."""
    inner_a, inner_b = order.inner_bounds(a, b)
    w = jnp.where(order.pair, jnp.exp(row_max - lse), 0.0)
    inner = _suffix_sum_at(jnp.where(order.right, 0.0, w), inner_a) + _prefix_sum_at(
        jnp.where(order.right, w, 0.0), inner_b
    )
    inner = jnp.minimum(inner, jnp.finfo(inner.dtype).max)  # finite even off this path's domain
    return e * inner - order.pair.astype(e.dtype)


@jax.custom_vjp
def _label_order_direct(logits, z, valid, a, b):
    """Direct path, all rows at once: row-max-shifted ``exp``, prefix / suffix sums, hand-written
    backward pass.

    Exact while every valid pair's logit is within ``_DIRECT_SPREAD`` of its row's max (then every
    ``exp`` that matters is a normal float); :func:`_label_order_term_sum` checks that.
    """
    return _label_order_direct_fwd(logits, z, valid, a, b)[0]


def _label_order_direct_fwd(logits, z, valid, a, b):
    value, lse, row_max, _ = _direct_value(logits, _LabelOrder(z, valid), a, b)
    return value, (logits, z, valid, a, b, lse, row_max)


def _label_order_direct_bwd(residuals, cotangent):
    logits, z, valid, a, b, lse, row_max = residuals
    order = _LabelOrder(z, valid)
    e = jnp.where(order.cand, jnp.exp(logits - row_max), 0.0)
    return cotangent * _direct_logit_grad(order, a, b, lse, row_max, e), None, None, None, None


_label_order_direct.defvjp(_label_order_direct_fwd, _label_order_direct_bwd)


def _row_block(n: int) -> int:
    """Anchors per block of the row-blocked direct path: ``SORTED_BLOCK_ELEMENTS // n``, in ``[1, n]``."""
    return max(1, min(n, SORTED_BLOCK_ELEMENTS // n))


def _blocked_map(logits: jax.Array, z: jax.Array, valid: jax.Array, block: int, with_grad: bool):
    """The direct path one block of ``block`` anchor rows at a time (``lax.map``): every ``[block, n]``
    intermediate (bounds, binary searches, prefix sums) stays cache-sized instead of streaming
    ``[n, n]`` arrays through memory a few dozen times. Returns the value, and with ``with_grad`` also
    ``d value / d logits [n, n]`` (computed in the same pass, from the same bounds)."""
    n = logits.shape[0]
    n_blocks = -(-n // block)
    rows = jnp.arange(n_blocks * block, dtype=jnp.int32).reshape(n_blocks, block)
    logit_blocks = jnp.pad(logits, ((0, n_blocks * block - n), (0, 0))).reshape(n_blocks, block, n)
    edges = _group_edges(z)

    def one_block(args):
        rows_b, logits_b = args
        order = _LabelOrder(z, valid, rows_b, edges)
        a, b = order.outer_bounds()
        value, lse, row_max, e = _direct_value(logits_b, order, a, b)
        if not with_grad:
            return value
        return value, _direct_logit_grad(order, a, b, lse, row_max, e)

    out = lax.map(one_block, (rows, logit_blocks))
    if not with_grad:
        return jnp.sum(out)
    values, grads = out
    return jnp.sum(values), grads.reshape(n_blocks * block, n)[:n]


def _stable_term_sum(logits: jax.Array, order: _LabelOrder) -> jax.Array:
    """Exact for any logit spread: the pairwise form for ``n <= FALLBACK_PAIRWISE_MAX_ROWS``, else the
    per-anchor sort with ``logaddexp`` scans."""
    if logits.shape[0] <= FALLBACK_PAIRWISE_MAX_ROWS:
        return _pairwise_term_sum(logits, order.radius, order.cand, order.pair)
    return _per_anchor_sort_term_sum(logits, order.radius, order.cand, order.pair)


def _blocked_select(logits, z, valid, block: int, mode: str, with_grad: bool):
    """Row-blocked direct path, or (``mode='auto'``, a row too wide for it) the stable form, chosen by
    ``lax.cond``; with ``with_grad`` each branch returns ``(value, d value / d logits)``."""

    def direct(logits):
        return _blocked_map(logits, z, valid, block, with_grad)

    if mode == "direct":
        return direct(logits)
    check = _LabelOrder(z, valid)  # only cand / pair, fused into the check
    use_direct = _use_direct(logits, lax.stop_gradient(_row_max(logits, check.cand)), check.pair)

    def stable(logits):
        # the [n, n] structure is built inside the branch: as a closure it would be a cond operand,
        # materialised on every call although the branch rarely runs
        value = functools.partial(_stable_term_sum, order=_LabelOrder(z, valid))
        return jax.value_and_grad(value)(logits) if with_grad else value(logits)

    return lax.cond(use_direct, direct, stable, logits)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def _label_order_blocked(logits, z, valid, block: int, mode: str):
    """:func:`_blocked_select` as a differentiable function. Under differentiation the forward pass
    also forms the gradient w.r.t. the logits (in the same blocks, from the same bounds), so the
    backward pass is one multiplication and the ``lax.cond`` keeps a single ``[n, n]`` residual."""
    return _blocked_select(logits, z, valid, block, mode, with_grad=False)


def _label_order_blocked_fwd(logits, z, valid, block, mode):
    return _blocked_select(logits, z, valid, block, mode, with_grad=True)


def _label_order_blocked_bwd(block, mode, grad, cotangent):
    del block, mode
    return cotangent * grad, None, None


_label_order_blocked.defvjp(_label_order_blocked_fwd, _label_order_blocked_bwd)


def _label_order_term_sum(
    logits: jax.Array, z: jax.Array, valid: jax.Array, mode: str = "auto", block: int | None = None
) -> jax.Array:
    """Sum of the RnC terms for rows sorted by a scalar label ``z`` (ascending): O(n^2 log n) time
    (the binary searches), O(n^2) memory.

    ``mode='auto'`` takes the direct path when every row's logit spread allows it (the usual case)
    and otherwise an exact stable form chosen by ``lax.cond``: the pairwise form for
    ``n <= FALLBACK_PAIRWISE_MAX_ROWS``, else the per-anchor sort with ``logaddexp`` scans. ``'direct'``
    forces the direct path (tests and benchmarks). ``block``: anchors per block of the direct path
    (:func:`_blocked_map`); None evaluates all rows at once.
    """
    if block is not None:
        return _label_order_blocked(logits, z, valid, block, mode)
    order = _LabelOrder(z, valid)
    a, b = order.outer_bounds()

    def direct(logits):
        return _label_order_direct(logits, z, valid, a, b)

    if mode == "direct":
        return direct(logits)
    use_direct = _use_direct(logits, lax.stop_gradient(_row_max(logits, order.cand)), order.pair)
    return lax.cond(use_direct, direct, functools.partial(_stable_term_sum, order=order), logits)


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
        block = _row_block(n) if not rows_spec else None if rows_spec == "full" else int(rows_spec)
        # the loss is invariant to a joint permutation of the rows: sort them by label once
        rows = jnp.argsort(y[:, 0], stable=True)
        x, y, valid = x[rows], y[rows], valid[rows]
        logits = _logits(x, valid, temperature, similarity, distance_method)
        total = _label_order_term_sum(logits, lax.stop_gradient(y[:, 0]), valid, mode, block)
    else:
        logits = _logits(x, valid, temperature, similarity, distance_method)
        ld = _label_distances(y, label_distance)
        cand = valid[None, :] & ~jnp.eye(n, dtype=bool)
        pair = valid[:, None] & cand
        if implementation == "pairwise":
            total = _pairwise_term_sum(logits, ld, cand, pair)
        else:
            total = _per_anchor_sort_term_sum(logits, ld, cand, pair)
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
