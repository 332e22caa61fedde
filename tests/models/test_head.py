"""CoReEcho's MLP head against a numpy transcription of the torch nn.Sequential, loaded by torch keys."""

import math

import chex
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from configs import echonet
from coreecho_jax.checkpoints.key_map import load_head_weights
from coreecho_jax.models.head import ClassificationHead, RegressionHead
from coreecho_jax.models.rngs import make_rngs

DIM = 16
#: The official head (dropout 0.4, output bias 55.6 % EF): facts of the paper config, not of the model code.
_MODEL = echonet.get_config().model
OFFICIAL = {"dropout": _MODEL.head_dropout, "out_bias_init": _MODEL.head_bias_init}


def _torch_regressor_state(seed=0, dim=DIM):
    """A random state_dict with the keys and shapes of get_shallow_mlp_head(dim, 1)."""
    rng = np.random.default_rng(seed)
    f = lambda *s: rng.standard_normal(s).astype(np.float32)
    state = {}
    for i in (0, 3):
        state[f"{i}.weight"] = 1 + 0.2 * f(dim)
        state[f"{i}.bias"] = 0.1 * f(dim)
        state[f"{i}.running_mean"] = 0.3 * f(dim)
        state[f"{i}.running_var"] = rng.uniform(0.5, 2.0, dim).astype(np.float32)
        state[f"{i}.num_batches_tracked"] = np.array(3000, np.int64)
    state["2.weight"], state["2.bias"] = f(dim, dim) / math.sqrt(dim), 0.1 * f(dim)
    state["6.weight"], state["6.bias"] = f(1, dim) / math.sqrt(dim), np.array([55.85], np.float32)
    return state


def _erf(x):
    return np.vectorize(math.erf)(x)


def _numpy_regressor_eval(state, z):
    def bn(x, i):
        return (x - state[f"{i}.running_mean"]) / np.sqrt(state[f"{i}.running_var"] + 1e-5) * state[
            f"{i}.weight"
        ] + state[f"{i}.bias"]

    h = bn(z, 0) @ state["2.weight"].T + state["2.bias"]
    h = bn(h, 3)
    h = 0.5 * h * (1 + _erf(h / math.sqrt(2)))
    return (h @ state["6.weight"].T + state["6.bias"])[:, 0]


def test_eval_forward_matches_torch_sequential():
    state = _torch_regressor_state()
    head = RegressionHead(DIM, **OFFICIAL, rngs=make_rngs(0))
    report = load_head_weights(head, state)
    assert report.ignored == ("0.num_batches_tracked", "3.num_batches_tracked")
    head.eval()
    z = np.random.default_rng(1).standard_normal((5, DIM)).astype(np.float32)
    out = nnx.jit(lambda h, z: h(z))(head, z)
    chex.assert_shape(out, (5,))
    np.testing.assert_allclose(out, _numpy_regressor_eval(state, z.astype(np.float64)), rtol=1e-5, atol=1e-4)


def test_train_mode_uses_batch_statistics_and_dropout():
    head = RegressionHead(DIM, dropout=0.0, out_bias_init=55.6, rngs=make_rngs(0))
    head.train()
    z = np.random.default_rng(2).standard_normal((8, DIM)) * 3 + 1
    head(jnp.asarray(z, jnp.float32))
    m, v = z.mean(0), z.var(0)
    np.testing.assert_allclose(head.norm1.mean[...], 0.1 * m, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(head.norm1.var[...], 0.9 + 0.1 * v * 8 / 7, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        head(jnp.zeros((1, DIM)))
    noisy = RegressionHead(DIM, **OFFICIAL, rngs=make_rngs(0))  # dropout 0.4
    noisy.train()
    zz = jnp.asarray(z, jnp.float32)
    assert not np.allclose(noisy(zz), noisy(zz))
    noisy.eval()
    chex.assert_trees_all_equal(noisy(zz), noisy(zz))


def test_init_matches_torch_defaults():
    head = RegressionHead(512, **OFFICIAL, rngs=make_rngs(0))  # the paper config's head
    np.testing.assert_array_equal(head.fc2.bias[...], np.float32([55.6]))
    bound = 1 / math.sqrt(512)
    for w in (head.fc1.kernel[...], head.fc1.bias[...], head.fc2.kernel[...]):
        assert np.abs(w).max() <= bound and np.abs(w).max() > 0.9 * bound
    chex.assert_shape([head.fc1.kernel, head.fc2.kernel], [(512, 512), (512, 1)])
    np.testing.assert_array_equal(head.norm1.scale[...], np.ones(512))
    np.testing.assert_array_equal(head.norm2.var[...], np.ones(512))
    assert head.drop1.rate == head.drop2.rate == 0.4


def test_classification_head_and_multi_output():
    cls = ClassificationHead(DIM, dropout=0.4, rngs=make_rngs(0))
    np.testing.assert_array_equal(cls.fc2.bias[...], [0.0])
    cls.eval()
    chex.assert_shape(cls(jnp.ones((3, DIM))), (3,))
    multi = RegressionHead(DIM, num_outputs=3, dropout=0.4, out_bias_init=None, rngs=make_rngs(0))
    multi.eval()
    chex.assert_shape(multi(jnp.ones((3, DIM))), (3, 3))
    assert np.all(np.abs(multi.fc2.bias[...]) <= 1 / math.sqrt(DIM))
    with pytest.raises(ValueError, match=r"embeddings \[B, 16\]"):
        multi(jnp.ones((3, DIM + 1)))
