"""Tests for the EchoNet-Dynamic reader (reader.py) and the TFDS builder (echonet_tfds.py)."""

import json
import math
import os
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from coreecho_jax.data.echonet import echonet_tfds as et
from coreecho_jax.data.echonet import reader
from coreecho_jax.data.video.video_io import read_video, write_video
from coreecho_jax.errors import DataError
from tests.paths import REPO

SPLITS = ("TRAIN", "VAL", "TEST")


def video_frames(index: int, num_frames: int, size: int = 112) -> np.ndarray:
    """Deterministic uint8 frames [F, size, size]: frame t of video i has a gradient + a bright block at t."""
    yy, xx = np.mgrid[:size, :size]
    base = ((yy + 2 * xx + 7 * index) % 200).astype(np.uint8)
    frames = np.repeat(base[None], num_frames, axis=0)
    for t in range(num_frames):
        frames[t, (t * 3) % (size - 8) : (t * 3) % (size - 8) + 8, 10:18] = 250 - (t % 50)
    return frames


def colour_frames(index: int, num_frames: int, size: int = 112) -> np.ndarray:
    """uint8 RGB frames [F, size, size, 3] whose three channels differ everywhere (R = grey, G, B derived)."""
    g = video_frames(index, num_frames, size).astype(np.int64)
    return np.stack([g, 255 - g, (3 * g + 17) % 256], axis=-1).astype(np.uint8)


def write_layout(
    root: Path,
    num_frames=(100, 150, 200, 90, 160, 210, 120),
    splits=None,
    *,
    tracings=True,
    untraced=(),
    ef=None,
    size=112,
    colour=False,
    colour_videos=(),
) -> Path:
    """Writes a tiny EchoNet-Dynamic folder (lossless FFV1 AVIs) and returns root.

    Videos are grey (three equal channels when decoded), except all with ``colour`` and those whose
    index is in ``colour_videos``, whose channels differ everywhere.
    """
    root = Path(root)
    (root / "Videos").mkdir(parents=True, exist_ok=True)
    splits = splits or [SPLITS[i % 3] for i in range(len(num_frames))]
    rows, traces = [], []
    for i, (n, split) in enumerate(zip(num_frames, splits)):
        name = f"0XVID{i:04d}"
        frames = colour_frames(i, n, size) if colour or i in colour_videos else video_frames(i, n, size)
        write_video(root / "Videos" / f"{name}.avi", frames, fps=50.0)
        rows.append(
            {
                "FileName": name,
                "EF": 40.0 + i if ef is None else ef[i],
                "ESV": 30.0 + i,
                "EDV": 80.0 + i,
                "FrameHeight": size,
                "FrameWidth": size,
                "FPS": 50,
                "NumberOfFrames": n,
                "Split": split,
            }
        )
        traced = [5] if name in untraced else [5, 20]
        for frame in traced:
            for _ in range(3):
                traces.append(
                    {"FileName": name + ".avi", "X1": 1.0, "Y1": 2.0, "X2": 3.0, "Y2": 4.0, "Frame": frame}
                )
    pd.DataFrame(rows).to_csv(root / "FileList.csv", index=False)
    if tracings:
        pd.DataFrame(traces).to_csv(root / "VolumeTracings.csv", index=False)
    return root


# ----------------------------------------------------------------------------- reader


def test_read_echonet_records(tmp_path):
    root = write_layout(tmp_path / "echo")
    index = reader.read_echonet(root)
    assert len(index.records) == 7 and index.has_tracings and index.dropped_untraced == ()
    r = index.records[1]
    assert (r.filename, r.split, r.ef, r.edv, r.esv, r.num_frames, r.fps) == (
        "0XVID0001",
        "val",
        41.0,
        81.0,
        31.0,
        150,
        50.0,
    )
    assert r.path == root / "Videos" / "0XVID0001.avi" and r.avi_name == "0XVID0001.avi"
    assert [x.filename for x in index.split("TEST")] == ["0XVID0002", "0XVID0005"]


def test_filename_with_extension_lowercase_split_and_optional_columns(tmp_path):
    root = write_layout(tmp_path / "echo", tracings=False)
    df = pd.read_csv(root / "FileList.csv")
    df["FileName"] = df["FileName"] + ".avi"
    df["Split"] = df["Split"].str.lower()
    df.drop(columns=["EDV", "ESV", "FPS"]).to_csv(root / "FileList.csv", index=False)
    index = reader.read_echonet(root)
    assert index.records[0].filename == "0XVID0000" and not index.has_tracings
    assert (
        math.isnan(index.records[0].edv)
        and math.isnan(index.records[0].esv)
        and math.isnan(index.records[0].fps)
    )


def test_untraced_videos_dropped_and_reported(tmp_path, caplog):
    root = write_layout(tmp_path / "echo", untraced=("0XVID0003",))
    tr = pd.read_csv(root / "VolumeTracings.csv")
    tr[tr["FileName"] != "0XVID0006.avi"].to_csv(
        root / "VolumeTracings.csv", index=False
    )  # absent -> dropped
    with caplog.at_level("WARNING"):
        index = reader.read_echonet(root)
    assert index.dropped_untraced == ("0XVID0003", "0XVID0006")
    assert "dropped 2 video(s)" in caplog.text
    assert [r.filename for r in index.split("train")] == ["0XVID0000"]
    assert len(reader.read_echonet(root, drop_untraced=False).records) == 7


def test_missing_directory_and_filelist(tmp_path):
    with pytest.raises(reader.EchoNetNotFoundError, match=r"(?s)folder not found.*nowhere.*FileList.csv"):
        reader.read_echonet(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(
        FileNotFoundError, match=r"(?s)FileList.csv not found in .*empty.*Videos/<FileName>.avi"
    ):
        reader.read_echonet(tmp_path / "empty")


def test_missing_column(tmp_path):
    root = write_layout(tmp_path / "echo", num_frames=(100, 100, 100))
    pd.read_csv(root / "FileList.csv").drop(columns=["EF"]).to_csv(root / "FileList.csv", index=False)
    with pytest.raises(reader.EchoNetLayoutError, match=r"FileList.csv: missing column\(s\) \['EF'\]"):
        reader.read_echonet(root)


def test_bad_tracings_header(tmp_path):
    root = write_layout(tmp_path / "echo", num_frames=(100, 100, 100))
    pd.DataFrame({"FileName": ["a.avi"], "X": [1], "Frame": [2]}).to_csv(
        root / "VolumeTracings.csv", index=False
    )
    with pytest.raises(reader.EchoNetLayoutError, match="VolumeTracings.csv: header must be exactly"):
        reader.read_echonet(root)


def test_empty_split(tmp_path):
    root = write_layout(tmp_path / "echo", num_frames=(100, 100, 100), splits=["TRAIN", "TRAIN", "TEST"])
    with pytest.raises(reader.EchoNetLayoutError, match="split 'val' has no videos"):
        reader.read_echonet(root)
    # A split emptied by the untraced filter is named as such.
    root2 = write_layout(tmp_path / "echo2", num_frames=(100, 100, 100), untraced=("0XVID0001",))
    with pytest.raises(reader.EchoNetLayoutError, match="split 'val' has no videos after dropping untraced"):
        reader.read_echonet(root2)


@pytest.mark.parametrize("bad", [float("nan"), 100.0, 0.0, -3.0, 150.0, "abc"])
def test_bad_ef(tmp_path, bad):
    root = write_layout(tmp_path / "echo", num_frames=(100, 100, 100), ef=[50.0, bad, 60.0])
    with pytest.raises(
        reader.EchoNetLayoutError,
        match=r"EF must be a number in \(0, 100\).*row 3 \(FileName "
        r"0XVID0001",
    ):
        reader.read_echonet(root)


def test_ef_given_as_fractions_is_refused(tmp_path):
    root = write_layout(tmp_path / "echo", num_frames=(100, 100, 100), ef=[0.55, 0.61, 0.3])
    with pytest.raises(reader.EchoNetLayoutError, match=r"(?s)within 0-1.*fractions.*percent") as err:
        reader.read_echonet(root)
    assert isinstance(err.value, DataError)
    # One small EF among percentages is a (rare) value, not a unit mistake.
    write_layout(tmp_path / "echo2", num_frames=(100, 100, 100), ef=[0.9, 61.0, 30.0])
    assert reader.read_echonet(tmp_path / "echo2").records[0].ef == 0.9


def test_unknown_split_and_duplicates(tmp_path):
    root = write_layout(
        tmp_path / "echo", num_frames=(100, 100, 100, 100), splits=["TRAIN", "VAL", "TEST", "EXTRA"]
    )
    with pytest.raises(reader.EchoNetLayoutError, match=r"row 5 \(FileName 0XVID0003, Split 'EXTRA'\)"):
        reader.read_echonet(root)
    df = pd.read_csv(root / "FileList.csv")
    df.loc[3, "Split"] = "TRAIN"
    df.loc[3, "FileName"] = "0XVID0000"
    df.to_csv(root / "FileList.csv", index=False)
    with pytest.raises(reader.EchoNetLayoutError, match=r"duplicate FileName.*0XVID0000"):
        reader.read_echonet(root)


def test_missing_video_file(tmp_path):
    root = write_layout(tmp_path / "echo", num_frames=(100, 100, 100))
    (root / "Videos" / "0XVID0002.avi").unlink()
    with pytest.raises(
        FileNotFoundError, match=r"1 video\(s\) listed in FileList.csv are missing.*0XVID0002.avi"
    ):
        reader.read_echonet(root)


# ----------------------------------------------------------------------------- TFDS builder


def test_tfds_round_trip(tmp_path):
    root = write_layout(tmp_path / "echo")
    builder = et.prepare_echonet(root, tmp_path / "tfds", frame_format="png")
    meta = builder.info.metadata
    assert meta["source_root"] == str(root.resolve()) and meta["frame_size"] == [112, 112]
    assert et.split_videos(builder, "val") == {"0XVID0001": 150, "0XVID0004": 160}
    assert {s: builder.info.splits[s].num_examples for s in ("train", "val", "test")} == {
        "train": 3,
        "val": 2,
        "test": 2,
    }
    examples = {
        ex["filename"].decode(): ex for ex in et.tfds.as_numpy(builder.as_dataset(split="train"))
    }  # fully decoded frames
    ex = examples["0XVID0003"]
    expected = read_video(root / "Videos" / "0XVID0003.avi", color=True).frames
    assert ex["frames"].shape == (90, 112, 112, 3) and ex["num_frames"] == 90
    np.testing.assert_array_equal(ex["frames"], expected)
    np.testing.assert_array_equal(expected[..., 1], video_frames(3, 90))  # FFV1 is lossless
    assert (ex["ef"], ex["edv"], ex["esv"], ex["fps"]) == (43.0, 83.0, 33.0, 50.0)
    # Encoded access: one string per frame, decodable on its own.
    enc = next(
        iter(
            et.tfds.as_numpy(
                et.split_dataset(builder, "train").filter(lambda e: e["filename"] == "0XVID0003")
            )
        )
    )
    assert enc["frames"].shape == (90,) and enc["frames"].dtype == object
    np.testing.assert_array_equal(et.tf.io.decode_png(enc["frames"][17], channels=3).numpy(), expected[17])
    report = json.loads((Path(builder.data_dir) / et.REPORT_NAME).read_text())
    assert report["num_skipped_unreadable"] == 0 and report["num_dropped_untraced"] == 0
    # Reuse: loading by root or as the only dataset in data_dir.
    assert Path(et.load_echonet(tmp_path / "tfds", root, frame_format="png").data_dir) == Path(
        builder.data_dir
    )
    assert et.split_videos(et.load_echonet(tmp_path / "tfds"), "test") == {"0XVID0002": 200, "0XVID0005": 210}
    # The default raw format: one byte string per video, [F, H, W, C] uint8.
    raw = et.prepare_echonet(root, tmp_path / "tfds")
    assert et.frame_format(raw) == "raw" and raw.data_dir != builder.data_dir
    ex = next(
        iter(et.tfds.as_numpy(et.split_dataset(raw, "train").filter(lambda e: e["filename"] == "0XVID0003")))
    )
    assert ex["channels"] == 1  # a grey video: its one channel, stored once
    np.testing.assert_array_equal(
        np.frombuffer(ex["frames"], np.uint8).reshape(90, 112, 112, 1), expected[..., :1]
    )


def test_tfds_other_source_or_options_do_not_reuse(tmp_path):
    root = write_layout(tmp_path / "echo", num_frames=(100, 100, 100, 100), untraced=("0XVID0003",))
    b1 = et.prepare_echonet(root, tmp_path / "tfds")
    with pytest.raises(FileNotFoundError, match=r"no prepared EchoNet-Dynamic dataset.*drop_untraced=False"):
        et.load_echonet(tmp_path / "tfds", root, drop_untraced=False)
    b2 = et.prepare_echonet(root, tmp_path / "tfds", drop_untraced=False)
    assert b1.data_dir != b2.data_dir
    assert len(et.split_videos(b1, "train")) == 1 and len(et.split_videos(b2, "train")) == 2
    assert b1.info.metadata["dropped_untraced"] == ["0XVID0003"]
    with pytest.raises(et.EchoNetPreparationError, match="holds 2 prepared.*pass root="):
        et.load_echonet(tmp_path / "tfds")
    # Changed labels in the same folder: the old dataset is not silently reused.
    df = pd.read_csv(root / "FileList.csv")
    df.loc[0, "EF"] = 12.5
    df.to_csv(root / "FileList.csv", index=False)
    with pytest.raises(FileNotFoundError, match="prepared again"):
        et.load_echonet(tmp_path / "tfds", root)


def test_tfds_corrupt_video_skipped_and_reported(tmp_path, caplog):
    root = write_layout(tmp_path / "echo")
    (root / "Videos" / "0XVID0003.avi").write_bytes(b"not a video at all" * 10)
    (root / "Videos" / "0XVID0004.avi").write_bytes(b"")
    with caplog.at_level("WARNING"):
        builder = et.prepare_echonet(root, tmp_path / "tfds")
    assert "skipping unreadable video" in caplog.text and "0XVID0003" in caplog.text
    assert set(et.split_videos(builder, "train")) == {"0XVID0000", "0XVID0006"}
    assert set(et.split_videos(builder, "val")) == {"0XVID0001"}
    report = json.loads((Path(builder.data_dir) / et.REPORT_NAME).read_text())
    assert report["num_skipped_unreadable"] == 2
    assert [s["filename"] for s in report["skipped_unreadable"]["train"]] == ["0XVID0003"]
    assert [s["filename"] for s in report["skipped_unreadable"]["val"]] == ["0XVID0004"]


def test_tfds_all_corrupt_split_is_an_error(tmp_path):
    root = write_layout(tmp_path / "echo", num_frames=(100, 100, 100, 100))
    for name in ("0XVID0001",):  # the only VAL video
        (root / "Videos" / f"{name}.avi").write_bytes(b"\x00" * 64)
    with pytest.raises(et.EchoNetPreparationError, match=r"every video of split 'val' \(1\) is unreadable"):
        et.prepare_echonet(root, tmp_path / "tfds")
    with pytest.raises(et.EchoNetNotPreparedError, match="run prepare_echonet"):
        et.load_echonet(tmp_path / "tfds", root)


def test_tfds_bad_source_errors_before_decoding(tmp_path):
    with pytest.raises(FileNotFoundError, match="folder not found"):
        et.prepare_echonet(tmp_path / "missing", tmp_path / "tfds")
    root = write_layout(tmp_path / "echo", num_frames=(100, 100, 100), ef=[50.0, float("nan"), 60.0])
    with pytest.raises(reader.EchoNetLayoutError, match="0XVID0001"):
        et.prepare_echonet(root, tmp_path / "tfds")
    with pytest.raises(FileNotFoundError, match="no prepared EchoNet-Dynamic dataset under"):
        et.load_echonet(tmp_path / "tfds")


# ----------------------------------------------------------------------------- channels, identity, reports


def test_tfds_stores_rgb_channels_or_luma_keyed_by_channels(tmp_path, caplog):
    root = write_layout(tmp_path / "echo", num_frames=(50, 60, 70), colour=True)
    expected = read_video(root / "Videos" / "0XVID0001.avi", color=True).frames
    np.testing.assert_array_equal(expected, colour_frames(1, 60))  # the colour AVI round-trips exactly
    rgb = {}
    for fmt in ("raw", "png"):
        builder = et.prepare_echonet(root, tmp_path / "tfds", frame_format=fmt)
        assert et.channels(builder) == 3
        ex = next(iter(et.tfds.as_numpy(builder.as_dataset(split="val"))))
        frames = (
            ex["frames"] if fmt == "png" else np.frombuffer(ex["frames"], np.uint8).reshape(60, 112, 112, 3)
        )
        np.testing.assert_array_equal(frames, expected)  # R, G, B in RGB order
        rgb[fmt] = builder
    with caplog.at_level("INFO"):
        gray = et.prepare_echonet(root, tmp_path / "tfds", channels=1)
    assert et.channels(gray) == 1 and gray.data_dir != rgb["raw"].data_dir  # never reused across channels
    ex = next(iter(et.tfds.as_numpy(gray.as_dataset(split="val"))))
    luma = np.frombuffer(ex["frames"], np.uint8).reshape(60, 112, 112)
    np.testing.assert_array_equal(luma, read_video(root / "Videos" / "0XVID0001.avi").frames)
    report = json.loads((Path(gray.data_dir) / et.REPORT_NAME).read_text())
    assert report["colour_videos_stored_as_luma"] == ["0XVID0000", "0XVID0001", "0XVID0002"]
    assert Path(et.load_echonet(tmp_path / "tfds", root, channels=1).data_dir) == Path(gray.data_dir)
    with pytest.raises(et.EchoNetNotPreparedError, match="channels=1"):
        et.load_echonet(tmp_path / "tfds2", root, channels=1)


def test_edited_video_is_noticed_and_prepared_again(tmp_path, caplog):
    root = write_layout(tmp_path / "echo", num_frames=(50, 60, 70, 80))
    first = et.prepare_echonet(root, tmp_path / "tfds")
    assert et.prepare_echonet(root, tmp_path / "tfds").data_dir == first.data_dir  # unchanged: reused
    (root / "Videos" / "0XVID0003.avi").write_bytes(b"")  # the user empties a video
    with pytest.raises(
        et.EchoNetNotPreparedError, match=r"1 video file\(s\) changed: 0XVID0003.avi \(size \d+ -> 0"
    ):
        et.load_echonet(tmp_path / "tfds", root)
    with caplog.at_level("WARNING"):
        second = et.prepare_echonet(root, tmp_path / "tfds")
    assert second.data_dir != first.data_dir
    assert "0XVID0003.avi (size" in caplog.text and "may be deleted" in caplog.text
    assert set(et.split_videos(second, "train")) == {"0XVID0000"}  # the emptied video is now skipped
    assert [s["filename"] for s in second.info.metadata["skipped"]["train"]] == ["0XVID0003"]


def test_same_size_edit_caught_by_mtime_and_content_hash(tmp_path):
    root = write_layout(tmp_path / "echo", num_frames=(50, 60, 70))
    path = root / "Videos" / "0XVID0002.avi"
    stat_key = et.config_for(root).name
    hash_key = et.config_for(root, hash_videos=True).name
    assert stat_key != hash_key
    data = bytearray(path.read_bytes())
    data[-100] ^= 0xFF  # same size, other content
    before = path.stat()
    path.write_bytes(bytes(data))
    assert et.config_for(root).name != stat_key  # new modification time
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))  # edit hidden from size and mtime ...
    assert et.config_for(root).name == stat_key
    assert et.config_for(root, hash_videos=True).name != hash_key  # ... but not from the content hash
    old = et.config_for(root, hash_videos=True).identity
    path.write_bytes(bytes(data[:-1]))
    assert et.describe_changes(old, et.source_identity(root.resolve(), True)) == [
        f"1 video file(s) changed: 0XVID0002.avi (size {len(data)} -> {len(data) - 1} bytes)"
    ]


def test_truncated_video_reported_kept_or_dropped(tmp_path, caplog):
    root = write_layout(tmp_path / "echo", num_frames=(50, 60, 70, 80))
    path = root / "Videos" / "0XVID0003.avi"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # the header still announces 80 frames
    decoded = read_video(path).num_frames
    assert 0 < decoded < 80
    with caplog.at_level("WARNING"):
        kept = et.prepare_echonet(root, tmp_path / "tfds")
    assert et.split_videos(kept, "train") == {"0XVID0000": 50, "0XVID0003": decoded}  # official: kept
    report = json.loads((Path(kept.data_dir) / et.REPORT_NAME).read_text())
    assert report["num_truncated"] == 1 and report["truncated_are"] == "kept"
    assert report["truncated"]["train"] == [
        {"filename": "0XVID0003", "path": str(path), "header_frames": 80, "decoded_frames": decoded}
    ]
    assert "1 video(s) decode fewer frames than their header announces" in caplog.text
    dropped = et.prepare_echonet(root, tmp_path / "tfds", drop_truncated=True)
    assert dropped.data_dir != kept.data_dir
    assert et.split_videos(dropped, "train") == {"0XVID0000": 50}
    report = json.loads((Path(dropped.data_dir) / et.REPORT_NAME).read_text())
    assert report["num_truncated"] == 1 and report["truncated_are"] == "dropped"


def test_frame_size_mismatch_names_the_odd_video_and_the_majority(tmp_path):
    root = write_layout(tmp_path / "echo", num_frames=(50, 60, 70, 80, 90))
    # The odd one is listed first in FileList.csv: the majority, not the first video, sets the size.
    write_video(root / "Videos" / "0XVID0000.avi", video_frames(0, 50, size=128), fps=50.0)
    with pytest.raises(et.EchoNetPreparationError) as err:
        et.prepare_echonet(root, tmp_path / "tfds")
    message = str(err.value)
    assert "1 video(s) differ from the frame size of the other 4 (112x112" in message
    assert "0XVID0000.avi (128x128)" in message
    assert not any(f"0XVID000{i}" in message for i in range(1, 5))
    assert isinstance(err.value, DataError)


def test_describe_changes_names_every_kind_of_change():
    old = {"filelist": "a", "tracings": None, "videos": {"x.avi": [10, 5], "y.avi": [10, 5], "z.avi": [3, 1]}}
    new = {"filelist": "b", "tracings": "t", "videos": {"x.avi": [10, 6], "y.avi": None, "w.avi": [1, 1]}}
    assert et.describe_changes(old, new) == [
        "FileList.csv edited",
        "VolumeTracings.csv added",
        "2 video file(s) changed: x.avi (same size, modified time), y.avi (deleted)",
        "1 video(s) newly listed: w.avi",
        "1 video(s) no longer listed: z.avi",
    ]
    assert et.describe_changes(old, old) == []


# ----------------------------------------------------------------------------- grey videos stored once


def test_grey_videos_stored_once_and_colour_videos_kept_rgb(tmp_path, caplog):
    # 0XVID0000 train grey, 0001 val colour, 0002 test grey, 0003 train colour.
    root = write_layout(tmp_path / "echo", num_frames=(50, 60, 70, 80), colour_videos=(1, 3))
    decoded = {p.stem: read_video(p, color=True).frames for p in sorted((root / "Videos").glob("*.avi"))}
    grey = {n for n, f in decoded.items() if et.channels_equal(f)}
    assert grey == {"0XVID0000", "0XVID0002"}
    with caplog.at_level("INFO"):
        builder = et.prepare_echonet(root, tmp_path / "tfds")
    assert et.channels(builder) == 3 and et.grey_stored_once(builder)
    assert Path(builder.data_dir).name == "1.2.0"  # a new layout, a new version: 1.1.0 sets are not read
    stored = {
        ex["filename"].decode(): ex
        for split in ("train", "val", "test")
        for ex in et.tfds.as_numpy(et.split_dataset(builder, split))
    }
    for name, frames in decoded.items():
        c = 1 if name in grey else 3
        assert stored[name]["channels"] == c
        raw = np.frombuffer(stored[name]["frames"], np.uint8)
        assert raw.size == frames.size // 3 * c  # a grey video takes a third of the bytes
        np.testing.assert_array_equal(raw.reshape(*frames.shape[:3], c), frames[..., :c])
    report = json.loads((Path(builder.data_dir) / et.REPORT_NAME).read_text())
    assert report["num_videos_stored_with_one_channel"] == {"train": 1, "val": 0, "test": 1}
    assert report["colour_videos_stored_as_luma"] == []
    assert "EchoNet train: 1 of 2 videos are grey (three equal channels) and stored once" in caplog.text
    # collapse_grey=False keeps three channels for every video: another prepared dataset.
    full = et.prepare_echonet(root, tmp_path / "tfds", collapse_grey=False)
    assert full.data_dir != builder.data_dir and not et.grey_stored_once(full)
    ex = next(iter(et.tfds.as_numpy(et.split_dataset(full, "test"))))
    assert ex["channels"] == 3
    np.testing.assert_array_equal(
        np.frombuffer(ex["frames"], np.uint8).reshape(decoded["0XVID0002"].shape), decoded["0XVID0002"]
    )
    # PNG: a grey video's one-channel PNGs decode to its three equal channels in plain TFDS reading.
    png = et.prepare_echonet(root, tmp_path / "tfds", frame_format="png")
    for ex in et.tfds.as_numpy(png.as_dataset(split="train")):
        name = ex["filename"].decode()
        assert ex["channels"] == (1 if name in grey else 3)
        np.testing.assert_array_equal(ex["frames"], decoded[name])


# ----------------------------------------------------------------------------- shared data, locks


def test_second_preparation_waits_for_the_first_and_reuses_it(tmp_path, caplog, monkeypatch):
    root = write_layout(tmp_path / "echo", num_frames=(50, 60, 70))
    decoded, started, go = [], threading.Event(), threading.Event()
    load = et._load

    def slow_load(path, options):  # the first preparation holds its lock until `go`
        decoded.append(path.name)
        started.set()
        assert go.wait(60)
        return load(path, options)

    monkeypatch.setattr(et, "_load", slow_load)
    with ThreadPoolExecutor(2) as pool, caplog.at_level("WARNING"):
        first = pool.submit(et.prepare_echonet, root, tmp_path / "tfds", workers=1)
        assert started.wait(60)
        second = pool.submit(et.prepare_echonet, root, tmp_path / "tfds", workers=1)
        for _ in range(600):
            if "is being prepared by another process" in caplog.text:
                break
            time.sleep(0.05)
        go.set()
        b1, b2 = first.result(120), second.result(120)
    assert "is being prepared by another process" in caplog.text
    assert f"pid {os.getpid()} on host" in caplog.text  # names whom it waits for
    assert b1.data_dir == b2.data_dir
    assert sorted(decoded) == ["0XVID0000.avi", "0XVID0001.avi", "0XVID0002.avi"]  # decoded once, reused
    assert et.split_videos(b2, "val") == {"0XVID0001": 60}


def test_preparation_killed_half_way_leaves_nothing_trusted(tmp_path, caplog):
    root = write_layout(tmp_path / "echo", num_frames=(50, 60, 70, 80))
    data_dir = tmp_path / "tfds"
    code = f"""
import sys, time
from coreecho_jax.data.echonet import echonet_tfds as et
load = et._load
def stuck(path, options):
    out = load(path, options)
    print("decoded", flush=True)
    time.sleep(600)
    return out
et._load = stuck
et.prepare_echonet({str(root)!r}, {str(data_dir)!r}, workers=1)
"""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.Popen(
        [sys.executable, "-c", code], cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
    )
    try:
        lines = iter(proc.stdout.readline, b"")  # TFDS prints its progress lines too
        assert any(line.strip() == b"decoded" for line in lines)  # half-way: one video decoded
    finally:
        proc.kill()
        proc.wait()
    config = et.config_for(root)
    leftovers = list((data_dir / et.DATASET_NAME / config.name).glob("incomplete.*"))
    assert len(leftovers) == 1
    with pytest.raises(et.EchoNetNotPreparedError, match="no prepared EchoNet-Dynamic dataset"):
        et.load_echonet(data_dir, root)
    with caplog.at_level("WARNING"):
        builder = et.prepare_echonet(root, data_dir)
    assert f"by pid {proc.pid} on host" in caplog.text and "ended without finishing" in caplog.text
    assert "deleted 1 unfinished preparation folder" in caplog.text
    assert not leftovers[0].exists()
    assert et.split_videos(builder, "train") == {"0XVID0000": 50, "0XVID0003": 80}


def test_unwritable_data_dir_is_a_clear_error(tmp_path):
    root = write_layout(tmp_path / "echo", num_frames=(50, 60, 70))
    (tmp_path / "a_file").write_text("")
    with pytest.raises(
        et.EchoNetPreparationError, match=r"cannot take the preparation lock.*COREECHO_DATA_DIR"
    ):
        et.prepare_echonet(root, tmp_path / "a_file" / "tfds")
