"""GPU throughput in one run, within a time budget: eval, stage-1 training, RnC, input pipeline, epoch.

    python -m bench.gpu [--budget-s 420] [--out bench_gpu.json] [--smoke] [--compile-cache DIR]

Prints one table (and writes the same rows as JSON to ``--out``), every row with the time it was
measured; the header gives the device kind, the jax version, the date and the exact command:

* ``eval``: UniFormer-S eval forward (encoder + head, eval mode) in clips/s, float32 and bfloat16
  (``model.dtype``), batch 32 and 128 clips of 36x112x112.
* ``train``: the stage-1 step (encoder + head forward in train mode, RnC + L1, backward, AdamW) in
  clips/s at the paper's batch, 16 videos = 32 clips, bfloat16 and float32, with and without
  ``model.remat`` (``bench_train.bench``: median of the waited steps).
* ``rnc``: Rank-N-Contrast forward + backward in ms at 2N = 1024, 4096, 16384, D = 512, the form
  ``implementation='auto'`` picks (``bench_rnc.time_size``: median after two warm-up calls).
* ``input``: stage-1 clips/s of ``pipeline.train_dataset`` with all host cores (tf.data AUTOTUNE)
  on a small synthetic set in the EchoNet-Dynamic layout written to a temporary folder
  (``bench_input.bench_ours``, whole epochs including the first-batch latency).
* ``train_max_batch``: the bfloat16 stage-1 step with the videos per step doubled from 16 until the
  device runs out of memory (caught), the budget or host memory runs out, or ``--max-videos``.
* ``epoch``: the EchoNet-Dynamic stage-1 epoch (7,465 videos, 2 clips each) from the fastest
  training row at the paper's batch and from the input rate; the slower one bounds it (the loop
  prefetches, so input and compute overlap).

Every timing excludes compilation and a warm-up call and ends with ``block_until_ready``. Items run
in order of importance; before each one the script predicts its cost from the previous item of its
kind and skips it, with the reason in the table, when it would not fit in what is left of
``--budget-s``. A compile that is already running cannot be interrupted, so keep a margin.
Training rows use every visible device (``bench_train``'s data-parallel mesh: the videos per step must
divide over them), eval and RnC rows one. Depthwise convolutions use ``model.depthwise='auto'``:
``'lax'`` (grouped convolution) on GPU, ``'shifted'`` on CPU; self-attention ``model.attention='auto'``:
cuDNN's fused attention on GPU in bfloat16, XLA's otherwise on GPU, ``'einsum'`` on CPU. The header
says which ran, and one more bfloat16 eval row runs the attention kernel 'auto' did not pick
(``'xla'``, or ``'einsum'`` where 'auto' is 'xla') at the largest eval batch, side by side.

``--smoke`` shrinks everything (preset 'tiny', 8x32x32 clips, batch 4 clips, 2N = 64, no doubling of
the batch) and lowers XLA's compile effort, to check the script on a CPU; its numbers mean nothing.
Its cost is mostly the compiles of four tiny training steps (10-30 s each on 2 busy cores).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import gc
import json
import os
import platform
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from bench import bench_rnc, bench_train, command_line, paper_model_config
from bench.bench_model import flops as compiled_flops
from coreecho_jax.models import depthwise
from coreecho_jax.models.coreecho import build_coreecho
from coreecho_jax.models.uniformer import resolve_attention, uniformer_config

SECTIONS = ("eval", "train", "rnc", "input", "train_max_batch", "epoch")
CLIPS_PER_VIDEO = 2  # stage 1: two views per video


@dataclasses.dataclass(frozen=True)
class Sizes:
    """What is measured (the full run or the ``--smoke`` shrink)."""

    preset: str = "small"
    frames: int = 36
    size: int = 112
    eval_batches: tuple[int, ...] = (32, 128)  # clips
    train_videos: int = 16  # the paper's batch: 16 videos = 32 clips
    rnc_sizes: tuple[int, ...] = (1024, 4096, 16384)  # 2N
    rnc_dim: int = 512
    repeats: int = 5
    input_videos: int = 64
    input_min_frames: int = 150
    input_max_frames: int = 200
    input_frame_size: int = 112
    input_seconds: float = 20.0
    input_estimate_s: float = 90.0  # write + prepare + measure, before anything is known
    max_videos: int = 1024


SMOKE = Sizes(
    preset="tiny",
    frames=8,
    size=32,
    eval_batches=(4,),
    train_videos=2,
    rnc_sizes=(64,),
    repeats=3,
    input_videos=8,
    input_min_frames=20,
    input_max_frames=30,
    input_frame_size=32,
    input_seconds=1.0,
    input_estimate_s=20.0,
    max_videos=2,  # the paper-batch row only: doubling costs one more compile (tested with a stand-in)
)


class Budget:
    """Wall-clock budget: ``skip_reason(estimate)`` is None when ``estimate`` seconds still fit."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.start = time.perf_counter()

    def left(self) -> float:
        return self.seconds - (time.perf_counter() - self.start)

    def skip_reason(self, estimate: float) -> str | None:
        left = self.left()
        if estimate > left:
            return f"skipped: needs about {estimate:.0f} s, {max(left, 0):.0f} s of --budget-s left"
        return None


class Report:
    """The rows, in measurement order; each a dict with section, item, value + unit or ``skipped``."""

    def __init__(self, command: str) -> None:
        self.command = command
        self.rows: list[dict] = []

    def add(self, section: str, item: str, **fields) -> dict:
        row = {
            "section": section,
            "item": item,
            "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "command": self.command,
            **fields,
        }
        self.rows.append(row)
        return row

    def skip(self, section: str, item: str, reason: str) -> dict:
        return self.add(section, item, skipped=reason)

    def section(self, name: str) -> list[dict]:
        return [r for r in self.rows if r["section"] == name]


def is_oom(error: BaseException) -> bool:
    """True for XLA's out-of-memory errors (at compile or run time)."""
    text = str(error)
    return "RESOURCE_EXHAUSTED" in text or "out of memory" in text.lower()


def _failure(error: BaseException) -> str:
    first = (str(error).strip().splitlines() or [""])[0][:200]
    kind = "out of memory" if is_oom(error) else "failed"
    return f"{kind}: {type(error).__name__}: {first}"


def _median_s(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def attention_auto(preset: str, dtype: str) -> str:
    """The attention kernel ``model.attention='auto'`` picks here for ``preset`` in ``dtype``."""
    cfg = uniformer_config(preset, dtype=dtype)
    return resolve_attention("auto", cfg.compute_dtype, cfg.head_dim)


def eval_rate(sizes: Sizes, batch: int, dtype: str, attention: str = "auto") -> dict:
    """Eval forward of CoReEcho (UniFormer encoder + head, eval mode) on ``[batch, T, S, S, 3]`` float32
    clips, self-attention by ``attention`` (``model.attention``)."""
    model = build_coreecho(paper_model_config(preset=sizes.preset, dtype=dtype, attention=attention))
    model.eval()
    graphdef, state = nnx.split(model)

    @jax.jit
    def forward(state, x):
        return nnx.merge(graphdef, state)(x)

    shape = (batch, sizes.frames, sizes.size, sizes.size, 3)
    x = jnp.asarray(np.random.default_rng(0).standard_normal(shape, np.float32))
    start = time.perf_counter()
    compiled = forward.lower(state, x).compile()
    compile_s = time.perf_counter() - start
    jax.block_until_ready(compiled(state, x))  # warm-up
    s = _median_s(lambda: compiled(state, x), sizes.repeats)
    flops = compiled_flops(compiled)
    return {
        "value": batch / s,
        "unit": "clips/s",
        "s_per_step": s,
        "compile_s": compile_s,
        "batch_clips": batch,
        "dtype": dtype,
        "attention": attention if attention != "auto" else attention_auto(sizes.preset, dtype),
        "xla_gflop_per_clip": flops / batch / 1e9,
        "achieved_tflops": flops / s / 1e12,
    }


def train_rate(sizes: Sizes, videos: int, dtype: str, remat: bool) -> dict:
    """Stage-1 step via ``bench_train.bench`` (median of the waited steps, after one warm-up step)."""
    name = f"gpu_{sizes.preset}_{sizes.frames}x{sizes.size}"
    bench_train.CONFIGS.setdefault(name, (sizes.preset, sizes.frames, sizes.size, sizes.train_videos))
    args = argparse.Namespace(
        batch=videos, dtype=dtype, remat=remat, steps=sizes.repeats, warmup=1, log_every=10
    )
    r = bench_train.bench(name, args)
    return {
        "value": r["clips_per_s"],
        "unit": "clips/s",
        "s_per_step": r["s_per_step"],
        "s_per_step_pipelined": r["s_per_step_pipelined"],
        "compile_s": r["compile_s"],
        "videos": r["videos"],
        "batch_clips": r["clips"],
        "dtype": dtype,
        "remat": remat,
        "echonet_epoch_s": r["echonet_epoch_s"],
    }


def rnc_rate(n: int, dim: int, repeats: int) -> dict:
    """RnC forward + backward (``bench_rnc.time_size``) of the form ``implementation='auto'`` picks."""
    form = bench_rnc.auto_form(n)
    t = bench_rnc.time_size(n, dim, [form], repeats, check_memory=False)[form]
    return {"value": t["ms"], "unit": "ms", "compile_s": t["compile_s"], "form": form, "rows": n, "dim": dim}


def input_rate(sizes: Sizes, workdir: Path, budget: Budget) -> dict:
    """Stage-1 clips/s of ``pipeline.train_dataset`` on a synthetic set (``bench_input.bench_ours``)."""
    from bench import bench_input
    from coreecho_jax.data import synthetic
    from coreecho_jax.data.clips import ClipSpec
    from coreecho_jax.data.echonet import echonet_tfds

    cores = os.cpu_count() or 1
    start = time.perf_counter()
    config = synthetic.SyntheticConfig(
        n_videos=sizes.input_videos,
        seed=0,
        size=sizes.input_frame_size,
        min_frames=sizes.input_min_frames,
        max_frames=sizes.input_max_frames,
    )
    root = synthetic.write_echonet_dataset(workdir / "echonet", config, workers=cores, progress=False)
    builder = echonet_tfds.prepare_echonet(root, workdir / "tfds", workers=cores)
    prepare_s = time.perf_counter() - start
    # warm-up epoch + measured epochs take about 2x the measuring time
    reason = budget.skip_reason(2 * sizes.input_seconds + 5)
    if reason:
        raise TimeoutError(f"the synthetic set took {prepare_s:.0f} s to write and prepare; {reason}")
    spec = ClipSpec(frames=sizes.frames, image_size=sizes.size)
    total, steady, per_cpu = bench_input.bench_ours(builder, sizes.input_seconds, sizes.train_videos, spec)
    return {
        "value": total,
        "unit": "clips/s",
        "steady_clips_per_s": steady,
        "clips_per_cpu_s": per_cpu,
        "host_cores": cores,
        "videos": sizes.input_videos,
        "prepare_s": prepare_s,
        "output": spec.output,
    }


def _host_bytes(sizes: Sizes, videos: int) -> int:
    """Host memory ``bench_train.bench`` needs for its two random batches (float64 draw + float32 copy)."""
    clip = sizes.frames * sizes.size * sizes.size * 3
    return 2 * videos * CLIPS_PER_VIDEO * clip * (8 + 4)


def _host_memory() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def run_item(report: Report, budget: Budget, section: str, item: str, estimate: float, fn) -> dict:
    """Run ``fn()`` (returning the row's fields) when ``estimate`` s fit the budget; a failure becomes
    a skip row with its reason. Adds ``elapsed_s`` (the item's wall time, compile included)."""
    reason = budget.skip_reason(estimate)
    if reason:
        return report.skip(section, item, reason)
    start = time.perf_counter()
    try:
        fields = fn()
    except Exception as error:
        row = report.skip(section, item, _failure(error))
    else:
        row = report.add(section, item, **fields)
    row["elapsed_s"] = time.perf_counter() - start
    gc.collect()
    return row


def run(sizes: Sizes, budget: Budget, report: Report, workdir: Path) -> None:
    """All measurements, most important first; each section's rows land in ``report``."""
    clip = f"{sizes.frames}x{sizes.size}x{sizes.size}"
    last: dict[str, float] = {}

    def item(section: str, name: str, fn, estimate: float | None = None) -> dict:
        row = run_item(
            report, budget, section, name, last.get(section, 0.0) if estimate is None else estimate, fn
        )
        if "elapsed_s" in row:
            last[section] = row["elapsed_s"]
        return row

    def eval_item(dtype: str, batch: int, attention: str = "auto") -> None:
        kernel = attention if attention != "auto" else attention_auto(sizes.preset, dtype)
        item(
            "eval",
            f"{sizes.preset} eval forward, {dtype}, attention '{kernel}', batch {batch} clips of {clip}",
            lambda: eval_rate(sizes, batch, dtype, attention),
        )

    def train_item(dtype: str, remat: bool) -> None:
        v = sizes.train_videos
        name = f"stage-1 step, {dtype}, remat {remat}, {v} videos = {CLIPS_PER_VIDEO * v} clips of {clip}"
        item("train", name, lambda: train_rate(sizes, v, dtype, remat))

    for batch in sizes.eval_batches:
        eval_item("bfloat16", batch)
    train_item("bfloat16", False)
    item(
        "input",
        f"train_dataset, {os.cpu_count()} host cores, {sizes.train_videos} videos x 2 clips of {clip}",
        lambda: input_rate(sizes, workdir / "input", budget),
        estimate=sizes.input_estimate_s,
    )
    for i, n in enumerate(sizes.rnc_sizes):
        prev = sizes.rnc_sizes[i - 1] if i else n
        name = f"RnC fwd+bwd, 2N={n}, D={sizes.rnc_dim}, implementation 'auto' ({bench_rnc.auto_form(n)})"
        # forward + backward work grows like (2N)^2
        item(
            "rnc",
            name,
            lambda n=n: rnc_rate(n, sizes.rnc_dim, sizes.repeats),
            last.get("rnc", 0.0) * (n / prev) ** 2,
        )
    for batch in sizes.eval_batches:
        eval_item("float32", batch)
    # the attention kernel 'auto' did not pick, side by side (on a GPU in bfloat16: 'xla' vs 'cudnn')
    auto = attention_auto(sizes.preset, "bfloat16")
    eval_item("bfloat16", sizes.eval_batches[-1], "xla" if auto != "xla" else "einsum")
    for dtype, remat in (("float32", False), ("bfloat16", True), ("float32", True)):
        train_item(dtype, remat)
    _max_batch(sizes, budget, report, clip)
    _epoch(report)


def _max_batch(sizes: Sizes, budget: Budget, report: Report, clip: str) -> None:
    """bfloat16 stage-1 step with the videos per step doubled until something stops it (the last row says what)."""
    section = "train_max_batch"
    videos, estimate, fitted = sizes.train_videos, 0.0, None
    paper = [r for r in report.section("train") if r.get("dtype") == "bfloat16" and not r.get("remat")]
    if paper and "value" in paper[0]:  # the paper's batch is measured already: start from twice it
        fitted, estimate, videos = paper[0], 2 * paper[0]["elapsed_s"], 2 * sizes.train_videos
    while True:
        if videos > sizes.max_videos:
            stop = f"stopped: --max-videos {sizes.max_videos} reached"
            break
        if _host_bytes(sizes, videos) > _host_memory() // 2:
            stop = f"stopped: {videos} videos of random input need more than half the host memory"
            break
        name = f"stage-1 step, bfloat16, {videos} videos = {CLIPS_PER_VIDEO * videos} clips of {clip}"
        row = run_item(
            report, budget, section, name, estimate, lambda v=videos: train_rate(sizes, v, "bfloat16", False)
        )
        if "skipped" in row:
            stop = f"stopped at {videos} videos: {row['skipped']}"
            break
        fitted, estimate = row, 2 * row["elapsed_s"]  # twice the clips: about twice the compile + steps
        videos *= 2
    if fitted is None:
        report.skip(section, "largest batch that fits", stop)
    else:
        best = {
            k: fitted[k] for k in ("value", "unit", "videos", "batch_clips", "s_per_step", "echonet_epoch_s")
        }
        report.add(section, f"largest batch that fits: {fitted['videos']} videos", **best, note=stop)


def _epoch(report: Report) -> None:
    """EchoNet-Dynamic stage-1 epoch: the slower of the training bound and the input bound."""
    section = "epoch"
    videos = bench_train.ECHONET_TRAIN_VIDEOS
    train = [r for r in report.section("train") if "value" in r]
    inputs = [r for r in report.section("input") if "value" in r]
    if not train:
        report.skip(
            section, f"EchoNet-Dynamic epoch ({videos} videos)", "no stage-1 training rate was measured"
        )
        return
    best = max(train, key=lambda r: r["value"])
    train_s = best["echonet_epoch_s"]
    clips = (videos // best["videos"]) * best["batch_clips"]  # full batches, as bench_train counts
    report.add(
        section,
        f"training bound ({best['dtype']}, remat {best['remat']}, {best['videos']} videos a step)",
        value=train_s,
        unit="s",
    )
    if not inputs:
        report.skip(section, "input bound", "the input pipeline rate was not measured")
        report.skip(
            section, f"EchoNet-Dynamic epoch ({videos} videos)", "the input pipeline rate was not measured"
        )
        return
    input_s = clips / inputs[0]["value"]
    report.add(section, f"input bound ({inputs[0]['host_cores']} host cores)", value=input_s, unit="s")
    bound = "training" if train_s >= input_s else "input"
    report.add(
        section,
        f"EchoNet-Dynamic epoch ({videos} videos x {CLIPS_PER_VIDEO} clips)",
        value=max(train_s, input_s),
        unit="s",
        note=f"bounded by {bound}",
    )


def meta(args: argparse.Namespace, command: str, sizes: Sizes) -> dict:
    dev = jax.devices()[0]
    return {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "command": command,
        "device_kind": dev.device_kind,
        "platform": dev.platform,
        "device_count": jax.device_count(),
        "jax_version": jax.__version__,
        "python": platform.python_version(),
        "host": f"{platform.machine()}, {os.cpu_count()} cores",
        "depthwise_auto": depthwise.resolve_impl("auto"),
        "attention_auto": {d: attention_auto(sizes.preset, d) for d in ("float32", "bfloat16")},
        "budget_s": args.budget_s,
        "smoke": args.smoke,
    }


def _fmt(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:.3g}"


def print_table(info: dict, report: Report, elapsed: float) -> None:
    print(
        f"\n# {info['device_kind']} ({info['platform']} x{info['device_count']}) | jax {info['jax_version']} | "
        f"{info['host']} | depthwise 'auto' = '{info['depthwise_auto']}' | attention 'auto' = "
        f"{info['attention_auto']} | {info['date']}"
    )
    print(
        f"# command: {info['command']}  (every row below; {elapsed:.0f} s of {info['budget_s']:g} s budget)"
    )
    head = (
        f"{'section':<16}{'item':<86}{'value':>12} {'unit':<8}{'compile s':>10}  {'measured (UTC)':<20} note"
    )
    print(head)
    print("-" * len(head))
    for r in sorted(report.rows, key=lambda r: SECTIONS.index(r["section"])):
        value = _fmt(r["value"]) if "value" in r else "-"
        compile_s = f"{r['compile_s']:.1f}" if "compile_s" in r else ""
        note = r.get("skipped") or r.get("note") or ""
        if "achieved_tflops" in r and info["depthwise_auto"] == "lax":  # 'shifted' loops are undercounted
            note = f"{r['achieved_tflops']:.1f} TFLOP/s by XLA's count ({r['xla_gflop_per_clip']:.1f} GFLOP/clip)"
        print(
            f"{r['section']:<16}{r['item']:<86}{value:>12} {r.get('unit', ''):<8}{compile_s:>10}  "
            f"{r['date'][:19]:<20} {note}"
        )


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budget-s", type=float, default=420.0, help="wall-clock budget of all measurements")
    parser.add_argument("--out", type=Path, default=Path("bench_gpu.json"), help="JSON output")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, to check the script on a CPU")
    parser.add_argument("--max-videos", type=int, default=None, help="cap of the max-batch search (videos)")
    parser.add_argument("--compile-cache", type=Path, default=None, help="persistent XLA compilation cache")
    args = parser.parse_args(argv)
    if args.smoke:  # cheaper XLA compiles (read when the backend starts, below); the numbers mean nothing
        flags = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"
        os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {flags}".strip()
    command = command_line("bench.gpu", argv)
    if args.compile_cache is not None:
        jax.config.update("jax_compilation_cache_dir", str(args.compile_cache))
    sizes = SMOKE if args.smoke else Sizes()
    if args.max_videos is not None:
        sizes = dataclasses.replace(sizes, max_videos=args.max_videos)
    budget = Budget(args.budget_s)
    report = Report(command)
    info = meta(args, command, sizes)
    with tempfile.TemporaryDirectory(prefix="bench_gpu_") as tmp:
        run(sizes, budget, report, Path(tmp))
    elapsed = time.perf_counter() - budget.start
    print_table(info, report, elapsed)
    result = {"meta": {**info, "elapsed_s": elapsed}, "sections": {s: report.section(s) for s in SECTIONS}}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    print(f"# JSON written to {args.out}")
    return result


if __name__ == "__main__":
    main()
