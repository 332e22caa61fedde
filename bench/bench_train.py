"""Stage-1 training throughput: steps/s and clips/s of the full jitted step (forward, RnC + L1, backward, AdamW).

Fed from in-memory batches (no TensorFlow needed, so it runs on a GPU machine with JAX only). Two
timings: ``s/step`` waits for each step (the median of ``--steps``), ``s/step@N`` dispatches
``--steps`` steps back to back and reads their metrics every N steps (``--log-every``), as the
training loop does.

    python -m bench.bench_train                         # demo and paper configurations, float32
    python -m bench.bench_train --configs=paper --dtype=bfloat16 --batch=16   # on a GPU
    python -m bench.bench_train --configs=paper --remat  # rematerialised stages

``--batch`` counts videos; each step sees 2 clips per video. The paper configuration is UniFormer-S on
36x112x112 clips with 16 videos (32 clips) a step; an EchoNet-Dynamic stage-1 epoch is 7,465 videos
(466 steps of 16). The printed epoch estimate is steps_per_epoch / steps_per_s.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import jax
import numpy as np

from bench import paper_model_config
from coreecho_jax.models.coreecho import build_coreecho
from coreecho_jax.train import mesh as mesh_lib
from coreecho_jax.train import steps

CONFIGS = {
    # name: (model preset, frames, image size, videos per step)
    "demo": ("tiny", 16, 64, 16),
    "paper": ("small", 36, 112, 16),
}
ECHONET_TRAIN_VIDEOS = 7465


def bench(name: str, args) -> dict:
    preset, frames, size, batch = CONFIGS[name]
    batch = args.batch or batch
    model = build_coreecho(paper_model_config(preset=preset, dtype=args.dtype, remat=args.remat))
    model.train()
    optimizer = steps.make_optimizer(model, 1e-4, 1e-4)
    mesh = mesh_lib.make_mesh()
    from flax import nnx

    nnx.update(model, mesh_lib.replicate(nnx.state(model), mesh))
    nnx.update(optimizer, mesh_lib.replicate(nnx.state(optimizer), mesh))
    rng = np.random.default_rng(0)
    batches = [
        mesh_lib.shard_batch(
            {
                "video": rng.normal(size=(batch, 2, frames, size, size, 3)).astype(np.float32),
                "ef": rng.uniform(10, 85, size=(batch,)).astype(np.float32),
            },
            mesh,
        )
        for _ in range(2)
    ]
    spec = steps.LossSpec(temperature=1.0)
    step = steps.bind(steps.stage1_step, model, optimizer)
    t0 = time.perf_counter()
    jax.block_until_ready(step(batches[0], spec))
    compile_s = time.perf_counter() - t0
    for i in range(args.warmup):
        jax.block_until_ready(step(batches[i % 2], spec))
    times = []
    for i in range(args.steps):
        t0 = time.perf_counter()
        jax.block_until_ready(step(batches[i % 2], spec))
        times.append(time.perf_counter() - t0)
    s = float(np.median(times))
    t0 = time.perf_counter()
    pending = []
    for i in range(args.steps):
        pending.append(step(batches[i % 2], spec))
        if (i + 1) % args.log_every == 0:
            jax.device_get(pending)
            pending = []
    jax.device_get(pending)
    s_pipelined = (time.perf_counter() - t0) / args.steps
    steps_per_epoch = ECHONET_TRAIN_VIDEOS // batch
    return {
        "config": name,
        "videos": batch,
        "clips": 2 * batch,
        "frames": frames,
        "size": size,
        "compile_s": compile_s,
        "s_per_step": s,
        "s_per_step_pipelined": s_pipelined,
        "steps_per_s": 1 / s,
        "clips_per_s": 2 * batch / s,
        "echonet_epoch_s": steps_per_epoch * s,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--configs", default="demo,paper")
    parser.add_argument("--batch", type=int, default=0, help="videos per step (0: the configuration's)")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--remat", action="store_true")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument(
        "--log-every", type=int, default=10, help="steps between metric reads (run.log_every)"
    )
    args = parser.parse_args()
    dev = jax.devices()[0]
    print(
        f"# stage-1 step benchmark | {dev.platform}:{dev.device_kind} x{jax.device_count()} | "
        f"{platform.processor() or platform.machine()} cores={os.cpu_count()} | jax {jax.__version__} | "
        f"dtype={args.dtype} remat={args.remat}"
    )
    print(
        f"{'config':<8}{'clips/step':>11}{'clip':>14}{'compile s':>11}{'s/step':>9}"
        f"{f's/step@{args.log_every}':>11}{'steps/s':>9}{'clips/s':>9}{'EchoNet epoch':>15}"
    )
    for name in args.configs.split(","):
        r = bench(name, args)
        print(
            f"{r['config']:<8}{r['clips']:>11}{r['frames']:>6}x{r['size']}x{r['size']:<4}{r['compile_s']:>11.1f}"
            f"{r['s_per_step']:>9.3f}{r['s_per_step_pipelined']:>11.3f}{r['steps_per_s']:>9.3f}"
            f"{r['clips_per_s']:>9.1f}{r['echonet_epoch_s']:>13.0f} s",
            flush=True,
        )


if __name__ == "__main__":
    main()
