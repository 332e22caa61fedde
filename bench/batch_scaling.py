"""How UniFormer-S's cost grows with the batch on this machine: eval forward and stage-1 training step.

    python -m bench.batch_scaling [--forward-batches 1 2 4] [--train-batches 2 4 8] [--steps 2] [--rounds 1]
                                  [--official-repo PATH] [--plot docs/images/batch_scaling.png]
                                  [--out batch_scaling.json]

For every batch size (clips of 36x112x112, float32, the ``shifted`` depthwise path) it runs
``bench/bench_model.py``'s worker in a fresh subprocess per (batch, phase, implementation): the eval
forward (what ``predict`` runs, K clips per video) and the stage-1 training step (encoder + head,
RnC + L1, backward, AdamW; the batch counts clips, two views per video). With ``--official-repo PATH``
the official PyTorch model (``bench/official.py``) runs right after ours at the same batch, so every
ratio is from one run; ``--rounds R`` repeats every point R times, alternating ours and the official
model, keeps each side's fastest run and prints the ratio of every round beside the best one. A
worker that fails (out of memory at a large batch, say) leaves a row marked failed with the end of its
error; the sweep goes on.

Prints one table (seconds per step and per clip, clips/s, peak RSS, official / ours) and, with
``--plot``, draws seconds per clip against the batch for both phases, ours and the official model.
The load average before and after is printed: the machine may be shared, which inflates every number.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import json
import os
import platform
import sys
from collections.abc import Callable
from pathlib import Path

from bench import bench_model, command_line, official

OFFICIAL = official.OFFICIAL
OURS = "shifted"  # the depthwise implementation 'auto' takes on CPU
PHASES = ("forward", "train")

Runner = Callable[[argparse.Namespace, str, str], dict]


def sweep(args: argparse.Namespace, runner: Runner = bench_model.run_worker) -> list[dict]:
    """One row per (phase, batch, implementation), ours first, then the official model when
    ``args.official_repo`` is set. Each point runs ``args.rounds`` times, alternating ours and the
    official model (A, B, A, B...), so that a slow spell of a shared machine does not fall on one side
    only; a row keeps its fastest round and every round's ``step_s`` in ``rounds_s``.
    ``runner(worker_args, impl, phase)`` returns bench_model's row; a ``RuntimeError`` from it becomes
    a row with ``failed`` set to the end of its message (and the point's later rounds are skipped)."""
    impls = [OURS] + ([OFFICIAL] if args.official_repo is not None else [])
    rows = []
    for phase, batches in (("forward", args.forward_batches), ("train", args.train_batches)):
        for batch in batches:
            worker_args = copy.copy(args)
            worker_args.batch = batch
            runs: dict[str, list[dict]] = {impl: [] for impl in impls}
            failed: dict[str, dict] = {}
            for round_ in range(args.rounds):
                for impl in impls:
                    if impl in failed:
                        continue
                    print(
                        f"running {impl} / {phase} / batch {batch} / round {round_ + 1} ...",
                        file=sys.stderr,
                        flush=True,
                    )
                    try:
                        runs[impl].append(runner(worker_args, impl, phase))
                    except RuntimeError as err:
                        failed[impl] = dict(
                            impl=impl, phase=phase, batch=batch, failed=str(err).strip()[-300:]
                        )
            for impl in impls:
                if impl in failed:
                    rows.append(failed[impl])
                    continue
                best = dict(min(runs[impl], key=lambda r: r["step_s"]))
                best["rounds_s"] = [r["step_s"] for r in runs[impl]]
                rows.append(best)
    return rows


def with_ratios(rows: list[dict]) -> list[dict]:
    """Rows with ``s_clip`` (seconds per clip) and, on ours, ``official_over_ours`` where the official
    model ran at the same (phase, batch)."""
    out = []
    for r in rows:
        r = dict(r)
        if "step_s" in r:
            r["s_clip"] = r["step_s"] / r["batch"]
        out.append(r)
    official_rows = {(r["phase"], r["batch"]): r for r in out if r["impl"] == OFFICIAL and "s_clip" in r}
    for r in out:
        off = official_rows.get((r["phase"], r["batch"]))
        if r["impl"] != OFFICIAL and "s_clip" in r and off is not None:
            r["official_over_ours"] = off["s_clip"] / r["s_clip"]
            theirs, ours = off.get("rounds_s"), r.get("rounds_s")
            if theirs and ours and len(theirs) == len(ours):
                r["round_ratios"] = [o / s for o, s in zip(theirs, ours)]
    return out


def format_table(rows: list[dict]) -> list[str]:
    """The table's lines: header, rule, one line per row of :func:`with_ratios`."""
    head = (
        f"{'phase':8s} {'impl':9s} {'batch':>5s} {'compile s':>9s} {'s/step':>8s} {'s/clip':>7s} "
        f"{'clips/s':>7s} {'peak RSS GiB':>12s} {'official / ours':>15s}  per round"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        lead = f"{r['phase']:8s} {r['impl']:9s} {r['batch']:5d} "
        if "failed" in r:
            lines.append(lead + "failed: " + r["failed"].splitlines()[-1][:100])
            continue
        compile_s = f"{r['compile_s']:9.1f}" if "compile_s" in r else f"{'-':>9s}"
        ratio = f"{r['official_over_ours']:14.2f}x" if "official_over_ours" in r else f"{'-':>15s}"
        per_round = " ".join(f"{x:.2f}x" for x in r.get("round_ratios", []))
        lines.append(
            lead
            + f"{compile_s} {r['step_s']:8.3f} {r['s_clip']:7.3f} {1 / r['s_clip']:7.2f} "
            f"{r['peak_rss_gib']:12.2f} {ratio}  {per_round}".rstrip()
        )
    return lines


def plot(rows: list[dict], path: Path, title: str) -> None:
    """Seconds per clip against the batch, one panel per phase, ours and the official model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    labels = {OURS: "coreecho-jax", OFFICIAL: "official PyTorch"}
    for ax, phase in zip(axes, PHASES):
        for impl, marker in ((OURS, "o-"), (OFFICIAL, "s--")):
            pts = sorted(
                (r["batch"], r["s_clip"])
                for r in rows
                if r["phase"] == phase and r["impl"] == impl and "s_clip" in r
            )
            if pts:
                ax.plot([b for b, _ in pts], [s for _, s in pts], marker, label=labels[impl])
        ax.set_xscale("log", base=2)
        batches = sorted({r["batch"] for r in rows if r["phase"] == phase})
        ax.set_xticks(batches, [str(b) for b in batches])
        ax.minorticks_off()
        ax.set_xlabel("batch (clips)")
        ax.set_ylabel("seconds per clip")
        ax.set_ylim(bottom=0)
        ax.set_title("eval forward" if phase == "forward" else "stage-1 training step")
        ax.grid(True, alpha=0.3)
        ax.legend()
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--forward-batches", type=int, nargs="*", default=[1, 2, 4])
    p.add_argument("--train-batches", type=int, nargs="*", default=[2, 4, 8])
    p.add_argument("--steps", type=int, default=2, help="timed steps per run (the best is kept)")
    p.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="runs per point, alternating ours and official (the best is kept)",
    )
    p.add_argument("--frames", type=int, default=36)
    p.add_argument("--size", type=int, default=112)
    p.add_argument("--official-repo", default=None, help="checkout of the official CoReEcho code")
    p.add_argument("--plot", type=Path, default=None, help="write seconds per clip vs batch to this PNG")
    p.add_argument("--out", type=Path, default=None, help="write the rows as JSON here")
    args = p.parse_args(argv)
    if any(b < 1 for b in args.forward_batches + args.train_batches) or min(args.steps, args.rounds) < 1:
        p.error("batches, --steps and --rounds must be >= 1")
    if args.official_repo is not None:
        try:
            args.official_repo = str(official.check_available(args.official_repo))
        except official.OfficialUnavailable as err:
            p.error(str(err))
        odd = [b for b in args.train_batches if b < 2 or b % 2]
        if odd:
            p.error(f"--official-repo needs even --train-batches >= 2 (two views per video), got {odd}")
    # what bench_model's worker reads besides the batch
    args.dtype, args.lax_steps = "float32", args.steps
    return args


def main(argv: list[str] | None = None) -> list[dict]:
    args = parse_args(argv)
    load0 = os.getloadavg()
    date = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    command = command_line("bench.batch_scaling", argv)
    rows = with_ratios(sweep(args))
    load1 = os.getloadavg()
    cores = len(os.sched_getaffinity(0))
    header = (
        f"UniFormer-S, clips {args.frames}x{args.size}x{args.size}, float32, {date}, "
        f"{platform.machine()} {cores} cores, load average {load0[0]:.1f} -> {load1[0]:.1f}"
    )
    print(f"\n# {command}\n# {header}")
    print("\n".join(format_table(rows)))
    if args.official_repo is None:
        print(f"\nofficial: {official.NOT_MEASURED}")
    if args.plot is not None:
        plot(rows, args.plot, header)
        print(f"# wrote {args.plot}")
    if args.out is not None:
        args.out.write_text(json.dumps(dict(command=command, header=header, rows=rows), indent=1))
        print(f"# wrote {args.out}")
    return rows


if __name__ == "__main__":
    main()
