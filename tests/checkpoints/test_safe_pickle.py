"""The shared restricted unpickler: allow-list lookups, the caller's refusal error, no persistent ids."""

from __future__ import annotations

import io
import pickle

import pytest

from coreecho_jax.checkpoints import torch_pth
from coreecho_jax.data.echonet import start_indexes
from coreecho_jax.errors import CheckpointError, CoreEchoError, DataError
from coreecho_jax.safe_pickle import RestrictedUnpickler, UnsafePickleError, latin1_encode


class _Refused(UnsafePickleError):
    pass


def _load(data: bytes, allowed: dict) -> object:
    refuse = lambda module, name: _Refused(f"no {module}.{name}")
    return RestrictedUnpickler(io.BytesIO(data), allowed, refuse=refuse).load()


def test_globals_resolve_only_through_the_allow_list():
    data = pickle.dumps({"s": {1, 2}, "b": b"\x00\xff"}, protocol=2)  # __builtin__.set, _codecs.encode
    allowed = {("__builtin__", "set"): lambda items: set(items), ("_codecs", "encode"): latin1_encode}
    assert _load(data, allowed) == {"s": {1, 2}, "b": b"\x00\xff"}
    with pytest.raises(_Refused, match="no __builtin__.set"):
        _load(data, {("_codecs", "encode"): latin1_encode})
    # raw protocol-2 names reach the allow-list unmapped: '__builtin__.print' is not 'builtins.print'
    with pytest.raises(_Refused, match=r"no __builtin__\.print"):
        _load(b"\x80\x02c__builtin__\nprint\nX\x02\x00\x00\x00hi\x85R.", {("builtins", "print"): print})


def test_latin1_only_and_no_persistent_ids():
    with pytest.raises(UnsafePickleError, match="latin1"):
        latin1_encode("eJw=", "base64")
    assert latin1_encode("\xff", "ISO-8859-1") == b"\xff"
    with pytest.raises(UnsafePickleError, match="persistent id"):
        _load(b"\x80\x02X\x01\x00\x00\x00aQ.", {})


def test_reader_errors_keep_their_classes_under_the_library_bases():
    assert issubclass(torch_pth.UnsafeCheckpointError, UnsafePickleError)
    assert issubclass(torch_pth.UnsafeCheckpointError, CheckpointError)
    assert issubclass(start_indexes.UnsafePickleError, UnsafePickleError)
    assert issubclass(start_indexes.UnsafePickleError, DataError)
    assert issubclass(UnsafePickleError, CoreEchoError) and issubclass(
        UnsafePickleError, pickle.UnpicklingError
    )
