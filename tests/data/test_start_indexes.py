"""Tests for start-index files (coreecho_jax.data.echonet.start_indexes)."""

import os
import pickle
import pickletools

import numpy as np
import pytest

from coreecho_jax.data.echonet import start_indexes as si


def official_format_pickle(path, n: int = 1276, seed: int = 0):
    """Writes a file in the format of CoReEcho's published ``test_start_indexes.pkl``.

    That file (CC BY-NC 4.0, so not shipped here) is a protocol-4 pickle of ``{name.avi: int64[3]}``
    written by numpy 1.x, whose arrays are rebuilt through ``numpy.core.multiarray._reconstruct``.
    numpy 2 writes ``numpy._core``; the stream is rewritten to the 1.x module name (frames removed, as
    the protocol allows), so the reader sees the official structure.
    """
    rng = np.random.default_rng(seed)
    starts = {f"0X{i:016X}.avi": rng.choice(803, size=3, replace=False).astype(np.int64) for i in range(n)}
    data = pickle.dumps(starts, protocol=4)
    new, old = b"numpy.core.multiarray", b"numpy._core.multiarray"
    if old in data:  # numpy 2: SHORT_BINUNICODE <len> name; drop the framing so lengths stay valid
        body = _unframe(data)
        data = body.replace(bytes([0x8C, len(old)]) + old, bytes([0x8C, len(new)]) + new)
    assert b"numpy.core.multiarray" in data and b"numpy._core" not in data
    path.write_bytes(data)
    return starts


def _unframe(data: bytes) -> bytes:
    """Removes protocol-4 FRAME opcodes (optional by the spec) so edited frames need no new lengths."""
    ops = list(pickletools.genops(data))
    bounds = [pos for _, _, pos in ops] + [len(data)]
    return b"".join(data[bounds[i] : bounds[i + 1]] for i, (op, _, _) in enumerate(ops) if op.name != "FRAME")


@pytest.fixture(scope="module")
def official_pkl(tmp_path_factory):
    path = tmp_path_factory.mktemp("official") / "test_start_indexes.pkl"
    return path, official_format_pickle(path)


def test_official_pickle_loads(official_pkl):
    path, expected = official_pkl
    starts = si.load_start_indexes(path)
    assert len(starts) == 1276
    assert all(k.endswith(".avi") for k in starts)
    values = np.stack(list(starts.values()))
    assert values.shape == (1276, 3) and values.dtype == np.int64
    assert values.min() >= 0 and values.max() <= 802
    assert all(len(set(v.tolist())) == 3 for v in values)
    assert expected.keys() == starts.keys()
    for k in expected:
        np.testing.assert_array_equal(expected[k], starts[k])


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    bad = tmp_path / "evil.pkl"
    bad.write_bytes(pickle.dumps({"a.avi": np.arange(3), "x": _Evil(marker)}))
    with pytest.raises(si.UnsafePickleError, match=r"refusing to load (posix|os|nt)\.system"):
        si.load_start_indexes(bad)
    assert not marker.exists()
    evil2 = tmp_path / "eval.pkl"
    evil2.write_bytes(b"cbuiltins\neval\n(S'1+1'\ntR.")
    with pytest.raises(si.UnsafePickleError, match="builtins.eval"):
        si.load_start_indexes(evil2)
    obj = tmp_path / "obj.pkl"
    obj.write_bytes(pickle.dumps({"a.avi": np.array([object()], dtype=object)}))
    with pytest.raises(si.UnsafePickleError):
        si.load_start_indexes(obj)


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_numpy_pickles_of_all_protocols(tmp_path, protocol):
    d = {"a.avi": np.array([1, 5, 2], np.int64), "b.avi": np.array([0, 1, 2], np.int32)}
    p = tmp_path / "s.pkl"
    p.write_bytes(pickle.dumps(d, protocol=protocol))
    out = si.load_start_indexes(p)
    np.testing.assert_array_equal(out["a.avi"], [1, 5, 2])
    assert out["b.avi"].dtype == np.int64


def test_bad_content_and_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pkl"):
        si.load_start_indexes(tmp_path / "nope.pkl")
    p = tmp_path / "list.pkl"
    p.write_bytes(pickle.dumps([1, 2, 3]))
    with pytest.raises(ValueError, match="expected a dict"):
        si.load_start_indexes(p)
    j = tmp_path / "bad.json"
    j.write_text('{"a.avi": [1.5, 2]}')
    with pytest.raises(ValueError, match="a.avi"):
        si.load_start_indexes(j)
    with pytest.raises(ValueError, match=".csv"):
        si.load_start_indexes(tmp_path / "x.csv")


def test_json_round_trip_of_official_file(tmp_path, official_pkl):
    starts = si.load_start_indexes(official_pkl[0])
    path = si.save_start_indexes_json(starts, tmp_path / "starts.json")
    back = si.load_start_indexes(path)
    assert back.keys() == starts.keys()
    for k in starts:
        np.testing.assert_array_equal(back[k], starts[k])


def test_draw_start_indexes_reproducible_and_in_range():
    nf = {"long.avi": 200, "mid.avi": 146, "short.avi": 100, "tiny.avi": 3}
    a = si.draw_start_indexes(nf, k=3, seed=1)
    b = si.draw_start_indexes(nf, k=3, seed=1)
    c = si.draw_start_indexes(nf, k=3, seed=2)
    for k in nf:
        np.testing.assert_array_equal(a[k], b[k])
        assert a[k].dtype == np.int64 and a[k].shape == (3,)
    assert any(not np.array_equal(a[k], c[k]) for k in nf)
    assert len(set(a["long.avi"].tolist())) == 3 and a["long.avi"].max() <= 59
    assert len(set(a["mid.avi"].tolist())) == 3 and a["mid.avi"].max() <= 5
    assert set(a["short.avi"].tolist()) <= {0, 1, 2, 3} and len(set(a["short.avi"].tolist())) == 3
    # A video's starts do not depend on the other videos.
    np.testing.assert_array_equal(si.draw_start_indexes({"long.avi": 200}, seed=1)["long.avi"], a["long.avi"])
    # k larger than the 4 positions of a short video: all positions, then repeats.
    many = si.draw_start_indexes({"short.avi": 100}, k=6, seed=0)["short.avi"]
    assert sorted(many[:4].tolist()) == [0, 1, 2, 3] and set(many[4:].tolist()) <= {0, 1, 2, 3}
    si.validate_start_indexes(a, nf)


def test_validate_start_indexes_errors():
    nf = {"a.avi": 200, "b": 100}
    with pytest.raises(ValueError, match=r"1 video\(s\).*: b"):
        si.validate_start_indexes({"a.avi": [0, 1, 2]}, nf)
    with pytest.raises(ValueError, match=r"b.*\[4\] out of range.*0\.\.3"):
        si.validate_start_indexes({"a.avi": [0, 1, 2], "b.avi": [0, 1, 4]}, nf)
    with pytest.raises(ValueError, match="same number"):
        si.validate_start_indexes({"a": [0, 1, 2], "b.avi": [0, 1]}, nf)
    out = si.validate_start_indexes({"a": [0, 1, 59], "b.avi": [3, 2, 1], "extra.avi": [999]}, nf)
    assert set(out) == {"a.avi", "b"}
    np.testing.assert_array_equal(out["a.avi"], [0, 1, 59])


def _repeat_rate(starts):
    return np.mean([len(set(v.tolist())) < len(v) for v in starts.values()])


@pytest.mark.parametrize(
    "num_frames,positions",
    [(100, 4), (200, 60)],  # a short video padded to 144 frames (starts 0..3), and a long one
)
def test_draw_with_replacement_repeats_at_the_official_rate(num_frames, positions):
    # Official validate: 3 passes, each drawing np.random.choice(F - 140) per video: independent starts.
    n_videos, k = 3000, 3
    nf = {f"v{i:05d}.avi": num_frames for i in range(n_videos)}
    starts = si.draw_start_indexes(nf, k=k, seed=11, replace=True)
    p_repeat = 1.0 - np.prod([(positions - j) / positions for j in range(k)])  # 0.625 and 0.049
    sd = np.sqrt(p_repeat * (1 - p_repeat) / n_videos)
    assert abs(_repeat_rate(starts) - p_repeat) < 5 * sd
    # Each start is uniform over the positions (chi-square, 5 sigma of its distribution).
    counts = np.bincount(np.concatenate(list(starts.values())), minlength=positions)
    assert len(counts) == positions
    expected = n_videos * k / positions
    chi2 = np.sum((counts - expected) ** 2 / expected)
    assert chi2 < (positions - 1) + 5 * np.sqrt(2 * (positions - 1))
    # The test-file draw (without replacement) never repeats when there are enough positions.
    assert _repeat_rate(si.draw_start_indexes(nf, k=k, seed=11)) == 0.0
