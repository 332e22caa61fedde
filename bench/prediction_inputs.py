"""What the prediction benchmarks (``bench_folder``, ``bench_predict_start``) share: a weights folder of
a randomly initialised model, synthetic echo cines (AVI folders and a DICOM), the machine's facts for
the results JSON, and the resident memory of a process tree.

Random weights time the same computation as trained ones (the forward does not depend on the values),
so no download is needed; the EF they give means nothing. The videos are the project's synthetic
apical four-chamber loops (:mod:`coreecho_jax.data.synthetic`), 112x112 grey at 50 fps.
"""

from __future__ import annotations

import datetime
import os
import platform
import shlex
import sys
import threading
import time
from pathlib import Path
from typing import Any

import ml_collections
import numpy as np

#: The card of a weights folder written by :func:`random_weights`.
RANDOM_CARD = (
    "# Randomly initialised weights (benchmark only)\n\n"
    "Written by bench/prediction_inputs.py to time prediction; the EF these weights give means nothing.\n"
)


def machine() -> dict[str, Any]:
    """The facts a benchmark's numbers depend on: cores, CPU model, Python, jax (when imported), load."""
    facts: dict[str, Any] = {
        "cores": os.cpu_count(),
        "cpu_model": cpu_model(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "load_average_before": list(os.getloadavg()),
    }
    if "jax" in sys.modules:
        facts["jax"] = sys.modules["jax"].__version__
    return facts


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else what :func:`platform.processor` says."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


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


def seconds_since(start: float) -> float:
    return round(time.perf_counter() - start, 3)
