"""A DICOM corpus prepared on Apache Beam with 1 and 2 workers: files/s, scaling, same output, and a batch out.

    python -m bench.bench_beam [--files 1000] [--workers 1 2] [--workdir /tmp/bench_beam] [--in-process]
        [--size 48] [--small 40] [--out bench_beam.json]

1. Writes the synthetic MIMIC-like corpus (``coreecho_jax.data.synthetic.dicom_corpus``: ``--files`` cines
   of 24-40 frames, 60x64 pixels (``--size`` 48; larger frames make the per-file work heavier), 10% JPEG
   Baseline colour, 10% native RGB, 5% at 30 fps, plus one bad file of each kind preparation refuses)
   once under ``<workdir>/src<files>_<size>`` (its write time and size are printed).
2. Prepares it with ``prepare_corpus(..., beam=[], workers=N)`` (the DirectRunner in multi-processing mode)
   for each ``--workers`` N, each into a fresh data folder, and times it: wall clock and CPU time (this
   process and every child it reaped: the Beam workers and their guarded decoding processes). Files/s
   counts every file of the corpus (prepared or refused). Scaling = files/s with N workers / with the
   first N. ``--small K`` also prepares a K-cine corpus with each N, to split the wall time into a fixed
   pipeline cost (start of the workers, TFDS's shuffle and write) and a per-file rate:
   ``(files - K') / (wall - wall_small)``.
3. Checks that every run wrote the same records (a SHA-256 over every record, field by field, in
   storage order) and the same preparation report as the first.
4. Reads the output as training and evaluation do: one ``pipeline.train_dataset`` batch and one
   ``pipeline.eval_dataset`` batch (the demo config's clips: 16 frames at stride 4, 64 px), and says their
   shapes and time.

The result (printed line by line, and written to ``--out``) records the machine (architecture, CPU,
cores, memory, Python, Beam and TFDS versions), the date, the command and the load average before and after
the whole benchmark and each run: on a shared machine the wall-clock scaling is only an indication (compare
CPU time per file); rerun on a quiet machine. ``--in-process`` adds the in-process path (threads) with the
largest N, for comparison.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import importlib.metadata
import json
import os
import platform
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench import command_line, cpu_model


def _cpu() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def machine() -> dict[str, Any]:
    """What ran the benchmark: architecture, CPU, cores, memory (GiB), Python, Beam and TFDS versions."""
    try:
        memory_gib = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        memory_gib = None
    return {
        "arch": platform.machine(),
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "memory_gib": memory_gib,
        "os": platform.platform(),
        "python": sys.version.split()[0],
        "apache_beam": importlib.metadata.version("apache-beam"),
        "tensorflow_datasets": importlib.metadata.version("tensorflow-datasets"),
    }


def records_digest(builder: Any) -> tuple[str, int]:
    """SHA-256 over every record (field by field, in storage order) and the record count."""
    import tensorflow_datasets as tfds

    from coreecho_jax.data.echonet import echonet_tfds as et

    digest, count = hashlib.sha256(), 0
    for split in sorted(builder.info.metadata["videos"]):
        for record in tfds.as_numpy(et.split_dataset(builder, split)):
            for key in sorted(record):
                value = record[key]
                digest.update(
                    key.encode() + (value if isinstance(value, bytes) else np.asarray(value).tobytes())
                )
            count += 1
    return digest.hexdigest(), count


def prepare(source: Path, data_dir: Path, workers: int, beam: bool) -> dict[str, Any]:
    """One timed preparation into a fresh ``data_dir``."""
    from coreecho_jax.data.corpus import corpus_tfds as ct

    shutil.rmtree(data_dir, ignore_errors=True)
    load_before, cpu, start = _load(), _cpu(), time.perf_counter()
    builder = ct.prepare_corpus(source, data_dir, workers=workers, beam=[] if beam else None)
    wall, cpu = time.perf_counter() - start, _cpu() - cpu
    report = json.loads((Path(builder.data_dir) / ct.REPORT_NAME).read_text())
    digest, count = records_digest(builder)
    return {
        "path": "beam" if beam else "in-process",
        "workers": workers,
        "files": report["num_files"],
        "prepared": report["num_prepared"],
        "refused": report["num_refused"],
        "wall_s": round(wall, 2),
        "cpu_s": round(cpu, 2),
        "files_per_s": round(report["num_files"] / wall, 2),
        "cpu_ms_per_file": round(1000 * cpu / report["num_files"], 1),
        "load_before": load_before,
        "load_after": _load(),
        "records_sha256": digest,
        "records": count,
        "report_sha256": hashlib.sha256((Path(builder.data_dir) / ct.REPORT_NAME).read_bytes()).hexdigest(),
        "dataset_mb": round(sum(p.stat().st_size for p in Path(builder.data_dir).iterdir()) / 2**20, 1),
        "builder": builder,
    }


def read_batches(builder: Any) -> dict[str, Any]:
    """One training and one evaluation batch of the prepared corpus (demo clips)."""
    from configs import demo
    from coreecho_jax.data import clips
    from coreecho_jax.data.echonet import echonet_tfds as et
    from coreecho_jax.data.echonet import pipeline

    spec = clips.ClipSpec.from_config(demo.get_config().data)
    start = time.perf_counter()
    train = next(pipeline.as_numpy(pipeline.train_dataset(builder, "corpus", spec=spec, batch_size=8)))
    videos = et.split_videos(builder, "corpus")
    starts = {name: clips.even_starts(n, 2, spec) for name, n in videos.items()}
    evaluation = next(
        pipeline.as_numpy(pipeline.eval_dataset(builder, "corpus", starts, spec=spec, batch_size=8))
    )
    return {
        "train_video": list(train["video"].shape),
        "eval_video": list(evaluation["video"].shape),
        "eval_files": [f.decode() for f in evaluation["filename"][:2]],
        "seconds": round(time.perf_counter() - start, 2),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(prog="python -m bench.bench_beam", description=__doc__.split("\n")[0])
    p.add_argument(
        "--files", type=int, default=1000, help="cines in the synthetic corpus (plus the bad files)"
    )
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="Beam worker counts to time")
    p.add_argument(
        "--size", type=int, default=48, help="side of the drawn square, px (frames are size+12 x size+16)"
    )
    p.add_argument("--workdir", default="/tmp/bench_beam")
    p.add_argument("--small", type=int, default=0, help="also time a corpus of this many cines (fixed cost)")
    p.add_argument("--in-process", action="store_true", help="also time the in-process path (threads)")
    p.add_argument("--out", default="bench_beam.json", help="the result as JSON ('' to write none)")
    a = p.parse_args(argv)

    from coreecho_jax.data.synthetic import dicom_corpus as synth

    workdir = Path(a.workdir)
    result: dict[str, Any] = {
        "command": command_line("bench.bench_beam", argv),
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine(),
        "load_before": _load(),
    }
    print(json.dumps(result), flush=True)
    start = time.perf_counter()
    root = synth.write_dicom_corpus(workdir / f"src{a.files}_{a.size}", n_files=a.files, size=a.size)
    source = root / synth.FILES_DIR
    corpus_mb = sum(f.stat().st_size for f in source.rglob("*") if f.is_file()) / 2**20
    result |= {
        "corpus": {
            "cines": a.files,
            "bad_files": len(synth.BAD_FILES),
            "frame_rows_columns": [a.size + synth.BAR_ROWS, a.size + 2 * synth.SIDE_COLUMNS],
            "mb": round(corpus_mb, 1),
            "write_s": round(time.perf_counter() - start, 1),
        },
        "runs": [],
    }
    print(json.dumps(result["corpus"]), flush=True)
    runs = [(n, True) for n in a.workers] + ([(max(a.workers), False)] if a.in_process else [])
    for workers, beam in runs:
        run = prepare(source, workdir / f"tfds-{'beam' if beam else 'threads'}{workers}", workers, beam)
        builder = run.pop("builder")
        result["runs"].append(run)
        print(json.dumps(run), flush=True)
    first = result["runs"][0]
    result["same_records_and_report"] = all(
        (r["records_sha256"], r["report_sha256"]) == (first["records_sha256"], first["report_sha256"])
        for r in result["runs"]
    )
    beam_runs = [r for r in result["runs"] if r["path"] == "beam"]
    result["scaling"] = {
        f"{r['workers']}_vs_{beam_runs[0]['workers']}": round(
            r["files_per_s"] / beam_runs[0]["files_per_s"], 2
        )
        for r in beam_runs[1:]
    }
    if a.small:
        small = synth.write_dicom_corpus(workdir / f"src{a.small}_{a.size}", n_files=a.small, size=a.size)
        small = small / synth.FILES_DIR
        result["fixed_cost"] = []
        for run in beam_runs:
            tiny = prepare(small, workdir / f"tfds-small{run['workers']}", run["workers"], True)
            tiny.pop("builder")
            extra_s = run["wall_s"] - tiny["wall_s"]
            fixed = {
                "workers": run["workers"],
                "small_files": tiny["files"],
                "small_wall_s": tiny["wall_s"],
                # None: the small corpus took as long (the fixed cost dominates, or the load changed)
                "marginal_files_per_s": round((run["files"] - tiny["files"]) / extra_s, 2)
                if extra_s > 0
                else None,
            }
            result["fixed_cost"].append(fixed)
            print(json.dumps(fixed), flush=True)
    result["read"] = read_batches(builder)
    result["load_after"] = _load()
    keys = ("same_records_and_report", "scaling", "read", "load_after")
    print(json.dumps({k: result[k] for k in keys}), flush=True)
    if a.out:
        Path(a.out).write_text(json.dumps(result, indent=1) + "\n")
        print(f"# JSON written to {a.out}", flush=True)
    return result


if __name__ == "__main__":
    main()
