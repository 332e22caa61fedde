"""bench/bench_rnc.py --breakdown: the timed parts are the loss's own parts, and the table adds up."""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np
import pytest

from bench import bench_rnc


def test_breakdown_parts_compose_the_loss():
    n, dim = 96, 16
    steps = bench_rnc.breakdown_steps(n, dim)
    assert set(steps) == set(bench_rnc.BREAKDOWN_PARTS)
    ((loss, grad),) = [steps["loss"][0](*steps["loss"][1])]
    x = steps["distances"][1][0]
    # the label-order pass on the logits of the same rows gives the loss's sum over its n (n - 1) terms
    (total, logit_grad) = steps["label_order"][0](*steps["label_order"][1])
    np.testing.assert_allclose(float(total) / (n * (n - 1)), float(loss), rtol=1e-5)
    assert logit_grad.shape == (n, n) and grad.shape == (n, dim)
    _, dx = steps["distances"][0](x)
    assert dx.shape == (n, dim) and bool(jnp.all(jnp.isfinite(dx)))
    np.testing.assert_allclose(steps["matmul"][0](x), x @ x.T, rtol=1e-5, atol=1e-5)


def test_breakdown_times_every_part_and_formats_shares():
    parts = bench_rnc.breakdown(64, 8, repeats=2)
    for part in bench_rnc.BREAKDOWN_PARTS:
        t = parts[part]
        assert math.isfinite(t["ms"]) and 0 < t["lo"] <= t["ms"] <= t["hi"], (part, t)
    lines = bench_rnc.format_breakdown(
        64, {p: dict(ms=v, lo=v, hi=v) for p, v in zip(bench_rnc.BREAKDOWN_PARTS, (10.0, 4.0, 5.0, 1.5))}
    )
    assert lines[0].startswith("| 2N = 64 |")
    assert "| distances | 4 (4-4) | 40 % |" in lines[3]
    assert lines[-1].startswith("| floor (2 matmuls) | 3 | 30 % |")


@pytest.mark.parametrize("n", [64, 4096])
def test_breakdown_repeats_follow_the_table_rule(n, monkeypatch, capsys):
    seen = []
    monkeypatch.setattr(bench_rnc, "time_size", lambda n, *a, **k: {"sorted": dict(ms=1.0, lo=1.0, hi=1.0)})
    monkeypatch.setattr(
        bench_rnc,
        "breakdown",
        lambda n, dim, repeats: (
            seen.append(repeats) or {p: dict(ms=1.0, lo=1.0, hi=1.0) for p in bench_rnc.BREAKDOWN_PARTS}
        ),
    )
    bench_rnc.main(["--sizes", str(n), "--forms", "sorted", "--repeats", "9", "--breakdown"])
    assert seen == [9 if n < 4096 else 5]
    assert f"| 2N = {n} |" in capsys.readouterr().out
