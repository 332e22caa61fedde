"""UniFormer parity with the official PyTorch model (tests/fixtures/uniformer) and the full-size key list."""

import json

import jax
import numpy as np
import pytest
from flax import nnx

from coreecho_jax.checkpoints.key_map import load_uniformer_weights, torch_state_shapes
from coreecho_jax.models.rngs import make_rngs
from coreecho_jax.models.uniformer import UniFormer, count_params, uniformer_config
from tests.paths import FIXTURES

UNIFORMER = FIXTURES / "uniformer"
STAGE_KEYS = [f"patch_embed{i}" for i in range(1, 5)] + [f"stage{i}" for i in range(1, 5)] + ["final_norm"]


@pytest.fixture(scope="module")
def fixture_state():
    with np.load(UNIFORMER / "small_d1121_state.npz") as f:
        return {k: f[k] for k in f.files}


@pytest.fixture(scope="module")
def fixture_io():
    with np.load(UNIFORMER / "small_d1121_io.npz") as f:
        return {k: f[k] for k in f.files}


def _assert_close_to_ref(name, got, ref):
    got = np.asarray(got)
    assert got.shape == ref.shape, (name, got.shape, ref.shape)
    err = np.max(np.abs(got - ref))
    scale = np.max(np.abs(ref))
    assert err <= 1e-5 * scale, f"{name}: max|port - ref| = {err:.3g} > 1e-5 * {scale:.3g}"


@pytest.mark.parametrize("impl", ["lax", "shifted", "shifted_autodiff"])
def test_fixture_parity_every_tensor(impl, fixture_state, fixture_io):
    meta = json.loads((UNIFORMER / "small_d1121.json").read_text())
    cfg = uniformer_config("small_d1121", depthwise=impl)
    assert list(cfg.depth) == meta["constructor"]["depth"]
    assert list(cfg.dims) == meta["constructor"]["embed_dim"]
    assert cfg.num_classes == meta["constructor"]["num_classes"]
    assert list(cfg.num_heads) == meta["num_heads_per_stage"]

    model = UniFormer(cfg, rngs=make_rngs(0))
    report = load_uniformer_weights(model, fixture_state)
    assert set(report.loaded) | set(report.ignored) == set(fixture_state)
    assert all(k.endswith("num_batches_tracked") for k in report.ignored)
    model.eval()

    @nnx.jit
    def forward(model, x):
        pooled, feats = model(x, return_features=True)
        return pooled, feats, model.logits(pooled)

    x = fixture_io["input"].transpose(0, 2, 3, 4, 1)  # NCTHW -> NTHWC
    pooled, feats, logits = forward(model, x)
    assert set(feats) == set(STAGE_KEYS)
    for key in STAGE_KEYS:
        _assert_close_to_ref(key, feats[key], fixture_io[key].transpose(0, 2, 3, 4, 1))
    _assert_close_to_ref("pooled", pooled, fixture_io["pooled"])
    _assert_close_to_ref("output", logits, fixture_io["output"])


def test_full_small_model_has_the_torch_keys_and_shapes():
    expected = json.loads((UNIFORMER / "uniformer_small_keys.json").read_text())
    assert len(expected) == 331
    # CoReEcho's backbone keeps a Linear(512, 1) head: num_classes=1 reproduces its state_dict.
    model = nnx.eval_shape(lambda: UniFormer(uniformer_config("small", num_classes=1), rngs=nnx.Rngs(0)))
    shapes = torch_state_shapes(model)
    assert set(shapes) == set(expected)
    mismatched = {k: (shapes[k], tuple(v)) for k, v in expected.items() if tuple(v) != shapes[k]}
    assert not mismatched
    assert count_params(model) == 21_195_713
    k400 = nnx.eval_shape(lambda: UniFormer(uniformer_config("small", num_classes=400), rngs=nnx.Rngs(0)))
    assert count_params(k400) == 21_400_400
    assert all(isinstance(leaf, jax.ShapeDtypeStruct) for leaf in jax.tree.leaves(nnx.state(k400)))
