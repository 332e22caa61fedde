"""Benchmark UniFormer-S / CoReEcho: eval forward and stage-1 training step, per depthwise implementation.

Prints, per implementation: compile time, seconds per step and per clip, clips/s, peak resident memory,
XLA's FLOP count per clip, the achieved FLOP/s next to a large float32 matmul timed in the same process,
and, with ``--official-repo PATH``, the official PyTorch model measured in the same run.

Official model (``--official-repo PATH``, a checkout of the official CoReEcho code, with PyTorch
installed; neither is a dependency of this project): right after ours, per phase, in its own
subprocess with the same settings (same clips, batch, steps; float32), the official UniFormer-S
(``bench/official.py``: eval forward under ``torch.inference_mode()``, and the stage-1 step of
``train_first_stage.py``) with as many PyTorch threads as this process has cores and denormals
flushed to zero. The table prints its seconds per clip next to ours and the ratio official / ours;
without ``--official-repo`` the column says it was not measured. The official step needs an even
batch (two views per video).

Each (implementation, phase) runs in its own subprocess so that the peak-memory column (``ru_maxrss``)
belongs to that run alone. The training step is the stage-1 step: encoder + head forward (train mode:
dropout, BatchNorm batch statistics), Rank-N-Contrast on the embeddings plus L1 on the head's
prediction from the detached embedding, backward, ``optax.adamw`` update, all in one ``jax.jit`` with
the model/optimizer state donated.

Model FLOPs come from ``jitted.lower(...).compile().cost_analysis()`` of the eval forward pass of the
'lax' variant (compiled, not run, when 'lax' is not benchmarked): XLA counts a ``while`` loop's body
once, so the looped 'shifted' depthwise convs would be undercounted. The training step is taken as
3x the forward FLOPs (backward = 2x forward): XLA's own count for the 'lax' training step is inflated,
because it prices each depthwise kernel gradient (a ``batch_group_count`` convolution) like a dense
one (25 GFLOP instead of 0.45 for one 5x5x5 conv on [2,18,28,28,64]); it is printed for reference.

Besides wall time the table shows the process CPU time per step divided by the cores in use: with the
machine shared, wall time overstates the cost, while CPU time / cores estimates the quiet-machine wall
time (a lower bound; spinning worker threads would inflate it).

Usage::

    python -m bench.bench_model [--batch 2] [--dtype float32|bfloat16] [--frames 36] [--size 112]
        [--impl shifted,lax] [--steps 3] [--phases forward,train] [--official-repo PATH]

The CPU of the development machine is shared with other jobs: numbers taken there are noisy.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

from bench import official

OFFICIAL = official.OFFICIAL
TARGET_S_PER_CLIP = {"forward": 0.25, "train": 1.0}


def _matmul_gflops(n: int = 2048, repeats: int = 5) -> float:
    import jax
    import jax.numpy as jnp

    a = jnp.ones((n, n), jnp.float32)
    f = jax.jit(lambda a, b: a @ b)
    f(a, a).block_until_ready()
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        f(a, a).block_until_ready()
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best / 1e9


def flops(compiled) -> float:
    cost = compiled.cost_analysis()
    if isinstance(cost, (list, tuple)):
        cost = cost[0]
    return float(cost.get("flops", float("nan"))) if cost else float("nan")


def _cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _timed(fn, steps: int) -> tuple[float, float]:
    """(best wall seconds, mean CPU seconds) per call over ``steps`` calls."""
    times = []
    cpu0 = _cpu_seconds()
    for _ in range(steps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times), (_cpu_seconds() - cpu0) / steps


def _inputs(args) -> tuple:
    """The benchmark's clips ``[B, T, H, W, 3]`` float32 and EF labels ``[B]`` (%), numpy, seed 0."""
    import numpy as np

    rng = np.random.default_rng(0)
    x = rng.standard_normal((args.batch, args.frames, args.size, args.size, 3)).astype(np.float32)
    return x, rng.uniform(20, 80, args.batch).astype(np.float32)


def official_worker(args) -> dict:
    """Time the official PyTorch model for ``args.phase`` in this process and return its row."""
    import torch

    threads = len(os.sched_getaffinity(0))
    x, y = _inputs(args)
    if args.phase == "forward":
        fn = official.forward_timer(args.official_repo, x, threads)
    else:
        fn = official.train_step_timer(args.official_repo, x, y, threads)
    fn()  # warm-up
    row = dict(impl=OFFICIAL, phase=args.phase, batch=args.batch, dtype="float32", threads=threads)
    row["backend"] = f"torch {torch.__version__}"
    row["step_s"], row["cpu_s"] = _timed(fn, args.steps)
    row["peak_rss_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    return row


def worker(args) -> dict:
    """Run one (implementation, phase) measurement in this process and return its row."""
    if args.impl == OFFICIAL:
        return official_worker(args)
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax
    from flax import nnx

    from bench import paper_model_config
    from coreecho_jax.models.coreecho import build_coreecho

    try:
        from coreecho_jax.losses.rnc import rnc_loss
    except ImportError:  # stand-in: mean squared embedding
        rnc_loss = lambda f, y, **kw: jnp.mean(f**2)

    b = args.batch
    model = build_coreecho(paper_model_config(preset="small", dtype=args.dtype, depthwise=args.impl))
    x, y = (jnp.asarray(a) for a in _inputs(args))
    row = dict(
        impl=args.impl,
        phase=args.phase,
        batch=b,
        dtype=args.dtype,
        backend=jax.default_backend(),
        devices=jax.device_count(),
    )

    if args.phase == "forward":
        model.eval()
        graphdef, state = nnx.split(model)

        @jax.jit
        def step(state, x):
            return nnx.merge(graphdef, state)(x)

        t = time.perf_counter()
        compiled = step.lower(state, x).compile()
        row["compile_s"] = time.perf_counter() - t
        row["flops_per_step"] = flops(compiled)
        if not args.compile_only:
            jax.block_until_ready(compiled(state, x))
            row["step_s"], row["cpu_s"] = _timed(
                lambda: jax.block_until_ready(compiled(state, x)), args.steps
            )
    else:
        model.train()
        optimizer = nnx.Optimizer(model, optax.adamw(1e-4, weight_decay=1e-4), wrt=nnx.Param)
        graphdef, state = nnx.split((model, optimizer))

        def step(state, x, y):
            model, optimizer = nnx.merge(graphdef, state)

            def loss_fn(model):
                pred, emb = model(x)  # the head sees the detached embedding
                return rnc_loss(emb, y, temperature=1.0) + jnp.mean(jnp.abs(pred - y))

            loss, grads = nnx.value_and_grad(loss_fn)(model)
            optimizer.update(model, grads)
            return nnx.state((model, optimizer)), loss

        jitted = jax.jit(step, donate_argnums=0)
        t = time.perf_counter()
        compiled = jitted.lower(state, x, y).compile()
        row["compile_s"] = time.perf_counter() - t
        row["flops_per_step"] = flops(compiled)
        if not args.compile_only:
            state, loss = compiled(state, x, y)
            jax.block_until_ready(loss)
            holder = {"state": state}

            def one_step():
                holder["state"], loss = compiled(holder["state"], x, y)
                jax.block_until_ready(loss)
                holder["loss"] = loss

            row["step_s"], row["cpu_s"] = _timed(one_step, args.steps)
            row["loss_finite"] = bool(np.isfinite(np.asarray(holder["loss"])))
    row["peak_rss_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    row["matmul_gflops"] = _matmul_gflops()
    return row


def run_worker(args, impl: str, phase: str, compile_only: bool = False) -> dict:
    steps = args.lax_steps if impl == "lax" else args.steps  # the official model: --steps
    cmd = [
        sys.executable,
        "-m",
        "bench.bench_model",
        "--_worker",
        "--impl",
        impl,
        "--phase",
        phase,
        "--batch",
        str(args.batch),
        "--dtype",
        args.dtype,
        "--frames",
        str(args.frames),
        "--size",
        str(args.size),
        "--steps",
        str(steps),
    ]
    if compile_only:
        cmd.append("--compile-only")
    if impl == OFFICIAL:
        cmd += ["--official-repo", str(args.official_repo)]
    out = subprocess.run(cmd, capture_output=True, text=True)  # this process's folder and environment
    if out.returncode != 0:
        raise RuntimeError(f"worker {impl}/{phase} failed:\n{out.stderr[-4000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def format_table(rows: list[dict], model_flops: dict[str, float], batch: int, cores: int) -> list[str]:
    """The table's lines (header, rule, one line per row). A row: ``impl``, ``phase``, ``step_s``,
    ``cpu_s``, ``peak_rss_gib`` and, for ours, ``compile_s`` and ``matmul_gflops``; ``impl ==
    'official'`` rows give the official seconds per clip of their phase to the other rows."""
    official_s = {r["phase"]: r["step_s"] / batch for r in rows if r["impl"] == OFFICIAL}
    width = len(official.NOT_MEASURED)
    head = (
        f"{'phase':8s} {'impl':17s} {'compile s':>9s} {'s/step':>7s} {'s/clip':>7s} {'clips/s':>7s} "
        f"{'cpu s/clip/core':>15s} {'official s/clip':>{width}s} {'speed-up':>8s} {'target':>6s} "
        f"{'GFLOP/s':>7s} {'matmul GFLOP/s':>14s} {'% matmul':>8s} {'peak RSS GiB':>12s}"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        s_clip = r["step_s"] / batch
        gflops = model_flops[r["phase"]] * batch / r["step_s"] / 1e9
        off = official_s.get(r["phase"])
        ours = r["impl"] != OFFICIAL
        matmul = r.get("matmul_gflops")
        lines.append(
            f"{r['phase']:8s} {r['impl']:17s} "
            + (f"{r['compile_s']:9.1f} " if ours else f"{'-':>9s} ")
            + f"{r['step_s']:7.3f} {s_clip:7.3f} {1 / s_clip:7.2f} {r['cpu_s'] / batch / cores:15.3f} "
            + (f"{off:{width}.3f} " if off is not None else f"{official.NOT_MEASURED:>{width}s} ")
            + f"{official.ratio(off, s_clip) if ours else '-':>8s} "
            + f"{TARGET_S_PER_CLIP[r['phase']]:6.2f} {gflops:7.1f} "
            + (f"{matmul:14.1f} {100 * gflops / matmul:7.1f}% " if matmul else f"{'-':>14s} {'-':>8s} ")
            + f"{r['peak_rss_gib']:12.2f}"
        )
    return lines


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    p.add_argument("--frames", type=int, default=36)
    p.add_argument("--size", type=int, default=112)
    p.add_argument("--impl", default="shifted,lax", help="comma-separated depthwise implementations")
    p.add_argument("--phases", default="forward,train", help="comma-separated: forward, train")
    p.add_argument(
        "--steps", type=int, default=3, help="timed steps (the best is reported) after one warm-up"
    )
    p.add_argument("--lax-steps", type=int, default=1, help="timed steps for 'lax' (slow on CPU)")
    p.add_argument(
        "--official-repo",
        default=None,
        help="checkout of the official CoReEcho code: time its UniFormer-S (PyTorch) in the same run",
    )
    p.add_argument("--phase", help=argparse.SUPPRESS)
    p.add_argument("--compile-only", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--_worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args._worker:
        print(json.dumps(worker(args)))
        return

    load0 = os.getloadavg()
    impls = [s for s in args.impl.split(",") if s]
    phases = [s for s in args.phases.split(",") if s]
    if args.official_repo is not None:
        try:
            args.official_repo = str(official.check_available(args.official_repo))
        except official.OfficialUnavailable as err:
            p.error(str(err))
        if "train" in phases and (args.batch < 2 or args.batch % 2):
            p.error(f"--official-repo with the train phase needs an even --batch >= 2, got {args.batch}")
    rows = []
    for phase in phases:
        for impl in impls + ([OFFICIAL] if args.official_repo is not None else []):
            print(f"running {impl} / {phase} ...", file=sys.stderr, flush=True)
            rows.append(run_worker(args, impl, phase))
    lax_fwd = [r for r in rows if r["phase"] == "forward" and r["impl"] == "lax"]
    ref = lax_fwd[0] if lax_fwd else run_worker(args, "lax", "forward", compile_only=True)
    model_flops = {"forward": ref["flops_per_step"] / args.batch}
    model_flops["train"] = 3 * model_flops["forward"]
    xla_train = [
        r["flops_per_step"] / args.batch for r in rows if r["phase"] == "train" and r["impl"] == "lax"
    ]
    cores = len(os.sched_getaffinity(0))

    b = args.batch
    print(
        f"\nUniFormer-S CoReEcho, clips {args.frames}x{args.size}x{args.size}, batch {b}, {args.dtype}, "
        f"backend {ref['backend']} ({cores} cores), load average before/after "
        f"{load0[0]:.1f}/{os.getloadavg()[0]:.1f}"
    )
    print(
        f"model GFLOP per clip: forward {model_flops['forward'] / 1e9:.1f} (XLA cost analysis, 'lax' variant), "
        f"train step {model_flops['train'] / 1e9:.1f} (3x forward)"
        + (
            f"; XLA's count for the 'lax' train step: {xla_train[0] / 1e9:.1f} (inflated, see docstring)"
            if xla_train
            else ""
        )
    )
    print("\n".join(format_table(rows, model_flops, b, cores)))
    print(
        f"\nofficial s/clip: the official PyTorch UniFormer-S (--official-repo), same clips and batch, "
        f"float32, {cores} threads, denormals flushed to zero, measured in this run right after ours; "
        "speed-up = official s/clip / ours. The CPU may be shared with other jobs."
    )


if __name__ == "__main__":
    main()
