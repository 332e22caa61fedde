"""TFDS builder for an echo corpus (DICOM cines and videos), in-process or as an Apache Beam pipeline.

Usage::

    builder = prepare_corpus("/data/mimic-iv-echo/files", "/data/tfds")            # threads, this machine
    builder = prepare_corpus("/data/labels.csv", "/data/tfds", beam=[])              # Beam, DirectRunner
    builder = prepare_corpus(src, data_dir, beam=["--runner=DataflowRunner", ...])   # Beam, a cluster
    ds = echonet_tfds.split_dataset(builder, "corpus")   # the EchoNet clip pipeline reads it as is

The source is a folder tree or a manifest CSV (:mod:`.sources`). Each file is prepared in a guarded
child process (:mod:`.guard`: a time and a memory limit per file) by :func:`.reading.read_corpus_file`,
as single-file prediction prepares a video: cropped to the ultrasound region (or the sector), padded to
a square, resized to ``size`` (112), the frame rate kept as the file says. Records are in the
EchoNet-Dynamic layout (``frames`` raw bytes ``[F, S, S, C]``, ``filename`` = the key, ``ef``/``edv``/
``esv`` (NaN without labels), ``num_frames``, ``fps``, ``channels``; metadata ``options``,
``frame_size`` and ``videos``), so :mod:`coreecho_jax.data.echonet.pipeline` makes training and
evaluation clips from it. They add, for joins and audits: ``path``, ``study_uid``, ``series_uid``,
``sop_uid``, ``transfer_syntax``, ``photometric_interpretation``, ``fps_source`` (the timing tag
that gave the rate), ``fps_far`` (the rate is far from the training data's, as prediction warns),
``notes``, ``regions`` (int32 ``[R, 6]``: x0, y0, x1, y1 half-open, spatial format, data type),
``crop_mode``, ``crop_box`` (int32 ``[4]``) and ``source_shape`` (int32 ``[3]``: frames, height, width).

A refused file (not found, not a cine, no decoder, damaged, not an echo loop, over a limit) is a row of
``<dataset dir>/preparation_report.json`` with its kind and reason; the report also counts the frame-rate
sources and transfer syntaxes, lists the files flagged for their rate and counts those with notes
(the notes themselves are in the records). Under Beam the
rows are pipeline data written beside the examples and read back after the pipeline ran
(:mod:`.runners`), so both paths write the same metadata and report.

Keys are the files' relative paths: TFDS orders and checks records by key, so the output is the same
whatever the number of workers or the runner, and a rerun cannot duplicate a record. The dataset is
keyed (its config name) on the source path, the options and every file's size and modification time;
prepared once under a lock, written into TFDS's ``incomplete.*`` folder and renamed only when every
split is written, so a preparation killed half-way leaves nothing a later run trusts.
"""

from __future__ import annotations

import atexit
import collections
import contextlib
import dataclasses
import hashlib
import json
import logging
import math
import os
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from coreecho_jax import logs

with logs.native_chatter_hidden():  # TensorFlow's import lines (oneDNN, CPU features), at verbosity 0
    import tensorflow_datasets as tfds

from coreecho_jax.data.corpus import guard, reading, runners, sources
from coreecho_jax.data.corpus.guard import GuardedWorker, TaskFailed
from coreecho_jax.data.echonet import echonet_tfds, tf_runtime
from coreecho_jax.data.echonet_layout import FRAME_SIZE
from coreecho_jax.data.video.video_io import CROP_MODES
from coreecho_jax.errors import DataError

PathLike = str | os.PathLike
log = logging.getLogger(__name__)

DATASET_NAME = "echo_corpus"
REPORT_NAME = echonet_tfds.REPORT_NAME
#: The guarded task that prepares one file.
READER = "coreecho_jax.data.corpus.reading:read_corpus_file"
#: Folder (inside the dataset's temporary folder) of a Beam preparation's work items and report rows.
BEAM_WORK_DIR = "beam_work"


class CorpusPreparationError(DataError):
    """Preparing or opening a prepared corpus failed (every file refused, bad options, a mismatch)."""


class CorpusNotPreparedError(CorpusPreparationError, FileNotFoundError):
    """No prepared corpus matches the source and options (never prepared, or the files changed)."""


@dataclasses.dataclass(frozen=True)
class CorpusOptions:
    """What a prepared corpus depends on besides its files (part of its key).

    Attributes:
        size: side of the stored square frames, pixels (EchoNet-Dynamic's 112, as prediction).
        crop: ``load_echo_video``'s crop (``"auto"``: the DICOM ultrasound region, else the sector;
            prediction uses ``"none"`` only for a video already 112x112, which scanners never write).
        channels: 3 = RGB (official), 1 = luma.
        collapse_grey: with ``channels=3``, store a grey video's one channel (as EchoNet's builder).
        timeout_s: seconds one file may take to prepare before it is stopped and reported.
        memory_mb: MiB one worker's decoding process may grow by while preparing a file.
    """

    size: int = FRAME_SIZE
    crop: str = "auto"
    channels: int = 3
    collapse_grey: bool = True
    timeout_s: float = 300.0
    memory_mb: int = 4096

    def __post_init__(self) -> None:
        problems = []
        if self.size < 16:
            problems.append(f"size must be >= 16 pixels, got {self.size!r}")
        if self.crop not in CROP_MODES:
            problems.append(f"crop must be one of {CROP_MODES}, got {self.crop!r}")
        if self.channels not in (1, 3):
            problems.append(f"channels must be 1 or 3, got {self.channels!r}")
        if not self.timeout_s > 0:
            problems.append(f"timeout_s must be > 0 seconds, got {self.timeout_s!r}")
        if not self.memory_mb > 0:
            problems.append(f"memory_mb must be > 0 MiB, got {self.memory_mb!r}")
        if problems:
            raise CorpusPreparationError("corpus options: " + "; ".join(problems))

    def describe(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in dataclasses.asdict(self).items())


class CorpusConfig(tfds.core.BuilderConfig):
    """Builder config bound to one listed source and one option set.

    Attributes:
        source: the :class:`~.sources.CorpusSource`.
        options: the :class:`CorpusOptions`.
        fingerprint: SHA-1 of (source location and kind, options, the files' identity); the config
            name holds its first 16 digits.
    """

    def __init__(
        self, *, source: sources.CorpusSource, options: CorpusOptions, fingerprint: str, **kwargs: Any
    ):
        super().__init__(**kwargs)
        self.source = source
        self.options = options
        self.fingerprint = fingerprint


def corpus_config(source: PathLike, options: CorpusOptions | None = None, **fields: Any) -> CorpusConfig:
    """Lists a corpus (folder tree or manifest) and names its prepared dataset (stats every file).

    Raises:
        CorpusSourceError: no DICOM/video file, or a malformed manifest.
    """
    if options is not None and fields:
        raise TypeError(
            f"pass either CorpusOptions or its fields, not both (got options and {sorted(fields)})"
        )
    options = options if options is not None else CorpusOptions(**fields)
    listed = sources.list_corpus(source)
    key = {
        "location": listed.location,
        "kind": listed.kind,
        "options": dataclasses.asdict(options),
        "identity": listed.identity(),
    }
    fingerprint = hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()
    return CorpusConfig(
        name=f"src_{fingerprint[:16]}",
        description=f"echo corpus from {listed.location} ({options.describe()})",
        source=listed,
        options=options,
        fingerprint=fingerprint,
    )


# ------------------------------------------------------------------------------- one file


_guards: dict[tuple[int, float, int], GuardedWorker] = {}
_guards_lock = threading.Lock()


def _guard(options: CorpusOptions) -> GuardedWorker:
    """This thread's guarded worker for ``options``' limits (started on first use, kept for the next file)."""
    key = (threading.get_ident(), options.timeout_s, options.memory_mb)
    with _guards_lock:
        guard = _guards.get(key)
        if guard is None:
            if not _guards:
                atexit.register(close_guards)
            guard = _guards[key] = GuardedWorker(
                READER, timeout_s=options.timeout_s, memory_mb=options.memory_mb
            )
    return guard


def close_guards() -> None:
    """Stops every guarded worker this process started (they also stop when the process exits)."""
    with _guards_lock:
        guards = list(_guards.values())
        _guards.clear()
    for worker in guards:
        worker.close()


def _stored(facts: dict[str, Any], payload: bytes, options: CorpusOptions) -> np.ndarray:
    """The decoded frames -> what is stored: uint8 ``[F, S, S, C]`` (a grey RGB video once, as EchoNet's)."""
    frames = np.frombuffer(payload, np.uint8).reshape(facts["shape"])
    if options.channels == 1:
        return np.ascontiguousarray(frames[..., None])
    prepare = echonet_tfds.PrepareOptions(channels=3, collapse_grey=options.collapse_grey)
    return echonet_tfds.stored_frames(frames, prepare)[0]


def _example(entry: dict[str, Any], facts: dict[str, Any], frames: np.ndarray) -> dict[str, Any]:
    regions = np.asarray(facts["regions"], np.int32).reshape(-1, 6)
    fps = facts["fps"]
    return {
        "frames": frames.tobytes(),
        "filename": entry["key"],
        "ef": np.float32(entry["ef"]),
        "edv": np.float32(entry["edv"]),
        "esv": np.float32(entry["esv"]),
        "num_frames": np.int32(frames.shape[0]),
        "fps": np.float32(math.nan if fps is None else fps),
        "channels": np.int32(frames.shape[-1]),
        "path": entry["path"],
        "study_uid": facts["study_uid"],
        "series_uid": facts["series_uid"],
        "sop_uid": facts["sop_uid"],
        "transfer_syntax": facts["transfer_syntax"],
        "photometric_interpretation": facts["photometric_interpretation"],
        "fps_source": facts["fps_source"],
        "fps_far": bool(facts["fps_far"]),
        "notes": "\n".join(facts["notes"]),
        "regions": regions,
        "crop_mode": facts["crop_mode"],
        "crop_box": np.asarray(facts["crop_box"], np.int32),
        "source_shape": np.asarray(facts["source_shape"], np.int32),
    }


def prepare_file(
    entry: dict[str, Any], options: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """One corpus entry -> its report row and its example (None when refused). Runs in any worker.

    The file is read by this thread's guarded child (:func:`_guard`); a refusal or a limit becomes
    the row's ``kind`` and ``reason``.
    """
    opts = CorpusOptions(**options)
    row = {"key": entry["key"], "path": entry["path"]}
    try:
        facts, payload = _guard(opts).run(
            path=entry["path"], size=opts.size, crop=opts.crop, channels=opts.channels
        )
    except TaskFailed as err:  # the reader's refusals name the file; the guard's limits do not
        reason = str(err) if str(err).startswith(entry["path"]) else f"{entry['path']}: {err}"
        return {**row, "kind": err.kind, "reason": reason}, None
    frames = _stored(facts, payload, opts)
    row.update(
        num_frames=int(frames.shape[0]),
        channels=int(frames.shape[-1]),
        fps=facts["fps"],
        fps_source=facts["fps_source"],
        fps_far=bool(facts["fps_far"]),
        notes=facts["notes"],
        transfer_syntax=facts["transfer_syntax"],
    )
    return row, _example(entry, facts, frames)


# ------------------------------------------------------------------------------- builder


class EchoCorpus(tfds.core.GeneratorBasedBuilder):
    """An echo corpus (DICOM cines, videos) prepared as prediction prepares a file (module doc)."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "DICOM/video corpus from a folder tree or a manifest; in-process or Beam."}
    BUILDER_CONFIGS: list[CorpusConfig] = []

    def __init__(self, *, workers: int | None = None, beam: bool = False, **kwargs: Any):
        """``workers``: threads (each with its guarded child) of the in-process path (default: CPU
        count); ``beam``: generate the splits as Beam PTransforms (the runner comes with
        ``DownloadConfig(beam_options=...)``); ``kwargs`` as TFDS."""
        super().__init__(**kwargs)
        self._workers = workers if workers is not None else (os.cpu_count() or 1)
        self._beam = beam
        self._beam_splits: list[str] = []

    def _log_download_bytes(self) -> None:
        """Replaces TFDS's "Downloading and preparing dataset ..." (nothing is downloaded here)."""
        logs.say(f"preparing the echo corpus {self._config.source.location} into {self.data_dir}")

    def _log_download_done(self) -> None:
        """Replaces TFDS's "Dataset ... downloaded and prepared to ..."."""
        logs.say(f"prepared {self.data_dir} (once: later runs reuse it)")

    def _info(self) -> tfds.core.DatasetInfo:
        text = tfds.features.Text
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict(
                {
                    "frames": tfds.features.Tensor(
                        shape=(), dtype=np.object_, doc="[F, S, S, C] uint8 video as bytes, C = channels"
                    ),
                    "filename": text(doc="the key: the file's path relative to the corpus folder"),
                    "ef": tfds.features.Scalar(np.float32, doc="ejection fraction, percent (NaN if unknown)"),
                    "edv": tfds.features.Scalar(np.float32, doc="end-diastolic volume, mL (NaN if unknown)"),
                    "esv": tfds.features.Scalar(np.float32, doc="end-systolic volume, mL (NaN if unknown)"),
                    "num_frames": tfds.features.Scalar(
                        np.int32, doc="stored frames (the file's, never resampled)"
                    ),
                    "fps": tfds.features.Scalar(
                        np.float32, doc="frames per second as the file says (NaN if unknown)"
                    ),
                    "channels": tfds.features.Scalar(
                        np.int32, doc="channels stored: 3, or 1 (luma or grey once)"
                    ),
                    "path": text(doc="the file as listed"),
                    "study_uid": text(doc="StudyInstanceUID ('' if not DICOM)"),
                    "series_uid": text(doc="SeriesInstanceUID"),
                    "sop_uid": text(doc="SOPInstanceUID"),
                    "transfer_syntax": text(doc="TransferSyntaxUID"),
                    "photometric_interpretation": text(doc="PhotometricInterpretation as stored"),
                    "fps_source": text(doc="the tag (or container) the frame rate came from"),
                    "fps_far": tfds.features.Scalar(
                        np.bool_, doc="rate far from the training data's (flagged)"
                    ),
                    "notes": text(doc="what prediction would note, one per line"),
                    "regions": tfds.features.Tensor(
                        shape=(None, 6),
                        dtype=np.int32,
                        doc="ultrasound regions: x0, y0, x1, y1, format, type",
                    ),
                    "crop_mode": text(doc="region, sector or none"),
                    "crop_box": tfds.features.Tensor(
                        shape=(4,), dtype=np.int32, doc="x0, y0, x1, y1 cropped"
                    ),
                    "source_shape": tfds.features.Tensor(
                        shape=(3,), dtype=np.int32, doc="frames, height, width"
                    ),
                }
            ),
            metadata=tfds.core.MetadataDict(),
        )

    @property
    def _config(self) -> CorpusConfig:
        config = self.builder_config
        if not isinstance(config, CorpusConfig):
            raise CorpusPreparationError(
                "build EchoCorpus with config=corpus_config(source) (see prepare_corpus)"
            )
        return config

    def _split_generators(self, dl_manager: tfds.download.DownloadManager) -> dict[str, Any]:
        del dl_manager
        config = self._config
        meta = self.info.metadata
        meta.clear()
        meta.update(
            {
                "source": config.source.location,
                "kind": config.source.kind,
                "options": dataclasses.asdict(config.options),
                "fingerprint": config.fingerprint,
                "num_files": len(config.source.entries),
                "ignored": list(config.source.ignored),
                "frame_size": [config.options.size, config.options.size],
                "videos": {},
                "report": {},
            }
        )
        return {split: self._generate_examples(split) for split in config.source.splits}

    def _generate_examples(self, split: str):
        config = self._config
        entries = [dataclasses.asdict(e) for e in config.source.entries if e.split == split]
        options = dataclasses.asdict(config.options)
        if self._beam:
            work = os.fspath(self.data_path / BEAM_WORK_DIR)
            runners.write_lines(f"{work}/{split}.items.jsonl", entries)
            self._beam_splits.append(split)
            return runners.split_transform(
                f"{work}/{split}.items.jsonl", f"{work}/{split}.rows", prepare_file, options=options
            )
        return self._generate_in_process(entries, split, options)

    def _generate_in_process(self, entries: list[dict[str, Any]], split: str, options: dict[str, Any]):
        rows = []
        bar = logs.progress(desc=f"preparing the echo corpus, {split}", total=len(entries), unit="file")
        try:
            done = echonet_tfds.in_order(lambda e: prepare_file(e, options), entries, self._workers)
            for row, example in (result for result, _ in done):
                bar.update(1)
                rows.append(row)
                if example is not None:
                    yield row["key"], example
        finally:
            bar.close()
            close_guards()
        finish_split(self.info.metadata, split, rows)

    def _process_pipeline_result(self, pipeline_result: Any) -> None:
        """After a Beam preparation: the rows of every split (pipeline data) -> the metadata."""
        del pipeline_result
        work = os.fspath(self.data_path / BEAM_WORK_DIR)
        for split in self._beam_splits:
            finish_split(self.info.metadata, split, runners.read_lines(f"{work}/{split}.rows*"))
        runners.delete([work])


def _counts(values: Any) -> dict[str, int]:
    return dict(sorted(collections.Counter(values).items()))


def _syntax_name(uid: str) -> str:
    """``'<name> (<uid>)'`` of a transfer syntax; ``'video file'`` for a non-DICOM file."""
    from pydicom.uid import UID

    return f"{UID(uid).name} ({uid})" if uid else "video file"


def finish_split(meta: dict[str, Any], split: str, rows: list[dict[str, Any]]) -> None:
    """The rows of a split (any order) -> its metadata (``videos`` and ``report``), logged.

    Raises:
        CorpusPreparationError: every file of the split was refused.
    """
    rows = sorted(rows, key=lambda r: r["key"])
    kept = [r for r in rows if "reason" not in r]
    refused = [{k: r[k] for k in ("key", "path", "kind", "reason")} for r in rows if "reason" in r]
    meta["videos"][split] = {
        "filename": [r["key"] for r in kept],
        "num_frames": [r["num_frames"] for r in kept],
        "channels": [r["channels"] for r in kept],
    }
    meta["report"][split] = {
        "num_files": len(rows),
        "num_prepared": len(kept),
        "refused": refused,
        "refused_by_kind": _counts(r["kind"] for r in refused),
        "fps_far_from_training": [r["key"] for r in kept if r["fps_far"]],
        "fps_sources": _counts(r["fps_source"] for r in kept),
        "transfer_syntaxes": _counts(_syntax_name(r["transfer_syntax"]) for r in kept),
        "num_with_notes": sum(bool(r["notes"]) for r in kept),
    }
    if refused:
        log.warning(
            "corpus %s: refused %d of %d files (%s; listed in %s), e.g. %s",
            split,
            len(refused),
            len(rows),
            ", ".join(f"{k} {n}" for k, n in meta["report"][split]["refused_by_kind"].items()),
            REPORT_NAME,
            refused[0]["reason"],
        )
    if not kept:
        raise CorpusPreparationError(
            f"every file of split {split!r} ({len(rows)}) was refused, e.g. {refused[0]['reason']}"
        )


# ------------------------------------------------------------------------------- prepare / load


def _dataset_dir(data_dir: PathLike, config: CorpusConfig) -> Path:
    return Path(data_dir) / DATASET_NAME / config.name / str(EchoCorpus.VERSION)


def write_report(builder: tfds.core.DatasetBuilder) -> Path:
    """Writes ``<dataset dir>/preparation_report.json`` from the metadata (once); returns its path."""
    meta = builder.info.metadata
    path = Path(builder.data_dir) / REPORT_NAME
    report = {
        "source": meta["source"],
        "kind": meta["kind"],
        "options": meta["options"],
        "num_files": meta["num_files"],
        "num_prepared": sum(s["num_prepared"] for s in meta["report"].values()),
        "num_refused": sum(len(s["refused"]) for s in meta["report"].values()),
        "refused_kinds": _refused_kinds(),
        "ignored_files": meta["ignored"],
        "splits": meta["report"],
    }
    if not path.exists():
        tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
        tmp.write_text(json.dumps(report, indent=1) + "\n")
        os.replace(tmp, path)
    return path


def _refused_kinds() -> dict[str, str]:
    return {
        **reading.KINDS,
        guard.KIND_TIMEOUT: "stopped after the time limit per file (CorpusOptions.timeout_s)",
        guard.KIND_DIED: "the decoding process died (e.g. killed over the memory limit, a crash in a decoder)",
        guard.KIND_MEMORY: "ran out of memory within the limit per file (CorpusOptions.memory_mb)",
    }


def prepare_corpus(
    source: PathLike,
    data_dir: PathLike,
    options: CorpusOptions | None = None,
    *,
    workers: int | None = None,
    beam: list[str] | tuple[str, ...] | None = None,
    max_shard_size: int = 128 << 20,
    **fields: Any,
) -> tfds.core.DatasetBuilder:
    """Prepares a corpus once into ``data_dir`` (a no-op when already prepared) and returns the builder.

    Args:
        source: a folder tree of DICOM/video files, or a manifest CSV (:mod:`.sources`).
        data_dir: TFDS data directory; the dataset lands in
            ``<data_dir>/echo_corpus/src_<hash>/<version>``.
        options: :class:`CorpusOptions`, or give its fields (``timeout_s=60``, ...).
        workers: threads of the in-process path, or worker processes of the default Beam runner
            (default: CPU count); the output does not depend on it.
        beam: None (default): prepare in this process. A list of Beam pipeline flags (``[]`` for the
            DirectRunner in multi-processing mode with ``workers`` processes; :mod:`.runners`):
            prepare the same records and report as an Apache Beam pipeline.
        max_shard_size: bytes per TFRecord shard.

    Raises:
        CorpusSourceError: no DICOM/video file, a malformed manifest (before any decoding).
        BeamOptionsError: an unknown or malformed Beam flag (before any decoding).
        CorpusPreparationError: every file of a split refused, bad options, ``data_dir`` not writable.
    """
    tf_runtime.hide_gpus_from_tensorflow()
    config = corpus_config(source, options, **fields)
    workers = workers or os.cpu_count() or 1
    beam_options = None if beam is None else runners.pipeline_options(beam, workers=workers)
    path = _dataset_dir(data_dir, config)
    if (path / "dataset_info.json").is_file() and (path / REPORT_NAME).is_file():
        return _open(data_dir, config)
    with echonet_tfds.preparation_lock(Path(data_dir) / DATASET_NAME / f"{config.name}.lock", str(path)):
        if not (path / "dataset_info.json").is_file():
            echonet_tfds.remove_incomplete(path, "corpus")
            builder = EchoCorpus(
                config=config, data_dir=os.fspath(data_dir), workers=workers, beam=beam is not None
            )
            failures = contextlib.nullcontext()
            if beam is not None:
                failures = runners.preparation_run(str(config.source.location), CorpusPreparationError)
            tfds.display_progress_bar(False)  # one bar (ours, over the files), none nested from TFDS
            try:
                with failures:
                    builder.download_and_prepare(
                        download_config=tfds.download.DownloadConfig(
                            try_download_gcs=False,
                            max_shard_size=max_shard_size,
                            min_shard_size=min(max_shard_size, 16 << 20),
                            beam_options=beam_options,
                        )
                    )
            finally:
                tfds.display_progress_bar(True)  # TFDS's default, for other builders
        builder = _open(data_dir, config)
        write_report(builder)
    return builder


def _open(data_dir: PathLike, config: CorpusConfig) -> tfds.core.DatasetBuilder:
    builder = EchoCorpus(config=config, data_dir=os.fspath(data_dir))
    if (builder.info.metadata or {}).get("fingerprint") != config.fingerprint:
        raise CorpusPreparationError(
            f"{builder.data_dir}: not a corpus prepared by this version from {config.source.location} "
            f"with ({config.options.describe()}); prepare it again"
        )
    return builder


def load_corpus(
    data_dir: PathLike, source: PathLike, options: CorpusOptions | None = None, **fields: Any
) -> tfds.core.DatasetBuilder:
    """Opens the prepared corpus of ``source`` with ``options`` (lists and stats its files).

    Raises:
        CorpusNotPreparedError: nothing prepared for this source and options, or its files changed
            (the message names the older preparations of the same source).
    """
    config = corpus_config(source, options, **fields)
    path = _dataset_dir(data_dir, config)
    if not (path / "dataset_info.json").is_file():
        older = [
            str(p.parent)
            for p in sorted(Path(data_dir).glob(f"{DATASET_NAME}/*/{EchoCorpus.VERSION}/metadata.json"))
            if _same_source(p, config)
        ]
        hint = f" The files changed since {', '.join(older)} was prepared from it." if older else ""
        raise CorpusNotPreparedError(
            f"no prepared corpus for {config.source.location} ({config.options.describe()}) in {data_dir} "
            f"(looked for {path}).{hint} Run prepare_corpus(source, data_dir) first."
        )
    return _open(data_dir, config)


def _same_source(metadata: Path, config: CorpusConfig) -> bool:
    try:
        meta: Mapping[str, Any] = json.loads(metadata.read_text())
    except (OSError, json.JSONDecodeError):
        return False
    return meta.get("source") == config.source.location and meta.get("options") == dataclasses.asdict(
        config.options
    )
