"""Torch-free .pth reader: fixture parity, layouts, safety against malicious pickles, clear errors."""

from __future__ import annotations

import argparse
import builtins
import collections
import json
import os
import pickle
import shutil
import subprocess
import zipfile
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest

from coreecho_jax.checkpoints.torch_pth import (
    CheckpointFormatError,
    UnsafeCheckpointError,
    load_pth,
    read_state_dicts,
    strip_module_prefix,
)
from tests.paths import FIXTURES

CKPT = FIXTURES / "checkpoints"
MARKER = "UNSAFE-PICKLE-EXECUTED"


def _keys_json() -> dict:
    return json.loads((CKPT / "tiny_keys.json").read_text())


def _layout(state: dict) -> list[list]:
    return [[k, list(v.shape), str(v.dtype)] for k, v in state.items()]


# ----------------------------------------------------------------------------------------------------------
# Helpers that write torch-style files without torch.
# ----------------------------------------------------------------------------------------------------------


def _p(value) -> bytes:
    """Protocol-2 opcodes that push ``value`` (no PROTO/STOP)."""
    return pickle.dumps(value, protocol=2)[2:-1]


def _tensor_ops(storage: str, key: str, numel: int, offset: int, size: tuple, stride: tuple) -> bytes:
    """Opcodes for ``_rebuild_tensor_v2(('storage', torch.<storage>, key, 'cuda:0', numel), ...)``."""
    pid = b"(" + _p("storage") + f"ctorch\n{storage}\n".encode() + _p(key) + _p("cuda:0") + _p(numel) + b"tQ"
    hooks = b"ccollections\nOrderedDict\n)R"
    args = b"(" + pid + _p(offset) + _p(size) + _p(stride) + _p(False) + hooks + b"t"
    return b"ctorch._utils\n_rebuild_tensor_v2\n" + args + b"R"


def _dict_pkl(entries: dict[str, bytes]) -> bytes:
    """A protocol-2 pickle of ``{name: <opcodes>}``."""
    body = b"".join(_p(k) + v for k, v in entries.items())
    return b"\x80\x02}(" + body + b"u."


def _write_zip(
    path: Path, data_pkl: bytes | None, storages: dict[str, bytes], *, root="archive", byteorder="little"
) -> Path:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as zf:
        if data_pkl is not None:
            zf.writestr(f"{root}/data.pkl", data_pkl)
        zf.writestr(f"{root}/byteorder", byteorder)
        for key, raw in storages.items():
            zf.writestr(f"{root}/data/{key}", raw)
        zf.writestr(f"{root}/version", "3\n")
    return path


_STORAGES = {np.dtype(np.float32): "FloatStorage", np.dtype(np.int64): "LongStorage"}


def write_state_dict_pth(path: Path, state: dict[str, np.ndarray]) -> Path:
    """A zip ``.pth`` of a flat state_dict (float32 / int64 arrays), as ``torch.save(state_dict)`` writes."""
    entries, storages = {}, {}
    for i, (key, array) in enumerate(state.items()):
        array = np.ascontiguousarray(array)
        strides = tuple(s // array.itemsize for s in array.strides)
        entries[key] = _tensor_ops(_STORAGES[array.dtype], str(i), array.size, 0, array.shape, strides)
        storages[str(i)] = array.astype(array.dtype.newbyteorder("<")).tobytes()
    return _write_zip(path, _dict_pkl(entries), storages)


# ----------------------------------------------------------------------------------------------------------
# Fixture files.
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["tiny_k400_flat.pth", "tiny_k400_nested.pth", "tiny_k400_legacy.pth"])
def test_k400_files_match_saved_keys_shapes_dtypes_in_order(name):
    ckpt = read_state_dicts(CKPT / name)
    assert _layout(ckpt.encoder) == _keys_json()["tiny_k400_flat.pth"]
    assert ckpt.head is None
    assert ckpt.meta["format"] == ("model" if "nested" in name else "flat")
    assert ckpt.meta["source"] == str(CKPT / name)
    for arr in ckpt.encoder.values():
        assert arr.flags.c_contiguous and arr.flags.writeable


def test_flat_nested_legacy_are_bit_identical():
    flat = load_pth(CKPT / "tiny_k400_flat.pth")
    nested = load_pth(CKPT / "tiny_k400_nested.pth")
    legacy = load_pth(CKPT / "tiny_k400_legacy.pth")
    assert isinstance(flat, collections.OrderedDict) and isinstance(legacy, collections.OrderedDict)
    assert list(nested) == ["model"]
    assert list(flat) == list(nested["model"]) == list(legacy)
    for key, ref in flat.items():
        for other in (nested["model"][key], legacy[key]):
            assert other.dtype == ref.dtype and other.shape == ref.shape
            assert other.tobytes() == ref.tobytes(), key
    # state_dict version metadata (set by BUILD) survives as an attribute
    assert flat._metadata[""] == {"version": 1}


def test_num_batches_tracked_is_kept_as_0d_int64():
    flat = load_pth(CKPT / "tiny_k400_flat.pth")
    nbt = flat["blocks1.0.norm1.num_batches_tracked"]
    assert nbt.shape == () and nbt.dtype == np.int64 and int(nbt) == 1000


def test_coreecho_best_checkpoint():
    raw = load_pth(CKPT / "tiny_coreecho_best.pth")
    assert type(raw) is dict and list(raw) == ["epoch", "model", "regressor", "best_error"]
    assert raw["epoch"] == 12 and isinstance(raw["epoch"], int)
    assert raw["best_error"].shape == () and raw["best_error"].dtype == np.float32  # 0-d tensor stays 0-d

    ckpt = read_state_dicts(CKPT / "tiny_coreecho_best.pth")
    keys = _keys_json()
    strip = lambda layout: [[k.removeprefix("module."), s, d] for k, s, d in layout]
    assert _layout(ckpt.encoder) == strip(keys["tiny_coreecho_best.pth:model"])
    assert not any(k.startswith("module.") for k in ckpt.encoder)
    assert len(ckpt.head) == 14
    assert _layout(ckpt.head) == strip(keys["tiny_coreecho_best.pth:regressor"])
    assert ckpt.head["6.weight"].shape == (1, 128)
    np.testing.assert_allclose(ckpt.head["6.bias"], [55.85], rtol=0, atol=1e-5)
    assert int(ckpt.head["3.num_batches_tracked"]) == 3000
    assert int(ckpt.encoder["norm.num_batches_tracked"]) == 2000
    assert ckpt.meta["format"] == "coreecho"
    assert ckpt.meta["epoch"] == 12
    assert ckpt.meta["best_error"] == 4.125 and type(ckpt.meta["best_error"]) is float
    assert ckpt.meta["other_keys"] == []


def test_read_state_dicts_layouts_from_objects():
    flat = load_pth(CKPT / "tiny_k400_flat.pth")
    prefixed = collections.OrderedDict((f"module.{k}", v) for k, v in flat.items())
    for obj, fmt in [
        (flat, "flat"),
        (prefixed, "flat"),
        ({"model": prefixed, "epoch": 3}, "model"),
        ({"model_state": flat, "epoch": 7, "optimizer_state": {}, "cfg": "x"}, "model_state"),
        ({"model": flat, "model_state": {"a": 1}}, "model"),  # 'model' wins over 'model_state'
    ]:
        ckpt = read_state_dicts(obj)
        assert list(ckpt.encoder) == list(flat), fmt
        assert ckpt.meta["format"] == fmt
        assert ckpt.encoder["head.weight"] is flat["head.weight"]
    assert read_state_dicts({"model_state": flat, "epoch": 7, "cfg": "x"}).meta["other_keys"] == ["cfg"]


def test_read_state_dicts_rejects_non_tensors_and_missing_state_dicts():
    flat = dict(load_pth(CKPT / "tiny_k400_flat.pth"))
    bad = dict(flat, **{"patch_embed1.norm.weight": [1.0, 2.0]})
    with pytest.raises(ValueError, match=r"'patch_embed1.norm.weight' is a list, expected a tensor"):
        read_state_dicts(bad)
    with pytest.raises(ValueError, match=r"\['model'\]: entry 'x' is a str"):
        read_state_dicts({"model": {"w": flat["head.bias"], "x": "nope"}})
    with pytest.raises(ValueError, match="no state_dict found.*'weights', 'step'"):
        read_state_dicts({"weights": 1, "step": 2})
    with pytest.raises(ValueError, match="expected a dict at the top level, got list"):
        read_state_dicts([1, 2])
    with pytest.raises(ValueError, match="collide"):
        strip_module_prefix({"module.a": 1, "a": 2})


# ----------------------------------------------------------------------------------------------------------
# Tensors rebuilt from hand-made storages.
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "storage,dtype",
    [
        ("FloatStorage", np.float32),
        ("DoubleStorage", np.float64),
        ("HalfStorage", np.float16),
        ("BFloat16Storage", ml_dtypes.bfloat16),
        ("LongStorage", np.int64),
        ("IntStorage", np.int32),
        ("ShortStorage", np.int16),
        ("CharStorage", np.int8),
        ("ByteStorage", np.uint8),
        ("BoolStorage", np.bool_),
    ],
)
@pytest.mark.parametrize("byteorder", ["little", "big"])
def test_storage_dtypes_strides_and_byteorder(tmp_path, storage, dtype, byteorder):
    values = (np.arange(12) % 2 == 1) if dtype is np.bool_ else (np.arange(12) - 5).astype(dtype)
    values = values.astype(dtype)
    raw = values.tobytes()
    if byteorder == "big":  # every element's bytes reversed, as a big-endian machine writes them
        raw = values.view(f"u{values.itemsize}").byteswap().tobytes()
    pkl = _dict_pkl(
        {
            "t": _tensor_ops(storage, "0", 12, 1, (3, 2), (1, 3)),  # transposed view starting at element 1
            "s": _tensor_ops(storage, "0", 12, 11, (), ()),  # 0-d tensor on the same storage
        }
    )
    out = load_pth(_write_zip(tmp_path / "x.pth", pkl, {"0": raw}, byteorder=byteorder))
    expect = np.lib.stride_tricks.as_strided(values[1:], (3, 2), (values.itemsize, 3 * values.itemsize))
    assert out["t"].dtype == np.dtype(dtype) and out["t"].flags.c_contiguous
    np.testing.assert_array_equal(out["t"], expect)
    assert out["s"].shape == () and out["s"] == values[11]


def test_root_folder_name_is_discovered(tmp_path):
    pkl = _dict_pkl({"w": _tensor_ops("FloatStorage", "0", 2, 0, (2,), (1,))})
    raw = np.array([1.5, -2.0], np.float32).tobytes()
    for root in ("archive", "my_model_epoch3"):
        out = load_pth(_write_zip(tmp_path / f"{root}.pth", pkl, {"0": raw}, root=root))
        np.testing.assert_array_equal(out["w"], [1.5, -2.0])


def test_out_of_bounds_stride_is_refused(tmp_path):
    pkl = _dict_pkl({"w": _tensor_ops("FloatStorage", "0", 4, 0, (4, 4), (4, 1))})  # needs 16 elements
    path = _write_zip(tmp_path / "oob.pth", pkl, {"0": np.zeros(4, np.float32).tobytes()})
    with pytest.raises(CheckpointFormatError, match=r"oob\.pth: tensor of size \(4, 4\).*reads element 15"):
        load_pth(path)


def test_protocol2_bytes_and_sets_load(tmp_path):
    path = _write_zip(tmp_path / "b.pth", pickle.dumps({"b": b"\x00\xffab", "s": {1, 2}}, protocol=2), {})
    assert load_pth(path) == {"b": b"\x00\xffab", "s": {1, 2}}


def test_argparse_namespace_needs_explicit_opt_in(tmp_path, capfd):
    opt = argparse.Namespace(lr=1e-4, epochs=30, save_folder="runs/x")
    path = _write_zip(tmp_path / "last.pth", pickle.dumps({"epoch": 3, "opt": opt}, protocol=2), {})
    refused = r"last\.pth: refused global 'argparse.Namespace'.*allow_namespace=True"
    with pytest.raises(UnsafeCheckpointError, match=refused):
        load_pth(path)
    out = load_pth(path, allow_namespace=True)
    assert out == {"epoch": 3, "opt": {"lr": 1e-4, "epochs": 30, "save_folder": "runs/x"}}
    assert type(out["opt"]) is dict
    # a CoReEcho last.pth-style object: 'opt' is listed, not read as weights
    best = load_pth(CKPT / "tiny_coreecho_best.pth")
    ckpt = read_state_dicts(dict(best, opt=out["opt"]))
    assert ckpt.meta["other_keys"] == ["opt"] and len(ckpt.head) == 14


# ----------------------------------------------------------------------------------------------------------
# Malicious pickles.
# ----------------------------------------------------------------------------------------------------------


def test_unsafe_fixture_is_refused_without_executing(capfd):
    refused = r"unsafe_pickle\.pth: refused global '__builtin__\.print'"
    with pytest.raises(UnsafeCheckpointError, match=refused):
        load_pth(CKPT / "unsafe_pickle.pth")
    with pytest.raises(UnsafeCheckpointError, match="print"):
        read_state_dicts(CKPT / "unsafe_pickle.pth")
    captured = capfd.readouterr()
    assert MARKER not in captured.out and MARKER not in captured.err


class _Reduce:
    """Pickles as ``func(*args)``."""

    def __init__(self, func, args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


_PAYLOADS = {
    "os.system": (os.system, (f"echo {MARKER}",)),
    "builtins.eval": (builtins.eval, (f"print('{MARKER}')",)),
    "builtins.exec": (builtins.exec, (f"print('{MARKER}')",)),
    "subprocess.Popen": (subprocess.Popen, (["echo", MARKER],)),
    "builtins.__import__": (builtins.__import__, ("os",)),
}


@pytest.mark.parametrize("protocol", [2, 4])
@pytest.mark.parametrize("payload", sorted(_PAYLOADS))
@pytest.mark.parametrize("container", ["zip", "raw"])
def test_malicious_pickles_are_refused(tmp_path, capfd, protocol, payload, container):
    func, args = _PAYLOADS[payload]
    data = pickle.dumps({"payload": _Reduce(func, args), "w": 1.0}, protocol=protocol)
    path = tmp_path / "evil.pth"
    if container == "zip":
        _write_zip(path, data, {})
    else:  # a bare pickle: read as the first pickle of the legacy format
        path.write_bytes(data)
    name = func.__name__
    with pytest.raises(UnsafeCheckpointError, match=rf"evil\.pth: refused global '[\w.]+\.{name}'"):
        load_pth(path)
    captured = capfd.readouterr()
    assert MARKER not in captured.out and MARKER not in captured.err


def test_build_cannot_set_attributes_on_allowed_objects(tmp_path):
    od = collections.OrderedDict(a=1)
    od.__dict__["evil"] = "x"  # pickled as REDUCE + BUILD({'evil': 'x'})
    path = _write_zip(tmp_path / "build.pth", pickle.dumps(od, protocol=2), {})
    with pytest.raises(UnsafeCheckpointError, match=r"build\.pth: .*only set '_metadata'"):
        load_pth(path)
    # BUILD on a tensor stand-in (to rewrite its validated offset) is refused too
    pkl = b"\x80\x02" + _tensor_ops("FloatStorage", "0", 1, 0, (), ()) + _p({"offset": 10**6}) + b"b."
    path = _write_zip(tmp_path / "build2.pth", pkl, {"0": np.zeros(1, np.float32).tobytes()})
    with pytest.raises(UnsafeCheckpointError, match="BUILD"):
        load_pth(path)


def test_codecs_encode_only_latin1(tmp_path):
    pkl = b"\x80\x02c_codecs\nencode\n" + _p("eJwLdvXzc3UNCXMMj/fzDwj29A" + "==") + _p("base64") + b"\x86R."
    with pytest.raises(UnsafeCheckpointError, match="latin1"):
        load_pth(_write_zip(tmp_path / "c.pth", pkl, {}))


def test_module_persistent_id_is_refused(tmp_path):
    pkl = b"\x80\x02(" + _p("module") + _p("class Evil: pass") + b"tQ."
    with pytest.raises(UnsafeCheckpointError, match="module"):
        load_pth(_write_zip(tmp_path / "m.pth", pkl, {}))


# ----------------------------------------------------------------------------------------------------------
# Broken files.
# ----------------------------------------------------------------------------------------------------------


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nope\.pth"):
        load_pth(tmp_path / "nope.pth")


@pytest.mark.parametrize(
    "name,expected",
    [
        ("tiny_k400_flat.pth", "truncated or corrupt zip archive"),
        ("tiny_k400_legacy.pth", "file ends inside storage"),
    ],
)
def test_truncated_copy_gives_clear_error(tmp_path, name, expected):
    data = (CKPT / name).read_bytes()
    path = tmp_path / f"cut_{name}"
    path.write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(CheckpointFormatError, match=rf"cut_{name}: {expected}"):
        load_pth(path)


def test_zip_without_data_pkl(tmp_path):
    path = _write_zip(tmp_path / "nodata.pth", None, {"0": b"\x00" * 4})
    with pytest.raises(CheckpointFormatError, match=r"nodata\.pth: expected exactly one '<root>/data\.pkl'"):
        load_pth(path)


def test_missing_storage_entry(tmp_path):
    src = CKPT / "tiny_k400_flat.pth"
    path = tmp_path / "holed.pth"
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(path, "w") as zout:
        for info in zin.infolist():
            if info.filename != "tiny_k400_flat/data/7":
                zout.writestr(info, zin.read(info))
    expected = r"holed\.pth: missing storage entry 'tiny_k400_flat/data/7'"
    with pytest.raises(CheckpointFormatError, match=expected):
        load_pth(path)


def test_short_storage_entry(tmp_path):
    pkl = _dict_pkl({"w": _tensor_ops("FloatStorage", "0", 4, 0, (4,), (1,))})
    path = _write_zip(tmp_path / "short.pth", pkl, {"0": b"\x00" * 12})
    expected = r"short\.pth: storage entry 'archive/data/0' holds 12 bytes, expected 16"
    with pytest.raises(CheckpointFormatError, match=expected):
        load_pth(path)


def test_not_a_checkpoint(tmp_path):
    path = tmp_path / "notes.pth"
    path.write_text("hello, I am not a checkpoint\n")
    with pytest.raises(CheckpointFormatError, match=r"notes\.pth: not a PyTorch checkpoint"):
        load_pth(path)


def test_cuda_location_loads_on_cpu_copy(tmp_path):
    # the CoReEcho fixture is tagged 'cuda:0'; a renamed copy loads too (root folder != file stem)
    path = tmp_path / "renamed.pth"
    shutil.copy(CKPT / "tiny_coreecho_best.pth", path)
    assert read_state_dicts(path).meta["epoch"] == 12
