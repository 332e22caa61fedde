"""TFDS builder for EchoNet-Dynamic (manual download, prepared once into a local TFDS data_dir).

Usage::

    builder = prepare_echonet("/data/EchoNet-Dynamic", "/data/tfds")   # once: decodes every AVI
    builder = load_echonet("/data/tfds", "/data/EchoNet-Dynamic")      # later runs
    ds = split_dataset(builder, "train")   # frames stay encoded (raw bytes or PNGs)

Each example stores a video so that a clip reads only the frames it uses, with
``decoders={'frames': tfds.decode.SkipDecoding()}`` in the clip pipeline:

* ``frame_format='raw'`` (default): ``frames`` is one byte string holding the ``[F, H, W]`` uint8
  video (``Tensor((), string)``); a clip cuts its 36 frames out with ``tf.strings.substr`` and
  ``tf.io.decode_raw``, i.e. nothing is decompressed. ~2.5x cheaper per clip than PNG (the only
  format meeting the 150 clips/s/core target, see bench/bench_input.py), ~1.6x PNG's disk space
  (about 22 GB for EchoNet-Dynamic).
* ``frame_format='png'``: ``frames = Sequence(Image(shape=(H, W, 1), encoding_format='png'))``,
  lossless and compact; the pipeline decodes only the clip's PNGs, and plain
  ``builder.as_dataset()`` returns decoded ``uint8 [F, H, W, 1]`` frames.

Plus ``filename`` (no extension), ``ef`` (%), ``edv``/``esv`` (mL, NaN if absent), ``num_frames``
(decoded count) and ``fps`` (container fps, else FileList.csv, else NaN).

One prepared dataset per source: the builder config name is a hash of the absolute source path, the
options (``drop_untraced``, ``frame_format``) and the content of FileList.csv / VolumeTracings.csv, so a different
source or option prepares a new dataset instead of silently reusing an old one; the source path and
options are also stored in the dataset metadata and checked on load.

Unreadable or zero-frame videos are skipped, logged, and listed in the metadata and in
``<dataset dir>/skipped.json``; a split whose videos are all unreadable is an error. Videos whose
colour channels differ are stored as OpenCV's luma (``BGR2GRAY``) and counted in the report
(EchoNet-Dynamic videos are grayscale: for them this equals the official 3 equal channels).
"""

from __future__ import annotations

import collections
import hashlib
import itertools
import json
import logging
import math
import os
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds
from tqdm import tqdm

from coreecho_jax.data import echonet
from coreecho_jax.data.video_io import VideoReadError, read_video

PathLike = str | os.PathLike
log = logging.getLogger(__name__)

DATASET_NAME = "echonet_dynamic"
FRAME_FORMATS = ("png", "raw")
REPORT_NAME = "skipped.json"


class EchoNetPreparationError(ValueError):
    """Preparing the TFDS dataset failed (all videos of a split unreadable, mixed frame sizes, ...)."""


class EchonetDynamicConfig(tfds.core.BuilderConfig):
    """Builder config bound to one source folder and option set.

    Attributes:
        source_root: absolute path of the EchoNet-Dynamic folder.
        drop_untraced: drop videos with < 2 traced frames (official behaviour).
        frame_format: ``'png'`` or ``'raw'`` frame storage.
    """

    def __init__(
        self, *, source_root: str, drop_untraced: bool, frame_format: str, fingerprint: str, **kwargs: Any
    ):
        super().__init__(**kwargs)
        self.source_root = source_root
        self.drop_untraced = drop_untraced
        self.frame_format = frame_format
        self.fingerprint = fingerprint


def _file_sha1(path: Path) -> str | None:
    if not path.is_file():
        return None
    digest = hashlib.sha1()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def config_for(
    root: PathLike, *, drop_untraced: bool = True, frame_format: str = "raw"
) -> EchonetDynamicConfig:
    """The builder config of a source folder: name = hash of (path, options, CSV contents).

    Raises:
        FileNotFoundError: the folder or its FileList.csv is missing.
    """
    if frame_format not in FRAME_FORMATS:
        raise ValueError(f"frame_format must be one of {FRAME_FORMATS}, got {frame_format!r}")
    root = Path(root).expanduser().resolve()
    if not root.is_dir():
        raise FileNotFoundError(f"EchoNet-Dynamic folder not found: {root}. {echonet.LAYOUT}")
    if not (root / "FileList.csv").is_file():
        raise FileNotFoundError(f"FileList.csv not found in {root}. {echonet.LAYOUT}")
    key = {
        "root": str(root),
        "drop_untraced": bool(drop_untraced),
        "frame_format": frame_format,
        "filelist": _file_sha1(root / "FileList.csv"),
        "tracings": _file_sha1(root / "VolumeTracings.csv"),
    }
    fingerprint = hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()
    return EchonetDynamicConfig(
        name=f"src_{fingerprint[:16]}",
        description=f"EchoNet-Dynamic from {root} (drop_untraced={drop_untraced}, {frame_format} frames)",
        source_root=str(root),
        drop_untraced=bool(drop_untraced),
        frame_format=frame_format,
        fingerprint=fingerprint,
    )


def _gray_frames(path: Path) -> tuple[np.ndarray, float | None, bool]:
    """uint8 ``[T, H, W]`` frames, container fps, and whether the RGB channels differed."""
    video = read_video(path, color=True)
    rgb = video.frames
    colour = bool(np.any(rgb[..., 0] != rgb[..., 1]) or np.any(rgb[..., 1] != rgb[..., 2]))
    gray = rgb[..., 0] if not colour else np.stack([cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in rgb])
    return np.ascontiguousarray(gray), video.fps, colour


def _png(frame: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", frame)
    if not ok:
        raise VideoReadError("PNG encoding failed")
    return buf.tobytes()


def _load(path: Path, frame_format: str) -> tuple[Any, tuple[int, int, int], float | None, bool]:
    """(encoded frames, (F, H, W), fps, colour) of one video; raises VideoReadError."""
    frames, fps, colour = _gray_frames(path)
    encoded = [_png(f) for f in frames] if frame_format == "png" else frames.tobytes()
    return encoded, tuple(int(d) for d in frames.shape), fps, colour


def _load_in_order(
    paths: Sequence[Path], frame_format: str, workers: int
) -> Iterator[tuple[Any, Exception | None]]:
    """Yields ``(result of _load, None)`` or ``(None, VideoReadError)`` per path, in order.

    OpenCV decoding and PNG encoding release the GIL, so a thread pool of ``workers`` decodes
    videos in parallel; at most ``2 * workers`` decoded videos wait in memory.
    """

    def safe(path: Path):
        try:
            return _load(path, frame_format), None
        except VideoReadError as err:
            return None, err

    if workers <= 1:
        yield from (safe(p) for p in paths)
        return
    with ThreadPoolExecutor(workers) as pool:
        pending: collections.deque = collections.deque()
        it = iter(paths)
        for path in itertools.islice(it, 2 * workers):
            pending.append(pool.submit(safe, path))
        while pending:
            result = pending.popleft().result()
            nxt = next(it, None)
            if nxt is not None:
                pending.append(pool.submit(safe, nxt))
            yield result


class EchonetDynamic(tfds.core.GeneratorBasedBuilder):
    """EchoNet-Dynamic videos (raw or PNG frames) with EF/EDV/ESV labels."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Raw or PNG frames, official untraced-video filtering."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        "Download EchoNet-Dynamic (https://echonet.github.io/dynamic/, Stanford AIMI) and pass its "
        "folder as the manual directory (prepare_echonet(root, data_dir)).\n" + echonet.LAYOUT
    )
    BUILDER_CONFIGS: list[EchonetDynamicConfig] = []

    def __init__(self, *, workers: int | None = None, **kwargs: Any):
        """``workers``: threads decoding videos during preparation (default: CPU count); ``kwargs`` as TFDS."""
        super().__init__(**kwargs)
        self._workers = workers if workers is not None else (os.cpu_count() or 1)

    def _info(self) -> tfds.core.DatasetInfo:
        config = self.builder_config
        if getattr(config, "frame_format", "png") == "raw":
            frames = tfds.features.Tensor(shape=(), dtype=np.object_, doc="[F, H, W] uint8 video as bytes")
        else:
            frames = tfds.features.Sequence(tfds.features.Image(shape=(None, None, 1), encoding_format="png"))
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict(
                {
                    "frames": frames,
                    "filename": tfds.features.Text(),
                    "ef": tfds.features.Scalar(np.float32, doc="ejection fraction, percent"),
                    "edv": tfds.features.Scalar(np.float32, doc="end-diastolic volume, mL (NaN if absent)"),
                    "esv": tfds.features.Scalar(np.float32, doc="end-systolic volume, mL (NaN if absent)"),
                    "num_frames": tfds.features.Scalar(np.int32, doc="decoded frame count"),
                    "fps": tfds.features.Scalar(np.float32, doc="frames per second (NaN if unknown)"),
                }
            ),
            homepage="https://echonet.github.io/dynamic/",
            metadata=tfds.core.MetadataDict(),
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager) -> dict[str, Iterator]:
        config: EchonetDynamicConfig = self.builder_config  # type: ignore[assignment]
        if config is None or not isinstance(config, EchonetDynamicConfig):
            raise EchoNetPreparationError(
                "build EchonetDynamic with config=config_for(root) (see prepare_echonet)"
            )
        root = Path(dl_manager.manual_dir).resolve()
        if str(root) != config.source_root:
            raise EchoNetPreparationError(
                f"manual_dir {root} differs from the config's source {config.source_root}; "
                f"use prepare_echonet(root, data_dir)"
            )
        index = echonet.read_echonet(root, drop_untraced=config.drop_untraced)
        meta = self.info.metadata
        meta.clear()
        meta.update(
            {
                "source_root": config.source_root,
                "drop_untraced": config.drop_untraced,
                "frame_format": config.frame_format,
                "fingerprint": config.fingerprint,
                "has_tracings": index.has_tracings,
                "dropped_untraced": list(index.dropped_untraced),
                "skipped": {},
                "colour_videos": [],
                "frame_size": None,
                "videos": {},
            }
        )
        return {split: self._generate_examples(index.split(split), split) for split in echonet.SPLITS}

    def _generate_examples(self, records: Sequence[echonet.EchoNetRecord], split: str):
        meta = self.info.metadata
        skipped: list[dict[str, str]] = []
        names: list[str] = []
        counts: list[int] = []
        loaded = _load_in_order([r.path for r in records], self.builder_config.frame_format, self._workers)
        for record, (result, err) in tqdm(
            zip(records, loaded), total=len(records), desc=f"EchoNet {split} videos", unit="video"
        ):
            if err is not None:
                log.warning("EchoNet: skipping unreadable video %s (%s)", record.path, err)
                skipped.append({"filename": record.filename, "path": str(record.path), "reason": str(err)})
                continue
            encoded, shape, fps, colour = result
            size = [shape[1], shape[2]]
            if meta["frame_size"] is None:
                meta["frame_size"] = size
            elif meta["frame_size"] != size:
                raise EchoNetPreparationError(
                    f"{record.path}: frame size {size[0]}x{size[1]} differs from the other videos "
                    f"({meta['frame_size'][0]}x{meta['frame_size'][1]}); EchoNet-Dynamic videos are all "
                    f"112x112"
                )
            if colour:
                meta["colour_videos"].append(record.filename)
            if fps is None:
                fps = record.fps
            names.append(record.filename)
            counts.append(shape[0])
            yield (
                record.filename,
                {
                    "frames": encoded,
                    "filename": record.filename,
                    "ef": np.float32(record.ef),
                    "edv": np.float32(record.edv),
                    "esv": np.float32(record.esv),
                    "num_frames": np.int32(shape[0]),
                    "fps": np.float32(math.nan if fps is None else fps),
                },
            )
        meta["skipped"][split] = skipped
        meta["videos"][split] = {"filename": names, "num_frames": counts}
        if skipped:
            log.warning(
                "EchoNet %s: skipped %d of %d videos as unreadable (listed in %s)",
                split,
                len(skipped),
                len(records),
                REPORT_NAME,
            )
        if not names:
            raise EchoNetPreparationError(
                f"every video of split {split!r} ({len(records)}) is unreadable or has zero frames, e.g. "
                f"{skipped[0]['path']}: {skipped[0]['reason']}"
            )


def _dataset_dir(data_dir: PathLike, config: EchonetDynamicConfig) -> Path:
    return Path(data_dir) / DATASET_NAME / config.name / str(EchonetDynamic.VERSION)


def _check_metadata(builder: tfds.core.DatasetBuilder, root: str | None, drop_untraced: bool | None) -> None:
    meta = builder.info.metadata or {}
    if "source_root" not in meta or "videos" not in meta:
        raise EchoNetPreparationError(
            f"{builder.data_dir}: not an EchoNet-Dynamic dataset prepared by "
            f"prepare_echonet (metadata.json lacks source_root/videos)"
        )
    if root is not None and meta["source_root"] != root:
        raise EchoNetPreparationError(
            f"{builder.data_dir} was prepared from {meta['source_root']}, not {root}"
        )
    if drop_untraced is not None and meta["drop_untraced"] != drop_untraced:
        raise EchoNetPreparationError(
            f"{builder.data_dir} was prepared with drop_untraced={meta['drop_untraced']}, not {drop_untraced}"
        )


def prepare_echonet(
    root: PathLike,
    data_dir: PathLike,
    *,
    drop_untraced: bool = True,
    frame_format: str = "raw",
    workers: int | None = None,
    max_shard_size: int = 128 << 20,
) -> tfds.core.DatasetBuilder:
    """Prepares EchoNet-Dynamic once into ``data_dir`` (a no-op when already prepared) and returns the builder.

    Args:
        root: EchoNet-Dynamic folder (FileList.csv, Videos/, optional VolumeTracings.csv).
        data_dir: TFDS data directory; the dataset lands in
            ``<data_dir>/echonet_dynamic/src_<hash>/1.0.0``.
        drop_untraced: drop videos with < 2 traced frames (official; needs VolumeTracings.csv).
        frame_format: ``'raw'`` (default, fastest clips) or ``'png'`` (~0.6x the disk); see module doc.
        workers: threads decoding videos (default: CPU count); the output does not depend on it.
        max_shard_size: bytes per TFRecord shard (more shards = better file-level shuffling).

    Returns:
        The prepared builder. Its skipped-video report is ``<builder.data_dir>/skipped.json``.

    Raises:
        FileNotFoundError / echonet.EchoNetLayoutError: bad source layout (before any decoding).
        EchoNetPreparationError: every video of a split is unreadable, or frame sizes differ.
    """
    config = config_for(root, drop_untraced=drop_untraced, frame_format=frame_format)
    echonet.read_echonet(config.source_root, drop_untraced=drop_untraced)  # fail fast, before TFDS
    builder = EchonetDynamic(config=config, data_dir=os.fspath(data_dir), workers=workers)
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(
            manual_dir=config.source_root,
            try_download_gcs=False,
            max_shard_size=max_shard_size,
            min_shard_size=min(max_shard_size, 16 << 20),
        )
    )
    builder = EchonetDynamic(config=config, data_dir=os.fspath(data_dir))  # re-read the written metadata
    _check_metadata(builder, config.source_root, drop_untraced)
    write_report(builder)
    return builder


def write_report(builder: tfds.core.DatasetBuilder) -> Path:
    """Writes ``<dataset dir>/skipped.json`` (skipped unreadable videos, dropped untraced ones); returns it."""
    meta = builder.info.metadata
    path = Path(builder.data_dir) / REPORT_NAME
    report = {
        "source_root": meta["source_root"],
        "skipped_unreadable": meta["skipped"],
        "num_skipped_unreadable": sum(len(v) for v in meta["skipped"].values()),
        "dropped_untraced": meta["dropped_untraced"],
        "num_dropped_untraced": len(meta["dropped_untraced"]),
        "colour_videos_stored_as_gray": meta["colour_videos"],
    }
    if not path.exists():
        path.write_text(json.dumps(report, indent=1) + "\n")
    return path


def load_echonet(
    data_dir: PathLike,
    root: PathLike | None = None,
    *,
    drop_untraced: bool = True,
    frame_format: str = "raw",
) -> tfds.core.DatasetBuilder:
    """Opens a prepared EchoNet-Dynamic dataset.

    Args:
        data_dir: the TFDS data directory given to :func:`prepare_echonet`.
        root: the source folder it was prepared from; ``None`` = the only dataset in ``data_dir``.
        drop_untraced, frame_format: the options it was prepared with (used when ``root`` is given).

    Raises:
        FileNotFoundError: nothing prepared for this source/options (names :func:`prepare_echonet`).
        EchoNetPreparationError: ambiguous (several prepared sources and no ``root``), or a mismatch.
    """
    if root is not None:
        config = config_for(root, drop_untraced=drop_untraced, frame_format=frame_format)
        path = _dataset_dir(data_dir, config)
        if not (path / "dataset_info.json").is_file():
            raise FileNotFoundError(
                f"no prepared EchoNet-Dynamic dataset for {config.source_root} (drop_untraced={drop_untraced}, "
                f"frame_format={frame_format}) "
                f"in {data_dir} (looked for {path}); run prepare_echonet(root, data_dir) first. If the "
                f"source CSVs changed since preparation, the dataset must be prepared again."
            )
        builder = EchonetDynamic(config=config, data_dir=os.fspath(data_dir))
        _check_metadata(builder, config.source_root, drop_untraced)
        return builder
    found = sorted(Path(data_dir).glob(f"{DATASET_NAME}/*/{EchonetDynamic.VERSION}/dataset_info.json"))
    if not found:
        raise FileNotFoundError(
            f"no prepared EchoNet-Dynamic dataset under {Path(data_dir) / DATASET_NAME}; "
            f"run prepare_echonet(root, data_dir) first"
        )
    if len(found) > 1:
        sources = []
        for p in found:
            try:
                sources.append(json.loads((p.parent / "metadata.json").read_text())["source_root"])
            except (OSError, KeyError, json.JSONDecodeError):
                sources.append(str(p.parent))
        raise EchoNetPreparationError(
            f"{data_dir} holds {len(found)} prepared EchoNet-Dynamic datasets "
            f"(sources: {sources}); pass root= to choose one"
        )
    builder = tfds.builder_from_directory(os.fspath(found[0].parent))
    _check_metadata(builder, None, None)
    return builder


def split_videos(builder: tfds.core.DatasetBuilder, split: str) -> dict[str, int]:
    """``{filename (no extension): decoded frame count}`` of the videos stored in a split."""
    meta = builder.info.metadata
    key = str(split).strip().lower()
    if key not in meta["videos"]:
        raise ValueError(f"unknown split {split!r}; the prepared dataset has {sorted(meta['videos'])}")
    videos = meta["videos"][key]
    return dict(zip(videos["filename"], (int(n) for n in videos["num_frames"])))


def split_files(builder: tfds.core.DatasetBuilder, split: str) -> list[str]:
    """Paths of the TFRecord shards of a split (whole files), in storage order."""
    key = str(split).strip().lower()
    split_videos(builder, key)  # validates the split name
    out = []
    for fi in builder.info.splits[key].file_instructions:
        if fi.skip != 0 or fi.take != fi.examples_in_shard:
            raise ValueError(f"split {key!r}: partial shard {fi.filename} is not supported")
        out.append(os.fspath(fi.filename))
    return out


def frame_format(builder: tfds.core.DatasetBuilder) -> str:
    """How frames are stored: ``'png'`` or ``'raw'``."""
    return str(builder.info.metadata.get("frame_format", "png"))


def frame_size(builder: tfds.core.DatasetBuilder) -> tuple[int, int]:
    """Stored frame size ``(H, W)`` in pixels."""
    h, w = builder.info.metadata["frame_size"]
    return int(h), int(w)


def split_dataset(
    builder: tfds.core.DatasetBuilder,
    split: str,
    *,
    shuffle_files: bool = False,
    read_config: tfds.ReadConfig | None = None,
) -> tf.data.Dataset:
    """A split as ``tf.data`` with still-encoded frames: ``{'frames', 'filename', 'ef', ...}``.

    ``frames`` is tf.string ``[F]`` of PNGs, or (``frame_format == 'raw'``) one tf.string of the
    ``F * H * W`` video bytes.
    """
    key = str(split).strip().lower()
    split_videos(builder, key)  # validates the split name
    return builder.as_dataset(
        split=key,
        shuffle_files=shuffle_files,
        read_config=read_config,
        decoders={"frames": tfds.decode.SkipDecoding()},
    )
