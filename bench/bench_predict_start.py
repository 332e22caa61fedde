"""From process start to the printed EF: ``coreecho predict`` of one DICOM with UniFormer-S, with JAX's
persistent compilation cache cold, warm and switched off, side by side.

    python -m bench.bench_predict_start                  # one round: off, cold, warm
    python -m bench.bench_predict_start --rounds 3       # medians over three rounds

Each run is a fresh process (``sys.executable -m coreecho_jax predict``, what the documented
``coreecho predict --config=echonet --checkpoint=WEIGHTS --video=FILE.dcm`` runs), timed from just
before it starts to the moment its printed answer's ``"ef_mean"`` line arrives (the EF), and to its exit;
the CPU seconds it used are read from ``getrusage`` of the children. In each round, in this order:

* ``off``: ``--compile_cache=off``: every run compiles the model (the behaviour before the cache: the
  baseline, 35-45 s on the 2-core machine when issue 23 was filed);
* ``cold``: ``--compile_cache=<an empty folder>``: compiles and writes the cache;
* ``warm``: the same folder again: reads the compiled model back (goal: <= 15 s);
* ``imports``: ``python -c "import coreecho_jax.cli, coreecho_jax.predict"``, for reference: what
  starting Python and importing JAX and the project cost before any work.

The model is UniFormer-S at the paper's size (``configs/echonet.py``: 3 clips of 36 frames at stride 4,
112x112) with randomly initialised weights exported as a weights folder (timing only: the forward costs
the same whatever the weights hold; the EF means nothing). The DICOM is one of the project's synthetic
cines (:func:`coreecho_jax.data.synthetic.draw_echonet_video`; ``--frames`` frames, 50 fps, grey,
``--size`` px, uncompressed). The results JSON (``--out``) holds the date, the exact command, the
machine (cores, CPU model, load average before and after) and every time.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench import bench_folder as bf

#: The goal of issue 23 §4 for a warm cache (s), and the baseline it gave (s).
GOAL_WARM_S = 15.0
BASELINE_S = (35.0, 45.0)
#: The line of ``coreecho predict``'s printed JSON that holds the EF.
EF_KEY = '"ef_mean"'
KINDS = ("off", "cold", "warm")


def write_dicom(path: Path, frames: int, size: int) -> Path:
    """A synthetic grey cine of ``frames`` frames at 50 fps, ``size`` px, as a DICOM (kept when there)."""
    import cv2

    from coreecho_jax.data.synthetic import SyntheticConfig, draw_echonet_video, video_rng

    if path.exists():
        return path
    drawn = draw_echonet_video(video_rng(0, 0), SyntheticConfig(), num_frames=frames).frames
    if size != drawn.shape[1]:
        drawn = np.stack([cv2.resize(f, (size, size), interpolation=cv2.INTER_LINEAR) for f in drawn])
    return write_dicom_cine(path, drawn, fps=50.0)


def write_dicom_cine(path: Path, frames: np.ndarray, fps: float) -> Path:
    """A multi-frame ultrasound DICOM (Explicit VR Little Endian, MONOCHROME2, 8 bit) of uint8 grey
    frames ``[T, H, W]`` with ``FrameTime`` = 1000 / ``fps`` ms and fresh UIDs."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, UltrasoundMultiFrameImageStorage, generate_uid

    t, h, w = frames.shape
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = UltrasoundMultiFrameImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.SOPClassUID = UltrasoundMultiFrameImageStorage
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.Modality = "US"
    ds.Rows, ds.Columns, ds.NumberOfFrames = h, w, t
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.FrameTime = 1000.0 / fps
    ds.PixelData = np.ascontiguousarray(frames, np.uint8).tobytes()
    ds["PixelData"].VR = "OB"
    ds.save_as(path, enforce_file_format=True)
    return path


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed(command: list[str], env: dict[str, str], timeout: float) -> dict[str, Any]:
    """Runs ``command``; seconds to its ``"ef_mean"`` line (None when it printed none) and to its exit."""
    cpu0 = children_cpu()
    with tempfile.TemporaryFile("w+") as stderr:  # a file, not a pipe: a full pipe would stall the run
        start = time.perf_counter()
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=stderr, text=True, env=env)
        to_ef, ef = None, None
        for line in proc.stdout or ():
            if to_ef is None and EF_KEY in line:
                to_ef = time.perf_counter() - start
                ef = float(line.split(":", 1)[1].strip().rstrip(","))
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise SystemExit(f"{' '.join(command)}: no answer in {timeout:.0f} s") from None
        to_exit = time.perf_counter() - start
        if proc.returncode != 0:
            stderr.seek(0)
            raise SystemExit(f"{' '.join(command)} failed ({proc.returncode}):\n{stderr.read()[-3000:]}")
    return {
        "to_ef_s": None if to_ef is None else round(to_ef, 3),
        "to_exit_s": round(to_exit, 3),
        "cpu_s": round(children_cpu() - cpu0, 3),
        "ef": ef,
    }


def predict_command(weights: Path, dicom: Path, cache: str) -> list[str]:
    return [
        sys.executable,
        *("-m", "coreecho_jax", "predict", "--config=echonet"),
        f"--checkpoint={weights}",
        f"--video={dicom}",
        f"--compile_cache={cache}",
    ]


def cache_facts(folder: Path) -> dict[str, Any]:
    files = [p for p in folder.rglob("*") if p.is_file()]
    return {"files": len(files), "mib": bf.mib(sum(p.stat().st_size for p in files))}


def one_round(weights: Path, dicom: Path, env: dict[str, str], timeout: float) -> dict[str, Any]:
    """off, cold, warm and the imports, in that order (module doc)."""
    result: dict[str, Any] = {"off": timed(predict_command(weights, dicom, "off"), env, timeout)}
    with tempfile.TemporaryDirectory(prefix="compile_cache_") as cache:
        result["cold"] = timed(predict_command(weights, dicom, cache), env, timeout)
        result["cache"] = cache_facts(Path(cache))
        result["warm"] = timed(predict_command(weights, dicom, cache), env, timeout)
    imports = [sys.executable, "-c", "import coreecho_jax.cli, coreecho_jax.predict"]
    result["imports"] = timed(imports, env, timeout)
    if len({result[k]["ef"] for k in KINDS}) != 1:
        raise SystemExit(f"the three runs printed different EFs: {[result[k]['ef'] for k in KINDS]}")
    return result


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=1, help="off, cold, warm this many times (medians)")
    p.add_argument("--frames", type=int, default=150, help="frames of the DICOM cine (50 fps)")
    p.add_argument("--size", type=int, default=112, help="its frame size, px")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds a run may take")
    p.add_argument(
        "--workdir", type=Path, default=Path("/tmp/bench_predict_start"), help="weights, DICOM (kept)"
    )
    p.add_argument("--out", type=Path, default=Path("bench_predict_start.json"), help="the results JSON")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    args.workdir.mkdir(parents=True, exist_ok=True)
    result = bf.header(["bench.bench_predict_start", *(sys.argv[1:] if argv is None else argv)])
    print(
        f"# {result['machine']['cores']} cores, {result['machine']['cpu_model']}, load {os.getloadavg()[0]:.1f}"
    )
    weights = bf.random_weights(bf.config_of("echonet"), args.workdir / "weights_echonet")
    dicom = write_dicom(args.workdir / f"cine_{args.frames}x{args.size}.dcm", args.frames, args.size)
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("COREECHO_COMPILE_CACHE", "JAX_COMPILATION_CACHE_DIR")
    }
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(Path.cwd()), env.get("PYTHONPATH")]))
    rounds = []
    for r in range(args.rounds):
        rounds.append(one_round(weights, dicom, env, args.timeout))
        last = rounds[-1]
        times = ", ".join(f"{k} {last[k]['to_ef_s']:.1f} s" for k in KINDS)
        print(
            f"round {r + 1}: to the printed EF: {times}; imports alone {last['imports']['to_exit_s']:.1f} s; "
            f"load {os.getloadavg()[0]:.1f}",
            flush=True,
        )
    medians = {k: statistics.median(r[k]["to_ef_s"] for r in rounds) for k in KINDS}
    result["predict_start"] = {
        "model": "configs/echonet.py (UniFormer-S, 3 clips of 36 frames at stride 4, 112x112), randomly "
        "initialised weights (timing only)",
        "dicom": {
            "frames": args.frames,
            "size": args.size,
            "fps": 50.0,
            "transfer_syntax": "Explicit VR Little Endian",
        },
        "rounds": rounds,
        "median_to_ef_s": medians,
        "median_cpu_s": {k: statistics.median(r[k]["cpu_s"] for r in rounds) for k in KINDS},
        "median_imports_s": statistics.median(r["imports"]["to_exit_s"] for r in rounds),
        "goal_warm_s": GOAL_WARM_S,
        "meets_goal": medians["warm"] <= GOAL_WARM_S,
        "baseline_when_filed_s": list(BASELINE_S),
    }
    print(
        f"to the printed EF (median of {args.rounds}): cache off {medians['off']:.1f} s, cold {medians['cold']:.1f} s, "
        f"warm {medians['warm']:.1f} s (goal <= {GOAL_WARM_S:g} s); CPU seconds "
        + ", ".join(f"{k} {v:.1f}" for k, v in result["predict_start"]["median_cpu_s"].items())
    )
    result["machine"]["load_average_after"] = list(os.getloadavg())
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
