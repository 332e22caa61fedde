"""The O(n^2 log n) forms of the RnC reduction (:func:`coreecho_jax.losses.rnc.rnc_loss_sorted`).

Per anchor, the candidates ordered by label distance make every ``S(i, m)`` a prefix, so all
denominators come from prefix sums; a tie group reads the prefix at its *last* member, so it sees
every candidate with distance >= its own. Two forms (the derivation, bounds and measured speeds are
in ``docs/rnc.md``):

* :func:`label_order_term_sum` (scalar labels, the RnC / CoReEcho case): rows sorted by label once;
  each ``S(i, m)`` is a prefix of the anchor's left side plus a suffix of its right side, one bound a
  binary search; ``exp`` prefix / suffix sums with a hand-written backward pass, in row blocks of
  :func:`row_block` anchors. Rows whose logit spread could underflow ``exp`` switch (``lax.cond``)
  to an exact stable form: :func:`coreecho_jax.losses.rnc_pairwise.pairwise_term_sum` for
  ``n <= FALLBACK_PAIRWISE_MAX_ROWS``, else :func:`per_anchor_sort_term_sum`.
* :func:`per_anchor_sort_term_sum` (any label dimension): an ``argsort`` per anchor and a
  ``logaddexp`` associative scan.

Ties are decided by the same float comparison ``d(y_i, y_l) >= d(y_i, y_m)`` as in the pairwise form
(and the official code), including distinct labels whose distances round to the same float.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from coreecho_jax.losses.rnc_pairwise import pairwise_term_sum

# Measured on a 2-core CPU with bench/bench_rnc.py.
FALLBACK_PAIRWISE_MAX_ROWS = 128  # stable fallback of the sorted form: pairwise up to this n
SORTED_BLOCK_ELEMENTS = 2**17  # anchors per block = this // n (cache-sized blocks)


def _row_scan(fn, x: jax.Array, reverse: bool = False) -> jax.Array:
    """Inclusive scan along axis 1 with ``associative_scan`` (XLA:CPU lowers ``lax.cumlogsumexp`` as
    an O(n^2)-per-row ``reduce_window``: 5 s at n = 4096)."""
    return lax.associative_scan(fn, x, reverse=reverse, axis=1)


def per_anchor_sort_term_sum(logits: jax.Array, ld: jax.Array, cand: jax.Array, pair: jax.Array) -> jax.Array:
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


# Scalar labels: one global sort instead of one per anchor (docs/rnc.md derives the bounds).

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
    ``exp`` that matters is a normal float); :func:`label_order_term_sum` checks that.
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


def row_block(n: int) -> int:
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
        return pairwise_term_sum(logits, order.radius, order.cand, order.pair)
    return per_anchor_sort_term_sum(logits, order.radius, order.cand, order.pair)


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


def label_order_term_sum(
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
