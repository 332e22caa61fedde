"""UniFormer behaviour: configs, shapes, train/eval mode (BatchNorm statistics, dropout), switches."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from coreecho_jax.models.layers import BatchNorm, Dropout, DropPath, hash_bernoulli
from coreecho_jax.models.rngs import make_rngs
from coreecho_jax.models.uniformer import (
    PRESETS,
    Attention,
    UniFormer,
    UniFormerConfig,
    attention_core,
    resolve_attention,
    stage_shapes,
    uniformer_config,
)

SMALL_DIMS = dict(dims=(8, 16, 32, 64), head_dim=16)
CLIP = (2, 4, 32, 32, 3)


def _clip(seed=0, shape=CLIP):
    return jnp.asarray(np.random.default_rng(seed).standard_normal(shape), jnp.float32)


def _model(seed=0, **overrides):
    cfg = uniformer_config("tiny", **{**SMALL_DIMS, **overrides})
    return UniFormer(cfg, rngs=make_rngs(seed))


def test_presets_match_the_official_factories():
    small = uniformer_config("small")
    assert (small.depth, small.dims, small.head_dim, small.dropout, small.drop_path) == (
        (3, 4, 8, 3),
        (64, 128, 320, 512),
        64,
        0.1,
        0.0,
    )
    assert small.num_heads == (1, 2, 5, 8)
    assert small.num_classes is None and small.dtype == "float32" and not small.remat
    base = uniformer_config("base")
    assert (base.depth, base.dims, base.dropout) == ((5, 8, 20, 7), (64, 128, 320, 512), 0.3)
    tiny = uniformer_config("tiny")
    assert (tiny.depth, tiny.dims, tiny.head_dim, tiny.num_heads) == (
        (1, 1, 1, 1),
        (16, 32, 64, 128),
        16,
        (1, 2, 4, 8),
    )
    assert uniformer_config("small_d1121").depth == (1, 1, 2, 1)
    assert uniformer_config("small", dtype="bfloat16", remat=True).compute_dtype == jnp.bfloat16
    assert set(PRESETS) == {"small", "base", "tiny", "small_d1121"}


def test_config_validation_errors():
    with pytest.raises(ValueError, match="unknown UniFormer preset 'large'"):
        uniformer_config("large")
    with pytest.raises(ValueError, match=r"unknown UniFormerConfig fields \['width'\]"):
        uniformer_config("small", width=3)
    with pytest.raises(ValueError, match="dim 320 is not divisible by head_dim 48"):
        UniFormerConfig(head_dim=48)
    with pytest.raises(ValueError, match="dtype must be one of"):
        UniFormerConfig(dtype="float16")
    with pytest.raises(ValueError, match="depthwise must be one of"):
        UniFormerConfig(depthwise="cudnn")
    with pytest.raises(ValueError, match="4 stages"):
        UniFormerConfig(depth=(1, 1, 1))


def test_stage_shapes_for_coreecho_clips():
    # UniFormer-S stage shapes: -> [18,28,28,64] -> [18,14,14,128] -> [18,7,7,320] -> [18,3,3,512]
    assert stage_shapes(uniformer_config("small"), 36, 112, 112) == [
        (18, 28, 28, 64),
        (18, 14, 14, 128),
        (18, 7, 7, 320),
        (18, 3, 3, 512),
    ]


def test_output_and_feature_shapes():
    model = _model()
    model.eval()
    x = _clip(shape=(2, 5, 36, 44, 3))  # odd T, H and W not powers of two
    pooled, feats = nnx.jit(lambda m, x: m(x, return_features=True))(model, x)
    chex.assert_shape(pooled, (2, 64))
    chex.assert_type(pooled, jnp.float32)
    expected = stage_shapes(model.config, 5, 36, 44)
    for i, (t, h, w, c) in enumerate(expected, start=1):
        chex.assert_shape([feats[f"patch_embed{i}"], feats[f"stage{i}"]], (2, t, h, w, c))
    chex.assert_shape(feats["final_norm"], (2,) + expected[-1])
    np.testing.assert_allclose(pooled, feats["final_norm"].mean(axis=(1, 2, 3)), rtol=1e-6, atol=1e-6)
    chex.assert_tree_all_finite(pooled)
    with pytest.raises(ValueError, match="no classifier head"):
        model.logits(pooled)


def test_logits_with_classifier():
    model = _model(num_classes=7)
    model.eval()
    logits = nnx.jit(lambda m, x: m.logits(m(x)))(model, _clip())
    chex.assert_shape(logits, (2, 7))


def test_input_validation():
    model = _model()
    with pytest.raises(ValueError, match=r"channels-last clips \[B, T, H, W, 3\]"):
        model(jnp.zeros((2, 3, 4, 32, 32)))
    with pytest.raises(ValueError, match="at least 1 frame and 32x32"):
        model(jnp.zeros((1, 2, 16, 16, 3)))


def test_train_mode_updates_final_batchnorm_like_torch():
    model = _model(dropout=0.0)
    model.train()
    x = _clip(1)
    _, feats = nnx.jit(lambda m, x: m(x, return_features=True))(model, x)  # nnx.jit must keep BN updates
    s4 = np.asarray(feats["stage4"], np.float64)
    mean = s4.mean(axis=(0, 1, 2, 3))
    var_biased = s4.var(axis=(0, 1, 2, 3))
    n = np.prod(s4.shape[:-1])
    # torch momentum 0.1 from the initial (0, 1): running_var uses the unbiased batch variance
    np.testing.assert_allclose(model.norm.mean[...], 0.1 * mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        model.norm.var[...], 0.9 + 0.1 * var_biased * n / (n - 1), rtol=1e-5, atol=1e-6
    )
    # the output is normalised with the biased batch variance (scale 1, bias 0 at init)
    np.testing.assert_allclose(
        feats["final_norm"], (s4 - mean) / np.sqrt(var_biased + 1e-5), rtol=1e-4, atol=1e-4
    )
    # every BatchNorm moved away from its initial statistics; eval mode leaves them alone
    stats = nnx.state(model, nnx.BatchStat)
    assert all(np.any(np.asarray(v) != 0.0) for k, v in nnx.to_flat_state(stats) if k[-1] == "mean")
    model.eval()
    before = jax.tree.map(np.asarray, nnx.state(model, nnx.BatchStat))
    nnx.jit(lambda m, x: m(x))(model, x)
    chex.assert_trees_all_equal(before, jax.tree.map(np.asarray, nnx.state(model, nnx.BatchStat)))


def test_batchnorm_matches_numpy_torch_semantics():
    rng = np.random.default_rng(5)
    bn = BatchNorm(6)
    bn.scale.set_value(jnp.asarray(rng.uniform(0.5, 1.5, 6), jnp.float32))
    bn.bias.set_value(jnp.asarray(rng.standard_normal(6), jnp.float32))
    flax_like = BatchNorm(6, unbiased_running_var=False)
    run_mean, run_var, run_var_b = np.zeros(6), np.ones(6), np.ones(6)
    for _ in range(2):
        x = rng.standard_normal((3, 2, 4, 6)) * 2 + 1
        y = bn(jnp.asarray(x, jnp.float32))
        flax_like(jnp.asarray(x, jnp.float32))
        m, v = x.mean(axis=(0, 1, 2)), x.var(axis=(0, 1, 2))
        n = 3 * 2 * 4
        np.testing.assert_allclose(
            y, (x - m) / np.sqrt(v + 1e-5) * bn.scale[...] + bn.bias[...], rtol=1e-5, atol=1e-5
        )
        run_mean = 0.9 * run_mean + 0.1 * m
        run_var = 0.9 * run_var + 0.1 * v * n / (n - 1)
        run_var_b = 0.9 * run_var_b + 0.1 * v
        np.testing.assert_allclose(bn.mean[...], run_mean, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(bn.var[...], run_var, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(flax_like.var[...], run_var_b, rtol=1e-5, atol=1e-6)
    bn.eval()
    x = rng.standard_normal((4, 6))
    np.testing.assert_allclose(
        bn(jnp.asarray(x, jnp.float32)),
        (x - run_mean) / np.sqrt(run_var + 1e-5) * bn.scale[...] + bn.bias[...],
        rtol=1e-5,
        atol=1e-5,
    )
    np.testing.assert_allclose(bn.var[...], run_var, rtol=1e-5)  # unchanged in eval mode
    assert nnx.view(bn, use_running_average=False).use_running_average is False
    bn.train()
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        bn(jnp.zeros((1, 6)))
    with pytest.raises(ValueError, match="expects 6 channels"):
        bn(jnp.zeros((4, 5)))


def test_dropout_is_active_in_train_mode_only():
    model = _model(dropout=0.3)
    x = _clip(2)
    forward = nnx.jit(lambda m, x: m(x))
    model.train()
    a, b = forward(model, x), forward(model, x)
    assert np.max(np.abs(np.asarray(a) - np.asarray(b))) > 1e-3
    model.eval()
    c, d = forward(model, x), forward(model, x)
    chex.assert_trees_all_equal(c, d)
    model.train()
    view = nnx.view(model, deterministic=True, use_running_average=True)
    chex.assert_trees_all_close(forward(view, x), c, rtol=1e-6, atol=1e-6)


def test_drop_path_per_sample_and_linear_rates():
    dp = DropPath(0.5, rngs=make_rngs(3))
    x = jnp.ones((64, 2, 3))
    y = np.asarray(dp(x))
    per_sample = y.reshape(64, -1)
    assert set(np.unique(per_sample)) <= {0.0, 2.0}
    assert np.all(per_sample == per_sample[:, :1])  # whole samples kept or dropped
    assert 0 < (per_sample[:, 0] == 0).sum() < 64
    dp.eval()
    chex.assert_trees_all_equal(dp(x), x)
    model = _model(drop_path=0.2)
    blocks = [*model.blocks1, *model.blocks2, *model.blocks3, *model.blocks4]
    np.testing.assert_allclose([b.drop_path.rate for b in blocks], np.linspace(0, 0.2, 4))


def _mean_square(model, x):
    return jnp.mean(model(x) ** 2)


def _copy_params(src, dst):
    nnx.update(dst, nnx.state(src, nnx.Param))


def test_bfloat16_switch_stays_close_to_float32():
    f32 = _model(dropout=0.0)
    bf16 = _model(dropout=0.0, dtype="bfloat16")
    _copy_params(f32, bf16)
    f32.eval()
    bf16.eval()
    assert all(v.dtype == jnp.float32 for v in jax.tree.leaves(nnx.state(bf16, nnx.Param)))
    x = _clip(3)
    ref = nnx.jit(lambda m, x: m(x))(f32, x)
    got, feats = nnx.jit(lambda m, x: m(x, return_features=True))(bf16, x)
    assert feats["stage1"].dtype == jnp.bfloat16
    chex.assert_type(got, jnp.float32)
    rel = np.max(np.abs(np.asarray(got) - np.asarray(ref))) / np.max(np.abs(np.asarray(ref)))
    assert rel < 5e-2, rel


def test_remat_gives_the_same_gradients_and_statistics():
    # depthwise='lax' compiles faster here; remat does not depend on the depthwise implementation
    plain = _model(dropout=0.1, drop_path=0.1, depthwise="lax")
    remat = _model(dropout=0.1, drop_path=0.1, depthwise="lax", remat=True)
    _copy_params(plain, remat)
    x = _clip(4)
    grad = nnx.jit(nnx.grad(_mean_square))
    plain.train()
    remat.train()
    g_plain, g_remat = grad(plain, x), grad(remat, x)
    chex.assert_trees_all_close(g_remat, g_plain, rtol=1e-5, atol=1e-7)
    assert any(np.any(np.asarray(v) != 0) for v in jax.tree.leaves(g_plain))
    chex.assert_trees_all_close(nnx.state(remat, nnx.BatchStat), nnx.state(plain, nnx.BatchStat), rtol=1e-6)


@pytest.mark.parametrize("scale", [1.0, 0.3])
def test_attention_core_custom_vjp_matches_autodiff(scale):
    rng = np.random.default_rng(6)
    q, k, v = (jnp.asarray(rng.standard_normal((2, 3, 11, 8)), jnp.float32) for _ in range(3))

    def reference(q, k, v):
        p = jax.nn.softmax(jnp.einsum("bhqd,bhkd->bhqk", q, k) * scale, axis=-1)
        return jnp.einsum("bhqk,bhkd->bhqd", p, v)

    cot = jnp.asarray(rng.standard_normal((2, 3, 11, 8)), jnp.float32)
    out, pull = jax.vjp(lambda *a: attention_core(*a, scale), q, k, v)
    ref_out, ref_pull = jax.vjp(reference, q, k, v)
    chex.assert_trees_all_close(out, ref_out, rtol=1e-5, atol=1e-6)
    chex.assert_trees_all_close(pull(cot), ref_pull(cot), rtol=1e-5, atol=1e-5)


def test_attention_implementations_compute_the_same_model():
    """'xla' (jax.nn.dot_product_attention) and 'einsum' (attention_core): same outputs and gradients."""
    einsum = _model(dropout=0.0, depthwise="lax", attention="einsum")
    xla = _model(dropout=0.0, depthwise="lax", attention="xla")
    _copy_params(einsum, xla)
    for model, impl in ((einsum, "einsum"), (xla, "xla")):
        assert {m.impl for _, m in nnx.iter_modules(model) if isinstance(m, Attention)} == {impl}
    x = _clip(5)
    step = nnx.jit(nnx.value_and_grad(_mean_square))
    einsum.train()
    xla.train()
    (l_e, g_e), (l_x, g_x) = step(einsum, x), step(xla, x)
    np.testing.assert_allclose(l_x, l_e, rtol=1e-5)
    chex.assert_trees_all_close(g_x, g_e, rtol=1e-4, atol=1e-6)
    assert any(np.any(np.asarray(v) != 0) for v in jax.tree.leaves(g_e))


def test_attention_choice_by_backend_and_dtype():
    bf16, f32 = jnp.bfloat16, jnp.float32
    assert resolve_attention("auto", f32, 64, backend="cpu") == "einsum"
    assert resolve_attention("auto", bf16, 64, backend="cpu") == "einsum"
    assert resolve_attention("auto", bf16, 64, backend="gpu") == "cudnn"
    assert resolve_attention("auto", f32, 64, backend="gpu") == "xla"
    assert resolve_attention("auto", bf16, 12, backend="gpu") == "xla"  # not a multiple of 8
    assert resolve_attention("xla", f32, 64, backend="cpu") == "xla"
    assert resolve_attention("cudnn", bf16, 64, backend="gpu") == "cudnn"
    with pytest.raises(ValueError, match="needs a CUDA GPU"):
        resolve_attention("cudnn", bf16, 64, backend="cpu")
    with pytest.raises(ValueError, match="bfloat16"):
        resolve_attention("cudnn", f32, 64, backend="gpu")
    with pytest.raises(ValueError, match="attention must be one of"):
        uniformer_config("tiny", attention="flash")


def test_hash_dropout_masks():
    keep = 0.9
    key = jax.random.key(11)
    mask = np.asarray(hash_bernoulli(key, keep, (1000, 1000)))
    assert abs(mask.mean() - keep) < 2e-3  # binomial sd 3e-4
    assert abs(mask[:, :500].mean() - mask[:, 500:].mean()) < 4e-3  # no drift along the index
    np.testing.assert_array_equal(mask, np.asarray(hash_bernoulli(key, keep, (1000, 1000))))
    other = np.asarray(hash_bernoulli(jax.random.key(12), keep, (1000, 1000)))
    assert abs((mask == other).mean() - (keep**2 + (1 - keep) ** 2)) < 3e-3  # independent masks
    np.testing.assert_array_equal(
        np.asarray(hash_bernoulli(jax.random.key(11, impl="rbg"), 0.0, (5,))), False
    )


@pytest.mark.parametrize("rng", ["hash", "jax"])
def test_dropout_module(rng):
    drop = Dropout(0.25, rng=rng, rngs=make_rngs(0))
    x = jnp.ones((400, 50))
    y1, y2 = np.asarray(drop(x)), np.asarray(drop(x))
    assert set(np.unique(y1)) == {0.0, np.float32(1 / 0.75)}
    assert abs((y1 == 0).mean() - 0.25) < 0.02
    assert not np.array_equal(y1, y2)  # each call draws a new key
    drop.eval()
    chex.assert_trees_all_equal(drop(x), x)
    with pytest.raises(ValueError, match="dropout rng must be one of"):
        Dropout(0.1, rng="philox", rngs=make_rngs(0))
