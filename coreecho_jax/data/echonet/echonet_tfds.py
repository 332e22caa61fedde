"""TFDS builder for EchoNet-Dynamic (manual download, prepared once into a local TFDS data_dir).

Usage::

    builder = prepare_echonet("/data/EchoNet-Dynamic", "/data/tfds")   # once: decodes every AVI
    builder = load_echonet("/data/tfds", "/data/EchoNet-Dynamic")      # later runs
    ds = split_dataset(builder, "train")   # frames stay encoded (raw bytes or PNGs)

Each example stores a video so that a clip reads only the frames it uses, with
``decoders={'frames': tfds.decode.SkipDecoding()}`` in the clip pipeline:

* ``frame_format='raw'`` (default): ``frames`` is one byte string holding the ``[F, H, W, C]`` uint8
  video (``Tensor((), string)``); a clip cuts its 36 frames out with ``tf.strings.substr`` and
  ``tf.io.decode_raw``, i.e. nothing is decompressed. ~2.5x cheaper per clip than PNG, but the
  largest on disk (``F * H * W * C`` bytes per video).
* ``frame_format='png'``: ``frames = Sequence(Image(shape=(H, W, C), encoding_format='png'))``,
  lossless and compact; the pipeline decodes only the clip's PNGs, and plain
  ``builder.as_dataset()`` returns decoded ``uint8 [F, H, W, C]`` frames.

``C`` is the example's ``channels`` feature. ``PrepareOptions.channels`` 3 (default, official) keeps
the decoded RGB channels (OpenCV's BGR turned into RGB, as CoReEcho's ``EchoNet`` loader), but a video
whose three channels are equal at every pixel (a grey echo, the usual case) is stored once, ``C = 1``
(a third of the bytes), and the pipeline tiles it back to three: the clips are bit for bit those of
the three stored channels (``collapse_grey=False`` stores all three, the layout of version 1.1).
``channels=1`` stores OpenCV's luma (``RGB2GRAY``) of every video and counts the videos whose channels
differed (not official). Plus ``filename`` (no extension), ``ef`` (%), ``edv``/``esv`` (mL, NaN if
absent), ``num_frames`` (decoded count) and ``fps`` (container fps, else FileList.csv, else NaN).

Shared and locked: one data directory may serve every run on a machine (``datasets.default_data_dir``).
:func:`prepare_echonet` holds ``<data_dir>/echonet_dynamic/<config name>.lock`` while it prepares, so
a second process preparing the same source and options waits (logging whom for) and then reuses the
result. TFDS writes into ``<config>/incomplete.<random>_<version>/`` and renames it to ``<version>``
only when every split is written, so a preparation killed half-way leaves no ``dataset_info.json``
that a later run would trust; the next preparation deletes such leftovers under the lock.

One prepared dataset per source: the builder config name is a hash of the absolute source path, the
options (:class:`PrepareOptions`), the content of FileList.csv / VolumeTracings.csv and what every
listed video file is (size and modification time, or with ``hash_videos=True`` size and SHA-1 of its
bytes). An edited source (labels, options or a video) therefore prepares a new dataset instead of
silently reusing the old one; the log names what changed and the stale folder, which may be deleted.

Preparation report (``<dataset dir>/preparation_report.json``, also in the metadata):

* unreadable or zero-frame videos are skipped and listed; a split whose videos are all unreadable is
  an error;
* truncated videos (the container header announces more frames than decode) are listed; they are
  kept with the frames that decode, as the official reader does, or dropped with ``drop_truncated``;
* videos whose frame size differs from the majority stop preparation, before any decoding, with the
  majority size and the videos that differ.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import errno
import hashlib
import itertools
import json
import logging
import math
import os
import shutil
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from coreecho_jax import logs

with logs.native_chatter_hidden():  # TensorFlow's import lines (oneDNN, CPU features), at verbosity 0
    import tensorflow as tf
    import tensorflow_datasets as tfds

from coreecho_jax.data import echonet_layout as layout
from coreecho_jax.data.corpus import runners
from coreecho_jax.data.echonet import reader, tf_runtime
from coreecho_jax.data.video.video_io import VideoReadError, probe_video, read_video, rgb_to_gray
from coreecho_jax.errors import DataError, shown
from coreecho_jax.locks import HolderLock, describe_holder

PathLike = str | os.PathLike
log = logging.getLogger(__name__)

DATASET_NAME = "echonet_dynamic"
FRAME_FORMATS = ("png", "raw")
CHANNELS = (1, 3)
REPORT_NAME = "preparation_report.json"
#: Prefix of the folder TFDS writes a dataset into before renaming it (tfds.core.constants).
INCOMPLETE_PREFIX = "incomplete."


class EchoNetPreparationError(DataError):
    """Preparing or opening the TFDS dataset failed (all videos of a split unreadable, mixed frame sizes, ...)."""


class EchoNetNotPreparedError(DataError, FileNotFoundError):
    """No prepared dataset matches the source and options (never prepared, or the source changed)."""


@dataclasses.dataclass(frozen=True)
class PrepareOptions:
    """What a prepared dataset depends on besides the source files (part of its key).

    Attributes:
        drop_untraced: drop videos with < 2 traced frames (official; needs VolumeTracings.csv).
        frame_format: ``'raw'`` (default, fastest clips) or ``'png'`` (compact); see the module doc.
        channels: 3 = the decoded RGB channels (official), 1 = luma (a third of the disk).
        collapse_grey: with ``channels=3``, store a video whose three channels are equal at every
            pixel once (one channel, tiled back to three when read: the same clips bit for bit, a
            third of the bytes and of the read cost); ``False`` stores three channels for every video.
        drop_truncated: drop videos whose header announces more frames than decode (default: keep
            the decodable frames, as the official OpenCV reader does).
        hash_videos: key the dataset on each video's SHA-1 (reads every byte at each start) instead
            of its size and modification time.
    """

    drop_untraced: bool = True
    frame_format: str = "raw"
    channels: int = 3
    collapse_grey: bool = True
    drop_truncated: bool = False
    hash_videos: bool = False

    def __post_init__(self) -> None:
        if self.frame_format not in FRAME_FORMATS:
            raise EchoNetPreparationError(
                f"frame_format must be one of {FRAME_FORMATS}, got {self.frame_format!r}"
            )
        if self.channels not in CHANNELS:
            raise EchoNetPreparationError(f"channels must be one of {CHANNELS}, got {self.channels!r}")

    @classmethod
    def from_config(cls, data: Mapping[str, Any]) -> PrepareOptions:
        """The options of a ``config.data`` (fields absent from an older config keep their defaults)."""
        fields = {f.name: data[f.name] for f in dataclasses.fields(cls) if f.name in data}
        return cls(**fields)

    def describe(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in dataclasses.asdict(self).items())


def _options(options: PrepareOptions | None, fields: dict[str, Any]) -> PrepareOptions:
    if options is not None and fields:
        raise TypeError(
            f"pass either PrepareOptions or its fields, not both (got options and {sorted(fields)})"
        )
    return options if options is not None else PrepareOptions(**fields)


# ------------------------------------------------------------------------------- source identity


def _file_sha1(path: Path) -> str | None:
    if not path.is_file():
        return None
    digest = hashlib.sha1()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def video_identity(path: Path, hash_videos: bool) -> list | None:
    """What a video file is: ``[size, mtime_ns]``, or ``[size, sha1]`` when hashing; None if missing."""
    try:
        stat = path.stat()
    except FileNotFoundError:
        return None
    return [stat.st_size, _file_sha1(path) if hash_videos else stat.st_mtime_ns]


def source_identity(root: Path, hash_videos: bool = False) -> dict[str, Any]:
    """SHA-1 of FileList.csv and VolumeTracings.csv and :func:`video_identity` of every listed video."""
    names = reader.read_filelist(root)["FileName"]
    videos = root / layout.VIDEO_DIR
    return {
        "filelist": _file_sha1(root / layout.FILELIST),
        "tracings": _file_sha1(root / layout.TRACINGS),
        "videos": {
            layout.avi_name(n): video_identity(videos / layout.avi_name(n), hash_videos) for n in names
        },
    }


def _file_change(old: Any, new: Any) -> str | None:
    """How one file changed between two identities (a SHA-1, or a :func:`video_identity`); None if not."""
    if old == new:
        return None
    if old is None or new is None:
        return "added" if old is None else "deleted"
    if isinstance(old, str):
        return "edited"
    if old[0] != new[0]:
        return f"size {old[0]} -> {new[0]} bytes"
    return f"same size, {'content' if isinstance(new[1], str) else 'modified time'}"


def describe_changes(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """What differs between two :func:`source_identity` results, one line per kind of change."""
    out = []
    for key, name in (("filelist", layout.FILELIST), ("tracings", layout.TRACINGS)):
        change = _file_change(old.get(key), new.get(key))
        if change:
            out.append(f"{name} {change}")
    old_v, new_v = old.get("videos", {}), new.get("videos", {})
    changed = [(n, _file_change(old_v[n], new_v[n])) for n in sorted(set(old_v) & set(new_v))]
    changed = [f"{n} ({c})" for n, c in changed if c]
    if changed:
        out.append(f"{len(changed)} video file(s) changed: {shown(changed)}")
    for names, what in (
        (set(new_v) - set(old_v), "newly listed"),
        (set(old_v) - set(new_v), "no longer listed"),
    ):
        if names:
            out.append(f"{len(names)} video(s) {what}: {shown(sorted(names))}")
    return out


# ------------------------------------------------------------------------------- builder config


class EchonetDynamicConfig(tfds.core.BuilderConfig):
    """Builder config bound to one source folder, its identity and one option set.

    Attributes:
        source_root: absolute path of the EchoNet-Dynamic folder.
        options: the :class:`PrepareOptions`.
        identity: :func:`source_identity` of the source when the config was made.
        fingerprint: SHA-1 of (source_root, options, identity); the config name holds its first 16 digits.
    """

    def __init__(
        self, *, source_root: str, options: PrepareOptions, identity: dict, fingerprint: str, **kwargs: Any
    ):
        super().__init__(**kwargs)
        self.source_root = source_root
        self.options = options
        self.identity = identity
        self.fingerprint = fingerprint


def config_for(root: PathLike, options: PrepareOptions | None = None, **fields: Any) -> EchonetDynamicConfig:
    """The builder config of a source folder: name = hash of (path, options, CSV contents, video files).

    ``options`` or its fields (e.g. ``channels=1``). Stats every video listed in FileList.csv (and
    reads them all when ``hash_videos``).

    Raises:
        EchoNetNotFoundError / EchoNetLayoutError: the folder or FileList.csv is missing or malformed.
    """
    options = _options(options, fields)
    root = Path(root).expanduser().resolve()
    identity = source_identity(root, options.hash_videos)
    key = {"root": str(root), "options": dataclasses.asdict(options), "identity": identity}
    fingerprint = hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()
    return EchonetDynamicConfig(
        name=f"src_{fingerprint[:16]}",
        description=f"EchoNet-Dynamic from {root} ({options.describe()})",
        source_root=str(root),
        options=options,
        identity=identity,
        fingerprint=fingerprint,
    )


# ------------------------------------------------------------------------------- decoding


@dataclasses.dataclass
class _Decoded:
    encoded: Any  # raw bytes of [F, H, W, C], or a list of PNG bytes
    shape: tuple[int, int, int, int]  # (F, H, W, C), C = the channels stored for this video
    fps: float | None
    colour: bool  # the decoded RGB channels differ somewhere
    header_frames: int  # frame count the container announces (-1 if unknown)


def channels_equal(rgb: np.ndarray) -> bool:
    """Whether the three channels of uint8 ``[..., 3]`` frames are equal at every pixel (a grey video)."""
    return bool(np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 1], rgb[..., 2]))


def stored_frames(rgb: np.ndarray, options: PrepareOptions) -> tuple[np.ndarray, bool]:
    """What is stored of decoded RGB frames ``[F, H, W, 3]``: uint8 ``[F, H, W, C]`` and whether they are colour.

    ``C`` is 1 for luma (``channels=1``) and for a grey video under ``collapse_grey`` (its one
    channel, exactly: the pipeline tiles it back), else 3.
    """
    colour = not channels_equal(rgb)
    if options.channels == 1:
        frames = (rgb_to_gray(rgb) if colour else rgb[..., 0])[..., None]
    elif options.collapse_grey and not colour:
        frames = rgb[..., :1]
    else:
        frames = rgb
    return np.ascontiguousarray(frames), colour


def _png(frame: np.ndarray) -> bytes:
    """PNG of one uint8 frame ``[H, W, C]`` (RGB order for C = 3)."""
    if frame.shape[-1] == 3:
        frame = cv2.cvtColor(frame, cv2.COLOR_RGB2BGR)  # cv2 writes BGR; the PNG then decodes to RGB
    ok, buf = cv2.imencode(".png", frame)
    if not ok:
        raise VideoReadError("PNG encoding failed")
    return buf.tobytes()


def _load(path: Path, options: PrepareOptions) -> _Decoded:
    """Decodes one video into the stored form; raises VideoReadError."""
    video = read_video(path, color=True)
    frames, colour = stored_frames(video.frames, options)  # from [F, H, W, 3] RGB
    encoded = [_png(f) for f in frames] if options.frame_format == "png" else frames.tobytes()
    header = int(video.metadata.get("header_frame_count", -1))
    return _Decoded(encoded, tuple(int(d) for d in frames.shape), video.fps, colour, header)


def in_order(fn, items: Sequence[Any], workers: int) -> Iterator[tuple[Any, Exception | None]]:
    """Yields ``(fn(item), None)`` or ``(None, VideoReadError)`` per item, in order.

    OpenCV decoding and PNG encoding release the GIL, so a thread pool of ``workers`` runs ``fn``
    in parallel; at most ``2 * workers`` results wait in memory.
    """

    def safe(item):
        try:
            return fn(item), None
        except VideoReadError as err:
            return None, err

    if workers <= 1:
        yield from (safe(x) for x in items)
        return
    with ThreadPoolExecutor(workers) as pool:
        pending: collections.deque = collections.deque()
        it = iter(items)
        for item in itertools.islice(it, 2 * workers):
            pending.append(pool.submit(safe, item))
        while pending:
            result = pending.popleft().result()
            nxt = next(it, None)
            if nxt is not None:
                pending.append(pool.submit(safe, nxt))
            yield result


def majority_frame_size(records: Sequence[reader.EchoNetRecord], workers: int = 1) -> tuple[int, int] | None:
    """The frame size ``(H, W)`` most videos have (container headers; unreadable ones ignored).

    Raises:
        EchoNetPreparationError: some videos differ from it (names them with their sizes).
    """
    sizes = [
        None if info is None else (info.height, info.width)
        for info, _ in in_order(lambda r: probe_video(r.path), records, workers)
    ]
    counts = collections.Counter(s for s in sizes if s is not None)
    if not counts:
        return None
    (h, w), n = counts.most_common(1)[0]
    odd = [f"{r.path} ({s[0]}x{s[1]})" for r, s in zip(records, sizes) if s is not None and s != (h, w)]
    if odd:
        raise EchoNetPreparationError(
            f"{len(odd)} video(s) differ from the frame size of the other {n} ({h}x{w}, height x width): "
            f"{shown(odd)}. Every video must have the same frame size (EchoNet-Dynamic: "
            f"{layout.FRAME_SIZE}x{layout.FRAME_SIZE}); resize or remove the odd ones"
        )
    return int(h), int(w)


# ------------------------------------------------------------------------------- builder


class EchonetDynamic(tfds.core.GeneratorBasedBuilder):
    """EchoNet-Dynamic videos (raw or PNG frames, 1 or 3 channels) with EF/EDV/ESV labels."""

    VERSION = tfds.core.Version("1.2.0")
    RELEASE_NOTES = {
        "1.0.0": "Raw or PNG frames, official untraced-video filtering.",
        "1.1.0": "RGB or luma frames; keyed on every video file; truncated videos reported.",
        "1.2.0": "Per-video 'channels': a grey video of an RGB dataset is stored once (collapse_grey).",
    }
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        "Download EchoNet-Dynamic (https://reader.github.io/dynamic/, Stanford AIMI) and pass its "
        "folder as the manual directory (prepare_echonet(root, data_dir)).\n" + layout.LAYOUT
    )
    BUILDER_CONFIGS: list[EchonetDynamicConfig] = []

    def __init__(self, *, workers: int | None = None, beam: bool = False, **kwargs: Any):
        """``workers``: threads decoding videos in-process (default: CPU count); ``beam``: generate the
        splits as Beam PTransforms instead (the runner comes with ``DownloadConfig(beam_options=...)``);
        ``kwargs`` as TFDS."""
        super().__init__(**kwargs)
        self._workers = workers if workers is not None else (os.cpu_count() or 1)
        self._beam = beam
        self._beam_splits: dict[str, int] = {}  # split -> work items, of a Beam preparation
        self._bar = None  # the preparation's one progress bar, over the videos of every split

    def _log_download_bytes(self) -> None:
        """Replaces TFDS's "Downloading and preparing dataset ..." (nothing is downloaded here)."""
        logs.say(f"preparing EchoNet-Dynamic from {self.builder_config.source_root} into {self.data_dir}")

    def _log_download_done(self) -> None:
        """Replaces TFDS's "Dataset ... downloaded and prepared to ..."."""
        logs.say(f"prepared {self.data_dir} (once: later runs reuse it)")

    def _info(self) -> tfds.core.DatasetInfo:
        options = getattr(self.builder_config, "options", PrepareOptions())
        c = options.channels
        if options.frame_format == "raw":
            frames = tfds.features.Tensor(
                shape=(),
                dtype=np.object_,
                doc="[F, H, W, C] uint8 video as bytes, C = the example's channels",
            )
        else:  # a one-channel PNG of an RGB dataset decodes to three equal channels
            frames = tfds.features.Sequence(tfds.features.Image(shape=(None, None, c), encoding_format="png"))
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
                    "channels": tfds.features.Scalar(
                        np.int32,
                        doc="channels stored for this video: 3, or 1 (luma, or a grey video stored once)",
                    ),
                }
            ),
            homepage="https://reader.github.io/dynamic/",
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
        index = reader.read_echonet(root, drop_untraced=config.options.drop_untraced)
        size = majority_frame_size(index.records, self._workers)
        meta = self.info.metadata
        meta.clear()
        meta.update(
            {
                "source_root": config.source_root,
                "options": dataclasses.asdict(config.options),
                "fingerprint": config.fingerprint,
                "identity": config.identity,
                "has_tracings": index.has_tracings,
                "dropped_untraced": list(index.dropped_untraced),
                "skipped": {},
                "truncated": {},
                "colour_videos": [],
                "frame_size": None if size is None else list(size),
                "videos": {},
            }
        )
        self.close_bar()
        if not self._beam:  # Beam workers decode elsewhere: the runner logs their progress
            total = sum(len(index.split(split)) for split in layout.SPLITS)
            self._bar = logs.progress(desc="preparing EchoNet-Dynamic", total=total, unit="video")
        return {split: self._generate_examples(index.split(split), split) for split in layout.SPLITS}

    def _advance(self, split: str) -> None:
        """One more video of ``split`` read, on the preparation's bar (when one is open)."""
        if self._bar is not None:
            self._bar.set_description(f"preparing EchoNet-Dynamic {split}", refresh=False)
            self._bar.update(1)
            if self._bar.n >= self._bar.total:  # the last video of the last split
                self.close_bar()

    def close_bar(self) -> None:
        """Closes the preparation's progress bar (:func:`prepare_echonet` calls it at the end)."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def _generate_examples(self, records: Sequence[reader.EchoNetRecord], split: str):
        """The examples of a split: decoded here by threads, or (``beam=True``) a Beam PTransform."""
        items = [_item(i, r) for i, r in enumerate(records)]
        if self._beam:
            work = os.fspath(self.data_path / BEAM_WORK_DIR)
            runners.write_lines(f"{work}/{split}.items.jsonl", items)
            self._beam_splits[split] = len(items)
            options = dataclasses.asdict(self.builder_config.options)
            return runners.split_transform(
                f"{work}/{split}.items.jsonl", f"{work}/{split}.rows", video_row, options=options
            )
        return self._generate_in_process(items, split)

    def _generate_in_process(self, items: list[dict[str, Any]], split: str):
        options: PrepareOptions = self.builder_config.options
        meta = self.info.metadata
        rows = []
        loaded = in_order(lambda item: _load(Path(item["path"]), options), items, self._workers)
        for item, (video, err) in zip(items, loaded):
            self._advance(split)
            row, example = _row_of(item, video, err, options)
            _check_frame_size(meta, row)  # fail early, before decoding the rest
            rows.append(row)
            if example is not None:
                yield row["key"], example
        _finish_split(meta, split, rows, options)

    def _process_pipeline_result(self, pipeline_result: Any) -> None:
        """After a Beam preparation: the rows of every split (pipeline data) -> the metadata."""
        del pipeline_result
        work = os.fspath(self.data_path / BEAM_WORK_DIR)
        for split in self._beam_splits:
            rows = runners.read_lines(f"{work}/{split}.rows*")
            _finish_split(self.info.metadata, split, rows, self.builder_config.options)
        runners.delete([work])


#: Folder (inside the dataset's temporary folder) of a Beam preparation's work items and report rows.
BEAM_WORK_DIR = "beam_work"


def _item(index: int, record: reader.EchoNetRecord) -> dict[str, Any]:
    """One video as a work item (JSON-able): its index in the split, names, path and labels."""
    return {
        "index": index,
        "filename": record.filename,
        "path": str(record.path),
        "ef": float(record.ef),
        "edv": float(record.edv),
        "esv": float(record.esv),
        "fps": float(record.fps),
    }


def _row_of(
    item: dict[str, Any], video: _Decoded | None, err: Exception | None, options: PrepareOptions
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """A decoded (or unreadable) video -> its report row and its example (None: skipped or dropped)."""
    row = {k: item[k] for k in ("index", "filename", "path")}
    row["key"] = item["filename"]
    if err is not None:
        return {**row, "reason": str(err)}, None
    num_frames, height, width, num_channels = video.shape
    row.update(
        num_frames=num_frames,
        size=[height, width],
        channels=num_channels,
        header_frames=video.header_frames,
        colour=video.colour,
    )
    if options.drop_truncated and video.header_frames > num_frames:
        return row, None
    fps = item["fps"] if video.fps is None else video.fps
    return row, {
        "frames": video.encoded,
        "filename": item["filename"],
        "ef": np.float32(item["ef"]),
        "edv": np.float32(item["edv"]),
        "esv": np.float32(item["esv"]),
        "num_frames": np.int32(num_frames),
        "fps": np.float32(math.nan if fps is None else fps),
        "channels": np.int32(num_channels),
    }


def video_row(item: dict[str, Any], options: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """One work item decoded in a Beam worker: :func:`_row_of` of its video."""
    opts = PrepareOptions(**options)
    try:
        video, err = _load(Path(item["path"]), opts), None
    except VideoReadError as error:
        video, err = None, error
    return _row_of(item, video, err, opts)


def _check_frame_size(meta: dict[str, Any], row: dict[str, Any]) -> None:
    """The first decoded video sets the frame size (when the headers did not); another size stops."""
    if "size" not in row:
        return
    if meta["frame_size"] is None:
        meta["frame_size"] = list(row["size"])
    if meta["frame_size"] != row["size"]:
        height, width = row["size"]
        raise EchoNetPreparationError(
            f"{row['path']}: decoded frame size {height}x{width} differs from the other videos "
            f"({meta['frame_size'][0]}x{meta['frame_size'][1]})"
        )


def _finish_split(
    meta: dict[str, Any], split: str, rows: list[dict[str, Any]], options: PrepareOptions
) -> None:
    """The rows of a split (any order) -> its metadata (skipped, truncated, stored videos), logged.

    Raises:
        EchoNetPreparationError: decoded frame sizes differ, or no video of the split is stored.
    """
    rows = sorted(rows, key=lambda r: r["index"])
    skipped: list[dict[str, str]] = []
    truncated: list[dict[str, Any]] = []
    names: list[str] = []
    counts: list[int] = []
    stored: list[int] = []
    for row in rows:
        if "reason" in row:
            log.warning("EchoNet: skipping unreadable video %s (%s)", row["path"], row["reason"])
            skipped.append({"filename": row["filename"], "path": row["path"], "reason": row["reason"]})
            continue
        _check_frame_size(meta, row)
        if row["header_frames"] > row["num_frames"]:
            truncated.append(
                {
                    "filename": row["filename"],
                    "path": row["path"],
                    "header_frames": row["header_frames"],
                    "decoded_frames": row["num_frames"],
                }
            )
            if options.drop_truncated:
                continue
        if row["colour"] and options.channels == 1:
            meta["colour_videos"].append(row["filename"])
        names.append(row["filename"])
        counts.append(row["num_frames"])
        stored.append(row["channels"])
    meta["skipped"][split] = skipped
    meta["truncated"][split] = truncated
    meta["videos"][split] = {"filename": names, "num_frames": counts, "channels": stored}
    if options.channels == 3 and options.collapse_grey and names:
        log.info(
            "EchoNet %s: %d of %d videos are grey (three equal channels) and stored once",
            split,
            stored.count(1),
            len(names),
        )
    if skipped:
        log.warning(
            "EchoNet %s: skipped %d of %d videos as unreadable (listed in %s)",
            split,
            len(skipped),
            len(rows),
            REPORT_NAME,
        )
    if truncated:
        log.warning(
            "EchoNet %s: %d video(s) decode fewer frames than their header announces (%s; listed in %s): %s",
            split,
            len(truncated),
            "dropped" if options.drop_truncated else "kept with the frames that decode",
            REPORT_NAME,
            shown([t["filename"] for t in truncated]),
        )
    if not names:
        problems = skipped + truncated
        raise EchoNetPreparationError(
            f"every video of split {split!r} ({len(rows)}) is unreadable, has zero frames"
            f"{' or is truncated (drop_truncated=True)' if options.drop_truncated else ''}, e.g. "
            f"{problems[0]['path']}: {problems[0].get('reason', 'truncated')}"
        )


# ------------------------------------------------------------------------------- prepare / load


def _dataset_dir(data_dir: PathLike, config: EchonetDynamicConfig) -> Path:
    return Path(data_dir) / DATASET_NAME / config.name / str(EchonetDynamic.VERSION)


def _prepared_metadata(data_dir: PathLike) -> list[tuple[Path, dict]]:
    """``(dataset dir, metadata)`` of every dataset prepared in ``data_dir`` by this version."""
    out = []
    for info in sorted(Path(data_dir).glob(f"{DATASET_NAME}/*/{EchonetDynamic.VERSION}/dataset_info.json")):
        try:
            out.append((info.parent, json.loads((info.parent / "metadata.json").read_text())))
        except (OSError, json.JSONDecodeError):
            out.append((info.parent, {}))
    return out


def stale_preparations(data_dir: PathLike, config: EchonetDynamicConfig) -> list[tuple[Path, list[str]]]:
    """Datasets in ``data_dir`` prepared from the same source and options before it changed, with the changes."""
    options = dataclasses.asdict(config.options)
    return [
        (path, describe_changes(meta["identity"], config.identity))
        for path, meta in _prepared_metadata(data_dir)
        if meta.get("source_root") == config.source_root
        and meta.get("options") == options
        and meta.get("fingerprint") != config.fingerprint
        and "identity" in meta
    ]


def _check_metadata(builder: tfds.core.DatasetBuilder, config: EchonetDynamicConfig | None) -> None:
    meta = builder.info.metadata or {}
    if not {"source_root", "options", "videos"} <= set(meta):
        raise EchoNetPreparationError(
            f"{builder.data_dir}: not an EchoNet-Dynamic dataset prepared by this version of "
            f"prepare_echonet (metadata.json lacks source_root/options/videos); prepare it again"
        )
    if config is not None and meta.get("fingerprint") != config.fingerprint:
        raise EchoNetPreparationError(
            f"{builder.data_dir} was prepared from {meta['source_root']} with other options or files "
            f"than {config.source_root} ({config.options.describe()})"
        )


def prepare_echonet(
    root: PathLike,
    data_dir: PathLike,
    options: PrepareOptions | None = None,
    *,
    workers: int | None = None,
    beam: Sequence[str] | None = None,
    max_shard_size: int = 128 << 20,
    **fields: Any,
) -> tfds.core.DatasetBuilder:
    """Prepares EchoNet-Dynamic once into ``data_dir`` (a no-op when already prepared) and returns the builder.

    Safe to call from several processes at once: one prepares under the lock
    ``<data_dir>/echonet_dynamic/<config name>.lock``, the others wait (logging whom for) and then
    reuse its result. A preparation that died half-way left only an ``incomplete.*`` folder, which
    the next preparation deletes (see the module doc).

    Args:
        root: EchoNet-Dynamic folder (FileList.csv, Videos/, optional VolumeTracings.csv).
        data_dir: TFDS data directory; the dataset lands in
            ``<data_dir>/echonet_dynamic/src_<hash>/<version>``.
        options: :class:`PrepareOptions`, or give its fields (``channels=1``, ``frame_format='png'``, ...).
        workers: threads decoding videos (default: CPU count), or the worker processes of the default
            Beam runner; the output does not depend on it.
        beam: None (default): decode in this process. A list of Beam pipeline flags (``[]`` for the
            default, the DirectRunner in multi-processing mode with ``workers`` processes; see
            :func:`coreecho_jax.data.corpus.runners.pipeline_options`): prepare the same records and
            report as an Apache Beam pipeline (needs ``apache-beam``, requirements-beam.txt).
        max_shard_size: bytes per TFRecord shard (more shards = better file-level shuffling).

    Returns:
        The prepared builder. Its report is ``<builder.data_dir>/preparation_report.json``.

    Raises:
        EchoNetNotFoundError / EchoNetLayoutError: bad source layout or labels (before any decoding).
        EchoNetPreparationError: every video of a split is unreadable, frame sizes differ, or
            ``data_dir`` cannot be written.
        BeamOptionsError: a Beam pipeline flag is unknown or malformed (before any work).
    """
    tf_runtime.hide_gpus_from_tensorflow()
    config = config_for(root, options, **fields)
    reader.read_echonet(config.source_root, drop_untraced=config.options.drop_untraced)  # fail fast
    beam_options = None
    if beam is not None:
        beam_options = runners.pipeline_options(beam, workers=workers or os.cpu_count() or 1)
    path = _dataset_dir(data_dir, config)
    if (path / "dataset_info.json").is_file() and (path / REPORT_NAME).is_file():
        return _open(data_dir, config)  # prepared and complete: no lock (the folder may be read-only)
    with preparation_lock(Path(data_dir) / DATASET_NAME / f"{config.name}.lock", str(path)):
        if not (path / "dataset_info.json").is_file():
            remove_incomplete(path)
            for old, changes in stale_preparations(data_dir, config):
                log.warning(
                    "EchoNet: %s changed since %s was prepared from it (%s); preparing again into %s. "
                    "The old prepared copy is no longer used and may be deleted.",
                    config.source_root,
                    old,
                    "; ".join(changes) or "identity differs",
                    path,
                )
            builder = EchonetDynamic(
                config=config, data_dir=os.fspath(data_dir), workers=workers, beam=beam is not None
            )
            failures = contextlib.nullcontext()
            if beam is not None:
                failures = runners.preparation_run(config.source_root, EchoNetPreparationError)
            tfds.display_progress_bar(False)  # one bar (ours, over the videos), none nested from TFDS
            try:
                with failures:
                    builder.download_and_prepare(
                        download_config=tfds.download.DownloadConfig(
                            manual_dir=config.source_root,
                            try_download_gcs=False,
                            max_shard_size=max_shard_size,
                            min_shard_size=min(max_shard_size, 16 << 20),
                            beam_options=beam_options,
                        )
                    )
            finally:
                builder.close_bar()
                tfds.display_progress_bar(True)  # TFDS's default, for other builders
        builder = _open(data_dir, config)  # re-read the written metadata
        write_report(builder)
    return builder


def _open(data_dir: PathLike, config: EchonetDynamicConfig) -> tfds.core.DatasetBuilder:
    builder = EchonetDynamic(config=config, data_dir=os.fspath(data_dir))
    _check_metadata(builder, config)
    return builder


@contextlib.contextmanager
def preparation_lock(lock_path: PathLike, what: str) -> Iterator[None]:
    """Holds the exclusive lock ``lock_path`` while ``what`` (a folder, for messages) is written.

    A second process waits for the first, with a warning naming it (pid, host, start). A lock file
    left by a process that died holding it is taken over with a warning. Where the file system
    cannot lock (``ENOLCK``, ``EOPNOTSUPP``: some network mounts) the work goes on unlocked, with a
    warning.

    Raises:
        EchoNetPreparationError: the lock file cannot be created (e.g. a read-only folder).
    """
    lock = HolderLock(lock_path)

    def waiting(holder: dict) -> None:
        log.warning(
            "%s is being prepared by another process (%s); waiting for it to finish (lock %s)",
            what,
            describe_holder(holder),
            lock.path,
        )

    try:
        previous = lock.acquire(wait=True, on_wait=waiting)
    except OSError as err:
        if err.errno not in (errno.ENOLCK, errno.EOPNOTSUPP):
            raise EchoNetPreparationError(
                f"{lock.path}: cannot take the preparation lock ({err.strerror}); the data folder must be "
                f"writable: set --config.data.data_dir or COREECHO_DATA_DIR to a folder you can write"
            ) from err
        log.warning("%s: the file system cannot lock (%s); preparing %s without a lock", lock.path, err, what)
        yield
        return
    try:
        if previous:
            log.warning(
                "%s: a preparation of %s by %s ended without finishing; preparing again",
                lock.path,
                what,
                describe_holder(previous),
            )
        yield
    finally:
        lock.release()


def remove_incomplete(path: Path, what: str = "EchoNet") -> None:
    """Deletes TFDS's ``incomplete.*_<version>`` folders beside ``path`` (left by a killed preparation),
    saying so in a warning that begins with ``what`` (the dataset's name).

    Called under the preparation lock, when nobody else writes them.
    """
    leftovers = sorted(path.parent.glob(f"{INCOMPLETE_PREFIX}*_{path.name}"))
    for folder in leftovers:
        shutil.rmtree(folder, ignore_errors=True)
    if leftovers:
        log.warning(
            "%s: deleted %d unfinished preparation folder(s) left by a process that stopped: %s",
            what,
            len(leftovers),
            shown([str(f) for f in leftovers]),
        )


def write_report(builder: tfds.core.DatasetBuilder) -> Path:
    """Writes ``<dataset dir>/preparation_report.json`` (skipped, truncated, dropped videos); returns it."""
    meta = builder.info.metadata
    path = Path(builder.data_dir) / REPORT_NAME
    stored = {split: videos.get("channels", []) for split, videos in meta["videos"].items()}
    report = {
        "source_root": meta["source_root"],
        "options": meta["options"],
        "skipped_unreadable": meta["skipped"],
        "num_skipped_unreadable": sum(len(v) for v in meta["skipped"].values()),
        "truncated": meta["truncated"],
        "num_truncated": sum(len(v) for v in meta["truncated"].values()),
        "truncated_are": "dropped" if meta["options"]["drop_truncated"] else "kept",
        "dropped_untraced": meta["dropped_untraced"],
        "num_dropped_untraced": len(meta["dropped_untraced"]),
        "colour_videos_stored_as_luma": meta["colour_videos"],
        "num_videos_stored_with_one_channel": {split: c.count(1) for split, c in stored.items()},
    }
    if not path.exists():
        tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
        tmp.write_text(json.dumps(report, indent=1) + "\n")
        os.replace(tmp, path)
    return path


def load_echonet(
    data_dir: PathLike, root: PathLike | None = None, options: PrepareOptions | None = None, **fields: Any
) -> tfds.core.DatasetBuilder:
    """Opens a prepared EchoNet-Dynamic dataset.

    Args:
        data_dir: the TFDS data directory given to :func:`prepare_echonet`.
        root: the source folder it was prepared from; ``None`` = the only dataset in ``data_dir``.
        options: the options it was prepared with, or their fields (used when ``root`` is given).

    Raises:
        EchoNetNotPreparedError: nothing prepared for this source and options, or the source changed
            since (the message names what changed).
        EchoNetPreparationError: ambiguous (several prepared sources and no ``root``), or a mismatch.
    """
    if root is not None:
        config = config_for(root, options, **fields)
        path = _dataset_dir(data_dir, config)
        if not (path / "dataset_info.json").is_file():
            stale = "".join(
                f" {config.source_root} changed since {old} was prepared from it: {'; '.join(changes)}."
                for old, changes in stale_preparations(data_dir, config)
            )
            raise EchoNetNotPreparedError(
                f"no prepared EchoNet-Dynamic dataset for {config.source_root} ({config.options.describe()}) "
                f"in {data_dir} (looked for {path}).{stale} To fix: run prepare_echonet(root, data_dir) first; if the "
                f"source files changed since preparation, the dataset must be prepared again."
            )
        builder = EchonetDynamic(config=config, data_dir=os.fspath(data_dir))
        _check_metadata(builder, config)
        return builder
    found = _prepared_metadata(data_dir)
    if not found:
        raise EchoNetNotPreparedError(
            f"no prepared EchoNet-Dynamic dataset under {Path(data_dir) / DATASET_NAME}; "
            f"run prepare_echonet(root, data_dir) first"
        )
    if len(found) > 1:
        sources = [meta.get("source_root", str(path)) for path, meta in found]
        raise EchoNetPreparationError(
            f"{data_dir} holds {len(found)} prepared EchoNet-Dynamic datasets "
            f"(sources: {sources}); pass root= to choose one"
        )
    builder = tfds.builder_from_directory(os.fspath(found[0][0]))
    _check_metadata(builder, None)
    return builder


# ------------------------------------------------------------------------------- reading


def split_videos(builder: tfds.core.DatasetBuilder, split: str) -> dict[str, int]:
    """``{filename (no extension): decoded frame count}`` of the videos stored in a split."""
    meta = builder.info.metadata
    key = str(split).strip().lower()
    if key not in meta["videos"]:
        raise EchoNetPreparationError(
            f"unknown split {split!r}; the prepared dataset has {sorted(meta['videos'])}"
        )
    videos = meta["videos"][key]
    return dict(zip(videos["filename"], (int(n) for n in videos["num_frames"])))


def split_files(builder: tfds.core.DatasetBuilder, split: str) -> list[str]:
    """Paths of the TFRecord shards of a split (whole files), in storage order."""
    key = str(split).strip().lower()
    split_videos(builder, key)  # validates the split name
    out = []
    for fi in builder.info.splits[key].file_instructions:
        if fi.skip != 0 or fi.take != fi.examples_in_shard:
            raise EchoNetPreparationError(f"split {key!r}: partial shard {fi.filename} is not supported")
        out.append(os.fspath(fi.filename))
    return out


def options_of(builder: tfds.core.DatasetBuilder) -> PrepareOptions:
    """The :class:`PrepareOptions` a dataset was prepared with (``collapse_grey`` False before version 1.2).

    Options of other builders in this layout (a DICOM corpus) are read for the fields they share.
    """
    names = {f.name for f in dataclasses.fields(PrepareOptions)}
    stored = {k: v for k, v in builder.info.metadata["options"].items() if k in names}
    return PrepareOptions(**{"collapse_grey": False, **stored})


def frame_format(builder: tfds.core.DatasetBuilder) -> str:
    """How frames are stored: ``'png'`` or ``'raw'``."""
    return options_of(builder).frame_format


def channels(builder: tfds.core.DatasetBuilder) -> int:
    """Channels per frame of the clips: 3 (RGB) or 1 (luma). See :func:`grey_stored_once`."""
    return options_of(builder).channels


def grey_stored_once(builder: tfds.core.DatasetBuilder) -> bool:
    """Whether an RGB dataset stores its grey videos with one channel (the example's ``channels`` is 1)."""
    options = options_of(builder)
    return options.channels == 3 and options.collapse_grey


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
    ``F * H * W * C`` video bytes.
    """
    key = str(split).strip().lower()
    split_videos(builder, key)  # validates the split name
    return builder.as_dataset(
        split=key,
        shuffle_files=shuffle_files,
        read_config=read_config,
        decoders={"frames": tfds.decode.SkipDecoding()},
    )
