"""Depthwise (one filter per channel) 3-D convolution, channels-last, stride 1.

UniFormer's stages 1-2 are dominated by depthwise 3x3x3 and 5x5x5 convolutions. XLA:CPU lowers a
``feature_group_count=C`` 3-D convolution through a slow generic path (about 15x slower than the
same operator written out by hand), so this module offers interchangeable implementations behind
one function, :func:`depthwise_conv3d`:

- ``'lax'``: ``lax.conv_general_dilated`` with ``feature_group_count=C`` (the reference; the right
  choice on GPU, where cuDNN has depthwise kernels).
- ``'shifted'``: the correlation written as a sum of ``kt*kh*kw`` shifted slices times per-channel
  weights, with a hand-written backward pass (``jax.custom_vjp``): the input gradient is the same
  shifted sum over the padded output gradient with the flipped kernel, the kernel gradient a sum of
  shifted products. Large kernels loop over the temporal offset (``lax.fori_loop``) because XLA:CPU
  generates very slow code for one fused loop with 125 shifted operands.
- ``'shifted_autodiff'``: the same forward, differentiated by JAX (for tests and benchmarks only).
- ``'auto'``: ``'shifted'`` on CPU, ``'lax'`` elsewhere (the GPU choice is not measured here).

All implementations compute ``y[b,t,h,w,c] = bias[c] + sum_{i,j,k} xpad[b,t+i,h+j,w+k,c] * kernel[i,j,k,c]``
(a correlation, like ``torch.nn.Conv3d``), with ``xpad`` the zero-padded input.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from jax import lax

Padding = tuple[tuple[int, int], tuple[int, int], tuple[int, int]]

IMPLEMENTATIONS = ("auto", "lax", "shifted", "shifted_autodiff")

# Kernels with more taps than this are summed per temporal offset inside a loop (see _correlate_valid).
_MAX_UNROLLED_TAPS = 48
# Terms per fused sum in the kernel gradient (same XLA:CPU limitation).
_W_CHUNK = 14


def resolve_impl(impl: str) -> str:
    """Map ``'auto'`` to the measured best implementation on the default backend."""
    if impl not in IMPLEMENTATIONS:
        raise ValueError(f"depthwise implementation must be one of {IMPLEMENTATIONS}, got {impl!r}")
    if impl == "auto":
        return "shifted" if jax.default_backend() == "cpu" else "lax"
    return impl


def _normalize_padding(padding: Sequence[Sequence[int]] | int) -> Padding:
    if isinstance(padding, int):
        return ((padding, padding),) * 3  # type: ignore[return-value]
    pads = tuple(tuple(int(v) for v in p) for p in padding)
    if len(pads) != 3 or any(len(p) != 2 for p in pads):
        raise ValueError(f"padding must be three (low, high) pairs for (T, H, W), got {padding!r}")
    return pads  # type: ignore[return-value]


def _acc_dtype(dtype: jnp.dtype) -> jnp.dtype:
    return jnp.promote_types(dtype, jnp.float32)


def _correlate_valid(xp: jax.Array, w: jax.Array) -> jax.Array:
    """VALID correlation of ``xp`` [B,Tp,Hp,Wp,C] with a per-channel kernel ``w`` [kt,kh,kw,C].

    Returns [B, Tp-kt+1, Hp-kh+1, Wp-kw+1, C], accumulated in at least float32, in that dtype.

    Always written as a ``lax.fori_loop`` so that ``xp`` is a materialised loop operand: if XLA fused
    the producers of ``xp`` (residual adds, dropout masks, norm backward...) into the shifted sum,
    it would recompute them once per tap, which compounded over the blocks of a stage (8 SABlocks
    with dropout: 14 s instead of 3 s CPU per step, measured). Kernels with at most
    ``_MAX_UNROLLED_TAPS`` taps loop over output frames with all taps in one fused sum; larger ones
    loop over the temporal offset (XLA:CPU generates very slow code for a single fused sum of 125
    shifted operands).
    """
    kt, kh, kw, _ = w.shape
    b, tp, hp, wp, c = xp.shape
    to, ho, wo = tp - kt + 1, hp - kh + 1, wp - kw + 1
    acc_dtype = _acc_dtype(xp.dtype)
    w = w.astype(acc_dtype)

    def taps(x: jax.Array, w_: jax.Array, t_len: int) -> jax.Array:
        # x: [B, t_len + kt_ - 1, Hp, Wp, C]; w_: [kt_, kh, kw, C] -> [B, t_len, Ho, Wo, C]
        acc = None
        for i in range(w_.shape[0]):
            for j in range(kh):
                for k in range(kw):
                    term = x[:, i : i + t_len, j : j + ho, k : k + wo, :].astype(acc_dtype) * w_[i, j, k]
                    acc = term if acc is None else acc + term
        return acc

    if kt * kh * kw <= _MAX_UNROLLED_TAPS:

        def frame(t, out):
            x_t = lax.dynamic_slice_in_dim(xp, t, kt, axis=1)
            return lax.dynamic_update_slice_in_dim(out, taps(x_t, w, 1), t, axis=1)

        return lax.fori_loop(0, to, frame, jnp.zeros((b, to, ho, wo, c), acc_dtype))

    def offset(i, acc):
        x_t = lax.dynamic_slice_in_dim(xp, i, to, axis=1)
        w_t = lax.dynamic_index_in_dim(w, i, axis=0, keepdims=True)
        return acc + taps(x_t, w_t, to)

    return lax.fori_loop(0, kt, offset, jnp.zeros((b, to, ho, wo, c), acc_dtype))


def _kernel_grad(xp: jax.Array, g: jax.Array, kernel_shape: tuple[int, int, int]) -> jax.Array:
    """d(loss)/d(kernel) [kt,kh,kw,C] = sum over (b,t,h,w) of xp[b,t+i,h+j,w+k] * g[b,t,h,w].

    XLA:CPU emits slow code for reductions that keep the channel axis minor, so the sum over w is
    written out as an elementwise sum of shifted products (vectorised over channels) into an
    accumulator ``[kh, kt, Ho, kw, C]``, looping over (batch, output frame) so that each step's
    operands stay in cache; only the final sum over ``Ho`` is an XLA reduction (7-9x faster than
    per-offset reductions on 2 cores, and much faster to compile).
    """
    kt, kh, kw = kernel_shape
    b, to, ho, wo, c = g.shape
    _, _, hp, wp, _ = xp.shape
    acc_dtype = _acc_dtype(g.dtype)

    def body(idx, acc):
        n, t = idx // to, idx % to
        xs = lax.dynamic_slice(xp, (n, t, 0, 0, 0), (1, kt, hp, wp, c))[0].astype(acc_dtype)  # [kt,Hp,Wp,C]
        gs = lax.dynamic_slice(g, (n, t, 0, 0, 0), (1, 1, ho, wo, c))[0, 0].astype(acc_dtype)  # [Ho,Wo,C]
        rows = []
        for j in range(kh):
            row = acc[j]  # [kt, Ho, kw, C]
            for w0 in range(0, wo, _W_CHUNK):
                part = None
                for w in range(w0, min(wo, w0 + _W_CHUNK)):
                    term = xs[:, j : j + ho, w : w + kw, :] * gs[:, w][:, None, :]
                    part = term if part is None else part + term
                row = row + part
            rows.append(row)
        return jnp.stack(rows)

    acc = lax.fori_loop(0, b * to, body, jnp.zeros((kh, kt, ho, kw, c), acc_dtype))
    return jnp.transpose(acc.sum(axis=2), (1, 0, 2, 3))


def _pad(x: jax.Array, padding: Padding) -> jax.Array:
    # lax.pad accepts negative padding (cropping), which the backward pass may need.
    cfg = [(0, 0, 0)] + [(lo, hi, 0) for lo, hi in padding] + [(0, 0, 0)]
    return lax.pad(x, jnp.zeros((), x.dtype), cfg)


def _shifted_forward(x: jax.Array, w: jax.Array, padding: Padding) -> jax.Array:
    return _correlate_valid(_pad(x, padding), w).astype(x.dtype)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _shifted_custom(x: jax.Array, w: jax.Array, padding: Padding) -> jax.Array:
    return _shifted_forward(x, w, padding)


def _shifted_custom_fwd(x, w, padding):
    return _shifted_forward(x, w, padding), (x, w)


def _shifted_custom_bwd(padding, residuals, g):
    x, w = residuals
    kt, kh, kw, _ = w.shape
    # Input gradient: full correlation of g with the flipped kernel, cropped to the input extent.
    back_pad = tuple((k - 1 - lo, k - 1 - hi) for k, (lo, hi) in zip((kt, kh, kw), padding))
    dx = _correlate_valid(_pad(g, back_pad), w[::-1, ::-1, ::-1]).astype(x.dtype)
    dw = _kernel_grad(_pad(x, padding), g, (kt, kh, kw)).astype(w.dtype)
    return dx, dw


_shifted_custom.defvjp(_shifted_custom_fwd, _shifted_custom_bwd)


def _lax_depthwise(x: jax.Array, w: jax.Array, padding: Padding) -> jax.Array:
    c = x.shape[-1]
    return lax.conv_general_dilated(
        x,
        w[:, :, :, None, :].astype(x.dtype),
        window_strides=(1, 1, 1),
        padding=padding,
        dimension_numbers=("NDHWC", "DHWIO", "NDHWC"),
        feature_group_count=c,
    )


def depthwise_conv3d(
    x: jax.Array,
    kernel: jax.Array,
    bias: jax.Array | None,
    padding: Sequence[Sequence[int]] | int,
    impl: str = "auto",
) -> jax.Array:
    """Depthwise 3-D correlation with stride 1 (``torch.nn.Conv3d(C, C, k, padding=p, groups=C)``).

    Args:
      x: input ``[B, T, H, W, C]``.
      kernel: ``[kt, kh, kw, 1, C]`` (Flax grouped-conv layout) or ``[kt, kh, kw, C]``.
      bias: ``[C]`` or None.
      padding: ``((t_lo, t_hi), (h_lo, h_hi), (w_lo, w_hi))`` zero padding, or one int for all sides.
      impl: ``'auto'``, ``'lax'``, ``'shifted'`` or ``'shifted_autodiff'`` (see module docstring).

    Returns:
      ``[B, T', H', W', C]`` in ``x.dtype``, with ``T' = T + t_lo + t_hi - kt + 1`` (and so on).
    """
    if x.ndim != 5:
        raise ValueError(f"depthwise_conv3d expects x of shape [B, T, H, W, C], got {x.shape}")
    if kernel.ndim == 5:
        if kernel.shape[3] != 1:
            raise ValueError(f"depthwise kernel must have in/groups == 1, got kernel shape {kernel.shape}")
        kernel = kernel[:, :, :, 0, :]
    if kernel.ndim != 4 or kernel.shape[-1] != x.shape[-1]:
        raise ValueError(
            f"depthwise kernel shape {kernel.shape} does not match input channels {x.shape[-1]} "
            "(expected [kt, kh, kw, C] or [kt, kh, kw, 1, C])"
        )
    pads = _normalize_padding(padding)
    impl = resolve_impl(impl)
    kernel = kernel.astype(x.dtype)
    if impl == "lax":
        y = _lax_depthwise(x, kernel, pads)
    elif impl == "shifted":
        y = _shifted_custom(x, kernel, pads)
    else:
        y = _shifted_forward(x, kernel, pads)
    if bias is not None:
        y = y + bias.astype(y.dtype)
    return y
