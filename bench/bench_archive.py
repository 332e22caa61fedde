"""How fast does ``coreecho predict-archive`` (Apache Beam, RunInference) predict a folder of cines with 1
and 2 workers, beside ``coreecho predict-folder``, and are the rows the same?

    python -m bench.bench_archive [--files 32] [--workers 1 2] [--out bench_archive.json] [--keep DIR]

Writes ``--files`` synthetic EchoNet-style cines (AVI, the project's synthetic writer) and the weights
folder of a randomly initialised UniFormer-S (the paper config: K = 3 clips of 36 x 112 x 112; the
numbers are meaningless, the cost is the real model's), then predicts the folder with
``predict_folder`` (in this process, its default decoding workers) and with ``predict_archive`` on the
DirectRunner in multi-processing mode with each ``--workers`` count. The compilation cache is a folder
of this run, filled by the first run (predict-folder), so that the Beam workers read the compiled
forward instead of compiling it again.

Each time is the wall time a user waits (listing, model loads, worker start, decoding, prediction,
writing), so a small ``--files`` is dominated by the fixed start. Prints files/s per run, the scaling
ratio of the largest worker count over 1 worker, and whether every run wrote the same rows (every
column). The load average before and after is printed: a shared machine inflates every number.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import functools
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

from bench import command_line, cpu_model


def make_weights(root: Path) -> Path:
    """The weights folder of a randomly initialised UniFormer-S with the paper config (seed 0)."""
    from configs import echonet
    from coreecho_jax.checkpoints.manager import RunCheckpoints, model_state_dict
    from coreecho_jax.models.coreecho import build_model
    from coreecho_jax.weights.export import export_weights

    config = echonet.get_config()
    run = root / "run"
    run.mkdir(parents=True)
    (run / "config.json").write_text(config.to_json_best_effort(indent=2))
    ckpts = RunCheckpoints(run / "checkpoints" / "stage2", async_save=False)
    ckpts.save_best(1, {"model": model_state_dict(build_model(config.model, seed=0))}, {"epoch": 0})
    ckpts.wait()
    ckpts.close()
    return export_weights(run, root / "weights")


def make_cines(root: Path, n: int) -> Path:
    """``n`` synthetic EchoNet-style AVI cines (112 x 112, their own lengths and frame rates)."""
    from coreecho_jax.data.synthetic.echonet import write_echonet_dataset

    data = write_echonet_dataset(root / "synthetic", n_videos=n, workers=1, progress=False)
    return data / "Videos"


def read_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def timed(name: str, fn, n: int, out: Path, **facts) -> dict:
    print(f"running {name} ...", file=sys.stderr, flush=True)
    load0 = os.getloadavg()[0]
    started = time.perf_counter()
    summary = fn()
    seconds = time.perf_counter() - started
    row = dict(run=name, files=n, seconds=seconds, files_per_s=n / seconds, load_before=load0, **facts)
    row.update(
        predicted=summary.predicted, failed=summary.failed, load_after=os.getloadavg()[0], csv=str(out)
    )
    return row


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--files", type=int, default=32, help="synthetic cines to predict")
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="Beam worker counts to run")
    p.add_argument("--folder-workers", type=int, default=None, help="predict-folder's decoding workers")
    p.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    p.add_argument(
        "--keep", type=Path, default=None, help="work in this folder and keep it (default: a temp)"
    )
    args = p.parse_args(argv)
    if args.files < 1 or min(args.workers) < 1:
        p.error("--files and --workers must be >= 1")
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    import coreecho_jax
    from coreecho_jax.inference import batch
    from coreecho_jax.inference.archive import ArchiveOptions, predict_archive

    command = command_line("bench.bench_archive", argv)
    date = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    load0 = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        root = args.keep or Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        cache = root / "compile_cache"
        print("writing the cines and the weights ...", file=sys.stderr, flush=True)
        videos = make_cines(root, args.files)
        weights = make_weights(root)
        load = functools.partial(coreecho_jax.from_pretrained, str(weights), compilation_cache=cache)
        runs = []
        out = root / "folder.csv"
        model = load()
        folder_workers = args.folder_workers if args.folder_workers is not None else batch.default_workers()
        predict = functools.partial(
            batch.predict_folder, model, videos, out, workers=folder_workers, progress=False
        )
        runs.append(timed("predict-folder", predict, args.files, out, workers=folder_workers))
        del model, predict
        for workers in args.workers:
            out = root / f"beam_{workers}.csv"
            options = ArchiveOptions(workers=workers)
            runs.append(
                timed(
                    f"predict-archive {workers} worker(s)",
                    lambda out=out, options=options: predict_archive(load, videos, out, options),
                    args.files,
                    out,
                    workers=workers,
                )
            )
        reference = read_rows(Path(runs[0]["csv"]))
        for r in runs:
            r["rows_equal_predict_folder"] = read_rows(Path(r.pop("csv"))) == reference
    beam = {r["workers"]: r for r in runs[1:]}
    scaling = None
    if 1 in beam and len(beam) > 1:
        most = max(beam)
        scaling = {"workers": most, "ratio": beam[most]["files_per_s"] / beam[1]["files_per_s"]}
    load1 = os.getloadavg()
    machine = f"{platform.machine()} {len(os.sched_getaffinity(0))} cores, {cpu_model()}"
    result = dict(
        command=command,
        date=date,
        machine=machine,
        load_average_before=load0,
        load_average_after=load1,
        model="UniFormer-S (paper config, random weights), K = 3 clips of 36x112x112, float32",
        runs=runs,
        scaling=scaling,
    )
    print(f"\n# {command}\n# {date}, {machine}, load average {load0[0]:.1f} -> {load1[0]:.1f}")
    print(f"{'run':28s} {'workers':>7s} {'files':>5s} {'seconds':>8s} {'files/s':>8s} {'same rows':>9s}")
    for r in runs:
        print(
            f"{r['run']:28s} {r['workers']:7d} {r['files']:5d} {r['seconds']:8.1f} {r['files_per_s']:8.3f} "
            f"{'yes' if r['rows_equal_predict_folder'] else 'NO':>9s}"
        )
    if scaling:
        print(f"scaling, {scaling['workers']} workers over 1: {scaling['ratio']:.2f}x")
    if args.out is not None:
        args.out.write_text(json.dumps(result, indent=1))
        print(f"# wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
