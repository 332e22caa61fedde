"""Torch-free reader for PyTorch ``.pth`` checkpoints (zip and legacy formats).

A ``.pth`` file is a pickle whose tensors point, through persistent ids, at raw storage bytes. This module
reads it without PyTorch and without running anything from the file: the restricted unpickler of
:mod:`coreecho_jax.safe_pickle` resolves only the few globals a tensor ``state_dict`` needs, each to a
local stand-in (never to torch or builtins), and refuses every other global with
:class:`UnsafeCheckpointError` before it could be called.

Supported serialisations:

* zip (``torch.save`` default since torch 1.6): ``<root>/data.pkl`` + ``<root>/data/<key>`` storages
  (+ ``<root>/byteorder``); the root folder name is discovered, not assumed.
* legacy (``_use_new_zipfile_serialization=False``): magic number, protocol, sys_info, object pickle,
  storage-key list, then per storage an int64 element count and its raw bytes.

Tensors come back as C-contiguous, writable ``np.ndarray`` copies with the storage dtype
(float32/float64/float16/``ml_dtypes.bfloat16``/int64/int32/int16/int8/uint8/bool); the storage location
(``'cuda:0'``, ...) is ignored, so GPU checkpoints load on a CPU-only machine. 0-d tensors become 0-d
arrays; Python ints, floats and strings stay as they are.

Deliberately unsupported (refused with a clear error): quantized/sparse/nested tensors, tensor
subclasses (``_rebuild_from_type_v2``), numpy objects inside the pickle
(``_rebuild_device_tensor_from_numpy``, numpy scalars), the pre-1.0 tar format and pickled module source.
"""

from __future__ import annotations

import collections
import dataclasses
import io
import os
import struct
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, BinaryIO

import ml_dtypes
import numpy as np

from coreecho_jax.errors import CheckpointError
from coreecho_jax.safe_pickle import RestrictedUnpickler, UnsafePickleError, latin1_encode

__all__ = [
    "CheckpointFormatError",
    "CheckpointNotFoundError",
    "TorchCheckpoint",
    "UnsafeCheckpointError",
    "load_pth",
    "read_state_dicts",
    "strip_module_prefix",
]

LEGACY_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL_VERSION = 1001

#: ``torch.<Name>Storage`` class name -> numpy dtype of its elements.
STORAGE_DTYPES: dict[str, np.dtype] = {
    "FloatStorage": np.dtype(np.float32),
    "DoubleStorage": np.dtype(np.float64),
    "HalfStorage": np.dtype(np.float16),
    "BFloat16Storage": np.dtype(ml_dtypes.bfloat16),
    "LongStorage": np.dtype(np.int64),
    "IntStorage": np.dtype(np.int32),
    "ShortStorage": np.dtype(np.int16),
    "CharStorage": np.dtype(np.int8),
    "ByteStorage": np.dtype(np.uint8),
    "BoolStorage": np.dtype(np.bool_),
}


class CheckpointNotFoundError(CheckpointError, FileNotFoundError):
    """No checkpoint at the given path (also a ``FileNotFoundError``)."""


class UnsafeCheckpointError(UnsafePickleError, CheckpointError):
    """The checkpoint's pickle asks for a global (function/class) outside the tensor allowlist.

    Raised from ``find_class``, i.e. before the refused object could be called; the message names the file
    and the refused ``module.name``.
    """


class CheckpointFormatError(CheckpointError):
    """The file is not a readable PyTorch checkpoint (truncated, corrupt, missing entries, bad contents)."""


# --------------------------------------------------------------------------------------------------------
# Stand-ins that the restricted unpickler hands to the pickle VM instead of torch objects.
# All use __slots__ and refuse BUILD (``__setstate__``), so a pickle cannot rewrite them after validation.
# --------------------------------------------------------------------------------------------------------


class _Frozen:
    __slots__ = ()

    def __setstate__(self, state: Any) -> None:
        raise UnsafeCheckpointError(f"BUILD on a {type(self).__name__} stand-in is not allowed")


class _StorageType(_Frozen):
    """Stand-in for a ``torch.<Name>Storage`` class (only ever used as a dtype tag)."""

    __slots__ = ("name", "dtype")

    def __init__(self, name: str, dtype: np.dtype) -> None:
        self.name, self.dtype = name, dtype

    def __repr__(self) -> str:
        return f"torch.{self.name}"


class _StorageRef(_Frozen):
    """A storage named by a persistent id; its bytes are attached after unpickling.

    ``root_key`` names the on-disk storage; ``elem_offset``/``numel`` select a window of it (legacy
    storage views), in elements of ``dtype``.
    """

    __slots__ = ("root_key", "dtype", "elem_offset", "numel")

    def __init__(self, root_key: str, dtype: np.dtype, elem_offset: int, numel: int) -> None:
        self.root_key, self.dtype, self.elem_offset, self.numel = root_key, dtype, elem_offset, numel


class _TensorRef(_Frozen):
    """A tensor awaiting its storage bytes: ``storage[offset + sum(i_k * stride_k)]`` for index ``i``."""

    __slots__ = ("storage", "offset", "size", "stride")

    def __init__(self, storage: _StorageRef, offset: int, size: tuple[int, ...], stride: tuple[int, ...]):
        self.storage, self.offset, self.size, self.stride = storage, offset, size, stride


class _StateDict(collections.OrderedDict):
    """Stand-in for ``collections.OrderedDict``; accepts only the ``_metadata`` BUILD torch writes."""

    def __setstate__(self, state: Any) -> None:
        if not isinstance(state, dict) or set(state) - {"_metadata"}:
            raise UnsafeCheckpointError(
                "BUILD on an OrderedDict may only set '_metadata' (as torch state_dicts do), got "
                f"{sorted(map(repr, state)) if isinstance(state, dict) else type(state).__name__}"
            )
        self._pickled_metadata = state.get("_metadata")


class _PickledNamespace(_Frozen):
    """Inert stand-in for ``argparse.Namespace`` (only with ``allow_namespace=True``): keeps the attribute
    dict, runs no argparse code, and becomes a plain ``dict`` in the result."""

    __slots__ = ("fields",)

    def __new__(cls, *args: Any) -> _PickledNamespace:  # NEWOBJ calls cls.__new__(cls, *args)
        if args:
            raise CheckpointFormatError("argparse.Namespace pickled with constructor arguments")
        self = super().__new__(cls)
        self.fields = {}
        return self

    def __setstate__(self, state: Any) -> None:
        if not isinstance(state, dict) or not all(isinstance(k, str) for k in state):
            raise UnsafeCheckpointError("argparse.Namespace state must be a dict with str keys")
        self.fields = dict(state)


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _rebuild_tensor(storage: Any, offset: Any, size: Any, stride: Any) -> _TensorRef:
    """Checked stand-in for ``torch._utils._rebuild_tensor`` (the older, 4-argument form)."""
    if not isinstance(storage, _StorageRef):
        raise CheckpointFormatError(
            f"tensor storage must come from a persistent id, got {type(storage).__name__}"
        )
    if not _is_int(offset) or offset < 0:
        raise CheckpointFormatError(f"tensor storage offset must be an int >= 0, got {offset!r}")
    for name, seq in (("size", size), ("stride", stride)):
        if not isinstance(seq, (tuple, list)) or not all(_is_int(v) and v >= 0 for v in seq):
            raise CheckpointFormatError(f"tensor {name} must be a tuple of ints >= 0, got {seq!r}")
    if len(size) > 32 or any(v >= 2**48 for v in size):
        raise CheckpointFormatError(f"implausible tensor size {tuple(size)!r:.200}")
    if len(size) != len(stride):
        raise CheckpointFormatError(f"tensor size {tuple(size)} and stride {tuple(stride)} differ in length")
    return _TensorRef(storage, offset, tuple(size), tuple(stride))


def _rebuild_tensor_v2(
    storage: Any,
    offset: Any,
    size: Any,
    stride: Any,
    requires_grad: Any = False,
    backward_hooks: Any = None,
    metadata: Any = None,
) -> _TensorRef:
    """Stand-in for ``torch._utils._rebuild_tensor_v2``; ``requires_grad``/hooks/metadata are irrelevant
    for weights and ignored."""
    return _rebuild_tensor(storage, offset, size, stride)


def _rebuild_parameter(data: Any, requires_grad: Any = False, backward_hooks: Any = None) -> Any:
    """Stand-in for ``torch._utils._rebuild_parameter``: a Parameter is its data."""
    if not isinstance(data, _TensorRef):
        raise CheckpointFormatError(f"Parameter data must be a tensor, got {type(data).__name__}")
    return data


def _safe_set(items: Any = ()) -> set:
    if not isinstance(items, (list, tuple)):
        raise CheckpointFormatError(f"set() must be built from a list, got {type(items).__name__}")
    return set(items)


def _safe_frozenset(items: Any = ()) -> frozenset:
    return frozenset(_safe_set(items))


def _allowed_globals(allow_namespace: bool) -> dict[tuple[str, str], Any]:
    allowed: dict[tuple[str, str], Any] = {
        ("collections", "OrderedDict"): _StateDict,
        ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
        ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
        ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
        ("__builtin__", "set"): _safe_set,
        ("builtins", "set"): _safe_set,
        ("__builtin__", "frozenset"): _safe_frozenset,
        ("builtins", "frozenset"): _safe_frozenset,
        ("_codecs", "encode"): latin1_encode,
    }
    for name, dtype in STORAGE_DTYPES.items():
        allowed[("torch", name)] = _StorageType(name, dtype)
    if allow_namespace:
        allowed[("argparse", "Namespace")] = _PickledNamespace
    return allowed


# --------------------------------------------------------------------------------------------------------
# The restricted unpickler.
# --------------------------------------------------------------------------------------------------------


def _refuse(module: str, name: str) -> UnsafeCheckpointError:
    hint = ""
    if (module, name) == ("argparse", "Namespace"):
        hint = (
            " (CoReEcho's last.pth stores its options as an argparse.Namespace: pass "
            "allow_namespace=True to read it as a plain dict without running argparse code)"
        )
    return UnsafeCheckpointError(
        f"refused global '{module}.{name}' in the pickle; only the globals a tensor state_dict needs are "
        f"allowed, and the load was aborted before anything was called{hint}"
    )


def _no_persistent_ids(pid: Any) -> Any:
    raise CheckpointFormatError(f"unexpected persistent id {pid!r:.80} in a plain pickle")


def _unpickle(
    file: BinaryIO,
    *,
    source: str,
    allow_namespace: bool,
    persistent_load: Callable[[Any], Any] = _no_persistent_ids,
) -> Any:
    """Run the restricted unpickler once; wrap every failure in an error naming ``source``."""
    unpickler = RestrictedUnpickler(
        file, _allowed_globals(allow_namespace), refuse=_refuse, persistent_load=persistent_load
    )
    try:
        return unpickler.load()
    except UnsafePickleError as e:
        raise UnsafeCheckpointError(_with_source(e, source)) from None
    except CheckpointFormatError as e:
        raise CheckpointFormatError(_with_source(e, source)) from None
    except RecursionError:
        raise CheckpointFormatError(f"{source}: pickle nested too deeply") from None
    except Exception as e:  # corrupt pickle bytes: UnpicklingError, EOFError, TypeError, ...
        raise CheckpointFormatError(f"{source}: corrupt pickle ({type(e).__name__}: {e})") from None


def _with_source(e: Exception, source: str) -> str:
    msg = str(e)
    return msg if msg.startswith(source) else f"{source}: {msg}"


# --------------------------------------------------------------------------------------------------------
# Persistent ids -> storage references.
# --------------------------------------------------------------------------------------------------------


def _parse_storage_pid(pid: Any, *, legacy: bool) -> tuple[_StorageType, str, int, Any]:
    """Validate ``('storage', StorageType, key, location, numel[, view_metadata])``."""
    if not isinstance(pid, tuple) or not pid:
        raise CheckpointFormatError(f"persistent id must be a tuple, got {type(pid).__name__}")
    if pid[0] == "module":
        raise UnsafeCheckpointError("refused persistent id 'module' (pickled module source code)")
    expected_len = 6 if legacy else 5
    if pid[0] != "storage" or len(pid) != expected_len:
        raise CheckpointFormatError(
            f"persistent id must be ('storage', type, key, location, numel{', view' if legacy else ''}), "
            f"got {pid!r:.200}"
        )
    storage_type, key, location, numel = pid[1:5]
    if not isinstance(storage_type, _StorageType):
        raise CheckpointFormatError(
            f"persistent id storage type must be a torch.*Storage, got {storage_type!r}"
        )
    if not isinstance(key, str) or not isinstance(location, str):
        raise CheckpointFormatError(
            f"persistent id key and location must be strings, got {key!r}, {location!r}"
        )
    if not _is_int(numel) or numel < 0:
        raise CheckpointFormatError(f"persistent id numel must be an int >= 0, got {numel!r}")
    return storage_type, key, numel, (pid[5] if legacy else None)


class _StorageTable:
    """Storages referenced by the pickle: ``key -> (dtype, numel)`` of the on-disk storage."""

    def __init__(self, *, legacy: bool) -> None:
        self.legacy = legacy
        self.roots: dict[str, tuple[np.dtype, int]] = {}

    def __call__(self, pid: Any) -> _StorageRef:
        storage_type, key, numel, view = _parse_storage_pid(pid, legacy=self.legacy)
        dtype = storage_type.dtype
        known = self.roots.setdefault(key, (dtype, numel))
        if known != (dtype, numel):
            raise CheckpointFormatError(
                f"storage '{key}' referenced with two layouts: {known[0]}x{known[1]} and {dtype}x{numel}"
            )
        if view is None:
            return _StorageRef(key, dtype, 0, numel)
        # Legacy storage view: (view_key, offset, view_size), in elements of the root storage.
        if not (
            isinstance(view, tuple)
            and len(view) == 3
            and isinstance(view[0], str)
            and _is_int(view[1])
            and _is_int(view[2])
            and view[1] >= 0
            and view[2] >= 0
            and view[1] + view[2] <= numel
        ):
            raise CheckpointFormatError(f"bad storage view metadata {view!r:.200} for storage '{key}'")
        return _StorageRef(key, dtype, view[1], view[2])


# --------------------------------------------------------------------------------------------------------
# Raw bytes -> arrays, and the final walk that swaps stand-ins for arrays/dicts.
# --------------------------------------------------------------------------------------------------------


def _storage_array(raw: bytes, dtype: np.dtype, little_endian: bool) -> np.ndarray:
    """1-D read-only array over ``raw`` in native byte order."""
    arr = np.frombuffer(raw, dtype=dtype)
    if not little_endian and dtype.itemsize > 1:
        swapped = np.frombuffer(raw, dtype=np.dtype(f"u{dtype.itemsize}")).byteswap()
        arr = swapped.view(dtype)
    return arr


def _tensor_to_array(ref: _TensorRef, storages: Mapping[str, np.ndarray]) -> np.ndarray:
    """Bounds-checked ``as_strided`` of the storage, copied to a C-contiguous writable array."""
    st = ref.storage
    base = storages[st.root_key][st.elem_offset : st.elem_offset + st.numel]
    n = int(np.prod(ref.size, dtype=object)) if ref.size else 1
    if n == 0:
        return np.zeros(ref.size, dtype=st.dtype)
    last = ref.offset + sum((s - 1) * d for s, d in zip(ref.size, ref.stride))
    if last >= base.shape[0]:
        raise CheckpointFormatError(
            f"tensor of size {ref.size}, stride {ref.stride} at offset {ref.offset} reads element {last} "
            f"of storage '{st.root_key}', which holds {base.shape[0]}"
        )
    view = np.lib.stride_tricks.as_strided(
        base[ref.offset :],
        shape=ref.size,
        strides=tuple(d * st.dtype.itemsize for d in ref.stride),
        writeable=False,
    )
    return np.array(view, order="C", copy=True)


def _materialise(obj: Any, storages: Mapping[str, np.ndarray], memo: dict[int, Any]) -> Any:
    """Replace stand-ins by results: tensors -> arrays, OrderedDict stand-in -> OrderedDict,
    Namespace stand-in -> dict. Shared and cyclic references are preserved through ``memo``."""
    key = id(obj)
    if key in memo:
        return memo[key]
    if isinstance(obj, _TensorRef):
        out: Any = _tensor_to_array(obj, storages)
    elif isinstance(obj, _StorageRef):
        st = obj
        out = np.array(storages[st.root_key][st.elem_offset : st.elem_offset + st.numel])
    elif isinstance(obj, _PickledNamespace):
        out = memo[key] = {}
        out.update({k: _materialise(v, storages, memo) for k, v in obj.fields.items()})
    elif isinstance(obj, dict):
        out = memo[key] = collections.OrderedDict() if isinstance(obj, collections.OrderedDict) else {}
        for k, v in obj.items():
            if isinstance(k, (_Frozen, np.ndarray)):
                raise CheckpointFormatError(f"a tensor or storage is used as a dict key ({type(k).__name__})")
            out[k] = _materialise(v, storages, memo)
        metadata = getattr(obj, "_pickled_metadata", None)
        if metadata is not None:
            out._metadata = _materialise(metadata, storages, memo)
    elif isinstance(obj, list):
        out = memo[key] = []
        out.extend(_materialise(v, storages, memo) for v in obj)
    elif isinstance(obj, tuple):
        out = tuple(_materialise(v, storages, memo) for v in obj)
    elif isinstance(obj, (set, frozenset)):
        if any(isinstance(v, _Frozen) for v in obj):
            raise CheckpointFormatError("a tensor or storage is stored inside a set")
        out = obj
    elif isinstance(obj, _StorageType):
        raise CheckpointFormatError(f"the pickle stores the class {obj!r} as a value")
    else:
        out = obj  # str, bytes, int, float, bool, None, complex
    memo[key] = out
    return out


# --------------------------------------------------------------------------------------------------------
# The two container formats.
# --------------------------------------------------------------------------------------------------------


def _find_zip_root(zf: zipfile.ZipFile, source: str) -> str:
    roots = [n[: -len("/data.pkl")] for n in zf.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
    if len(roots) != 1:
        names = zf.namelist()
        raise CheckpointFormatError(
            f"{source}: expected exactly one '<root>/data.pkl' entry in the zip archive, found "
            f"{len(roots)} (entries: {names[:8]}{' ...' if len(names) > 8 else ''})"
        )
    return roots[0]


def _load_zip(path: Path, allow_namespace: bool) -> Any:
    source = str(path)
    try:
        with zipfile.ZipFile(path) as zf:
            root = _find_zip_root(zf, source)
            little_endian = True
            if f"{root}/byteorder" in zf.namelist():
                order = zf.read(f"{root}/byteorder").decode("ascii", "replace").strip()
                if order not in ("little", "big"):
                    raise CheckpointFormatError(
                        f"{source}: {root}/byteorder must be 'little' or 'big', got {order!r}"
                    )
                little_endian = order == "little"
            table = _StorageTable(legacy=False)
            obj = _unpickle(
                io.BytesIO(zf.read(f"{root}/data.pkl")),
                source=source,
                allow_namespace=allow_namespace,
                persistent_load=table,
            )
            storages = {}
            for key, (dtype, numel) in table.roots.items():
                name = f"{root}/data/{key}"
                try:
                    info = zf.getinfo(name)
                except KeyError:
                    raise CheckpointFormatError(
                        f"{source}: missing storage entry '{name}' ({numel} x {dtype}) referenced by data.pkl"
                    ) from None
                nbytes = numel * dtype.itemsize
                if info.file_size < nbytes:
                    raise CheckpointFormatError(
                        f"{source}: storage entry '{name}' holds {info.file_size} bytes, expected {nbytes} "
                        f"({numel} x {dtype})"
                    )
                with zf.open(info) as fh:
                    raw = fh.read() if info.file_size == nbytes else fh.read(nbytes)
                storages[key] = _storage_array(raw, dtype, little_endian)
    except zipfile.BadZipFile as e:
        raise CheckpointFormatError(f"{source}: truncated or corrupt zip archive ({e})") from None
    except (EOFError, zipfile.LargeZipFile, OSError) as e:
        if isinstance(e, FileNotFoundError):
            raise
        raise CheckpointFormatError(f"{source}: unreadable zip archive ({type(e).__name__}: {e})") from None
    return _materialise_all(obj, storages, source)


def _read_exact(f: BinaryIO, n: int, source: str, what: str) -> bytes:
    data = f.read(n)
    if len(data) != n:
        raise CheckpointFormatError(
            f"{source}: file ends inside {what} (expected {n} bytes, got {len(data)})"
        )
    return data


def _load_legacy(path: Path, allow_namespace: bool) -> Any:
    source = str(path)
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        plain = dict(source=source, allow_namespace=False)
        try:
            magic = _unpickle(f, **plain)
        except CheckpointFormatError:
            raise CheckpointFormatError(
                f"{source}: not a PyTorch checkpoint (neither a zip archive nor the legacy pickle format)"
            ) from None
        if magic != LEGACY_MAGIC_NUMBER:
            raise CheckpointFormatError(f"{source}: not a PyTorch checkpoint (legacy magic number missing)")
        protocol = _unpickle(f, **plain)
        if protocol != LEGACY_PROTOCOL_VERSION:
            raise CheckpointFormatError(f"{source}: unsupported legacy protocol version {protocol!r}")
        sys_info = _unpickle(f, **plain)
        little_endian = sys_info.get("little_endian", True) if isinstance(sys_info, dict) else True
        table = _StorageTable(legacy=True)
        obj = _unpickle(f, source=source, allow_namespace=allow_namespace, persistent_load=table)
        keys = _unpickle(f, **plain)
        if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
            raise CheckpointFormatError(f"{source}: legacy storage key list must be a list of str")
        missing = [k for k in table.roots if k not in keys]
        if missing:
            raise CheckpointFormatError(f"{source}: storages {missing[:5]} are referenced but not stored")
        count_fmt = "<q" if little_endian else ">q"
        storages = {}
        for key in keys:
            if key not in table.roots:
                raise CheckpointFormatError(f"{source}: stored storage '{key}' is never referenced")
            dtype, numel = table.roots[key]
            (count,) = struct.unpack(count_fmt, _read_exact(f, 8, source, f"the count of storage '{key}'"))
            if count != numel:
                raise CheckpointFormatError(
                    f"{source}: storage '{key}' has {count} elements on disk, the pickle expects {numel}"
                )
            nbytes = numel * dtype.itemsize
            if nbytes > size - f.tell():
                raise CheckpointFormatError(
                    f"{source}: file ends inside storage '{key}' (expected {nbytes} bytes, "
                    f"{size - f.tell()} left)"
                )
            raw = _read_exact(f, nbytes, source, f"storage '{key}'")
            storages[key] = _storage_array(raw, dtype, little_endian)
    return _materialise_all(obj, storages, source)


def _materialise_all(obj: Any, storages: Mapping[str, np.ndarray], source: str) -> Any:
    try:
        return _materialise(obj, storages, {})
    except CheckpointFormatError as e:
        raise CheckpointFormatError(_with_source(e, source)) from None
    except RecursionError:
        raise CheckpointFormatError(f"{source}: object nested too deeply") from None


def load_pth(path: str | os.PathLike, *, allow_namespace: bool = False) -> Any:
    """Load a PyTorch ``.pth``/``.pt`` file without torch and without executing code from it.

    Args:
      path: zip-format or legacy-format ``torch.save`` file.
      allow_namespace: rebuild pickled ``argparse.Namespace`` objects (CoReEcho's ``last.pth`` ``'opt'``)
        as plain dicts. Off by default: such a file raises :class:`UnsafeCheckpointError`.

    Returns:
      The saved object with every tensor as a C-contiguous ``np.ndarray`` (torch dtype kept, bfloat16 as
      ``ml_dtypes.bfloat16``, 0-d tensors as 0-d arrays), ``OrderedDict`` kept as ``OrderedDict``.

    Raises:
      FileNotFoundError: no file at ``path``.
      UnsafeCheckpointError: the pickle asks for a global outside the allowlist (nothing is executed).
      CheckpointFormatError: truncated/corrupt file, missing ``data.pkl`` or storage entry, bad tensors.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointNotFoundError(f"{path}: no such checkpoint file")
    with open(path, "rb") as f:
        head = f.read(4)
    if head[:2] == b"PK":
        return _load_zip(path, allow_namespace)
    return _load_legacy(path, allow_namespace)


# --------------------------------------------------------------------------------------------------------
# State-dict extraction.
# --------------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class TorchCheckpoint:
    """Tensor state_dicts found in a checkpoint, with torch key names and ``module.`` prefixes stripped.

    Attributes:
      encoder: the (UniFormer) model state_dict, in saved order.
      head: CoReEcho's ``regressor`` state_dict (``0.weight`` ... ``6.bias``), or None.
      meta: ``format`` ('flat' | 'model' | 'model_state' | 'coreecho'), ``epoch`` (int or None),
        ``best_error`` (float or None), ``source`` (file path or None), ``other_keys`` (top-level entries
        that are not state_dicts, e.g. 'optimizer', 'opt'; listed, not read).
    """

    encoder: dict[str, np.ndarray]
    head: dict[str, np.ndarray] | None
    meta: dict[str, Any]


def strip_module_prefix(state: Mapping[str, Any], *, where: str = "state_dict") -> dict[str, Any]:
    """Drop leading ``module.`` (``nn.DataParallel``/DDP) from every key, keeping order.

    Raises CheckpointFormatError if two keys collide after stripping.
    """
    out: dict[str, Any] = {}
    for key, value in state.items():
        new = key
        while new.startswith("module."):
            new = new[len("module.") :]
        if new in out:
            raise CheckpointFormatError(
                f"{where}: keys collide after stripping 'module.': {key!r} -> {new!r}"
            )
        out[new] = value
    return out


def _check_tensor_dict(state: Any, where: str) -> dict[str, np.ndarray]:
    if not isinstance(state, Mapping):
        raise CheckpointFormatError(
            f"{where}: expected a state_dict (mapping of name -> tensor), got {type(state).__name__}"
        )
    if not state:
        raise CheckpointFormatError(f"{where}: the state_dict is empty")
    for key, value in state.items():
        if not isinstance(key, str):
            raise CheckpointFormatError(f"{where}: state_dict key {key!r} is not a string")
        if not isinstance(value, np.ndarray):
            raise CheckpointFormatError(
                f"{where}: entry {key!r} is a {type(value).__name__}, expected a tensor"
            )
    return strip_module_prefix(state, where=where)


def _as_python_number(value: Any, cast: type, where: str) -> Any:
    if value is None:
        return None
    if isinstance(value, np.ndarray):
        if value.size != 1:
            raise CheckpointFormatError(f"{where}: expected a scalar, got an array of shape {value.shape}")
        value = value.reshape(()).item()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise CheckpointFormatError(f"{where}: expected a number, got {type(value).__name__}")
    return cast(value)


def read_state_dicts(path_or_obj: Any, *, allow_namespace: bool = False) -> TorchCheckpoint:
    """Find the encoder (and CoReEcho head) state_dicts in a checkpoint file or an already loaded object.

    Accepted layouts, tried in this order:
      * CoReEcho ``{'epoch', 'model', 'regressor', 'best_error'[, 'opt']}`` -> format 'coreecho';
      * a flat state_dict (every value a tensor), e.g. HF ``uniformer_small_k400_16x8.pth`` -> 'flat';
      * a state_dict under ``'model'`` (Sense-X/DeiT style) -> 'model';
      * a state_dict under ``'model_state'`` (slowfast style) -> 'model_state'.
    Keys lose any leading ``module.``. Tensors stay numpy arrays, ``num_batches_tracked`` included.

    Raises:
      CheckpointFormatError: no state_dict found, or a non-tensor where a tensor is expected (message names the key).
    """
    source = None
    obj = path_or_obj
    if isinstance(path_or_obj, (str, os.PathLike)):
        source = str(path_or_obj)
        obj = load_pth(path_or_obj, allow_namespace=allow_namespace)
    where = source or "checkpoint"
    if not isinstance(obj, Mapping):
        raise CheckpointFormatError(f"{where}: expected a dict at the top level, got {type(obj).__name__}")

    head = None
    epoch = best_error = None
    if isinstance(obj.get("model"), Mapping) and isinstance(obj.get("regressor"), Mapping):
        fmt, used = "coreecho", ("model", "regressor", "epoch", "best_error")
        encoder = _check_tensor_dict(obj["model"], f"{where} ['model']")
        head = _check_tensor_dict(obj["regressor"], f"{where} ['regressor']")
    elif obj and all(isinstance(v, np.ndarray) for v in obj.values()):
        fmt, used = "flat", tuple(obj)
        encoder = _check_tensor_dict(obj, where)
    elif isinstance(obj.get("model"), Mapping):
        fmt, used = "model", ("model", "epoch", "best_error")
        encoder = _check_tensor_dict(obj["model"], f"{where} ['model']")
    elif isinstance(obj.get("model_state"), Mapping):
        fmt, used = "model_state", ("model_state", "epoch", "best_error")
        encoder = _check_tensor_dict(obj["model_state"], f"{where} ['model_state']")
    else:
        tensors = [k for k, v in obj.items() if isinstance(v, np.ndarray)]
        if tensors:  # looks like a flat state_dict polluted by non-tensor entries: name them
            _check_tensor_dict(obj, where)
        raise CheckpointFormatError(
            f"{where}: no state_dict found: expected a flat name->tensor dict or one under 'model' or "
            f"'model_state'; top-level keys are {list(obj)[:10]}"
        )
    if fmt != "flat":
        epoch = _as_python_number(obj.get("epoch"), int, f"{where} ['epoch']")
        best_error = _as_python_number(obj.get("best_error"), float, f"{where} ['best_error']")
    meta = {
        "format": fmt,
        "epoch": epoch,
        "best_error": best_error,
        "source": source,
        "other_keys": [k for k in obj if k not in used],
    }
    return TorchCheckpoint(encoder=encoder, head=head, meta=meta)
