"""The weights folder: a trained model in files anyone can read, check and load without this project's run.

A folder holds

* ``model.safetensors``: the model's parameters and BatchNorm statistics (the NNX state without its
  dropout RNGs, :func:`~coreecho_jax.checkpoints.manager.model_state_dict`), one float32 array per flat
  dotted name (``encoder.blocks1.0.attn.qkv.kernel``, ``head.fc1.kernel``, ...); no pickle.
* ``config.json``: :data:`FORMAT` and :data:`FORMAT_VERSION`, what the model is (``has_head``: an EF
  regression head, or an encoder only), the run config's ``model`` section (architecture written out),
  its clip settings (``data.frames``, ``stride``, ``image_size``, ``channels``, ``pad``), its ``eval``
  settings (``n_clips`` = K), the ``preparation`` (frame size, normalisation) and the weights' SHA-256
  (:func:`~coreecho_jax.evaluation.evaluator.model_fingerprint`, what a ``calibration.json`` is matched by).
  It is a subset of a run's ``config.json`` in the same layout, so
  :func:`~coreecho_jax.checkpoints.saved_config.inference_config` reads clip settings and model from it.
* ``calibration.json`` (when the source had one fitted for these weights), ``README.md`` (model card),
* ``manifest.json``: the SHA-256 and size of each of those files. Loading checks every listed file
  first; a changed or damaged file is a :class:`WeightsError` naming it. A ``calibration.json`` added
  later (fitted on your own data, :mod:`coreecho_jax.evaluation.conformal`) is not listed: it is used
  only when it names these weights' SHA-256, as everywhere.

:func:`write_folder` writes the files of a model (``coreecho_jax.weights.export`` decides from what);
:func:`read_folder` checks and reads them; :func:`load_model` rebuilds the model. No jax work happens
before the manifest has been checked.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from coreecho_jax.checkpoints import manager
from coreecho_jax.checkpoints.torch_import import _finish_model
from coreecho_jax.data import clips
from coreecho_jax.data.echonet_layout import FRAME_SIZE
from coreecho_jax.errors import CheckpointError
from coreecho_jax.models.coreecho import CoReEcho, build_model

FORMAT = "coreecho-jax weights"
FORMAT_VERSION = 1
MANIFEST_FORMAT = "coreecho-jax weights manifest"
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
CALIBRATION_FILE = "calibration.json"  # the name conformal.calibration_path looks for
CARD_FILE = "README.md"
MANIFEST_FILE = "manifest.json"
#: Every file a folder may hold, in the order they are written (the manifest last).
FILES = (WEIGHTS_FILE, CONFIG_FILE, CALIBRATION_FILE, CARD_FILE, MANIFEST_FILE)
#: Fields of the run config a folder keeps: the clip settings and the evaluation protocol (K clips).
DATA_FIELDS = ("frames", "stride", "image_size", "channels", "pad")
EVAL_FIELDS = ("n_clips", "batch_size", "bootstrap", "interval_level", "seed")
#: Architecture fields written out in the model section (a preset name alone could change meaning).
ARCHITECTURE_FIELDS = ("depth", "dims", "head_dim", "mlp_ratio")
_CHUNK = 1 << 20


class WeightsError(CheckpointError):
    """A weights folder (or a Hub snapshot of one) is missing, incomplete, changed or of another format."""


@dataclasses.dataclass(frozen=True)
class WeightsFolder:
    """A checked folder: its path, its ``config.json`` and whether the model has an EF head."""

    path: Path
    config: dict[str, Any]

    @property
    def has_head(self) -> bool:
        return bool(self.config["has_head"])

    @property
    def weights_sha256(self) -> str:
        return str(self.config["weights_sha256"])


def is_weights_folder(path: str | Path) -> bool:
    """Whether ``path`` is a folder with a ``manifest.json`` or a ``model.safetensors``."""
    path = Path(path)
    return path.is_dir() and ((path / MANIFEST_FILE).is_file() or (path / WEIGHTS_FILE).is_file())


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


# ----------------------------------------------------------------------------------------------- writing


def flat_state(model: nnx.Module) -> dict[str, np.ndarray]:
    """``{"encoder.patch_embed1.proj.kernel": array, ...}``: the model state as flat dotted names."""
    leaves = jax.tree_util.tree_leaves_with_path(manager.model_state_dict(model))
    return {jax.tree_util.keystr(p, simple=True, separator="."): np.asarray(x) for p, x in leaves}


def folder_config(
    run_config: Mapping[str, Any], model: nnx.Module, *, weights_sha256: str, source: dict[str, Any]
) -> dict[str, Any]:
    """``config.json`` of a folder: the parts of ``run_config`` (a run's resolved config) that rebuild
    ``model`` and prepare its clips, with the architecture of ``model`` written out."""
    encoder = model.encoder if isinstance(model, CoReEcho) else model
    section = dict(run_config["model"])
    section.pop("init_from", None)
    for field in ARCHITECTURE_FIELDS:
        value = getattr(encoder.config, field)
        section[field] = list(value) if isinstance(value, tuple) else value
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "task": "echonet",
        "has_head": isinstance(model, CoReEcho),
        "output": "EF (%)" if isinstance(model, CoReEcho) else "none: an encoder without an EF head",
        "seed": int(run_config.get("seed", 0)),
        "model": section,
        "data": {k: run_config["data"][k] for k in DATA_FIELDS if k in run_config["data"]},
        "eval": {k: run_config["eval"][k] for k in EVAL_FIELDS if k in run_config["eval"]},
        "preparation": {
            "frame_size": FRAME_SIZE,
            "normalisation": {
                "mean": [float(v) for v in clips.MEAN],
                "std": [float(v) for v in clips.STD],
                "rule": "(x - mean[c]) / std[c], x in 0..255, RGB order; one channel is tiled to three",
            },
        },
        "weights_sha256": weights_sha256,
        "source": source,
    }


def _write_json(path: Path, tree: Any) -> None:
    path.write_text(json.dumps(tree, indent=2, allow_nan=False) + "\n")


def _readable_as_umask_allows(path: Path) -> None:
    """Gives ``path`` the mode a file created by ``open()`` would have (0666 less the umask)."""
    umask = os.umask(0)
    os.umask(umask)
    path.chmod(0o666 & ~umask)


def write_folder(
    folder: str | Path,
    model: nnx.Module,
    config: dict[str, Any],
    card: str,
    calibration: Path | None = None,
    *,
    force: bool = False,
) -> Path:
    """Writes ``model`` as a weights folder (module doc); ``config`` is :func:`folder_config`'s.

    A folder that exists and is not empty is refused unless ``force``; then only the files of
    :data:`FILES` are replaced (a stale ``calibration.json`` is removed). The manifest is written last,
    so a folder whose writing was interrupted fails its check.
    """
    from safetensors.numpy import save_file

    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise WeightsError(f"{folder}: exists and is not a folder")
    if folder.is_dir() and any(folder.iterdir()) and not force:
        raise WeightsError(
            f"{folder}: exists and is not empty; choose a new folder or pass force=True (--force)"
        )
    folder.mkdir(parents=True, exist_ok=True)
    for name in FILES:
        (folder / name).unlink(missing_ok=True)
    metadata = {"format": FORMAT, "format_version": str(FORMAT_VERSION)}
    save_file(flat_state(model), str(folder / WEIGHTS_FILE), metadata=metadata)
    _readable_as_umask_allows(folder / WEIGHTS_FILE)  # safetensors writes 0600: a shared folder needs more
    _write_json(folder / CONFIG_FILE, config)
    if calibration is not None:
        shutil.copyfile(calibration, folder / CALIBRATION_FILE)
    (folder / CARD_FILE).write_text(card)
    listed = [n for n in FILES[:-1] if (folder / n).is_file()]
    manifest = {
        "format": MANIFEST_FORMAT,
        "format_version": FORMAT_VERSION,
        "algorithm": "sha256",
        "files": {
            n: {"sha256": file_sha256(folder / n), "bytes": (folder / n).stat().st_size} for n in listed
        },
    }
    _write_json(folder / MANIFEST_FILE, manifest)
    return folder


# ----------------------------------------------------------------------------------------------- reading


def _read_json(path: Path, what: str) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise WeightsError(f"{path}: missing; {what}") from None
    except ValueError as e:
        raise WeightsError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(data, dict):
        raise WeightsError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def verify_manifest(folder: Path) -> dict[str, str]:
    """``{file: sha256}`` of the files ``manifest.json`` lists, each checked against its file.

    Raises:
        WeightsError: no manifest, a manifest of another format, a listed file missing or changed, or
            the weights or the config not listed (one line naming the file).
    """
    manifest = _read_json(folder / MANIFEST_FILE, "a weights folder lists its files there (export it again)")
    files = manifest.get("files")
    if manifest.get("format") != MANIFEST_FORMAT or not isinstance(files, dict):
        raise WeightsError(
            f"{folder / MANIFEST_FILE}: not a {MANIFEST_FORMAT} (format {manifest.get('format')!r})"
        )
    missing = [n for n in (WEIGHTS_FILE, CONFIG_FILE) if n not in files]
    if missing:
        raise WeightsError(f"{folder / MANIFEST_FILE}: does not list {', '.join(missing)}")
    out = {}
    for name, entry in files.items():
        path = folder / name
        if name not in FILES[:-1] or not isinstance(entry, dict) or "sha256" not in entry:
            raise WeightsError(f"{folder / MANIFEST_FILE}: unexpected entry {name!r}")
        if not path.is_file():
            raise WeightsError(f"{path}: listed in {MANIFEST_FILE} but missing; the folder is incomplete")
        actual = file_sha256(path)
        if actual != entry["sha256"]:
            raise WeightsError(
                f"{path}: sha256 {actual[:16]}... differs from {MANIFEST_FILE}'s {str(entry['sha256'])[:16]}...: "
                f"the file was changed or damaged after export; export or download the folder again"
            )
        out[name] = actual
    return out


def _check_config(path: Path, config: dict[str, Any]) -> None:
    where = path / CONFIG_FILE
    if config.get("format") != FORMAT:
        raise WeightsError(f"{where}: not a {FORMAT} config (format {config.get('format')!r})")
    if config.get("format_version") != FORMAT_VERSION:
        raise WeightsError(
            f"{where}: format_version {config.get('format_version')!r}; this version of coreecho-jax reads "
            f"{FORMAT_VERSION}: update coreecho-jax"
        )
    for key in ("has_head", "model", "data", "eval", "preparation", "weights_sha256"):
        if key not in config:
            raise WeightsError(f"{where}: lacks {key!r}")
    prep = config["preparation"]
    norm = prep.get("normalisation", {})
    same = (
        prep.get("frame_size") == FRAME_SIZE
        and np.array_equal(np.float32(norm.get("mean")), clips.MEAN)
        and np.array_equal(np.float32(norm.get("std")), clips.STD)
    )
    if not same:
        raise WeightsError(
            f"{where}: the weights expect another frame size or normalisation ({prep}) than this version "
            f"of coreecho-jax prepares (frame size {FRAME_SIZE}, mean {clips.MEAN.tolist()}, std "
            f"{clips.STD.tolist()}): their clips would differ from training"
        )


def read_folder(path: str | Path) -> WeightsFolder:
    """The checked folder: manifest first (every listed file's SHA-256), then ``config.json``.

    Raises:
        WeightsError: see :func:`verify_manifest`; a ``config.json`` of another format or version, or
            one whose preparation differs from this version's.
    """
    path = Path(path)
    if not path.is_dir():
        raise WeightsError(f"{path}: no such folder")
    verify_manifest(path)
    config = _read_json(path / CONFIG_FILE, "a weights folder describes its model there")
    _check_config(path, config)
    return WeightsFolder(path, config)


def _misfit(path: Path, stored: dict[str, np.ndarray], expected: dict[str, Any]) -> str | None:
    missing = sorted(set(expected) - set(stored))
    unexpected = sorted(set(stored) - set(expected))
    other = sorted(
        f"{k} {stored[k].dtype}{list(stored[k].shape)} (expected {np.dtype(v.dtype)}{list(v.shape)})"
        for k, v in expected.items()
        if k in stored and (stored[k].shape != tuple(v.shape) or stored[k].dtype != np.dtype(v.dtype))
    )
    parts = [
        f"{what} ({len(keys)}): {', '.join(keys[:3])}{' ...' if len(keys) > 3 else ''}"
        for what, keys in (("missing", missing), ("unexpected", unexpected), ("other shape or dtype", other))
        if keys
    ]
    if not parts:
        return None
    return f"{path / WEIGHTS_FILE}: does not fit the model {CONFIG_FILE} describes: " + "; ".join(parts)


def load_model(
    folder: WeightsFolder, model_config: ml_collections.ConfigDict | Mapping[str, Any]
) -> nnx.Module:
    """The model of a checked folder, in eval mode: a :class:`CoReEcho` (``has_head``; an encoder-only
    folder gives a CoReEcho whose head is never trained: callers refuse to predict with it).

    The model is built abstractly (no random initialisation), filled from ``model.safetensors`` and
    given concrete dropout keys (:func:`~coreecho_jax.checkpoints.torch_import._finish_model`; eval mode
    draws none). ``model_config`` is the folder's model section with the runtime fields the caller
    chose (``inference_config``).

    Raises:
        WeightsError: an unreadable file, or arrays that do not fit the architecture ``config.json`` names.
    """
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    section = dict(model_config.to_dict() if hasattr(model_config, "to_dict") else model_config)
    section["rng_impl"] = "rbg"  # the keys _finish_model makes; eval mode draws no dropout key
    model = nnx.eval_shape(lambda: build_model(section, seed=int(folder.config.get("seed", 0))))
    target = model if folder.has_head else model.encoder
    template = manager.model_state_dict(target)
    paths, treedef = jax.tree_util.tree_flatten_with_path(template)
    expected = {jax.tree_util.keystr(p, simple=True, separator="."): x for p, x in paths}
    try:
        stored = load_file(str(folder.path / WEIGHTS_FILE))
    except (SafetensorError, OSError) as e:
        raise WeightsError(f"{folder.path / WEIGHTS_FILE}: unreadable ({e})") from None
    misfit = _misfit(folder.path, stored, expected)
    if misfit:
        raise WeightsError(misfit)
    leaves = [jnp.asarray(stored[name]) for name in expected]
    manager.load_model_state_dict(target, jax.tree_util.tree_unflatten(treedef, leaves))
    if not folder.has_head:  # the head stays abstract in the weights; give it zeros, never used
        head_state = nnx.state(model.head, manager.MODEL_STATE)
        zeros = jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), nnx.to_pure_dict(head_state))
        manager.load_model_state_dict(model.head, zeros)
    return _finish_model(model)
