"""CoReEcho = UniFormer encoder + regression head: stop-gradient, outputs, build_coreecho."""

import chex
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx

from coreecho_jax.models.coreecho import CoReEcho, build_coreecho
from coreecho_jax.models.uniformer import uniformer_config

# A small model that compiles quickly; depthwise='lax' because only the wiring is under test here.
SMALL = dict(preset="tiny", dims=(8, 16, 32, 64), head_dim=16, depthwise="lax", seed=3)
SMALL.update(head_dropout=0.4, head_bias_init=55.6)  # the official head (configs/echonet.py)
CLIP = (4, 4, 32, 32, 3)


def _clip(seed=0):
    return jnp.asarray(np.random.default_rng(seed).standard_normal(CLIP), jnp.float32)


def _encoder_and_head_grads(model, x, y, detach):
    def loss(model):
        pred, _ = model(x, detach_embedding=detach)
        return jnp.mean(jnp.abs(pred - y))

    grads = nnx.jit(nnx.grad(loss))(model)
    return grads["encoder"], grads["head"]


def test_stop_gradient_between_encoder_and_head():
    model = build_coreecho(SMALL)
    model.train()
    x, y = _clip(1), jnp.asarray([40.0, 55.0, 60.0, 70.0])
    enc, head = _encoder_and_head_grads(model, x, y, detach=True)
    assert all(np.all(np.asarray(g) == 0.0) for g in jax.tree.leaves(enc))
    assert any(np.any(np.asarray(g) != 0.0) for g in jax.tree.leaves(head))
    enc, head = _encoder_and_head_grads(model, x, y, detach=False)
    assert any(np.any(np.asarray(g) != 0.0) for g in jax.tree.leaves(enc))
    assert any(np.any(np.asarray(g) != 0.0) for g in jax.tree.leaves(head))


def test_outputs_and_head_init():
    model = build_coreecho(SMALL)
    model.eval()
    pred, emb = nnx.jit(lambda m, x: m(x))(model, _clip())
    chex.assert_shape(pred, (4,))
    chex.assert_shape(emb, (4, 64))
    chex.assert_type([pred, emb], jnp.float32)
    np.testing.assert_array_equal(model.head.fc2.bias[...], np.float32([55.6]))
    assert model.encoder.head is None and model.encoder.config.num_classes is None


def test_build_coreecho_from_dict_and_configdict():
    cfg = ml_collections.ConfigDict(
        dict(
            SMALL,
            dropout=0.2,
            head_dropout=0.3,
            head_bias_init=50.0,
            dtype="bfloat16",
            remat=True,
            unbiased_running_var=False,
        )
    )
    model = build_coreecho(cfg)
    enc = model.encoder.config
    assert (enc.dims, enc.depth, enc.head_dim, enc.dropout, enc.dtype, enc.remat, enc.depthwise) == (
        (8, 16, 32, 64),
        (1, 1, 1, 1),
        16,
        0.2,
        "bfloat16",
        True,
        "lax",
    )
    assert model.head.drop1.rate == 0.3 and model.head.drop2.rate == 0.3
    bns = [model.encoder.norm, model.encoder.blocks1[0].norm1, model.head.norm1, model.head.norm2]
    assert not any(bn.unbiased_running_var for bn in bns)
    assert build_coreecho(SMALL).encoder.norm.unbiased_running_var
    np.testing.assert_array_equal(model.head.fc2.bias[...], [50.0])
    # the same seed gives the same parameters; another seed does not
    a, b = build_coreecho(SMALL), build_coreecho(SMALL)
    chex.assert_trees_all_equal(nnx.state(a, nnx.Param), nnx.state(b, nnx.Param))
    c = build_coreecho(dict(SMALL, seed=4))
    assert not np.array_equal(c.head.fc1.kernel[...], a.head.fc1.kernel[...])
    default = nnx.eval_shape(lambda: build_coreecho({"head_dropout": 0.4, "head_bias_init": 55.6}))
    assert default.encoder.config == uniformer_config("small")
    assert isinstance(default, CoReEcho)


def test_build_coreecho_rejects_unknown_keys():
    with pytest.raises(ValueError, match=r"unknown model config keys \['width'\]"):
        build_coreecho(dict(SMALL, width=3))
    with pytest.raises(ValueError, match=r"lacks \['head_dropout', 'head_bias_init'\]: the head's dropout"):
        build_coreecho({"preset": "tiny"})  # the head's facts come from the config, never a code default
    with pytest.raises(TypeError, match="mapping or ConfigDict"):
        build_coreecho(["preset"])
