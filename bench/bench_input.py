"""Stage-1 input throughput: our TFDS + tf.data pipeline vs the official loader's per-clip work.

    python bench/bench_input.py [--videos 64] [--seconds 20] [--threads N] [--workdir /tmp/bench_input]

Both sides produce the same stage-1 samples: 2 clips per video, 36 frames at stride 4, black padding
to 144 frames, +-6 px translation, official normalisation, float32 3-channel 112x112.

* baseline (what CoReEcho's ``EchoNet.__getitem__`` does, once per clip since ``EchoNetRNC`` calls it
  twice per video): decode the whole AVI with OpenCV, BGR->RGB, float32 ``(3, F, H, W)``, pad to 144,
  sample a start, pad/crop the clip, normalise. numpy + OpenCV in a thread pool of N threads
  (OpenCV and numpy release the GIL), N = CPU cores by default.
* ours: ``pipeline.train_dataset`` over the prepared TFDS dataset (PNG frames, only the 36 used frames
  decoded), batch 16 videos = 32 clips, one fresh dataset per epoch as the training loop does.

Prints clips/s for both, the ratio, and clips/s per core. The synthetic set is written by
``coreecho_jax.data.synthetic`` in the EchoNet-Dynamic layout. Timings are wall clock; on a shared
machine they are noisy.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from coreecho_jax.data import clips, echonet

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


def bench_ours(builder, seconds: float, batch_size: int, output: str) -> tuple[float, float, float]:
    """(clips/s incl. startup, clips/s after the first batch, clips per CPU-second) of ``train_dataset``.

    One dataset streams several epochs (``num_epochs``), as a training loop uses it; its
    construction and first-batch latency (shuffle-buffer fill) count in the first number.
    """
    from coreecho_jax.data import pipeline

    for _ in pipeline.as_numpy(pipeline.train_dataset(builder, batch_size=batch_size, output=output)):
        pass  # warm-up epoch (graph tracing, page cache)
    epochs = 1
    while True:
        t0, c0 = time.perf_counter(), time.process_time()
        ds = pipeline.train_dataset(builder, batch_size=batch_size, epoch=1, num_epochs=epochs, output=output)
        n, t_first, n_first = 0, None, 0
        for batch in pipeline.as_numpy(ds):
            n += batch["video"].shape[0] * batch["video"].shape[1]
            if t_first is None:
                t_first, n_first = time.perf_counter(), n
        t1, c1 = time.perf_counter(), time.process_time()
        if t1 - t0 >= seconds or epochs >= 1000:
            return n / (t1 - t0), (n - n_first) / (t1 - t_first), n / (c1 - c0)
        epochs = max(epochs + 1, int(epochs * seconds / max(t1 - t0, 1e-3) * 1.1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--videos", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/bench_input"))
    args = parser.parse_args()

    from coreecho_jax.data import echonet_tfds, synthetic

    root = args.workdir / f"synthetic_{args.videos}"
    t0 = time.perf_counter()
    synthetic.write_echonet_dataset(
        root, synthetic.SyntheticConfig(n_videos=args.videos, seed=0), progress=False
    )
    t_write = time.perf_counter() - t0
    builders, t_prep = {}, {}
    for fmt in ("png", "raw"):
        t0 = time.perf_counter()
        builders[fmt] = echonet_tfds.prepare_echonet(root, args.workdir / "tfds", frame_format=fmt)
        t_prep[fmt] = time.perf_counter() - t0
    train = echonet.read_echonet(root).split("train")
    paths = [r.path for r in train]
    frames = list(echonet_tfds.split_videos(builders["png"], "train").values())
    sizes = {
        fmt: sum(p.stat().st_size for p in Path(b.data_dir).glob("*train.tfrecord*")) / len(paths)
        for fmt, b in builders.items()
    }
    avi = sum(p.stat().st_size for p in paths) / len(paths)

    cores = os.cpu_count() or 1
    print(
        f"synthetic set: {args.videos} videos ({len(paths)} train, {min(frames)}..{max(frames)} frames, "
        f"mean {np.mean(frames):.0f}), written in {t_write:.1f} s"
    )
    print(
        f"TFDS preparation: png {t_prep['png']:.1f} s, raw {t_prep['raw']:.1f} s (0 s = already prepared); "
        f"bytes per video: AVI {avi / 1e3:.0f} kB, png {sizes['png'] / 1e3:.0f} kB, raw {sizes['raw'] / 1e3:.0f} kB"
    )
    print(
        f"cores: {cores}, baseline threads: {args.threads}, batch {args.batch_size} videos x 2 views, "
        f"{args.seconds:.0f} s per row"
    )
    base, base_cpu = bench_baseline(paths, args.threads, args.seconds)
    rows = [("official: whole-AVI decode per clip (numpy, threads)", base, base, base_cpu)]
    for fmt in ("png", "raw"):
        for output in ("float32", "uint8"):
            rows.append(
                (
                    f"ours: TFDS {fmt} frames, {output} output",
                    *bench_ours(builders[fmt], args.seconds, args.batch_size, output),
                )
            )
    print(
        f"\n{'input pipeline (stage 1, 36x112x112 clips)':54s} {'clips/s':>8s} {'steady':>8s} {'wall/core':>9s} "
        f"{'per CPU-s':>9s} {'vs base':>8s} {'CPU vs base':>11s}"
    )
    for name, total, steady, per_cpu in rows:
        print(
            f"{name:54s} {total:8.1f} {steady:8.1f} {total / cores:9.1f} {per_cpu:9.1f} {total / base:7.2f}x "
            f"{per_cpu / base_cpu:10.2f}x"
        )
    print(
        "\nclips/s: whole epochs streamed by one dataset, including its construction and first-batch latency; "
        "steady: after the first batch; wall/core: clips/s divided by the machine's cores; per CPU-s: clips per "
        "CPU-second this process used (the per-core rate when the cores are shared with other work). "
        "float32 = the official normalised 3-channel clips; uint8 = 1-channel "
        "clips to normalise on device."
    )


if __name__ == "__main__":
    main()
