"""Stage-1 input throughput: our TFDS + tf.data pipeline vs the official loader's per-clip work.

    python -m bench.bench_input [--videos 64] [--seconds 20] [--threads N] [--workdir /tmp/bench_input]
    python -m bench.bench_input --stores rgb,grey-once --formats raw --outputs float32 \
        --frames 16 --image-size 64 --rounds 3 --no-baseline      # the demo's clips, RGB vs grey-once store

Both sides produce the same stage-1 samples: 2 clips per video, 36 frames at stride 4, black padding
to 144 frames, +-6 px translation, official normalisation, float32 3-channel 112x112 (``--frames``,
``--stride``, ``--image-size`` change the clip of our side; the baseline stays official).

* baseline (what CoReEcho's ``EchoNet.__getitem__`` does, once per clip since ``EchoNetRNC`` calls it
  twice per video): decode the whole AVI with OpenCV, BGR->RGB, float32 ``(3, F, H, W)``, pad to 144,
  sample a start, pad/crop the clip, normalise. numpy + OpenCV in a thread pool of N threads
  (OpenCV and numpy release the GIL), N = CPU cores by default.
* ours: ``pipeline.train_dataset`` over the prepared TFDS dataset (raw or PNG frames, only the used
  frames decoded), batch 16 videos = 32 clips, several epochs streamed by one dataset as the loop does;
  for each store (``--stores``): ``rgb`` = three channels for every video (``collapse_grey=False``,
  the 1.1 layout), ``grey-once`` = the default RGB dataset, whose grey videos are stored with one
  channel and tiled back on read (the same clips), ``luma`` = ``channels=1``.

Each store is prepared afresh into ``<workdir>/tfds`` (its preparation time is printed, wall and CPU). The rows are
timed ``--rounds`` times in turn (A, B, C, A, B, C, ...) so that load from other processes spreads
over all of them; the medians are printed. Prints the bytes each prepared video takes, clips/s for
every row, the ratio to the baseline, and clips/s per core. The synthetic set is written by
``coreecho_jax.data.synthetic`` in the EchoNet-Dynamic layout (112x112 grey frames; ``--min-frames``
/ ``--max-frames`` default to 150..200, about EchoNet-Dynamic's mean of 175). Raw bytes per video are
exact (``F * 112 * 112 * C``); PNG bytes depend on the content (synthetic here, not real echoes).
Timings are wall clock and CPU time; on a shared machine the CPU-time rate is the stable one.
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np

from coreecho_jax.data import clips
from coreecho_jax.data.echonet import reader

MEAN3 = clips.MEAN.reshape(3, 1, 1, 1)
STD3 = clips.STD.reshape(3, 1, 1, 1)


def official_clip(
    path: Path, rng: np.random.Generator, frames: int = 36, stride: int = 4, pad: int = 6
) -> np.ndarray:
    """One training clip the way the official loader makes it: float32 ``(3, T, 112, 112)``."""
    capture = cv2.VideoCapture(str(path))
    decoded = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        decoded.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
    capture.release()
    video = np.stack(decoded).transpose(3, 0, 1, 2).astype(np.float32)  # (3, F, H, W)
    c, f, h, w = video.shape
    if f < frames * stride:
        video = np.concatenate([video, np.zeros((c, frames * stride - f, h, w), np.float32)], axis=1)
    start = rng.choice(video.shape[1] - (frames - 1) * stride)
    clip = video[:, start + stride * np.arange(frames)]  # (3, T, H, W)
    # albumentations PadIfNeeded(124) + RandomCrop(112) on the frames stacked as channels.
    image = clip.reshape(c * frames, h, w).transpose(1, 2, 0)
    image = np.pad(image, ((pad, pad), (pad, pad), (0, 0)))
    dy, dx = (int((2 * pad + 1) * rng.random()) for _ in range(2))
    image = image[dy : dy + h, dx : dx + w]
    clip = image.transpose(2, 0, 1).reshape(c, frames, h, w)
    return (clip - MEAN3) / STD3


def bench_baseline(paths: list[Path], threads: int, seconds: float) -> tuple[float, float]:
    """(clips/s, clips per CPU-second of this process) of the official per-clip work in a thread pool."""
    rngs = [np.random.default_rng(i) for i in range(threads)]

    def work(i: int) -> int:
        clip = official_clip(paths[i % len(paths)], rngs[i % threads])
        return clip.shape[1]

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(work, range(threads * 2)))  # warm-up
        done, start, cpu = 0, time.perf_counter(), time.process_time()
        i = 0
        while time.perf_counter() - start < seconds:
            chunk = list(range(i, i + 8 * threads))
            done += len(list(pool.map(work, chunk)))
            i += len(chunk)
        return done / (time.perf_counter() - start), done / (time.process_time() - cpu)


def bench_ours(builder, seconds: float, batch_size: int, spec) -> tuple[float, float, float]:
    """(clips/s incl. startup, clips/s after the first batch, clips per CPU-second) of ``train_dataset``.

    One dataset streams several epochs (``num_epochs``), as a training loop uses it; its
    construction and first-batch latency (shuffle-buffer fill) count in the first number.
    """
    from coreecho_jax.data.echonet import pipeline

    for _ in pipeline.as_numpy(pipeline.train_dataset(builder, spec=spec, batch_size=batch_size)):
        pass  # warm-up epoch (graph tracing, page cache)
    epochs = 1
    while True:
        t0, c0 = time.perf_counter(), time.process_time()
        ds = pipeline.train_dataset(builder, spec=spec, batch_size=batch_size, epoch=1, num_epochs=epochs)
        n, t_first, n_first = 0, None, 0
        for batch in pipeline.as_numpy(ds):
            n += batch["video"].shape[0] * batch["video"].shape[1]
            if t_first is None:
                t_first, n_first = time.perf_counter(), n
        t1, c1 = time.perf_counter(), time.process_time()
        if t1 - t0 >= seconds or epochs >= 1000:
            return n / (t1 - t0), (n - n_first) / (t1 - t_first), n / (c1 - c0)
        epochs = max(epochs + 1, int(epochs * seconds / max(t1 - t0, 1e-3) * 1.1))


#: ``--stores`` names -> PrepareOptions fields.
STORES = {
    "rgb": {"channels": 3, "collapse_grey": False},
    "grey-once": {"channels": 3, "collapse_grey": True},
    "luma": {"channels": 1},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--videos", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=20.0, help="seconds per row and round")
    parser.add_argument("--rounds", type=int, default=1, help="interleaved rounds of all rows (median)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--formats", default="raw,png", help="stored frame formats to measure")
    parser.add_argument(
        "--stores", default="rgb,grey-once,luma", help=f"stores to measure: {', '.join(STORES)}"
    )
    parser.add_argument("--outputs", default="float32,uint8", help="pipeline outputs to measure")
    parser.add_argument("--frames", type=int, default=36, help="frames per clip (ours)")
    parser.add_argument("--stride", type=int, default=4, help="frame stride (ours)")
    parser.add_argument("--image-size", type=int, default=112, help="clip side after the crop (ours)")
    parser.add_argument("--min-frames", type=int, default=150)
    parser.add_argument("--max-frames", type=int, default=200)
    parser.add_argument("--no-baseline", action="store_true", help="skip the official per-clip baseline")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/bench_input"))
    args = parser.parse_args()

    from coreecho_jax.data import synthetic
    from coreecho_jax.data.clips import ClipSpec
    from coreecho_jax.data.echonet import echonet_tfds

    formats = args.formats.split(",")
    stores = args.stores.split(",")
    unknown = sorted(set(stores) - set(STORES))
    if unknown:
        parser.error(f"--stores: unknown {unknown}; known: {', '.join(STORES)}")
    root = args.workdir / f"synthetic_{args.videos}_{args.min_frames}_{args.max_frames}"
    t0 = time.perf_counter()
    synthetic.write_echonet_dataset(
        root,
        synthetic.SyntheticConfig(
            n_videos=args.videos, seed=0, min_frames=args.min_frames, max_frames=args.max_frames
        ),
        progress=False,
    )
    t_write = time.perf_counter() - t0
    train = reader.read_echonet(root).split("train")
    paths = [r.path for r in train]
    avi = sum(p.stat().st_size for p in paths) / len(paths)
    shutil.rmtree(args.workdir / "tfds", ignore_errors=True)  # every store prepared afresh
    builders, t_prep, sizes = {}, {}, {}
    for fmt in formats:
        for store in stores:
            t0, c0 = time.perf_counter(), time.process_time()
            b = echonet_tfds.prepare_echonet(
                root, args.workdir / "tfds", frame_format=fmt, workers=args.threads, **STORES[store]
            )
            t_prep[fmt, store] = (time.perf_counter() - t0, time.process_time() - c0)
            shards = Path(b.data_dir).glob("*train.tfrecord*")
            sizes[fmt, store] = sum(p.stat().st_size for p in shards) / len(paths)
            builders[fmt, store] = b
    frames = list(echonet_tfds.split_videos(next(iter(builders.values())), "train").values())

    cores = os.cpu_count() or 1
    print(
        f"synthetic set: {args.videos} videos ({len(paths)} train, {min(frames)}..{max(frames)} frames, "
        f"mean {np.mean(frames):.0f}), written in {t_write:.1f} s; AVI (FFV1) {avi / 1e3:.0f} kB per video"
    )
    for (fmt, store), size in sizes.items():
        print(
            f"prepared {fmt}, {store}: {size / 1e3:.0f} kB per video ({size / np.mean(frames) / 1e3:.1f} kB "
            f"per frame), prepared in {t_prep[fmt, store][0]:.1f} s wall, {t_prep[fmt, store][1]:.1f} CPU-s "
            f"({args.threads} threads, all splits)"
        )
    print(
        f"cores: {cores}, baseline threads: {args.threads}, batch {args.batch_size} videos x 2 views, "
        f"{args.seconds:.0f} s per row, {args.rounds} round(s)"
    )

    def baseline() -> tuple[float, float, float]:
        rate, per_cpu = bench_baseline(paths, args.threads, args.seconds)
        return rate, rate, per_cpu

    jobs = {}
    if not args.no_baseline:
        jobs["official: whole-AVI decode per clip (numpy, threads)"] = baseline
    for (fmt, store), builder in builders.items():
        for output in args.outputs.split(","):
            spec = ClipSpec(
                frames=args.frames,
                stride=args.stride,
                image_size=args.image_size,
                channels=STORES[store]["channels"],
                output=output,
            )
            name = f"ours: TFDS {fmt}, {store} store, {output} output"
            jobs[name] = lambda b=builder, s=spec: bench_ours(b, args.seconds, args.batch_size, s)
    results: dict[str, list] = {name: [] for name in jobs}
    for _ in range(args.rounds):
        for name, job in jobs.items():
            results[name].append(job())
    rows = [
        (name, *(statistics.median(r[i] for r in runs) for i in range(3))) for name, runs in results.items()
    ]
    base, base_cpu = (rows[0][1], rows[0][3]) if not args.no_baseline else (math.nan, math.nan)
    clip = f"{args.frames}x{args.image_size}x{args.image_size}"
    print(
        f"\n{f'input pipeline (stage 1, {clip} clips)':58s} {'clips/s':>8s} {'steady':>8s} {'wall/core':>9s} "
        f"{'per CPU-s':>9s} {'vs base':>8s} {'CPU vs base':>11s}"
    )
    for name, total, steady, per_cpu in rows:
        print(
            f"{name:58s} {total:8.1f} {steady:8.1f} {total / cores:9.1f} {per_cpu:9.1f} {total / base:7.2f}x "
            f"{per_cpu / base_cpu:10.2f}x"
        )
    print(
        "\nclips/s: whole epochs streamed by one dataset, including its construction and first-batch latency; "
        "steady: after the first batch; wall/core: clips/s divided by the machine's cores; per CPU-s: clips per "
        "CPU-second this process used (the per-core rate when the cores are shared with other work). "
        "float32 = the official normalised 3-channel clips; uint8 = the clip's channels un-normalised, to "
        "normalise on device. Medians over the rounds."
    )


if __name__ == "__main__":
    main()
