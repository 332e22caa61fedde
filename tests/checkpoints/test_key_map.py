"""The torch -> NNX key map: exhaustive, shape-checked, all-or-nothing; config inference; inverse map."""

import json

import chex
import jax
import numpy as np
import pytest
from flax import nnx

from coreecho_jax.checkpoints.key_map import (
    HEAD_RENAMES,
    KeyMapError,
    export_torch_state,
    infer_uniformer_config,
    load_coreecho_weights,
    load_head_weights,
    load_uniformer_weights,
    torch_state_shapes,
    torch_to_nnx_map,
)
from coreecho_jax.checkpoints.torch_pth import read_state_dicts, strip_module_prefix
from coreecho_jax.errors import CheckpointError
from coreecho_jax.models.coreecho import CoReEcho
from coreecho_jax.models.head import RegressionHead
from coreecho_jax.models.rngs import make_rngs
from coreecho_jax.models.uniformer import UniFormer, uniformer_config
from tests.paths import FIXTURES


@pytest.fixture(scope="module")
def fixture_state():
    with np.load(FIXTURES / "uniformer" / "small_d1121_state.npz") as f:
        return {k: f[k] for k in f.files}


@pytest.fixture(scope="module")
def tiny_keys():
    return json.loads((FIXTURES / "checkpoints" / "tiny_keys.json").read_text())


def _abstract(cfg):
    """The model with shape-only leaves: every test below loads all its weights, so none are drawn."""
    return nnx.eval_shape(lambda: UniFormer(cfg, rngs=make_rngs(0)))


def _random_state(shapes, seed=0):
    rng = np.random.default_rng(seed)
    return {
        k: rng.standard_normal(s).astype(np.float32) if s else np.array(7, np.int64)
        for k, s in shapes.items()
    }


def _params(model):
    return jax.tree.map(np.asarray, nnx.state(model, (nnx.Param, nnx.BatchStat)))


def test_round_trip_reproduces_the_fixture_state(fixture_state):
    model = _abstract(uniformer_config("small_d1121"))
    report = load_uniformer_weights(model, fixture_state)
    exported = export_torch_state(model)
    assert set(exported) == set(report.loaded)
    assert set(fixture_state) - set(exported) == set(report.ignored)
    for k, v in exported.items():
        np.testing.assert_array_equal(v, fixture_state[k], err_msg=k)
    # layouts: Conv3d [out, in/groups, kt, kh, kw] -> [kt, kh, kw, in/groups, out]; Linear transposed
    np.testing.assert_array_equal(
        model.patch_embed1.proj.kernel[...],
        fixture_state["patch_embed1.proj.weight"].transpose(2, 3, 4, 1, 0),
    )
    np.testing.assert_array_equal(
        model.blocks1[0].attn.kernel[...][:, :, :, 0, 5], fixture_state["blocks1.0.attn.weight"][5, 0]
    )
    np.testing.assert_array_equal(
        model.blocks3[1].attn.qkv.kernel[...], fixture_state["blocks3.1.attn.qkv.weight"].T
    )
    np.testing.assert_array_equal(model.norm.var[...], fixture_state["norm.running_var"])


def test_k400_head_is_ignored_without_classifier_and_used_with_it(fixture_state):
    no_head = _abstract(uniformer_config("small_d1121", num_classes=None))
    report = load_uniformer_weights(no_head, fixture_state)
    assert {"head.weight", "head.bias"} <= set(report.ignored)
    with_head = _abstract(uniformer_config("small_d1121"))
    report = load_uniformer_weights(with_head, fixture_state)
    assert {"head.weight", "head.bias"} <= set(report.loaded)
    np.testing.assert_array_equal(with_head.head.kernel[...], fixture_state["head.weight"].T)
    # with an explicit, narrower ignore set the unused head keys are an error
    with pytest.raises(KeyMapError, match=r"unexpected keys \(2\): head.bias, head.weight"):
        load_uniformer_weights(no_head, fixture_state, ignore=frozenset({"*num_batches_tracked"}))


def test_errors_name_keys_and_shapes_and_leave_the_model_untouched(fixture_state):
    model = _abstract(uniformer_config("small_d1121"))
    load_uniformer_weights(model, fixture_state)
    before = _params(model)
    missing = {k: v for k, v in fixture_state.items() if k != "blocks3.1.attn.proj.bias"}
    with pytest.raises(KeyMapError, match=r"missing keys \(1\): blocks3.1.attn.proj.bias"):
        load_uniformer_weights(model, missing)
    bad = dict(fixture_state, **{"blocks2.0.mlp.fc1.weight": np.zeros((512, 128, 1, 1, 2), np.float32)})
    with pytest.raises(
        KeyMapError,
        match=r"blocks2.0.mlp.fc1.weight: .* has \(512, 128, 1, 1, 2\), model expects "
        r"\(512, 128, 1, 1, 1\)",
    ):
        load_uniformer_weights(model, bad)
    extra = dict(
        fixture_state, **{"blocks5.0.norm1.weight": np.zeros(3, np.float32), "pos_embed": np.zeros(1)}
    )
    with pytest.raises(KeyMapError, match=r"unexpected keys \(2\): blocks5.0.norm1.weight, pos_embed"):
        load_uniformer_weights(model, extra)
    ints = dict(fixture_state, **{"norm.bias": fixture_state["norm.bias"].astype(np.int32)})
    with pytest.raises(KeyMapError, match="norm.bias: expected a floating-point array"):
        load_uniformer_weights(model, ints)
    chex.assert_trees_all_equal(_params(model), before)


def test_a_state_of_another_size_is_one_line_with_counts(fixture_state):
    """The small_d1121 state into the tiny model: 88 misshaped and 14 unexpected keys, in one line."""
    model = _abstract(uniformer_config("tiny"))
    with pytest.raises(KeyMapError) as info:
        load_uniformer_weights(model, fixture_state)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(
        "UniFormer state does not fit UniFormer: shape mismatches (88): blocks1.0.attn.bias: UniFormer state "
        "has (64,), model expects (16,) (torch layout; NNX blocks1.0.attn.bias (16,)); "
    )
    assert (
        message.count(": UniFormer state has ") == 5
        and "; ... and 83 more; unexpected keys (14): " in message
    )
    assert message.endswith("blocks3.1.mlp.fc1.bias, ... and 9 more")


def test_every_target_is_set(fixture_state):
    model = _abstract(uniformer_config("small_d1121"))
    targets = torch_to_nnx_map(model)
    n_vars = len(jax.tree.leaves(nnx.state(model, (nnx.Param, nnx.BatchStat))))
    assert len(targets) == n_vars == 104
    load_uniformer_weights(model, fixture_state)
    leaves = jax.tree.leaves(nnx.state(model, (nnx.Param, nnx.BatchStat)))
    assert all(isinstance(leaf, jax.Array) for leaf in leaves)  # no shape-only leaf is left
    for key, target in targets.items():
        np.testing.assert_array_equal(target.to_torch(np.asarray(target.variable[...])), fixture_state[key])


def test_infer_config_from_fixture_and_full_size_keys(fixture_state):
    assert infer_uniformer_config(fixture_state) == uniformer_config("small_d1121")
    keys = json.loads((FIXTURES / "uniformer" / "uniformer_small_keys.json").read_text())
    # zero-copy stand-ins with the full UniFormer-S shapes
    full = {k: np.broadcast_to(np.float32(0), tuple(s)) for k, s in keys.items()}
    assert infer_uniformer_config(full) == uniformer_config("small", num_classes=1)
    assert infer_uniformer_config(full, dropout=0.3, depthwise="lax").dropout == 0.3
    no_head = {k: v for k, v in full.items() if not k.startswith("head.")}
    assert infer_uniformer_config(no_head).num_classes is None


def test_infer_config_errors(fixture_state):
    broken = {k: v for k, v in fixture_state.items() if not k.startswith("patch_embed3.proj.weight")}
    with pytest.raises(KeyMapError, match="key patch_embed3.proj.weight is missing"):
        infer_uniformer_config(broken)
    gap = {k.replace("blocks3.1.", "blocks3.2."): v for k, v in fixture_state.items()}
    with pytest.raises(KeyMapError, match=r"blocks3: expected block indices 0..n-1, found \[0, 2\]"):
        infer_uniformer_config(gap)
    std = dict(fixture_state, **{"patch_embed2.proj.weight": np.zeros((128, 64, 3, 2, 2), np.float32)})
    with pytest.raises(KeyMapError, match=r"patch_embed2.proj.weight has kernel \(3, 2, 2\)"):
        infer_uniformer_config(std)


def test_tiny_checkpoint_key_lists(tiny_keys):
    k400 = {k: tuple(s) for k, s, _ in tiny_keys["tiny_k400_flat.pth"]}
    cfg = infer_uniformer_config({k: np.broadcast_to(np.float32(0), s) for k, s in k400.items()})
    assert cfg == uniformer_config("tiny", num_classes=400)  # head_dim 16: the tiny preset's
    assert torch_state_shapes(_abstract(cfg)) == k400
    model_keys = {k: tuple(s) for k, s, _ in tiny_keys["tiny_coreecho_best.pth:model"]}
    reg_keys = {k: tuple(s) for k, s, _ in tiny_keys["tiny_coreecho_best.pth:regressor"]}
    assert set(strip_module_prefix(model_keys)) == set(k400)
    head = nnx.eval_shape(lambda: RegressionHead(128, dropout=0.4, out_bias_init=55.6, rngs=make_rngs(0)))
    assert torch_state_shapes(head, renames=HEAD_RENAMES) == strip_module_prefix(reg_keys)


def test_load_coreecho_checkpoint_layout(tiny_keys):
    """A CoReEcho best.pth: 'module.'-prefixed backbone (with the dead Linear(128, 1) head) + Sequential regressor."""
    model_state = _random_state({k: tuple(s) for k, s, _ in tiny_keys["tiny_coreecho_best.pth:model"]}, 1)
    reg_state = _random_state({k: tuple(s) for k, s, _ in tiny_keys["tiny_coreecho_best.pth:regressor"]}, 2)
    ckpt = read_state_dicts({"epoch": 1, "model": model_state, "regressor": reg_state})
    model = nnx.eval_shape(
        lambda: CoReEcho(uniformer_config("tiny"), head_dropout=0.4, head_bias_init=55.6, rngs=make_rngs(0))
    )
    enc, head = load_coreecho_weights(model, ckpt.encoder, ckpt.head)
    assert set(enc.ignored) == {"head.weight", "head.bias"} | {k for k in enc.ignored if "num_batches" in k}
    assert head.ignored == ("0.num_batches_tracked", "3.num_batches_tracked")
    np.testing.assert_array_equal(model.head.fc1.kernel[...], reg_state["module.2.weight"].T)
    np.testing.assert_array_equal(model.head.norm2.mean[...], reg_state["module.3.running_mean"])
    np.testing.assert_array_equal(
        model.encoder.blocks4[0].mlp.fc2.bias[...], model_state["module.blocks4.0.mlp.fc2.bias"]
    )
    msg = r"^head state does not fit RegressionHead: missing keys \(2\): 6.bias, 6.weight$"  # one line
    with pytest.raises(KeyMapError, match=msg):
        load_head_weights(model.head, {k: v for k, v in ckpt.head.items() if not k.startswith("6.")})
    assert issubclass(KeyMapError, CheckpointError)
