"""Fixed clip-start files for multi-clip evaluation (no TensorFlow).

A start-index mapping is ``{'<FileName>.avi': int64 array [K]}``: the K clip starts of each video,
indexing the video after black end padding to ``frames * stride`` (144) frames (see
:mod:`coreecho_jax.data.clips`). Two file forms are read by :func:`load_start_indexes`:

* ``.pkl``: the official CoReEcho ``test_start_indexes.pkl`` (a pickled dict of numpy arrays). It is
  read with the restricted unpickler of :mod:`coreecho_jax.safe_pickle`, allowed only to rebuild numpy
  arrays/scalars/dtypes; any other global in the file is refused, so an untrusted pickle cannot run code.
* ``.json``: ``{"<FileName>.avi": [s1, s2, s3], ...}``, written by :func:`save_start_indexes_json`.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from coreecho_jax import safe_pickle, seeds
from coreecho_jax.data import clips
from coreecho_jax.data.echonet_layout import CLIP_FRAMES, CLIP_STRIDE, stem
from coreecho_jax.errors import DataError, shown

PathLike = str | os.PathLike
StartIndexes = dict[str, np.ndarray]


class UnsafePickleError(safe_pickle.UnsafePickleError, DataError):
    """The pickle references something other than numpy array reconstruction."""


def _numpy_globals() -> dict[tuple[str, str], Any]:
    from numpy._core import multiarray, numeric  # numpy >= 2

    def safe_dtype(*args: Any, **kwargs: Any) -> np.dtype:
        dtype = np.dtype(*args, **kwargs)
        if dtype.hasobject:
            raise UnsafePickleError("object dtypes are not allowed in a start-index pickle")
        return dtype

    allowed = {}
    for module in ("numpy._core.multiarray", "numpy.core.multiarray"):
        allowed[(module, "_reconstruct")] = multiarray._reconstruct
        allowed[(module, "scalar")] = multiarray.scalar
    for module in ("numpy._core.numeric", "numpy.core.numeric"):
        allowed[(module, "_frombuffer")] = numeric._frombuffer
    allowed[("_codecs", "encode")] = safe_pickle.latin1_encode  # protocol-2 array bytes
    allowed[("numpy", "ndarray")] = np.ndarray
    allowed[("numpy", "dtype")] = safe_dtype
    return allowed


_NUMPY_GLOBALS = _numpy_globals()


def _refuse(module: str, name: str) -> UnsafePickleError:
    return UnsafePickleError(
        f"refusing to load {module}.{name}: a start-index pickle may only contain a dict of "
        f"numpy arrays (allowed: {sorted('.'.join(k) for k in _NUMPY_GLOBALS)})"
    )


def _normalise_mapping(obj: Any, source: str) -> StartIndexes:
    if not isinstance(obj, Mapping):
        raise ValueError(f"{source}: expected a dict {{'<name>.avi': [starts...]}}, got {type(obj).__name__}")
    out: StartIndexes = {}
    for key, value in obj.items():
        if not isinstance(key, str):
            raise ValueError(f"{source}: keys must be video file names (str), got {key!r}")
        arr = np.asarray(value)
        if arr.ndim != 1 or arr.size == 0 or not np.issubdtype(arr.dtype, np.integer):
            raise ValueError(
                f"{source}: starts of {key!r} must be a non-empty 1-D integer list, got {value!r}"
            )
        if np.any(arr < 0):
            raise ValueError(f"{source}: starts of {key!r} must be >= 0, got {arr.tolist()}")
        out[key] = arr.astype(np.int64)
    if not out:
        raise ValueError(f"{source}: holds no videos")
    return out


def load_official_pickle(path: PathLike) -> StartIndexes:
    """Reads a pickled ``{name.avi: int array}`` (the official ``test_start_indexes.pkl``) safely.

    Raises:
        FileNotFoundError: no such file.
        UnsafePickleError: the pickle references anything but numpy array reconstruction.
        ValueError: the content is not a mapping of names to 1-D integer arrays.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"start-index file not found: {path}")
    data = path.read_bytes()
    try:
        obj = safe_pickle.RestrictedUnpickler(io.BytesIO(data), _NUMPY_GLOBALS, refuse=_refuse).load()
    except safe_pickle.UnsafePickleError as err:
        raise UnsafePickleError(f"{path}: {err}") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as err:
        raise DataError(f"{path}: not a readable start-index pickle ({err})") from err
    return _normalise_mapping(obj, str(path))


def save_start_indexes_json(starts: Mapping[str, Any], path: PathLike) -> Path:
    """Writes ``{name.avi: [s1, ...]}`` as JSON (sorted keys). Returns the path."""
    path = Path(path)
    clean = _normalise_mapping(starts, str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({k: [int(x) for x in v] for k, v in sorted(clean.items())}, indent=0) + "\n")
    return path


def load_start_indexes(path: PathLike) -> StartIndexes:
    """Loads a start-index file by extension: ``.pkl``/``.pickle`` (restricted unpickler) or ``.json``."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in (".pkl", ".pickle"):
        return load_official_pickle(path)
    if suffix == ".json":
        if not path.is_file():
            raise FileNotFoundError(f"start-index file not found: {path}")
        try:
            obj = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}: not valid JSON ({err})") from err
        return _normalise_mapping(obj, str(path))
    raise ValueError(f"{path}: unknown start-index file type {suffix!r}; expected .pkl or .json")


class StartIndexError(DataError):
    """Clip starts do not fit a split: a video without starts, a start out of range, or uneven counts."""


def _video_seed(seed: int, name: str) -> np.random.Generator:
    return seeds.generator(int(seed) & 0xFFFFFFFF, zlib.crc32(name.encode("utf-8")))


def draw_start_indexes(
    num_frames_by_name: Mapping[str, int],
    k: int = 3,
    frames: int = CLIP_FRAMES,
    stride: int = CLIP_STRIDE,
    seed: int = 0,
    *,
    replace: bool = False,
) -> StartIndexes:
    """Draws ``k`` clip starts per video, reproducibly from ``seed``.

    Each video gets its own generator seeded from ``(seed, crc32(name))``, so its starts do not
    depend on the other videos.

    * ``replace=True``: ``k`` independent uniform starts (:func:`clips.start_from_uniform`), so a
      video may get the same start twice. This is the official ``validate`` (``validation.py``):
      each of its 3 passes calls ``EchoNet.__getitem__``, which draws ``np.random.choice(F - 140)``.
    * ``replace=False``: distinct starts when the video has at least ``k`` valid starts
      (``clips.num_start_positions``), like the official ``test_start_indexes.pkl``; a shorter video
      (e.g. fewer than ``(frames - 1) * stride + k`` frames after padding: 4 positions for 36/4)
      gets all its positions in random order followed by repeats drawn with replacement.

    Args:
        num_frames_by_name: ``{name.avi: number of frames}`` (unpadded).
        k: clips per video.
        frames: clip length (frames).
        stride: clip frame step.
        seed: base seed.
        replace: draw with replacement (official validation) or distinct starts (official test file).
    """
    if k < 1:
        raise StartIndexError(f"k must be >= 1, got {k}")
    out: StartIndexes = {}
    for name, num_frames in num_frames_by_name.items():
        n = clips.num_start_positions(int(num_frames), frames, stride)
        rng = _video_seed(seed, name)
        if replace:
            starts = clips.start_from_uniform(rng.random(k), int(num_frames), frames, stride)
        elif n >= k:
            starts = rng.choice(n, size=k, replace=False)
        else:
            starts = np.concatenate([rng.permutation(n), rng.integers(0, n, size=k - n)])
        out[name] = starts.astype(np.int64)
    return out


def validate_start_indexes(
    starts: Mapping[str, Any],
    num_frames_by_name: Mapping[str, int],
    spec: clips.ClipSpec = clips.OFFICIAL_SPEC,
    *,
    source: str = "start indexes",
) -> StartIndexes:
    """Checks that every video of a split has starts, all in range, and the same count K.

    Keys are matched with or without the ``.avi`` extension. Extra keys (videos not in the split)
    are ignored.

    Args:
        starts: ``{name(.avi): starts [K]}``.
        num_frames_by_name: the split, ``{name(.avi): number of frames}``.
        spec: the clips' ``frames`` and ``stride`` (default the official 36 at stride 4).

    Returns:
        ``{name as in num_frames_by_name: int64 [K]}``.

    Raises:
        StartIndexError: a video is missing (the message names up to 10 of them), a start is out of
            range (names the video), or videos have different K.
    """
    by_stem = {stem(k): v for k, v in starts.items()}
    missing = [n for n in num_frames_by_name if stem(n) not in by_stem]
    if missing:
        raise StartIndexError(
            f"{source}: no clip starts for {len(missing)} video(s) of the split: {shown(missing)}"
        )
    out: StartIndexes = {}
    counts = set()
    for name, num_frames in num_frames_by_name.items():
        arr = clips.check_starts(
            by_stem[stem(name)], int(num_frames), spec.frames, spec.stride, name=f"{source}: {name}"
        )
        counts.add(arr.size)
        out[name] = arr
    if len(counts) > 1:
        raise StartIndexError(
            f"{source}: every video needs the same number of clip starts, found {sorted(counts)}"
        )
    return out
