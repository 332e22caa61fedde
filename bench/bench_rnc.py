"""Rank-N-Contrast loss: forward + backward time of both JAX forms next to the official PyTorch loss.

    python bench/bench_rnc.py [--sizes 32 64 128 256 1024 4096] [--dim 512] [--repeats 15]
                              [--memory-budget-gib 4] [--check-memory]

For every batch of ``2N`` rows (``D``-dim float32 embeddings, features ~ N(0, 0.2^2), labels
uniform(5, 95), ``temperature=2``, the official benchmark setup) it times one jitted
``jax.value_and_grad`` of ``rnc_loss`` per form: compile + 2 warm-up calls, then the median of
``--repeats`` calls (fewer for 2N >= 1024), each ended by ``block_until_ready``. The pairwise form
is skipped where its ``[n, n, n]`` tensors would exceed ``--memory-budget-gib`` (estimated as two
float32 ``n^3`` arrays: the membership mask and the ``exp`` values kept for the backward pass).

Baseline: the official ``RnCLoss`` (PyTorch 2.13 CPU, ``torch.set_num_threads(2)``, same setup,
median over 7 processes), measured on this project's 2-core CPU machine kind in November 2026 for
2N <= 256 only. A constant from another day, not a same-run measurement.

``--check-memory`` adds XLA's buffer-assignment size (temporaries of the compiled step) per form,
and the process's peak RSS is printed at the end. The CPU is shared with other processes, so the
load average is printed too: on a busy machine every number is inflated.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import resource
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax
import jax.numpy as jnp

from coreecho_jax.losses import rnc

# Official RnCLoss, fwd+bwd median in ms, 2 threads, D = 512, float32 (2-core CPU, November 2026).
TORCH_BASELINE_MS = {32: 4.98, 64: 14.5, 128: 80.8, 256: 281.0}
FORMS = ("pairwise", "sorted")


def make_step(form: str):
    def loss(x, y):
        return rnc.rnc_loss(x, y, temperature=2.0, implementation=form)

    return jax.jit(jax.value_and_grad(loss))


def pairwise_bytes(n: int) -> int:
    return 2 * 4 * n**3


def time_form(form: str, n: int, dim: int, repeats: int, check_memory: bool) -> dict:
    rng = np.random.default_rng(n)
    x = jnp.asarray(rng.normal(0.0, 0.2, (n, dim)).astype(np.float32))
    y = jnp.asarray(rng.uniform(5.0, 95.0, (n, 1)).astype(np.float32))
    step = make_step(form)
    start = time.perf_counter()
    compiled = step.lower(x, y).compile()
    compile_s = time.perf_counter() - start
    temp_bytes = None
    if check_memory:
        analysis = compiled.memory_analysis()
        temp_bytes = getattr(analysis, "temp_size_in_bytes", None)
    for _ in range(2):
        jax.block_until_ready(compiled(x, y))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(compiled(x, y))
        times.append(time.perf_counter() - start)
    return {"ms": 1e3 * float(np.median(times)), "compile_s": compile_s, "temp_bytes": temp_bytes}


def fmt_ms(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.3g}" if value < 100 else f"{value:.0f}"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[32, 64, 128, 256, 1024, 4096])
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--memory-budget-gib", type=float, default=4.0)
    parser.add_argument("--check-memory", action="store_true")
    args = parser.parse_args()

    print(
        f"# RnC loss fwd+bwd, float32, D={args.dim}, {datetime.date.today()}, {platform.machine()}, "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}, jax {jax.__version__} "
        f"on {jax.devices()[0].platform}"
    )
    rows = []
    notes = []
    for n in args.sizes:
        repeats = args.repeats if n < 1024 else 3
        result = {}
        for form in FORMS:
            if form == "pairwise" and pairwise_bytes(n) > args.memory_budget_gib * 2**30:
                notes.append(
                    f"2N={n}: pairwise skipped, its [n, n, n] tensors need about "
                    f"{pairwise_bytes(n) / 2**30:.0f} GiB > budget {args.memory_budget_gib:g} GiB"
                )
                continue
            result[form] = time_form(form, n, args.dim, repeats, args.check_memory)
            timing = result[form]
            print(
                f"  2N={n:5d} {form:8s} {timing['ms']:10.2f} ms  (compile {timing['compile_s']:.1f} s)",
                flush=True,
            )
        rows.append((n, result))

    header = (
        "| 2N | torch baseline ms | pairwise ms | sorted ms | auto picks | speedup (auto vs torch) "
        "| compile s (pairwise / sorted) |"
    )
    if args.check_memory:
        header += " XLA temp MiB (pairwise / sorted) |"
    print()
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    for n, result in rows:
        base = TORCH_BASELINE_MS.get(n)
        auto = "pairwise" if n <= rnc.PAIRWISE_MAX_ROWS else "sorted"
        auto_ms = result[auto]["ms"] if auto in result else None
        speedup = f"{base / auto_ms:.1f}x" if (base and auto_ms) else "-"
        cells = [
            str(n),
            fmt_ms(base),
            fmt_ms(result["pairwise"]["ms"]) if "pairwise" in result else "skipped",
            fmt_ms(result["sorted"]["ms"]),
            auto,
            speedup,
            " / ".join(f"{result[f]['compile_s']:.1f}" if f in result else "-" for f in FORMS),
        ]
        if args.check_memory:
            cells.append(
                " / ".join(
                    f"{result[f]['temp_bytes'] / 2**20:.1f}"
                    if f in result and result[f]["temp_bytes"]
                    else "-"
                    for f in FORMS
                )
            )
        print("| " + " | ".join(cells) + " |")
    for note in notes:
        print(f"- {note}")
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"- peak RSS of this process: {peak_mib:.0f} MiB; load average at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
