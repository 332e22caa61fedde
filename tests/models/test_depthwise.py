"""Depthwise / dense 3-D convolution implementations agree with lax.conv_general_dilated (values and gradients)."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from coreecho_jax.models.depthwise import depthwise_conv3d, resolve_impl
from coreecho_jax.models.layers import conv3d

# (input shape, kernel size, padding): UniFormer's 3x3x3 / 5x5x5 (the latter takes the looped path),
# an asymmetric kernel with uneven padding, and a VALID conv.
DEPTHWISE_CASES = [
    ((2, 5, 6, 7, 4), (3, 3, 3), ((1, 1), (1, 1), (1, 1))),
    ((2, 6, 7, 5, 3), (5, 5, 5), ((2, 2), (2, 2), (2, 2))),
    ((1, 4, 6, 8, 5), (3, 1, 5), ((1, 0), (0, 0), (2, 1))),
    ((2, 5, 5, 6, 2), (2, 3, 2), ((0, 0), (0, 0), (0, 0))),
]


def _inputs(shape, ksize, seed=0):
    rng = np.random.default_rng(seed)
    x = jnp.asarray(rng.standard_normal(shape), jnp.float32)
    w = jnp.asarray(rng.standard_normal(ksize + (1, shape[-1])), jnp.float32)
    b = jnp.asarray(rng.standard_normal(shape[-1]), jnp.float32)
    return x, w, b


def _numpy_depthwise(x, w, b, padding):
    x, w = np.asarray(x, np.float64), np.asarray(w, np.float64)[:, :, :, 0]
    xp = np.pad(x, ((0, 0),) + tuple(padding) + ((0, 0),))
    kt, kh, kw, _ = w.shape
    to, ho, wo = (xp.shape[i + 1] - w.shape[i] + 1 for i in range(3))
    y = np.zeros((x.shape[0], to, ho, wo, x.shape[-1])) + np.asarray(b, np.float64)
    for i in range(kt):
        for j in range(kh):
            for k in range(kw):
                y += xp[:, i : i + to, j : j + ho, k : k + wo] * w[i, j, k]
    return y


@pytest.mark.parametrize("shape,ksize,padding", DEPTHWISE_CASES)
def test_depthwise_values_match_numpy_and_lax(shape, ksize, padding):
    x, w, b = _inputs(shape, ksize)
    ref = _numpy_depthwise(x, w, b, padding)
    for impl in ("lax", "shifted", "shifted_autodiff"):
        y = jax.jit(lambda x, w, b, impl=impl: depthwise_conv3d(x, w, b, padding, impl))(x, w, b)
        chex.assert_shape(y, ref.shape)
        np.testing.assert_allclose(np.asarray(y), ref, rtol=1e-5, atol=1e-5, err_msg=impl)


@pytest.mark.parametrize("shape,ksize,padding", DEPTHWISE_CASES)
def test_depthwise_gradients_match_lax(shape, ksize, padding):
    x, w, b = _inputs(shape, ksize, seed=1)

    def vjp(impl):
        f = lambda x, w, b: depthwise_conv3d(x, w, b, padding, impl)
        y, pullback = jax.vjp(f, x, w, b)
        cot = jnp.asarray(np.random.default_rng(2).standard_normal(y.shape), jnp.float32)
        return jax.jit(pullback)(cot)

    ref = vjp("lax")
    for impl in ("shifted", "shifted_autodiff"):
        chex.assert_trees_all_close(vjp(impl), ref, rtol=1e-5, atol=1e-4)


def test_depthwise_accepts_4d_kernel_and_int_padding():
    x, w, b = _inputs((1, 4, 5, 6, 3), (3, 3, 3))
    y5 = depthwise_conv3d(x, w, b, 1, "shifted")
    y4 = depthwise_conv3d(x, w[:, :, :, 0], b, ((1, 1),) * 3, "lax")
    chex.assert_trees_all_close(y5, y4, rtol=1e-5, atol=1e-5)
    chex.assert_trees_all_close(depthwise_conv3d(x, w, None, 1, "shifted") + b, y5, rtol=1e-6, atol=1e-6)


def test_depthwise_bfloat16_accumulates_in_float32():
    x, w, b = _inputs((1, 4, 6, 6, 8), (5, 5, 5))
    xb, wb = x.astype(jnp.bfloat16), w.astype(jnp.bfloat16)
    y = depthwise_conv3d(xb, wb, b, 2, "shifted")
    assert y.dtype == jnp.bfloat16
    ref = _numpy_depthwise(xb.astype(jnp.float32), wb.astype(jnp.float32), b, ((2, 2),) * 3)
    # Only the final rounding to bfloat16 (relative 2^-8) separates it from the float64 reference.
    np.testing.assert_allclose(np.asarray(y, np.float32), ref, rtol=2**-7, atol=2**-7 * np.abs(ref).max())


def test_depthwise_auto_is_shifted_on_cpu():
    assert jax.default_backend() == "cpu"
    assert resolve_impl("auto") == "shifted"
    assert resolve_impl("lax") == "lax"


def test_depthwise_bad_arguments():
    x, w, b = _inputs((1, 4, 5, 6, 3), (3, 3, 3))
    with pytest.raises(ValueError, match="implementation must be one of"):
        depthwise_conv3d(x, w, b, 1, "cudnn")
    with pytest.raises(ValueError, match="does not match input channels 3"):
        depthwise_conv3d(x, w[..., :2], b, 1, "lax")
    with pytest.raises(ValueError, match=r"\[B, T, H, W, C\]"):
        depthwise_conv3d(x[0], w, b, 1, "lax")
    with pytest.raises(ValueError, match="three .low, high. pairs"):
        depthwise_conv3d(x, w, b, ((1, 1), (1, 1)), "lax")


# Dense convs: the matmul forms (space-to-depth + temporal gather) against lax.conv_general_dilated.
DENSE_CASES = [
    # patch_embed1: k (3,4,4), s (2,4,4), p (1,0,0), with H and W not multiples of 4 (floor)
    ((2, 7, 18, 13, 3), (3, 4, 4), (2, 4, 4), ((1, 1), (0, 0), (0, 0)), 8),
    # patch_embed2-4: k == s == (1,2,2), odd sizes drop the last row / column
    ((2, 3, 7, 7, 6), (1, 2, 2), (1, 2, 2), ((0, 0),) * 3, 10),
    # pointwise 1x1x1
    ((2, 3, 4, 5, 6), (1, 1, 1), (1, 1, 1), ((0, 0),) * 3, 7),
]


@pytest.mark.parametrize("shape,ksize,strides,padding,cout", DENSE_CASES)
def test_dense_conv_matmul_form_matches_lax(shape, ksize, strides, padding, cout):
    rng = np.random.default_rng(3)
    x = jnp.asarray(rng.standard_normal(shape), jnp.float32)
    w = jnp.asarray(rng.standard_normal(ksize + (shape[-1], cout)), jnp.float32)
    b = jnp.asarray(rng.standard_normal(cout), jnp.float32)

    def run(impl):
        f = lambda x, w, b: conv3d(x, w, b, strides=strides, padding=padding, impl=impl)
        y, pullback = jax.vjp(f, x, w, b)
        cot = jnp.asarray(np.random.default_rng(4).standard_normal(y.shape), jnp.float32)
        return y, pullback(cot)

    (y_ref, g_ref), (y, g) = run("lax"), run("auto")
    chex.assert_equal_shape([y, y_ref])
    chex.assert_trees_all_close(y, y_ref, rtol=1e-5, atol=1e-5)
    chex.assert_trees_all_close(g, g_ref, rtol=1e-5, atol=1e-4)
