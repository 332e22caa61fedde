"""EF for a folder: ``predict_folder`` (``coreecho predict-folder``) against a plain sequential loop, and
its peak memory against the number of files.

    python -m bench.bench_folder                                   # 200 files; memory at 100 and 1,000
    python -m bench.bench_folder --files 8 --memory-files 20 100   # a quick check
    python -m bench.bench_folder --size 448                        # scanner-sized frames (decoding costs more)

Throughput. ``--files`` synthetic cines (the project's EchoNet-Dynamic writer,
:func:`coreecho_jax.data.synthetic.write_echonet_dataset`: 112x112 grey AVI (FFV1) at 50 fps,
``--min-frames`` .. ``--max-frames`` frames; ``--size`` > 112 writes each one again upscaled, as a
scanner's export is larger than EchoNet-Dynamic's) are predicted by UniFormer-S at the paper's size
(``configs/echonet.py``: 3 clips of 36 frames at stride 4, 112x112) with randomly initialised weights
(exported as a weights folder; the forward costs the same whatever the weights hold, and their EF
means nothing). One model is loaded and compiled once (a warm-up prediction of the first file, not
timed), then, in each of ``--rounds`` rounds, in turn:

* loop: for each file, decode and prepare it (``EchoModel.prepare``), then predict it
  (``EchoModel.predict_prepared``): what ``EchoModel.predict`` does, one file at a time; the two parts
  are timed apart, so the split between decoding ``d`` and the model ``m`` is known;
* folder: ``predict_folder`` of the folder into a fresh CSV (``--workers`` spawned decoding processes,
  ``--prefetch`` videos each, the model in this process).

And once, after the rounds, the first ``--per-process`` files each by its own ``coreecho predict``
process (what a user had before the folder command: every process loads the model and compiles it),
with the compilation cache off and warm; the folder's rate over theirs is printed too.

The ratio is the folder's videos per minute over the loop's (medians over the rounds). Decoding ahead can
hide the decoding behind the model and no more, so ``(d + m) / max(d, m)`` bounds it (printed as the
ceiling); on a machine whose cores the model already uses, less.

Memory. For each of ``--memory-files`` (default 100 and 1,000), a fresh process loads the
``--memory-config`` model (default ``demo:quick``: the demo's small UniFormer on 8-frame 32x32 clips,
so that 1,000 files take minutes; the model's size is a constant and the question is whether memory
grows with the files), predicts one file (compiling), then runs ``predict_folder`` on a manifest of
the first N short cines (``--memory-frames``, default 48..64 frames) while a thread samples the resident
memory of the process and its decoding processes (``/proc``, every 50 ms). Reported: the peak of that sum
during the folder run, the same sum before it, and ``getrusage``'s peak of the process and of its
largest child. The goal: the peak at 1,000 files within 10 % of the peak at 100.

Timings are wall clock (and CPU seconds of the process and its children); on a shared machine the load
average is recorded before and after. The results JSON (``--out``) holds the date, the exact command,
the machine and every number.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import json
import os
import platform
import resource
import shlex
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import ml_collections

from bench import cpu_model

#: The goals of issue 23 §4.
GOAL_RATIO = 1.8
GOAL_MEMORY_GROWTH = 0.10


# ------------------------------------------------- inputs and facts (bench_predict_start uses them too)

#: The card of a weights folder written by :func:`random_weights`.
RANDOM_CARD = (
    "# Randomly initialised weights (benchmark only)\n\n"
    "Written by bench/bench_folder.py to time prediction; the EF these weights give means nothing.\n"
)


def machine() -> dict[str, Any]:
    """The facts a benchmark's numbers depend on: cores, CPU model, Python, jax, the load average now."""
    return {
        "cores": os.cpu_count(),
        "cpu_model": cpu_model(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "jax": importlib.metadata.version("jax"),
        "load_average_before": list(os.getloadavg()),
    }


def header(argv: list[str]) -> dict[str, Any]:
    """The results JSON's opening: the date (UTC), the exact command, the machine (load before)."""
    return {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "command": "python -m " + " ".join(shlex.quote(a) for a in argv),
        "machine": machine(),
    }


def config_of(name: str, overrides: dict[str, Any] | None = None) -> ml_collections.ConfigDict:
    """The project config ``name`` (``echonet``: the paper's UniFormer-S and clips; ``demo``: the small
    model and clips of the demo), with dotted ``overrides`` (``{"data.frames": 8}``)."""
    from coreecho_jax import configs

    config = configs.load(name)
    for key, value in (overrides or {}).items():
        node = config
        *parents, leaf = key.split(".")
        for part in parents:
            node = node[part]
        node[leaf] = value
    return config


def random_weights(config: ml_collections.ConfigDict, folder: Path, seed: int = 0) -> Path:
    """A weights folder (``coreecho export-weights``'s format) of ``config.model`` randomly initialised
    with ``seed``; kept when it already exists with the same config."""
    from coreecho_jax.errors import CoreEchoError
    from coreecho_jax.evaluation.evaluator import model_fingerprint
    from coreecho_jax.inference import weights_folder
    from coreecho_jax.models.coreecho import build_model

    model = build_model(config.model, seed=seed)
    fingerprint = model_fingerprint(model)
    folder_config = weights_folder.folder_config(
        config.to_dict(),
        model,
        weights_sha256=fingerprint,
        source={"kind": "random", "origin": f"seed {seed}"},
    )
    if weights_folder.is_weights_folder(folder):
        try:
            if weights_folder.read_folder(folder).weights_sha256 == fingerprint:
                return folder
        except CoreEchoError:  # a folder left half-written: written again
            pass
    return weights_folder.write_folder(folder, model, folder_config, RANDOM_CARD, force=True)


def synthetic_videos(root: Path, n: int, *, min_frames: int, max_frames: int, seed: int = 0) -> list[Path]:
    """``n`` synthetic cines (AVI, 112x112 grey, 50 fps) under ``root/Videos`` (the EchoNet-Dynamic
    writer, :func:`coreecho_jax.data.synthetic.write_echonet_dataset`; kept when already written with
    the same settings), sorted by name."""
    from coreecho_jax.data import echonet_layout as layout
    from coreecho_jax.data.synthetic import write_echonet_dataset

    write_echonet_dataset(
        root,
        n_videos=n,
        seed=seed,
        min_frames=min_frames,
        max_frames=max_frames,
        with_tracings=False,
        workers=max(1, (os.cpu_count() or 1)),
        progress=False,
    )
    return sorted((root / layout.VIDEO_DIR).iterdir())


def write_manifest(path: Path, videos: list[Path]) -> Path:
    """A manifest CSV (``path`` column) naming ``videos``, for ``predict_folder``."""
    path.write_text("path\n" + "".join(f"{v}\n" for v in videos))
    return path


# ------------------------------------------------------------------------------------------------ memory


def tree_rss_bytes(root: int) -> int:
    """The resident memory (bytes) of process ``root`` and all its descendants, from ``/proc`` (Linux).

    Shared pages (the same library mapped by two processes) count once per process, as RSS does.
    """
    parents: dict[int, int] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                stat = Path(entry.path, "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    tree, grew = {root}, True
    while grew:
        more = {pid for pid, ppid in parents.items() if ppid in tree} - tree
        grew = bool(more)
        tree |= more
    page = os.sysconf("SC_PAGE_SIZE")
    total = 0
    for pid in tree:
        try:
            total += int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * page
        except OSError:
            continue  # ended between the listing and now
    return total


class PeakRss:
    """The peak of :func:`tree_rss_bytes` of this process, sampled every ``interval`` s in a thread
    (``with PeakRss() as peak: ...``; then ``peak.bytes``, ``peak.samples``)."""

    def __init__(self, interval: float = 0.05):
        self.interval = interval
        self.bytes = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.bytes = max(self.bytes, tree_rss_bytes(os.getpid()))
            self.samples += 1
            self._stop.wait(self.interval)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.bytes = max(self.bytes, tree_rss_bytes(os.getpid()))


def mib(n: float) -> float:
    return round(n / 2**20, 1)


# ------------------------------------------------------------------------------------------------ throughput


def cpu_seconds() -> float:
    """User + system CPU seconds of this process and its reaped children."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def upscaled(videos: list[Path], size: int, folder: Path) -> list[Path]:
    """``videos`` written again into ``folder`` with frames resized to ``size`` x ``size`` (linear), kept
    when already there."""
    import cv2
    import numpy as np

    from coreecho_jax.data.video import video_io

    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for video in videos:
        target = folder / video.name
        if not target.exists():
            with video_io.open_frames(video) as source:
                frames = [
                    cv2.resize(f, (size, size), interpolation=cv2.INTER_LINEAR) for f in source.iter_frames(1)
                ]
            tmp = video_io.write_video(folder / f"tmp_{video.name}", np.stack(frames), fps=50.0)
            tmp.replace(target)
        out.append(target)
    return out


def throughput_files(args: argparse.Namespace) -> list[Path]:
    root = args.workdir / f"cines_n{args.files}_f{args.min_frames}-{args.max_frames}"
    videos = synthetic_videos(root, args.files, min_frames=args.min_frames, max_frames=args.max_frames)
    if args.size != 112:
        videos = upscaled(videos, args.size, root / f"Videos_{args.size}")
    return videos


def run_loop(model: Any, videos: list[Path]) -> dict[str, float]:
    """The plain loop: decode and prepare, then predict, one file at a time."""
    decode = predict = 0.0
    cpu0, start = cpu_seconds(), time.perf_counter()
    for video in videos:
        t0 = time.perf_counter()
        prepared = model.prepare(video)
        t1 = time.perf_counter()
        model.predict_prepared(prepared)
        t2 = time.perf_counter()
        decode, predict = decode + t1 - t0, predict + t2 - t1
    seconds = time.perf_counter() - start
    return {
        "seconds": round(seconds, 3),
        "cpu_s": round(cpu_seconds() - cpu0, 3),
        "videos_per_min": round(60 * len(videos) / seconds, 2),
        "decode_s_per_video": round(decode / len(videos), 4),
        "model_s_per_video": round(predict / len(videos), 4),
    }


def run_folder(
    model: Any, folder: Path, out_csv: Path, n: int, workers: int, prefetch: int
) -> dict[str, float]:
    """``predict_folder`` of ``folder`` into a fresh ``out_csv``."""
    from coreecho_jax.inference import batch

    out_csv.unlink(missing_ok=True)
    cpu0, start = cpu_seconds(), time.perf_counter()
    summary = batch.predict_folder(model, folder, out_csv, workers=workers, prefetch=prefetch, progress=False)
    seconds = time.perf_counter() - start
    if (summary.predicted, summary.failed) != (n, 0):
        raise SystemExit(f"predict_folder: {summary.line()}; expected {n} predicted and none failed")
    return {
        "seconds": round(seconds, 3),
        "cpu_s": round(cpu_seconds() - cpu0, 3),
        "videos_per_min": round(60 * n / seconds, 2),
    }


def run_per_process(weights: Path, config: str, videos: list[Path], cache: str) -> dict[str, float]:
    """One ``coreecho predict`` process per file, one after the other: what a user had before the folder
    command (each process loads the model and, with ``cache="off"``, compiles it again)."""
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(Path.cwd()), os.environ.get("PYTHONPATH")]))
    )
    start = time.perf_counter()
    for video in videos:
        command = [
            sys.executable,
            "-m",
            "coreecho_jax",
            "predict",
            f"--config={config}",
            f"--checkpoint={weights}",
        ]
        command += [f"--video={video}", f"--compile_cache={cache}"]
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    seconds = time.perf_counter() - start
    return {
        "files": len(videos),
        "seconds": round(seconds, 3),
        "videos_per_min": round(60 * len(videos) / seconds, 2),
    }


def throughput(args: argparse.Namespace) -> dict[str, Any]:
    import coreecho_jax
    from coreecho_jax.inference import batch

    videos = throughput_files(args)
    weights = random_weights(config_of(args.config), args.workdir / f"weights_{args.config}")
    model = coreecho_jax.from_pretrained(weights, compilation_cache=False)
    start = time.perf_counter()
    model.predict(videos[0])  # compiles: once, for both sides
    warm_up = time.perf_counter() - start
    workers = batch.default_workers() if args.workers is None else args.workers
    rounds: list[dict[str, Any]] = []
    for r in range(args.rounds):
        loop = run_loop(model, videos)
        folder = run_folder(
            model, videos[0].parent, args.workdir / "folder.csv", len(videos), workers, args.prefetch
        )
        rounds.append({"loop": loop, "folder": folder})
        print(
            f"round {r + 1}: loop {loop['videos_per_min']:.1f} videos/min (decode {loop['decode_s_per_video']:.3f} s "
            f"+ model {loop['model_s_per_video']:.3f} s per video), predict_folder {folder['videos_per_min']:.1f} "
            f"videos/min; load {os.getloadavg()[0]:.1f}",
            flush=True,
        )
    loop_rate = statistics.median(r["loop"]["videos_per_min"] for r in rounds)
    folder_rate = statistics.median(r["folder"]["videos_per_min"] for r in rounds)
    per_process = {}
    if args.per_process:  # the same run: one process per file, the compile cache off (before) and warm
        files = videos[: args.per_process]
        per_process["cache_off"] = run_per_process(weights, args.config, files, "off")
        cache = args.workdir / "compile_cache"
        run_per_process(weights, args.config, files[:1], str(cache))  # fills it
        per_process["cache_warm"] = run_per_process(weights, args.config, files, str(cache))
        for name, run in per_process.items():
            run["folder_ratio"] = round(folder_rate / run["videos_per_min"], 2)
            print(
                f"one process per file ({name}): {run['videos_per_min']:.1f} videos/min; predict_folder "
                f"x{run['folder_ratio']:.1f}",
                flush=True,
            )
    d = statistics.median(r["loop"]["decode_s_per_video"] for r in rounds)
    m = statistics.median(r["loop"]["model_s_per_video"] for r in rounds)
    return {
        "files": len(videos),
        "frame_size": args.size,
        "frames": [args.min_frames, args.max_frames],
        "model": f"configs/{args.config}.py, randomly initialised weights (timing only)",
        "workers": workers,
        "prefetch": args.prefetch,
        "warm_up_s": round(warm_up, 3),
        "rounds": rounds,
        "loop_videos_per_min": loop_rate,
        "folder_videos_per_min": folder_rate,
        "ratio": round(folder_rate / loop_rate, 3),
        "per_process": per_process,
        "ceiling_ratio": round((d + m) / max(d, m), 3),
        "goal_ratio": GOAL_RATIO,
        "meets_goal": folder_rate / loop_rate >= GOAL_RATIO,
    }


# ------------------------------------------------------------------------------------------------ memory


def memory_child(args: argparse.Namespace) -> None:
    """One memory measurement (a fresh process): prints its JSON line."""
    import coreecho_jax
    from coreecho_jax.inference import batch

    manifest = Path(args.memory_child)
    first = Path(manifest.read_text().splitlines()[1])
    model = coreecho_jax.from_pretrained(args.weights, compilation_cache=False)
    model.predict(first)
    before = tree_rss_bytes(os.getpid())
    workers = batch.default_workers() if args.workers is None else args.workers
    out_csv = manifest.with_suffix(".out.csv")
    out_csv.unlink(missing_ok=True)
    start = time.perf_counter()
    with PeakRss() as peak:
        summary = batch.predict_folder(
            model, manifest, out_csv, workers=workers, prefetch=args.prefetch, progress=False
        )
    seconds = time.perf_counter() - start
    print(
        json.dumps(
            {
                "files": summary.predicted + summary.failed,
                "failed": summary.failed,
                "seconds": round(seconds, 3),
                "workers": workers,
                "prefetch": args.prefetch,
                "tree_rss_before_mib": mib(before),
                "peak_tree_rss_mib": mib(peak.bytes),
                "samples": peak.samples,
                "maxrss_self_mib": mib(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024),
                "maxrss_largest_child_mib": mib(
                    resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
                ),
            }
        ),
        flush=True,
    )


def memory(args: argparse.Namespace) -> dict[str, Any]:
    """The memory runs, one fresh process each (:func:`memory_child`)."""
    most = max(args.memory_files)
    lo, hi = args.memory_frames
    root = args.workdir / f"memory_n{most}_f{lo}-{hi}"
    videos = synthetic_videos(root, most, min_frames=lo, max_frames=hi, seed=1)
    weights = random_weights(config_of(args.memory_config), args.workdir / f"weights_{args.memory_config}")
    runs = []
    for n in args.memory_files:
        manifest = write_manifest(root / f"manifest_{n}.csv", videos[:n])
        command = [
            sys.executable,
            "-m",
            "bench.bench_folder",
            "--memory-child",
            str(manifest),
            "--weights",
            str(weights),
        ]
        command += ["--prefetch", str(args.prefetch)]
        if args.workers is not None:
            command += ["--workers", str(args.workers)]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise SystemExit(f"the memory run of {n} files failed:\n{done.stderr[-3000:]}")
        run = json.loads(done.stdout.strip().splitlines()[-1])
        runs.append(run)
        print(
            f"memory, {n} files: peak {run['peak_tree_rss_mib']:.0f} MiB (process and decoding workers; "
            f"{run['tree_rss_before_mib']:.0f} MiB before the folder run) in {run['seconds']:.0f} s",
            flush=True,
        )
    fewest = min(runs, key=lambda r: r["files"])["peak_tree_rss_mib"]
    most = max(runs, key=lambda r: r["files"])["peak_tree_rss_mib"]
    return {
        "model": f"configs: {args.memory_config}, randomly initialised weights (small clips: the memory runs "
        "measure growth with the number of files, not the paper model's size)",
        "frame_size": 112,
        "frames": [lo, hi],
        "runs": runs,
        "change": round(most / fewest - 1, 4),
        "goal_change_within": GOAL_MEMORY_GROWTH,
        "meets_goal": abs(most / fewest - 1) <= GOAL_MEMORY_GROWTH,
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--files", type=int, default=200, help="cines in the throughput folder")
    p.add_argument("--size", type=int, default=112, help="frame size of the cines (112: EchoNet-Dynamic's)")
    p.add_argument("--min-frames", type=int, default=150)
    p.add_argument("--max-frames", type=int, default=200)
    p.add_argument("--config", default="echonet", help="the model (echonet: UniFormer-S, the paper's clips)")
    p.add_argument("--workers", type=int, default=None, help="decoding processes (default: cores - 1)")
    p.add_argument("--prefetch", type=int, default=2)
    p.add_argument("--rounds", type=int, default=1, help="loop then folder, this many times (medians)")
    p.add_argument(
        "--per-process",
        type=int,
        default=5,
        help="files predicted by one coreecho predict process each (0: none)",
    )
    p.add_argument("--memory-files", type=int, nargs="*", default=[100, 1000], help="none: no memory runs")
    p.add_argument("--memory-config", default="demo:quick")
    p.add_argument("--memory-frames", type=int, nargs=2, default=[48, 64], metavar=("MIN", "MAX"))
    p.add_argument("--no-throughput", action="store_true", help="only the memory runs")
    p.add_argument("--workdir", type=Path, default=Path("/tmp/bench_folder"), help="videos, weights (kept)")
    p.add_argument("--out", type=Path, default=Path("bench_folder.json"), help="the results JSON")
    p.add_argument("--memory-child", help=argparse.SUPPRESS)
    p.add_argument("--weights", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.memory_child:
        memory_child(args)
        return
    args.workdir.mkdir(parents=True, exist_ok=True)
    result = header(["bench.bench_folder", *(sys.argv[1:] if argv is None else argv)])
    print(
        f"# {result['machine']['cores']} cores, {result['machine']['cpu_model']}, load {os.getloadavg()[0]:.1f}"
    )
    if not args.no_throughput:
        result["throughput"] = t = throughput(args)
        print(
            f"predict_folder {t['folder_videos_per_min']:.1f} videos/min vs loop {t['loop_videos_per_min']:.1f}: "
            f"x{t['ratio']:.2f} (goal >= {GOAL_RATIO}; decoding ahead can give at most x{t['ceiling_ratio']:.2f} here)"
        )
    if args.memory_files:
        result["memory"] = mem = memory(args)
        print(
            f"memory {mem['change']:+.1%} from the fewest to the most files "
            f"(goal within {GOAL_MEMORY_GROWTH:.0%})"
        )
    result["machine"]["load_average_after"] = list(os.getloadavg())
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
