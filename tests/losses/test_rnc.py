"""Rank-N-Contrast loss: parity with the official code's fixtures, properties, errors, jit and sharding.

Compile time dominates on a 2-core CPU, so the fixture cases are zero-padded to one common shape
(extra samples masked with ``valid``, extra feature columns zero: both leave the loss unchanged, which
``test_padding_*`` checks on its own) and evaluated in one vmapped call per implementation, dtype and
layout.
"""

import functools
import subprocess
import sys

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from coreecho_jax.losses import rnc, rnc_sorted
from tests.paths import FIXTURES, REPO

CASES_FILE = FIXTURES / "rnc" / "rnc_cases.npz"
PAD_N, PAD_D = 16, 32  # every fixture case fits: N <= 16, D <= 32


# ----------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cases():
    if not CASES_FILE.is_file():
        raise FileNotFoundError(f"RnC fixtures missing: {CASES_FILE}")
    data = np.load(CASES_FILE, allow_pickle=False)
    names = [str(c) for c in data["case_names"]]
    out = {}
    for c in names:
        out[c] = {k: data[f"{c}__{k}"] for k in ("features", "labels", "tau", "loss", "grad")}
    return out


def _padded_stack(cases):
    """All cases as ``[C, PAD_N, 2, PAD_D]`` features, ``[C, PAD_N, 1]`` labels, ``[C, PAD_N]`` valid,
    ``[C]`` tau, plus the reference loss ``[C]`` and grads (padded the same way)."""
    feats, labels, valid, tau, loss, grad = [], [], [], [], [], []
    for c in cases.values():
        n, _, d = c["features"].shape
        f = np.zeros((PAD_N, 2, PAD_D))
        f[:n, :, :d] = c["features"]
        g = np.zeros((PAD_N, 2, PAD_D))
        g[:n, :, :d] = c["grad"]
        y = np.full((PAD_N, 1), 50.0)
        y[:n] = c["labels"]
        feats.append(f)
        grad.append(g)
        labels.append(y)
        valid.append(np.arange(PAD_N) < n)
        tau.append(c["tau"])
        loss.append(c["loss"])
    return tuple(np.stack(a) for a in (feats, labels, valid, tau, loss, grad))


def _flat(features, labels, valid):
    """[N, 2, D] -> the documented view-major flat layout."""
    return (
        jnp.concatenate([features[:, 0], features[:, 1]]),
        jnp.concatenate([labels, labels]),
        jnp.concatenate([valid, valid]),
    )


def _loss_fn(implementation, layout):
    """(features [N, 2, D], labels [N, 1], valid [N], tau) -> loss, with the given layout and form."""

    def fn(features, labels, valid, tau):
        if layout == "flat":
            features, labels, valid = _flat(features, labels, valid)
        if implementation in ("pairwise", "sorted", "auto"):
            return rnc.rnc_loss(features, labels, temperature=tau, valid=valid, implementation=implementation)
        x, y, v = rnc.flatten_views(features, labels, valid)
        return rnc._rnc_flat(
            x,
            y,
            v,
            tau,
            similarity="l2",
            label_distance="l1",
            implementation=implementation,
            distance_method="auto",
        )

    return fn


def _check_against_fixtures(cases, implementation, dtype, loss_rtol, grad_rtol, layouts=("official", "flat")):
    """Every case, each layout, one compile (vmap over the padded cases, both layouts in one jit)."""
    feats, labels, valid, tau, ref_loss, ref_grad = _padded_stack(cases)

    def all_layouts(*args):
        return [jax.vmap(jax.value_and_grad(_loss_fn(implementation, layout)))(*args) for layout in layouts]

    results = jax.jit(all_layouts)(
        jnp.asarray(feats, dtype), jnp.asarray(labels, dtype), jnp.asarray(valid), jnp.asarray(tau, dtype)
    )
    for layout, (loss, grad) in zip(layouts, results):
        assert loss.dtype == dtype and grad.dtype == dtype
        for k, name in enumerate(cases):
            msg = f"{name} ({layout} layout, {implementation}, {np.dtype(dtype).name})"
            np.testing.assert_allclose(float(loss[k]), ref_loss[k], rtol=loss_rtol, err_msg=f"loss of {msg}")
            scale = np.abs(ref_grad[k]).max()
            np.testing.assert_allclose(
                np.asarray(grad[k], np.float64),
                ref_grad[k],
                rtol=0,
                atol=grad_rtol * scale,
                err_msg=f"grad of {msg}",
            )


def _reference_numpy(x, y, valid, tau, similarity="l2", label_distance="l1"):
    """Brute-force RnC loss over flat rows, straight from the definition (loops, no tricks): float64
    features, label distances in the labels' own dtype (the tie semantics of the float comparison)."""
    x = np.asarray(x, np.float64)
    y = np.asarray(y).reshape(len(x), -1)
    rows = [i for i in range(len(x)) if valid[i]]

    def sim(a, b):
        if similarity == "l2":
            return -np.linalg.norm(a - b)
        if similarity == "l2_squared":
            return -np.sum((a - b) ** 2)
        return a @ b / (np.linalg.norm(a) * np.linalg.norm(b))

    def dist(a, b):
        return np.abs(a - b).sum() if label_distance == "l1" else np.sqrt(((a - b) ** 2).sum())

    total = 0.0
    for i in rows:
        for m in rows:
            if m == i:
                continue
            denom = [sim(x[i], x[j]) / tau for j in rows if j != i and dist(y[i], y[j]) >= dist(y[i], y[m])]
            top = max(denom)
            total += -(sim(x[i], x[m]) / tau) + top + np.log(np.sum(np.exp(np.array(denom) - top)))
    return total / (len(rows) * (len(rows) - 1))


@functools.cache
def _vg(implementation, similarity="l2", label_distance="l1"):
    """Jitted (x [n, D], y [n, K], valid [n], tau) -> (loss, dloss/dx); cached so tests share compiles."""

    def loss(x, y, valid, tau):
        if implementation in rnc.IMPLEMENTATIONS:
            return rnc.rnc_loss(
                x,
                y,
                valid=valid,
                temperature=tau,
                implementation=implementation,
                feature_similarity=similarity,
                label_distance=label_distance,
            )
        return rnc._rnc_flat(
            x,
            y,
            valid,
            tau,
            similarity=similarity,
            label_distance=label_distance,
            implementation=implementation,
            distance_method="auto",
        )

    return jax.jit(jax.value_and_grad(loss))


N_ROWS, DIM = 24, 8  # the standard flat batch of the property tests


def _standard_batch(seed, n_label_values=5, label_dim=1):
    """Flat ``x [24, 8]``, integer-valued labels ``y [24, label_dim]`` (many ties), ``valid [24]``."""
    kx, ky = jax.random.split(jax.random.key(seed))
    x = jax.random.normal(kx, (N_ROWS, DIM))
    y = jax.random.randint(ky, (N_ROWS, label_dim), 0, n_label_values).astype(jnp.float32) * 2.5 + 20
    return x, y, jnp.ones((N_ROWS,), bool)


def _random_batch(key, n_samples, dim, n_label_values=5, label_dim=1, scale=1.0):
    kf, ky = jax.random.split(key)
    features = scale * jax.random.normal(kf, (n_samples, 2, dim))
    labels = jax.random.randint(ky, (n_samples, label_dim), 0, n_label_values).astype(jnp.float32) * 2.5 + 20
    return features, labels


# ----------------------------------------------------------------------------------------------
# fixtures: official values
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("implementation", ["pairwise", "sorted"])
def test_fixtures_float32(cases, implementation):
    # includes d_large_distances, where the official float32 code returns -inf
    _check_against_fixtures(cases, implementation, jnp.float32, loss_rtol=1e-5, grad_rtol=1e-4)


@pytest.mark.parametrize("implementation", ["pairwise", "sorted"])
def test_fixtures_float64(cases, implementation):
    assert not jax.config.jax_enable_x64
    with jax.enable_x64(True):
        _check_against_fixtures(cases, implementation, jnp.float64, loss_rtol=1e-10, grad_rtol=1e-10)
    assert not jax.config.jax_enable_x64  # restored


def test_fixtures_per_anchor_sort(cases):
    """The per-anchor sort (used for K > 1 labels, and as the large-batch stable fallback)."""
    _check_against_fixtures(
        cases, "sorted_per_anchor", jnp.float32, loss_rtol=1e-5, grad_rtol=1e-4, layouts=("official",)
    )


def test_large_batch_stable_fallback(monkeypatch):
    """Scalar-label sorted form on a row spread too wide for its direct path: above FALLBACK_PAIRWISE_MAX_ROWS
    the fallback is the per-anchor sort. The threshold is lowered so a small batch exercises it (a
    20-row shape no other test uses, so no executable traced with the default is reused)."""
    monkeypatch.setattr(rnc_sorted, "FALLBACK_PAIRWISE_MAX_ROWS", 8)
    x, y, valid = _standard_batch(120)
    x, y, valid = x[:20], y[:20], valid[:20]
    x = x.at[3].multiply(300.0)  # spread >> 60 at tau = 1
    ref_loss, ref_grad = jax.value_and_grad(lambda x: _reference_loss_pairwise(x, y, valid))(x)
    sorted_loss = lambda x: rnc.rnc_loss(x, y, valid=valid, temperature=1.0, implementation="sorted")
    loss, grad = jax.jit(jax.value_and_grad(sorted_loss))(x)
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-6)
    # the 300x row's distance gradients carry float32 rounding of its large norm (~1e-5 relative)
    np.testing.assert_allclose(grad, ref_grad, atol=2e-5 * float(jnp.abs(ref_grad).max()))
    np.testing.assert_allclose(float(loss), _reference_numpy(x, y, np.ones(20, bool), 1.0), rtol=1e-6)


def _reference_loss_pairwise(x, y, valid):
    return rnc._rnc_flat(
        x,
        y,
        valid,
        1.0,
        similarity="l2",
        label_distance="l1",
        implementation="pairwise",
        distance_method="auto",
    )


def test_fixtures_unpadded_and_official_infinity(cases):
    """Each case at its own shape (no padding), with 1-D labels; finite where official float32 is -inf."""
    data = np.load(CASES_FILE, allow_pickle=False)
    assert np.isneginf(data["d_large_distances__official_loss_f32"])  # what the official code does
    for name, c in cases.items():
        f = jnp.asarray(c["features"], jnp.float32)
        loss = rnc.rnc_loss(f, jnp.asarray(c["labels"][:, 0], jnp.float32), temperature=float(c["tau"]))
        np.testing.assert_allclose(float(loss), c["loss"], rtol=1e-5, err_msg=name)


def test_gram_distances_match_fixtures(cases):
    """The matmul (Gram) distance form, used for large batches, also meets the float32 tolerances."""

    def fn(features, labels, valid, tau):
        x, y, v = rnc.flatten_views(features, labels, valid)
        return rnc._rnc_flat(
            x,
            y,
            v,
            tau,
            similarity="l2",
            label_distance="l1",
            implementation="pairwise",
            distance_method="gram",
        )

    feats, labels, valid, tau, ref_loss, ref_grad = _padded_stack(cases)
    loss, grad = jax.jit(jax.vmap(jax.value_and_grad(fn)))(
        jnp.asarray(feats, jnp.float32),
        jnp.asarray(labels, jnp.float32),
        jnp.asarray(valid),
        jnp.asarray(tau, jnp.float32),
    )
    np.testing.assert_allclose(np.asarray(loss), ref_loss, rtol=1e-5)
    for k in range(len(ref_loss)):
        np.testing.assert_allclose(grad[k], ref_grad[k], rtol=0, atol=1e-4 * np.abs(ref_grad[k]).max())


# ----------------------------------------------------------------------------------------------
# properties
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("label_dim", [1, 2])
def test_forms_agree_with_ties_and_padding(label_dim):
    """pairwise == sorted (loss and grad) on integer labels with many ties and masked rows. With
    K = 1 'sorted' is the label-order form, with K = 2 the per-anchor sort."""
    variants = ["sorted"]
    for trial in range(3):
        x, y, _ = _standard_batch(30 + trial, n_label_values=3 + trial, label_dim=label_dim)
        valid = jax.random.uniform(jax.random.key(40 + trial), (N_ROWS,)) > 0.25
        ref_loss, ref_grad = _vg("pairwise")(x, y, valid, 1.0)
        for impl in variants:
            loss, grad = _vg(impl)(x, y, valid, 1.0)
            np.testing.assert_allclose(loss, ref_loss, rtol=2e-6, err_msg=impl)
            np.testing.assert_allclose(
                grad, ref_grad, atol=1e-6 * float(jnp.abs(ref_grad).max()), err_msg=impl
            )
        expected = _reference_numpy(x, y, np.asarray(valid), 1.0)
        np.testing.assert_allclose(float(ref_loss), expected, rtol=2e-6, err_msg="numpy reference")


@pytest.mark.parametrize(
    "wrapper, implementation", [(rnc.rnc_loss_pairwise, "pairwise"), (rnc.rnc_loss_sorted, "sorted")]
)
def test_named_forms_are_rnc_loss(wrapper, implementation):
    """rnc_loss_pairwise / rnc_loss_sorted are rnc_loss with that implementation, bit for bit."""
    x, y, _ = _standard_batch(7, n_label_values=4)
    valid = jnp.arange(N_ROWS) % 5 != 0
    got = wrapper(x, y, temperature=1.5, valid=valid)
    want = rnc.rnc_loss(x, y, temperature=1.5, valid=valid, implementation=implementation)
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))


def test_ties_from_float_rounding():
    """Distinct labels whose float32 distances to an anchor round to the same value are ties in every
    form (as in the official code's float comparison)."""
    merged = [5.0, 5.0000005, 5.000001, 60.0, 60.0, 114.99999, 115.0, 115.00001, 30.0, 90.0]
    y = np.resize(np.array(merged, np.float32), N_ROWS)[:, None]
    d = np.abs(y[3, 0] - y[:3, 0])
    assert len(set(y[:3, 0].tolist())) == 3 and d[0] == d[1] == d[2]  # the premise: merged by rounding
    x, _, valid = _standard_batch(50)
    ref_loss, ref_grad = _vg("pairwise")(x, y, valid, 2.0)
    np.testing.assert_allclose(float(ref_loss), _reference_numpy(x, y, np.ones(N_ROWS, bool), 2.0), rtol=2e-6)
    y2 = np.concatenate([y, np.zeros_like(y)], axis=1)  # K = 2, same L1 distances: per-anchor sort
    for impl, labels in (("sorted", y), ("sorted", y2)):
        loss, grad = _vg(impl)(x, labels, valid, 2.0)
        np.testing.assert_allclose(loss, ref_loss, rtol=1e-6, err_msg=impl)
        np.testing.assert_allclose(grad, ref_grad, atol=1e-6, err_msg=impl)


# ----------------------------------------------------------------------------------------------
# row-blocked evaluation of the sorted form
# ----------------------------------------------------------------------------------------------


def _tied_batch(seed, n_rows, dim, n_label_values, valid_fraction=0.8):
    """Flat ``x [n, dim]``, labels on a coarse grid (many ties, and ties at equal distance on both
    sides of an anchor) and a random ``valid [n]`` mask."""
    kx, ky, kv = jax.random.split(jax.random.key(seed), 3)
    x = jax.random.normal(kx, (n_rows, dim))
    y = jax.random.randint(ky, (n_rows, 1), 0, n_label_values).astype(jnp.float32) * 2.5 + 20
    valid = jax.random.uniform(kv, (n_rows,)) < valid_fraction
    return x, y, valid


@pytest.mark.parametrize("block", [1, 5, 24])
def test_row_blocks_match_full_width_and_pairwise(block):
    """The sorted form evaluated per block of anchor rows (incl. a last partial block) equals the
    all-rows-at-once evaluation and the pairwise form: loss and gradient, with ties and padding."""
    for trial in range(2):
        x, y, valid = _tied_batch(100 + trial, N_ROWS, DIM, n_label_values=3 + 2 * trial)
        want = _vg("pairwise")(x, y, valid, 1.0)
        full = _vg("sorted_label_order@full")(x, y, valid, 1.0)
        got = _vg(f"sorted_label_order@{block}")(x, y, valid, 1.0)
        chex.assert_trees_all_close(got, full, rtol=1e-6, atol=1e-6 * float(jnp.abs(full[1]).max()))
        chex.assert_trees_all_close(got, want, rtol=2e-6, atol=1e-6 * float(jnp.abs(want[1]).max()))


def test_row_blocks_float_rounding_ties_and_fallback():
    """Blocks of 7 rows: ties from float rounding (as ``test_ties_from_float_rounding``) and a row
    spread wide enough to take the exact stable form still match the pairwise form."""
    merged = [5.0, 5.0000005, 5.000001, 60.0, 60.0, 114.99999, 115.0, 115.00001, 30.0, 90.0]
    y = jnp.asarray(np.resize(np.array(merged, np.float32), N_ROWS)[:, None])
    x, _, valid = _standard_batch(50)
    for features in (x, x.at[3].multiply(300.0)):  # the second: spread >> 60 at tau = 1
        want = _vg("pairwise")(features, y, valid, 1.0)
        got = _vg("sorted_label_order@7")(features, y, valid, 1.0)
        chex.assert_trees_all_close(got, want, rtol=1e-6, atol=2e-5 * float(jnp.abs(want[1]).max()))


@pytest.mark.slow
def test_row_blocks_large_batch():
    """2N = 1024 (the default block: 128 anchors, 8 blocks) against the all-rows-at-once form, and
    2N = 256 in blocks of 48 against the pairwise form; labels on a 0.5 grid (EF-like ties)."""
    for n_rows, reference, block in ((1024, "sorted_label_order@full", ""), (256, "pairwise", "@48")):
        kx, ky = jax.random.split(jax.random.key(n_rows))
        x = 0.2 * jax.random.normal(kx, (n_rows, 32))
        y = jnp.round(jax.random.uniform(ky, (n_rows, 1), minval=5.0, maxval=95.0) * 2) / 2
        valid = jnp.arange(n_rows) % 17 != 0
        want = _vg(reference)(x, y, valid, 1.0)
        got = _vg("sorted_label_order" + block)(x, y, valid, 1.0)
        chex.assert_trees_all_close(got, want, rtol=2e-6, atol=1e-6 * float(jnp.abs(want[1]).max()))


@pytest.mark.parametrize(
    "similarity,label_distance,label_dim",
    [("cosine", "l1", 1), ("l2_squared", "l1", 1), ("l2", "l2", 2), ("l2", "l1", 2), ("cosine", "l2", 2)],
)
def test_options_match_definition(similarity, label_distance, label_dim):
    x, y, valid = _standard_batch(60, label_dim=label_dim)
    expected = _reference_numpy(x, y, np.ones(N_ROWS, bool), 2.0, similarity, label_distance)
    # the sorted form shares the similarity code; checking it on two options keeps compiles down
    impls = ("pairwise", "sorted") if (similarity, label_distance) == ("cosine", "l2") else ("pairwise",)
    for impl in impls:
        loss, grad = _vg(impl, similarity, label_distance)(x, y, valid, 2.0)
        np.testing.assert_allclose(float(loss), expected, rtol=2e-6, err_msg=impl)
        assert np.all(np.isfinite(np.asarray(grad)))


@pytest.mark.parametrize("implementation", ["pairwise", "sorted"])
def test_invariances(implementation):
    x, y, valid = _standard_batch(70)
    vg = _vg(implementation)
    base, grad = vg(x, y, valid, 2.0)
    perm = jax.random.permutation(jax.random.key(71), N_ROWS)
    loss_p, grad_p = vg(x[perm], y[perm], valid, 2.0)
    np.testing.assert_allclose(loss_p, base, rtol=1e-6, err_msg="row permutation")
    np.testing.assert_allclose(grad_p, grad[perm], atol=1e-6, err_msg="gradient follows the permutation")
    np.testing.assert_allclose(vg(x, y + 1000.0, valid, 2.0)[0], base, rtol=1e-6, err_msg="label shift")
    shift = 3.0 * jax.random.normal(jax.random.key(72), (DIM,))
    np.testing.assert_allclose(
        vg(x + shift, y, valid, 2.0)[0], base, rtol=1e-5, err_msg="feature translation"
    )


def test_view_major_row_order():
    """[N, 2, D] is flattened view-major: rows 0..N-1 view 0, rows N..2N-1 view 1."""
    features, labels = _random_batch(jax.random.key(6), 5, 4)
    expected = rnc.rnc_loss(features, labels)
    flat = jnp.concatenate([features[:, 0], features[:, 1]])
    np.testing.assert_allclose(rnc.rnc_loss(flat, jnp.concatenate([labels, labels])), expected, rtol=1e-6)
    np.testing.assert_allclose(rnc.rnc_loss(features, labels[:, 0]), expected, rtol=1e-6)  # [N] labels
    x, y, _ = rnc.flatten_views(features, labels)
    np.testing.assert_array_equal(x[3], features[3, 0])
    np.testing.assert_array_equal(x[5 + 3], features[3, 1])
    np.testing.assert_array_equal(y[5 + 3], labels[3])


@pytest.mark.parametrize("implementation", ["pairwise", "sorted"])
def test_gradients_finite(implementation):
    """Identical views, identical samples, huge distances, equal labels: finite loss and gradients."""
    x, y, valid = _standard_batch(80)
    x = x.at[12:].set(x[:12])  # rows i and i + 12 coincide (zero distances), as identical views
    x = x.at[1].set(x[0])  # and two identical samples
    x = x.at[5].multiply(1e4)  # huge distances
    vg = _vg(implementation)
    for tau, labels in ((0.1, y), (2.0, y), (2.0, jnp.full_like(y, 50.0))):
        loss, grad = vg(x, labels, valid, tau)
        assert np.isfinite(float(loss)), tau
        assert np.all(np.isfinite(np.asarray(grad))), tau


@pytest.mark.parametrize("implementation", ["pairwise", "sorted"])
def test_padding_equals_unpadded(implementation):
    x, y, valid = _standard_batch(90)
    y = jnp.concatenate([y[:12], y[:12]])  # rows i and i + 12: two views of sample i
    real = np.r_[0:7, 12:19]  # 7 samples x 2 views (view-major), the other rows are padding
    real_loss, real_grad = _vg("pairwise")(x[real], y[real], jnp.ones(len(real), bool), 2.0)
    valid = jnp.zeros((N_ROWS,), bool).at[real].set(True)
    # padded rows hold garbage (NaN labels, huge features): they must not matter
    pad = ~valid
    x_pad = jnp.where(pad[:, None], 1e6, x)
    y_pad = jnp.where(pad[:, None], jnp.nan, y)
    loss, grad = _vg(implementation)(x_pad, y_pad, valid, 2.0)
    np.testing.assert_allclose(loss, real_loss, rtol=1e-6)
    np.testing.assert_allclose(grad[real], real_grad, atol=1e-7)
    np.testing.assert_array_equal(grad[~np.asarray(valid)], 0.0)
    # [N, 2, D] layout with [N] and [N, 2] masks
    f = jnp.stack([x_pad[:12], x_pad[12:]], axis=1)
    v = valid[:12]
    np.testing.assert_allclose(rnc.rnc_loss(f, y_pad[:12], valid=v), real_loss, rtol=1e-6)
    np.testing.assert_allclose(rnc.rnc_loss(f, y_pad[:12], valid=jnp.stack([v, v], 1)), real_loss, rtol=1e-6)


def test_fewer_than_two_valid_rows_gives_zero():
    features, labels = _random_batch(jax.random.key(10), 4, 3)
    valid = jnp.zeros((8,), bool).at[2].set(True)
    x, y, _ = rnc.flatten_views(features, labels)
    loss, grad = jax.value_and_grad(lambda x: rnc.rnc_loss(x, y, valid=valid))(x)
    assert float(loss) == 0.0 and np.all(np.asarray(grad) == 0.0)


@pytest.mark.parametrize(
    "dtype,implementations", [(jnp.bfloat16, ("pairwise", "sorted")), (jnp.float16, ("pairwise",))]
)
def test_half_precision_inputs(dtype, implementations):
    x, y, valid = _standard_batch(100)
    low = x.astype(dtype)
    expected, _ = _vg("pairwise")(low.astype(jnp.float32), y, valid, 2.0)
    full, _ = _vg("pairwise")(x, y, valid, 2.0)
    for impl in implementations:
        loss, grad = _vg(impl)(low, y, valid, 2.0)
        assert loss.dtype == jnp.float32 and grad.dtype == dtype
        np.testing.assert_allclose(loss, expected, rtol=1e-5, err_msg=impl)  # computed in float32
        np.testing.assert_allclose(loss, full, rtol=2e-2, err_msg=impl)  # close to the float32 loss
        assert np.all(np.isfinite(np.asarray(grad, np.float32)))


def test_bad_inputs_raise_clear_errors():
    f = jnp.zeros((4, 2, 8))
    y = jnp.zeros((4,))
    with pytest.raises(ValueError, match=r"\[N, 2, D\].*or flat \[2N, D\]; got shape \(8,\)"):
        rnc.rnc_loss(jnp.zeros((8,)), y)
    with pytest.raises(ValueError, match=r"axis 1 has 3 views; expected exactly 2"):
        rnc.rnc_loss(jnp.zeros((4, 3, 8)), y)
    with pytest.raises(
        ValueError, match=r"need labels of shape \[N\] or \[N, K\], i.e. \(4,\).*got labels \(8,\)"
    ):
        rnc.rnc_loss(f, jnp.zeros((8,)))
    with pytest.raises(ValueError, match=r"flat features \(8, 8\).*\(8,\) or \(8, K\); got labels \(4, 1\)"):
        rnc.rnc_loss(jnp.zeros((8, 8)), jnp.zeros((4, 1)))
    with pytest.raises(ValueError, match=r"need valid of shape \[N\] = \(4,\) or \[N, 2\]; got valid \(8,\)"):
        rnc.rnc_loss(f, y, valid=jnp.ones((8,), bool))
    with pytest.raises(ValueError, match=r"need valid of shape \[2N\] = \(8,\); got valid \(4,\)"):
        rnc.rnc_loss(jnp.zeros((8, 8)), jnp.zeros((8,)), valid=jnp.ones((4,), bool))
    with pytest.raises(
        ValueError, match=r"implementation='fast' is not one of \('auto', 'pairwise', 'sorted'\)"
    ):
        rnc.rnc_loss(f, y, implementation="fast")
    with pytest.raises(ValueError, match=r"feature_similarity='dot'"):
        rnc.rnc_loss(f, y, feature_similarity="dot")
    with pytest.raises(ValueError, match=r"label_distance='linf'"):
        rnc.rnc_loss(f, y, label_distance="linf")
    with pytest.raises(ValueError, match=r"temperature must be > 0, got 0.0"):
        rnc.rnc_loss(f, y, temperature=0.0)


# ----------------------------------------------------------------------------------------------
# jit, tracing, sharding
# ----------------------------------------------------------------------------------------------


class JitVariantsTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_same_value_with_and_without_jit(self):
        data = np.load(CASES_FILE, allow_pickle=False)
        f = jnp.asarray(data["b_ties__features"], jnp.float32)
        y = jnp.asarray(data["b_ties__labels"], jnp.float32)

        @self.variant
        def loss_fn(f, y):
            return rnc.rnc_loss(f, y, temperature=1.0)

        chex.assert_trees_all_close(loss_fn(f, y), float(data["b_ties__loss"]), rtol=1e-5)


def test_traces_once_for_new_values():
    @jax.jit
    @chex.assert_max_traces(n=1)
    def loss_fn(f, y, tau):
        return rnc.rnc_loss(f, y, temperature=tau)

    for seed, tau in zip(range(3), (1.0, 2.0, 0.5)):
        features, labels = _random_batch(jax.random.key(20 + seed), 6, 4)
        assert np.isfinite(float(loss_fn(features, labels, tau)))
    chex.clear_trace_counter()


@pytest.mark.parametrize(
    "implementation,axis_type",
    [("pairwise", "Explicit"), ("sorted", "Explicit"), ("sorted", "Auto")],
)
def test_sharded_batch_matches_single_device(implementation, axis_type):
    """jax.make_mesh's default (Explicit) axes and the project's Auto axes (coreecho_jax.train.mesh)."""
    assert len(jax.devices()) == 4, "tests/conftest.py sets --xla_force_host_platform_device_count=4"
    mesh = jax.make_mesh((4,), ("data",), axis_types=(getattr(jax.sharding.AxisType, axis_type),))
    rows = NamedSharding(mesh, P("data"))
    x, y, _ = _standard_batch(110)
    valid = jnp.arange(N_ROWS) < N_ROWS - 2
    expected_loss, expected_grad = _vg(implementation)(x, y, valid, 1.0)
    sharded = [jax.device_put(a, rows) for a in (x, y, valid)]
    assert len(sharded[0].sharding.device_set) == 4
    loss, grad = _vg(implementation)(*sharded, 1.0)
    np.testing.assert_allclose(loss, expected_loss, rtol=1e-6)
    np.testing.assert_allclose(grad, expected_grad, atol=1e-7)


def test_import_surface_without_tensorflow():
    from coreecho_jax import losses

    assert losses.rnc is rnc
    for name in rnc.__all__:
        assert hasattr(rnc, name), name
    code = (
        "import sys; from coreecho_jax.losses import rnc; "
        "assert 'tensorflow' not in sys.modules, 'rnc imported tensorflow'; print(rnc.rnc_loss.__name__)"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "rnc_loss"
