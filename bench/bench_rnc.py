"""Rank-N-Contrast loss: forward + backward time of the JAX forms, side by side in one run.

    python -m bench.bench_rnc [--sizes 256 1024 4096] [--dim 512] [--repeats 7]
                              [--forms pairwise sorted_all_rows sorted] [--memory-budget-gib 4]
                              [--check-memory] [--plot docs/images/rnc_scaling.png]
                              [--official-repo PATH] [--breakdown]

For every batch of ``2N`` rows (``D``-dim float32 embeddings, features ~ N(0, 0.2^2), labels
uniform(5, 95), ``temperature=2``, the official benchmark setup) it times one jitted
``jax.value_and_grad`` of the loss w.r.t. the features per form:

    * ``pairwise``: the ``[n, n, n]`` mask form (the official algorithm's O(n^3) work, fused);
    * ``sorted_all_rows``: the label-order form evaluated on whole ``[n, n]`` arrays (the form before
      row blocks; internal spelling ``sorted_label_order@full``);
    * ``sorted``: the label-order form in blocks of anchor rows (what ``implementation='sorted'`` and,
      for ``2N > 64``, ``'auto'`` run).

Each form is compiled and called twice first; then the forms are timed **interleaved** (A, B, C, A,
B, C, ...) for ``--repeats`` rounds (3 for ``2N >= 4096``), each call ended by
``block_until_ready``, and the median and the min-max spread are printed. The pairwise form is
skipped where its ``[n, n, n]`` tensors would exceed ``--memory-budget-gib`` (two float32 ``n^3``
arrays: the membership mask and the ``exp`` values kept for the backward pass), the other forms
where about 16 (all rows) or 6 (row blocks) float32 ``[n, n]`` arrays would.

Official algorithm: with ``--official-repo PATH`` (a checkout of the official CoReEcho code, and
PyTorch installed; neither is a dependency of this project) the official ``RnCLoss``
(``coreecho/loss.py``, the Rank-N-Contrast loss) is timed in the same run, forward + backward w.r.t.
the features, as one more entry of the interleaved rounds, with as many PyTorch threads as this
process has cores and denormals flushed to zero (see ``bench/official.py``). It gets the same
features; its labels are those of the first N rows, repeated for the second N (the official layout:
two views per video; its cost does not depend on the label values). It is skipped where its peak
(about ``16 n^3`` bytes) would exceed ``--memory-budget-gib``. The table prints its median, ours and
the ratio official / the form ``auto`` picks; without ``--official-repo`` the column says it was not
measured, and the plot draws the official curve only when it was.

``--breakdown`` then times, per size, where the ``sorted`` form's time goes (:func:`breakdown`): the
feature distances (two matmuls and elementwise work), the label-order reduction, and one matmul as
the unit of the floor.

``--check-memory`` adds XLA's buffer-assignment size (temporaries of the compiled step) per form;
the process's peak RSS is printed at the end. The CPU may be shared with other processes, so the
load average is printed before and after: on a busy machine every number is inflated, which the
interleaving spreads evenly over the forms. ``--plot`` writes time vs 2N (log-log) as a PNG.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import resource
import time
from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from bench import official
from coreecho_jax.losses import rnc, rnc_sorted

OFFICIAL = official.OFFICIAL
# form name -> rnc._rnc_flat implementation string
FORMS = {"pairwise": "pairwise", "sorted_all_rows": "sorted_label_order@full", "sorted": "sorted"}


def make_step(implementation: str):
    def loss(x, y):
        return rnc._rnc_flat(
            x,
            y,
            None,
            2.0,
            similarity="l2",
            label_distance="l1",
            implementation=implementation,
            distance_method="auto",
        )

    return jax.jit(jax.value_and_grad(loss))


def form_bytes(form: str, n: int) -> int:
    """Rough peak of one step: two float32 ``[n, n, n]`` arrays for the pairwise form (mask and kept
    ``exp`` values); about 16 (all rows at once) or 6 (row blocks) float32 ``[n, n]`` arrays."""
    if form == "pairwise":
        return 2 * 4 * n**3
    return (16 if form == "sorted_all_rows" else 6) * 4 * n**2


def auto_form(n: int) -> str:
    return "pairwise" if n <= rnc.PAIRWISE_MAX_ROWS else "sorted"


def bench_inputs(n: int, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """The benchmark's ``2N = n`` rows: features ``[n, dim]`` ~ N(0, 0.2^2) and labels ``[n, 1]`` ~
    uniform(5, 95), float32, seeded by ``n``."""
    rng = np.random.default_rng(n)
    x = rng.normal(0.0, 0.2, (n, dim)).astype(np.float32)
    return x, rng.uniform(5.0, 95.0, (n, 1)).astype(np.float32)


def time_interleaved(calls: dict[str, Callable[[], object]], repeats: int) -> dict[str, dict]:
    """Call each entry twice (warm-up), then all of them in turn for ``repeats`` rounds (A, B, C, A,
    ...), each call blocking until its result is ready. Per entry: ``times`` (s) and the median, min
    and max in ms (``ms``, ``lo``, ``hi``)."""
    for call in calls.values():
        for _ in range(2):
            call()
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(repeats):
        for name, call in calls.items():
            start = time.perf_counter()
            call()
            times[name].append(time.perf_counter() - start)
    out = {}
    for name, ts in times.items():
        ms = 1e3 * np.asarray(ts)
        out[name] = dict(times=ts, ms=float(np.median(ms)), lo=float(ms.min()), hi=float(ms.max()))
    return out


def time_size(
    n: int,
    dim: int,
    forms: list[str],
    repeats: int,
    check_memory: bool,
    official_repo: Path | None = None,
    threads: int = 1,
) -> dict:
    """Compile every form for ``2N = n``, then time them interleaved (with the official ``RnCLoss``
    as one more entry when ``official_repo`` is given); per entry: all times in s, compile time and
    XLA temp bytes."""
    x_np, y_np = bench_inputs(n, dim)
    x, y = jnp.asarray(x_np), jnp.asarray(y_np)
    calls, result = {}, {}
    for form in forms:
        start = time.perf_counter()
        compiled = make_step(FORMS[form]).lower(x, y).compile()
        compile_s = time.perf_counter() - start
        temp = compiled.memory_analysis() if check_memory else None
        result[form] = {"compile_s": compile_s, "temp_bytes": getattr(temp, "temp_size_in_bytes", None)}
        calls[form] = lambda compiled=compiled: jax.block_until_ready(compiled(x, y))
    if official_repo is not None:
        calls[OFFICIAL] = official.rnc_timer(official_repo, x_np, y_np, threads=threads, temperature=2.0)
        result[OFFICIAL] = {"temp_bytes": None}
    for name, timing in time_interleaved(calls, repeats).items():
        result[name].update(timing)
    for form in calls:
        t = result[form]
        print(
            f"  2N={n:5d} {form:16s} median {t['ms']:9.1f} ms  (min {t['lo']:.1f}, "
            f"max {t['hi']:.1f}, {len(t['times'])} calls"
            + (f"; compile {t['compile_s']:.1f} s)" if form != OFFICIAL else ", PyTorch)"),
            flush=True,
        )
    return result


BREAKDOWN_PARTS = ("loss", "distances", "label_order", "matmul")


def breakdown_steps(n: int, dim: int) -> dict[str, tuple]:
    """The jitted functions of :func:`breakdown` and their arguments, ``{part: (fn, args)}`` (labels
    sorted, so the label-order pass gets the rows in the order the loss puts them in)."""
    x_np, y_np = bench_inputs(n, dim)
    x, y = jnp.asarray(x_np), jnp.asarray(np.sort(y_np[:, 0]))
    valid = jnp.ones((n,), bool)
    weights = jnp.asarray(np.random.default_rng(n + 1).normal(size=(n, n)).astype(np.float32))
    tau = jnp.float32(2.0)
    logits = rnc._logits(x, valid, tau, "l2", "auto")
    block = rnc_sorted.row_block(n)

    def distances(x):
        return jnp.sum(weights * rnc._logits(x, valid, tau, "l2", "auto"))

    def label_order(logits):
        return rnc_sorted.label_order_term_sum(logits, y, valid, "auto", block)

    return {
        "loss": (make_step("sorted"), (x, y[:, None])),
        "distances": (jax.jit(jax.value_and_grad(distances)), (x,)),
        "label_order": (jax.jit(jax.value_and_grad(label_order)), (logits,)),
        "matmul": (jax.jit(lambda a: jnp.matmul(a, a.T, precision=jax.lax.Precision.HIGHEST)), (x,)),
    }


def breakdown(n: int, dim: int, repeats: int) -> dict[str, dict]:
    """Where the ``sorted`` form's time goes at ``2N = n`` (forward + backward each, interleaved rounds):

    * ``loss``: the whole loss, as in the table (``value_and_grad`` w.r.t. the features);
    * ``distances``: the logits ``-||x_i - x_j|| / tau`` alone (Gram matmul, square root) and their
      backward pass (one more matmul), under a fixed random cotangent;
    * ``label_order``: the rest, the label-order reduction (binary searches, prefix sums, gradient)
      on fixed logits;
    * ``matmul``: one ``[n, D] x [D, n]`` float32 matmul, the unit of the floor (the loss needs two).

    Returns per part :func:`time_interleaved`'s ``{'times', 'ms', 'lo', 'hi'}``."""
    calls = {
        part: (lambda fn=fn, fn_args=fn_args: jax.block_until_ready(fn(*fn_args)))
        for part, (fn, fn_args) in breakdown_steps(n, dim).items()
    }
    return time_interleaved(calls, repeats)


def format_breakdown(n: int, parts: dict[str, dict]) -> list[str]:
    """Markdown lines: each part's median (min-max) and share of the whole loss, then the floor."""
    total = parts["loss"]["ms"]
    notes = {
        "loss": "the whole loss (what the table times)",
        "distances": "logits: Gram matmul + sqrt, and their backward matmul",
        "label_order": "label-order reduction on fixed logits: searches, prefix sums, gradient",
        "matmul": "one [2N, D] x [D, 2N] matmul; the loss needs two",
    }
    lines = [f"| 2N = {n} | ms (min-max) | share of the loss | what |", "|---|---|---|---|"]
    for part in BREAKDOWN_PARTS:
        t = parts[part]
        lines.append(
            f"| {part} | {fmt_ms(t['ms'])} ({fmt_ms(t['lo'])}-{fmt_ms(t['hi'])}) | "
            f"{100 * t['ms'] / total:.0f} % | {notes[part]} |"
        )
    lines.append(
        f"| floor (2 matmuls) | {fmt_ms(2 * parts['matmul']['ms'])} | {200 * parts['matmul']['ms'] / total:.0f} % | |"
    )
    return lines


def fmt_ms(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.3g}" if value < 100 else f"{value:.0f}"


def format_table(rows: list[tuple[int, dict]], forms: list[str], check_memory: bool = False) -> list[str]:
    """The markdown table: one line per ``(2N, results)``; ``results`` maps a form (and ``'official'``
    when it was measured) to ``{'ms', 'lo', 'hi', 'temp_bytes'}``, and may hold ``'official_note'``
    (why the official loss was not timed at that size)."""
    header = (
        "| 2N | official torch ms (min-max) | "
        + " | ".join(f"{f} ms (min-max)" for f in forms)
        + " | auto picks | sorted_all_rows / sorted | official / auto |"
    )
    if check_memory:
        header += " XLA temp MiB (" + " / ".join(forms) + ") |"
    lines = [header, "|" + "---|" * (header.count("|") - 1)]
    for n, result in rows:
        cells = [str(n)]
        for name in [OFFICIAL, *forms]:
            t = result.get(name)
            if t:
                cells.append(f"{fmt_ms(t['ms'])} ({fmt_ms(t['lo'])}-{fmt_ms(t['hi'])})")
            elif name == OFFICIAL:
                cells.append(result.get("official_note", official.NOT_MEASURED))
            else:
                cells.append("skipped")
        cells.append(auto_form(n))
        both = "sorted_all_rows" in result and "sorted" in result
        cells.append(f"{result['sorted_all_rows']['ms'] / result['sorted']['ms']:.2f}x" if both else "-")
        ours = result.get(auto_form(n))
        cells.append(official.ratio(result.get(OFFICIAL, {}).get("ms"), ours["ms"] if ours else None))
        if check_memory:
            cells.append(
                " / ".join(
                    f"{result[f]['temp_bytes'] / 2**20:.0f}" if result.get(f, {}).get("temp_bytes") else "-"
                    for f in forms
                )
            )
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def plot(rows: list, forms: list[str], path: Path, title: str) -> list[str]:
    """Write time vs 2N (log-log) to ``path``; returns the legend's labels."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for form in [*forms, OFFICIAL]:
        pts = [(n, r[form]) for n, r in rows if form in r]
        if not pts:  # the official curve only where it was measured in this run
            continue
        ns = np.array([n for n, _ in pts])
        med = np.array([t["ms"] for _, t in pts])
        err = np.array([[t["ms"] - t["lo"] for _, t in pts], [t["hi"] - t["ms"] for _, t in pts]])
        if form == OFFICIAL:
            style = dict(fmt="k--", marker="s", label="official PyTorch (same run)")
        else:
            style = dict(marker="o", label=f"JAX {form}")
        ax.errorbar(ns, med, yerr=err, capsize=3, **style)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("2N (rows in the loss)")
    ax.set_ylabel("forward + backward, ms (median; bars: min-max)")
    ax.set_title(title, fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    print(f"- plot written to {path}")
    labels = ax.get_legend_handles_labels()[1]
    plt.close(fig)
    return labels


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 1024, 4096])
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--forms", nargs="+", default=list(FORMS), choices=list(FORMS))
    parser.add_argument("--memory-budget-gib", type=float, default=4.0)
    parser.add_argument("--check-memory", action="store_true")
    parser.add_argument("--plot", type=Path, default=None, help="write time vs 2N to this PNG")
    parser.add_argument(
        "--official-repo",
        type=Path,
        default=None,
        help="checkout of the official CoReEcho code: time its RnCLoss (PyTorch) in the same run",
    )
    parser.add_argument(
        "--breakdown",
        action="store_true",
        help="also time the parts of the sorted form (distances, label-order pass, one matmul) per size",
    )
    args = parser.parse_args(argv)
    threads = len(os.sched_getaffinity(0))
    if args.official_repo is not None:
        try:
            args.official_repo = official.check_available(args.official_repo)
        except official.OfficialUnavailable as err:
            parser.error(str(err))

    head = (
        f"RnC loss fwd+bwd, float32, D={args.dim}, {datetime.date.today()}, {platform.machine()}, "
        f"{os.cpu_count()} CPUs, jax {jax.__version__} on {jax.devices()[0].platform}"
    )
    print(f"# {head}, load average {os.getloadavg()[0]:.1f}")
    if args.official_repo is not None:
        import torch

        print(
            f"# official RnCLoss from {args.official_repo}: torch {torch.__version__}, {threads} threads, "
            "denormals flushed to zero, same features (labels of the first N rows repeated)"
        )
    rows = []
    notes = []
    for n in args.sizes:
        forms = []
        for form in args.forms:
            if form_bytes(form, n) > args.memory_budget_gib * 2**30:
                notes.append(
                    f"2N={n}: {form} skipped, it needs about {form_bytes(form, n) / 2**30:.0f} GiB "
                    f"> budget {args.memory_budget_gib:g} GiB"
                )
                continue
            forms.append(form)
        repeats = args.repeats if n < 4096 else min(args.repeats, 3)
        repo, skip = args.official_repo, None
        if repo is not None and official.rnc_bytes(n) > args.memory_budget_gib * 2**30:
            repo, skip = None, f"skipped (needs ~{official.rnc_bytes(n) / 2**30:.0f} GiB)"
            notes.append(
                f"2N={n}: official RnCLoss skipped, it needs about {official.rnc_bytes(n) / 2**30:.0f} GiB "
                f"> budget {args.memory_budget_gib:g} GiB"
            )
        result = time_size(n, args.dim, forms, repeats, args.check_memory, repo, threads)
        if skip:
            result["official_note"] = skip
        rows.append((n, result))

    print()
    print("\n".join(format_table(rows, args.forms, args.check_memory)))
    if args.breakdown:
        for n in args.sizes:
            repeats = args.repeats if n < 4096 else min(args.repeats, 5)
            print()
            print("\n".join(format_breakdown(n, breakdown(n, args.dim, repeats))))
    for note in notes:
        print(f"- {note}")
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"- peak RSS of this process: {peak_mib:.0f} MiB; load average at the end {os.getloadavg()[0]:.1f}")
    if args.plot is not None:
        plot(rows, args.forms, args.plot, head)


if __name__ == "__main__":
    main()
