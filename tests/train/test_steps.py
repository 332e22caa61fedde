"""Stage-1/2 step functions: the gradient split, in-place state updates, the modes each step fixes,
freezing, buffer donation, dropout reseeding, data parallelism."""

import chex
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
from flax import nnx

from coreecho_jax.checkpoints.manager import model_state_dict
from coreecho_jax.evaluation import steps as eval_steps
from coreecho_jax.losses import rnc
from coreecho_jax.losses.heads import l1_loss
from coreecho_jax.models import rngs as rng_lib
from coreecho_jax.models.coreecho import build_coreecho, build_model
from coreecho_jax.models.head import RegressionHead
from coreecho_jax.train import mesh as mesh_lib
from coreecho_jax.train import steps

SPEC = steps.LossSpec(temperature=1.0, rnc_weight=1.0, implementation="pairwise")


def _model(dropout: float = 0.0):
    return build_coreecho(
        {"preset": "tiny", "dropout": dropout, "head_dropout": dropout, "head_bias_init": 55.6, "seed": 0}
    )


def _batch(b: int = 4, views: int = 2, seed: int = 0):
    rng = np.random.default_rng(seed)
    return {
        "video": jnp.asarray(rng.normal(size=(b, views, 4, 32, 32, 3)), jnp.float32),
        "ef": jnp.asarray(rng.uniform(20, 80, size=(b,)), jnp.float32),
    }


def _grads(model, loss_fn, wrt=nnx.Param):
    return nnx.grad(loss_fn, argnums=nnx.DiffState(0, wrt))(model)


def test_flatten_clips_is_view_major():
    video = jnp.arange(3 * 2).reshape(3, 2, 1) * 1.0
    x, y = steps.flatten_clips(video, jnp.array([10.0, 20.0, 30.0]))
    np.testing.assert_array_equal(x[:, 0], [0, 2, 4, 1, 3, 5])  # view 0 of videos 0..2, then view 1
    np.testing.assert_array_equal(y, [10, 20, 30, 10, 20, 30])


def test_stage1_encoder_gets_only_rnc_gradient_and_head_only_l1():
    model = _model()
    model.train()
    batch = _batch()
    x, y = steps.flatten_clips(batch["video"], batch["ef"])
    total = _grads(model, lambda m: steps.stage1_loss(m, batch["video"], batch["ef"], SPEC)[0])
    rnc_only = _grads(model, lambda m: rnc.rnc_loss(m.encoder(x), y, temperature=1.0))
    l1_only = _grads(model, lambda m: l1_loss(m(x, detach_embedding=True)[0], y))
    chex.assert_trees_all_close(total["encoder"], rnc_only["encoder"], rtol=1e-5, atol=1e-7)
    chex.assert_trees_all_close(total["head"], l1_only["head"], rtol=1e-5, atol=1e-7)
    # L1 alone gives the encoder nothing: the stop-gradient is in place.
    assert all(float(jnp.abs(g).max()) == 0.0 for g in jax.tree_util.tree_leaves(l1_only["encoder"]))


def test_l1_only_ablation_trains_the_encoder_through_l1():
    model = _model()
    model.train()
    batch = _batch()
    spec = steps.LossSpec(rnc_weight=0.0)
    loss, metrics = steps.stage1_loss(model, batch["video"], batch["ef"], spec)
    assert "rnc" not in metrics
    grads = _grads(model, lambda m: steps.stage1_loss(m, batch["video"], batch["ef"], spec)[0])
    assert max(float(jnp.abs(g).max()) for g in jax.tree_util.tree_leaves(grads["encoder"])) > 0


def test_stage1_step_updates_params_batch_stats_and_optimizer_in_place():
    model = _model(dropout=0.1)
    model.eval()  # e.g. left by a validation: the step runs in train mode all the same
    optimizer = steps.make_optimizer(model, 1e-3, 1e-4)
    before = jax.tree_util.tree_map(np.array, model_state_dict(model))
    step = steps.bind(steps.stage1_step, model, optimizer)
    metrics = step(_batch(), SPEC)
    chex.assert_shape(metrics["loss"], ())
    assert np.isfinite(float(metrics["loss"])) and float(metrics["rnc"]) > 0
    after = model_state_dict(model)
    assert int(optimizer.step[...]) == 1
    assert not np.allclose(
        before["encoder"]["patch_embed1"]["proj"]["kernel"],
        after["encoder"]["patch_embed1"]["proj"]["kernel"],
    )
    assert not np.allclose(before["encoder"]["norm"]["mean"], after["encoder"]["norm"]["mean"])
    head_before = jax.tree_util.tree_leaves(before["head"])
    head_after = jax.tree_util.tree_leaves(after["head"])
    assert all(not np.array_equal(a, b) for a, b in zip(head_before, head_after))
    step(_batch(seed=1), SPEC)
    assert int(optimizer.step[...]) == 2


def test_stage1_step_traces_once(monkeypatch):
    traces = []
    original = steps.stage1_loss

    def counting(*args, **kwargs):
        traces.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(steps, "stage1_loss", counting)
    model = _model()
    model.train()
    optimizer = steps.make_optimizer(model, 1e-3, 1e-4)
    step = steps.bind(steps.stage1_step, model, optimizer)
    for seed in range(3):  # a batch shape no other test uses: exactly one trace, then cache hits
        step(_batch(b=6, seed=seed), SPEC)
    assert len(traces) == 1


def test_stage2_freezes_encoder_and_keeps_no_optimizer_state_for_it():
    model = _model(dropout=0.1)
    model.train()  # e.g. a fresh model: the step runs the encoder in eval mode all the same
    optimizer = steps.make_optimizer(model, 1e-3, 1e-4, wrt=steps.HEAD_PARAMS)
    opt_paths = [
        jax.tree_util.keystr(p)
        for p, _ in jax.tree_util.tree_leaves_with_path(nnx.to_pure_dict(nnx.state(optimizer)))
    ]
    assert opt_paths and not any("encoder" in p for p in opt_paths)
    before = jax.tree_util.tree_map(np.array, model_state_dict(model))
    step = steps.bind(steps.stage2_step, model, optimizer)
    for seed in range(2):
        step(_batch(views=1, seed=seed))
    after = model_state_dict(model)
    chex.assert_trees_all_equal(before["encoder"], jax.tree_util.tree_map(np.array, after["encoder"]))
    changed = [
        not np.array_equal(a, b)
        for a, b in zip(jax.tree_util.tree_leaves(before["head"]), jax.tree_util.tree_leaves(after["head"]))
    ]
    assert all(changed)  # every head parameter and head BatchNorm statistic moved


def test_in_modes_sets_and_check_modes_verifies_each_stage():
    model = _model(dropout=0.1)
    model.eval()
    with pytest.raises(RuntimeError, match=r"encoder/.*use_running_average=True"):
        steps.check_modes(model, steps.STAGE1_TRAIN)
    stage2 = steps.in_modes(model, steps.STAGE2_TRAIN)
    assert stage2.encoder.norm.use_running_average and not stage2.head.norm1.use_running_average
    assert stage2.encoder.pos_drop.deterministic and not stage2.head.drop1.deterministic
    assert model.head.norm1.use_running_average  # a view: the model object keeps its own modes
    with pytest.raises(RuntimeError, match=r"head/norm1.use_running_average=False"):
        steps.check_modes(stage2, None)  # None: every module in eval mode


def test_steps_donate_the_model_and_optimizer_buffers():
    model = _model()
    optimizer = steps.make_optimizer(model, 1e-3, 1e-4)
    kernel = model.head.fc1.kernel[...]
    mu = jax.tree_util.tree_leaves(nnx.state(optimizer, nnx.OptState))[0]
    steps.bind(steps.stage1_step, model, optimizer)(_batch(), SPEC)
    assert kernel.is_deleted() and mu.is_deleted()  # updated in place: no second copy of the state
    assert not model.head.fc1.kernel[...].is_deleted()


@pytest.mark.parametrize("impl", ["rbg", "threefry2x32"])
def test_reseed_keeps_the_key_implementation_and_distinct_streams(impl):
    head = RegressionHead(8, dropout=0.5, out_bias_init=55.6, rngs=rng_lib.make_rngs(0, impl=impl))
    head.drop1.rngs()  # advance a counter: reseeding restarts it
    rng_lib.reseed(head, 7)
    keys = [head.drop1.rngs.key[...], head.drop2.rngs.key[...]]
    expected = jax.random.key_impl(jax.random.key(0, impl=impl))
    assert all(jax.random.key_impl(k) == expected for k in keys)
    assert int(head.drop1.rngs.count[...]) == 0
    data = [np.asarray(jax.random.key_data(k)) for k in keys]
    assert not np.array_equal(data[0], data[1])  # two Dropouts of one shape draw different masks
    rng_lib.reseed(head, 7)
    np.testing.assert_array_equal(np.asarray(jax.random.key_data(head.drop1.rngs.key[...])), data[0])
    rng_lib.reseed(head, 8)
    assert not np.array_equal(np.asarray(jax.random.key_data(head.drop1.rngs.key[...])), data[0])


def test_build_model_honours_every_model_switch():
    config = ml_collections.ConfigDict(
        {
            "preset": "tiny",
            "drop_path": 0.2,
            "dropout_rng": "jax",
            "rng_impl": "threefry2x32",
            "unbiased_running_var": False,
            "head_dropout": 0.3,
            "head_bias_init": 50.0,
            "init_from": "",
        }
    )
    model = nnx.eval_shape(lambda: build_model(config, seed=0))  # abstract: nothing is computed
    assert model.head.drop1.rng == "jax" and not model.head.norm1.unbiased_running_var
    assert model.head.drop1.rate == model.head.drop2.rate == 0.3
    assert max(m.rate for _, m in nnx.iter_modules(model) if type(m).__name__ == "DropPath") == pytest.approx(
        0.2
    )
    key = model.head.drop1.rngs.key.get_value()  # abstract: a ShapeDtypeStruct of key dtype
    assert key.dtype == jax.random.key(0, impl="threefry2x32").dtype


def test_predict_step_shapes_and_eval_determinism():
    model = _model(dropout=0.4)
    model.eval()
    video = _batch(b=2, views=3)["video"]
    p1 = eval_steps.predict_step(model, video)
    chex.assert_shape(p1, (2, 3))
    np.testing.assert_array_equal(p1, eval_steps.predict_step(model, video))
    emb = eval_steps.embed_step(model, video)
    chex.assert_shape(emb, (2, 3, 128))


@pytest.mark.skipif(jax.device_count() < 4, reason="needs XLA_FLAGS=--xla_force_host_platform_device_count=4")
def test_stage1_step_on_four_devices_matches_one_device():
    batch = _batch(b=8)
    results = []
    for n in (1, 4):
        model = _model()
        model.train()
        # Plain SGD: the updated parameters are p - lr * g, so they compare the gradients themselves
        # (Adam's first step is lr * sign(g), which turns reduction-order noise in near-zero g into +-lr).
        optimizer = nnx.Optimizer(model, optax.sgd(0.1), wrt=nnx.Param)
        mesh = mesh_lib.make_mesh(n)
        nnx.update(model, mesh_lib.replicate(nnx.state(model), mesh))
        nnx.update(optimizer, mesh_lib.replicate(nnx.state(optimizer), mesh))
        sharded = mesh_lib.shard_batch({k: np.asarray(v) for k, v in batch.items()}, mesh)
        assert len(sharded["video"].sharding.device_set) == n
        metrics = steps.bind(steps.stage1_step, model, optimizer)(sharded, SPEC)
        results.append(
            (
                jax.tree_util.tree_map(np.asarray, metrics),
                jax.tree_util.tree_map(np.asarray, model_state_dict(model)),
            )
        )
    (m1, s1), (m4, s4) = results
    # Same global batch, same BatchNorm statistics and RnC pairs: equal up to float32 reduction order.
    np.testing.assert_allclose(m4["loss"], m1["loss"], rtol=1e-5)
    chex.assert_trees_all_close(s4, s1, rtol=1e-4, atol=1e-6)
