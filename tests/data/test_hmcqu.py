"""Tests for the HMC-QU reader (coreecho_jax.data.transfer.hmcqu): the shipped folds, tolerant sheet columns,
synthetic downloads, seeded stratified folds, and each kind of bad input."""

from __future__ import annotations

import csv
import dataclasses
import json
import shutil
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import openpyxl
import pytest

from configs import hmcqu, hmcqu_demo
from coreecho_jax import cli
from coreecho_jax.data.synthetic.hmcqu import FOLD_FILE, HmcQuSyntheticConfig, write_hmcqu_dataset
from coreecho_jax.data.transfer.folds import stratified_folds
from coreecho_jax.data.transfer.hmcqu import (
    A4C_SEGMENT_COLUMNS,
    SHIPPED_FOLDS,
    HmcQuDataset,
    HmcQuError,
    HmcQuRecord,
    read_fold_file,
    read_hmcqu,
    read_sheet,
)
from coreecho_jax.errors import ConfigError, DataError
from coreecho_jax.transfer import data as transfer_sets
from tests.data.test_cycles import ref21_clip

SMALL = HmcQuSyntheticConfig(
    n_videos=10,
    seed=4,
    size=32,
    height=40,
    width=56,
    min_frames=24,
    max_frames=30,
    n_folds=3,
    mask_fraction=0.8,
)


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return write_hmcqu_dataset(tmp_path_factory.mktemp("hmcqu") / "one_row", SMALL)


def _shipped_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _dataset_from_fold_file(path: Path, subset: str) -> HmcQuDataset:
    """A dataset of the fold file's own videos (no files: only names and labels matter for folds)."""
    rows = _shipped_rows(path)
    records = tuple(
        HmcQuRecord(
            r["name"],
            Path(r["name"] + ".avi"),
            {s: r[s] == "MI" for s in A4C_SEGMENT_COLUMNS},
            1,
            2,
            True,
            i + 2,
        )
        for i, r in enumerate(rows)
    )
    return HmcQuDataset(Path("."), "A4C", subset, records, (), {}, Path("A4C.xlsx"), Path("."))


def test_shipped_folds_are_the_papers():
    ds = _dataset_from_fold_file(SHIPPED_FOLDS["masks"], "masks")
    assert len(ds) == 109 and sum(r.mi for r in ds) == 72
    folds = ds.folds()
    assert [len(f.test) for f in folds] == [23, 23, 21, 21, 21]
    assert [sum(ds[n].mi for n in f.test) for f in folds] == [15, 15, 14, 14, 14]
    assert sorted(sum((f.test for f in folds), ())) == sorted(r.echo for r in ds)
    assert ds["ES0001 _4CH_1"].echo == "ES0001 _4CH_1"
    with pytest.raises(KeyError, match="ES0001_4CH_1"):
        ds["ES0001_4CH_1"]  # the space is part of the name
    for f in folds:
        assert set(f.train) == {r.echo for r in ds} - set(f.test) and f.val == ()
    assert "ES0001 _4CH_1" in folds[0].test  # names keep their space
    # the 162-video file agrees with the 109-video one on the videos with masks
    full = read_fold_file(SHIPPED_FOLDS["all"])
    masked = read_fold_file(SHIPPED_FOLDS["masks"])
    assert len(full) == 162 and all(full[n] == k for n, k in masked.items())
    assert sum(r["available"] == "1" for r in _shipped_rows(SHIPPED_FOLDS["all"])) == 109


def test_shipped_folds_name_unknown_videos_is_an_error(root):
    ds = read_hmcqu(root)
    with pytest.raises(HmcQuError, match=r"hmcfoldm\.csv: names 10[0-9] videos not in A4C\.xlsx"):
        ds.folds()
    bad = root.parent / "bad_folds.csv"
    bad.write_text("name,Fold\nES9999 _4CH_1,1\n" + "".join(f"{r.echo},1\n" for r in ds))
    with pytest.raises(HmcQuError, match=r"bad_folds\.csv: names 1 videos .*ES9999 _4CH_1"):
        ds.folds(fold_file=bad)
    partial = root.parent / "partial_folds.csv"
    partial.write_text("name,Fold\n" + "".join(f"{r.echo},1\n" for r in list(ds)[1:]))
    with pytest.raises(HmcQuError, match="has no fold for 1 videos"):
        ds.folds(fold_file=partial)
    with pytest.raises(ConfigError, match="scheme"):
        ds.folds("random")


def test_synthetic_download_reads(root):
    ds = read_hmcqu(root)
    sheet_rows, columns = read_sheet(root / "A4C.xlsx")
    masked = [r for r in sheet_rows if r.has_mask]
    assert len(ds) == len(masked) == 8 and not ds.skipped
    assert {c.how for c in ds.columns.values()} == {"name"}
    assert list(ds.columns) == ["echo", "start", "end", "mask", *A4C_SEGMENT_COLUMNS]
    assert {r.mi for r in ds} == {True, False}
    for rec in ds:
        assert " " in rec.echo and rec.video.name == f"{rec.echo}.avi"
        assert sum(rec.segments.values()) == (1 if rec.mi else 0)
        cycle = rec.cycle()
        assert cycle.dtype == np.uint8 and cycle.shape == (rec.end_frame - rec.start_frame + 1, 40, 56)
    assert len(read_hmcqu(root, subset="all")) == 10
    folds = ds.folds(fold_file=root / FOLD_FILE)
    assert sorted(sum((f.test for f in folds), ())) == sorted(r.echo for r in ds)
    assert "8 videos read" in ds.report() and "by name" in ds.report()


def test_two_row_header_release(tmp_path):
    root = write_hmcqu_dataset(tmp_path / "two_rows", SMALL, header="two_rows")
    ds = read_hmcqu(root)
    assert ds.columns["start"].header == "One cardiac-cycle frames / Reference Frame"
    assert ds.columns["end"].header == "End of Cycle"
    one = read_sheet(write_hmcqu_dataset(tmp_path / "one_row", SMALL) / "A4C.xlsx")[0]
    two = read_sheet(root / "A4C.xlsx")[0]
    strip = lambda rows: [(r.echo, r.segments, r.start_frame, r.end_frame, r.has_mask) for r in rows]
    assert strip(one) == strip(two) and two[0].row == 3


def _write_sheet(path: Path, header: list | None, rows: list[list]) -> Path:
    book = openpyxl.Workbook()
    sheet = book.active
    if header is not None:
        sheet.append(header)
    for r in rows:
        sheet.append(r)
    book.save(path)
    return path


ROW = ["ES0001 _4CH_1", "MI", "non-MI", "non-MI", "non-MI", "non-MI", "non-MI", 3, 20, "ü"]


def test_tolerant_names_and_position_fallback(tmp_path):
    header = [
        "Echo",
        "Seg 1",
        "seg2",
        "SEG 3",
        "SEG5",
        "SEG6",
        "Segment 7",
        "Start frame",
        "End frame",
        "Mask available",
    ]
    rows, cols = read_sheet(_write_sheet(tmp_path / "a.xlsx", header, [ROW]))
    assert {k: c.index for k, c in cols.items()} == {
        "echo": 0,
        "start": 7,
        "end": 8,
        "mask": 9,
        "SEG1": 1,
        "SEG2": 2,
        "SEG3": 3,
        "SEG5": 4,
        "SEG6": 5,
        "SEG7": 6,
    }
    assert (rows[0].segments["SEG1"], rows[0].start_frame, rows[0].end_frame, rows[0].has_mask) == (
        True,
        3,
        20,
        True,
    )
    rows, cols = read_sheet(
        _write_sheet(tmp_path / "b.xlsx", None, [ROW, ["ES0002 _4CH_1", *ROW[1:-1], None]])
    )
    assert {c.how for c in cols.values()} == {"position"} and list(cols)[:4] == [
        "echo",
        "start",
        "end",
        "mask",
    ]
    assert [r.has_mask for r in rows] == [True, False] and rows[0].segments == dict.fromkeys(
        A4C_SEGMENT_COLUMNS, False
    ) | {"SEG1": True}


def test_sheet_missing_a_needed_column(tmp_path):
    header = ["ECHO", *A4C_SEGMENT_COLUMNS]
    with pytest.raises(HmcQuError, match=r"c\.xlsx: missing column\(s\) \['start', 'end'\]"):
        read_sheet(_write_sheet(tmp_path / "c.xlsx", header, [ROW[:7]]))
    with pytest.raises(HmcQuError, match="not a readable xlsx"):
        read_sheet(_write_bytes(tmp_path / "d.xlsx"))
    with pytest.raises(HmcQuError, match="listed twice"):
        read_sheet(
            _write_sheet(
                tmp_path / "e.xlsx", ["ECHO", *A4C_SEGMENT_COLUMNS, "start", "end", "mask"], [ROW, ROW]
            )
        )


def _write_bytes(path: Path) -> Path:
    path.write_bytes(b"not a workbook")
    return path


def _copy(root: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "copy"
    shutil.copytree(root, dst)
    return dst


def _set_cell(xlsx: Path, row: int, column: int, value) -> None:
    book = openpyxl.load_workbook(xlsx)
    book.active.cell(row=row, column=column, value=value)
    book.save(xlsx)


def test_video_missing_cycle_outside_and_bad_value_are_skipped_and_listed(root, tmp_path):
    copy = _copy(root, tmp_path)
    ds = read_hmcqu(copy)
    a, b, c = list(ds)[:3]
    (copy / "HMC-QU" / "A4C" / f"{a.echo}.avi").unlink()
    _set_cell(copy / "A4C.xlsx", b.row, 9, 999)  # end of cycle beyond the video
    _set_cell(copy / "A4C.xlsx", c.row, 2, "maybe")  # SEG1 neither MI nor non-MI
    ds = read_hmcqu(copy)
    reasons = {s.name: s.reason for s in ds.skipped}
    assert set(reasons) == {a.echo, b.echo, c.echo} and len(ds) == 5
    assert f"ECHO id {a.echo!r} has no video" in reasons[a.echo]
    assert "lies outside the" in reasons[b.echo] and "999" in reasons[b.echo]
    assert "expected MI or non-MI, got 'maybe'" in reasons[c.echo]
    assert all(s.name in ds.report() for s in ds.skipped)
    # skipped videos leave the folds; the others keep theirs
    folds = ds.folds(fold_file=copy / FOLD_FILE)
    assert sorted(sum((f.test for f in folds), ())) == sorted(r.echo for r in ds)
    with pytest.raises(HmcQuError, match="has no video"):
        read_hmcqu(copy, on_error="raise")
    # the decoded frames are checked too
    late = HmcQuRecord(**{**ds.records[0].__dict__, "end_frame": 999})
    with pytest.raises(HmcQuError, match="lies outside its"):
        late.cycle()


def test_layout_errors(root, tmp_path):
    with pytest.raises(HmcQuError, match="root folder not found"):
        read_hmcqu(tmp_path / "absent")
    (tmp_path / "empty").mkdir()
    with pytest.raises(HmcQuError, match="no label sheet"):
        read_hmcqu(tmp_path / "empty")
    with pytest.raises(ConfigError, match="subset"):
        read_hmcqu(root, subset="masked")
    no_mask = _write_sheet(tmp_path / "m.xlsx", ["ECHO", *A4C_SEGMENT_COLUMNS, "start", "end"], [ROW[:9]])
    with pytest.raises(HmcQuError, match="no mask-availability column"):
        read_hmcqu(root, sheet=no_mask)
    ds = read_hmcqu(root, sheet=no_mask, subset="all")
    assert [(r.echo, r.has_mask, r.mi) for r in ds] == [(ROW[0], False, True)]


def test_stratified_folds_balanced_and_seeded():
    names = [f"v{i:03d}" for i in range(109)]
    labels = [1] * 72 + [0] * 37
    folds = stratified_folds(names, labels, 5, seed=0)
    assert sorted(len(f.test) for f in folds) == [21, 22, 22, 22, 22]
    per_class = [Counter(labels[int(n[1:])] for n in f.test) for f in folds]
    assert max(c[1] for c in per_class) - min(c[1] for c in per_class) <= 1
    assert max(c[0] for c in per_class) - min(c[0] for c in per_class) <= 1
    assert sorted(sum((f.test for f in folds), ())) == names
    assert stratified_folds(names, labels, 5, seed=0) == folds
    assert stratified_folds(names, labels, 5, seed=1) != folds
    with pytest.raises(DataError, match="labels"):
        stratified_folds(names, labels[:-1], 5, seed=0)


# ------------------------------------------------------------------------------ [21]'s preprocessing


def test_ref21_frame_indices_exclude_the_end_frame_and_read_es00071_at_every_other_frame():
    rec = HmcQuRecord("ES0001 _4CH_1", Path("ES0001 _4CH_1.avi"), {}, 3, 20, True, 2)
    assert rec.frame_indices("inclusive").tolist() == list(range(2, 20))  # frames 3..20, 1-based
    assert rec.frame_indices("ref21").tolist() == list(range(2, 19))  # cycle.py: start - 1 + i, i < 17
    # [21]'s hmcfold.csv row "ES00071 N_4CH_3, ..., 1, 73": 72 - 1 frames counted, every other one read
    quirk = dataclasses.replace(rec, echo="ES00071 N_4CH_3", start_frame=1, end_frame=73)
    assert (
        quirk.frame_indices("ref21").tolist() == list(range(0, 71, 2))
        and len(quirk.frame_indices("ref21")) == 36
    )
    assert quirk.frame_indices("inclusive").tolist() == list(range(73))
    odd = dataclasses.replace(quirk, start_frame=5, end_frame=10)  # length 5 - 1 = 4: i = 0, 2
    assert odd.frame_indices("ref21").tolist() == [4, 6]
    with pytest.raises(ConfigError, match="data.cycle_frames must be one of"):
        rec.frame_indices("exclusive")


def ref21_read(video: Path, name: str, start: int, end: int) -> list[np.ndarray]:
    """[21]'s frame reading, as its ``mi/a4c/cycle.py`` does it: seek and read with OpenCV (BGR)."""
    length, step = end - start, 1
    if "ES00071" in name:
        step, length = 2, length - 1
    cap = cv2.VideoCapture(str(video))
    frames = []
    for i in range(0, length, step):
        cap.set(1, start + i - 1)
        ok, frame = cap.read()
        assert ok
        frames.append(frame)
    cap.release()
    return frames


def test_prepared_clips_are_ref21s_cycle_py(root, tmp_path):
    copy = _copy(root, tmp_path)
    renamed = read_hmcqu(copy, subset="all").records[1]
    quirk = "ES00071 N_4CH_3"  # [21] reads this recording at every other frame
    (copy / "HMC-QU" / "A4C" / f"{renamed.echo}.avi").rename(copy / "HMC-QU" / "A4C" / f"{quirk}.avi")
    _set_cell(copy / "A4C.xlsx", renamed.row, 1, quirk)
    c = hmcqu.get_config()
    c.data.root = str(copy)
    c.data.subset, c.data.folds, c.data.n_folds = "all", "stratified", 2
    prepared = transfer_sets.prepare("hmcqu", c.data, tmp_path / "work", progress=False)
    assert prepared.clips.shape == (10, 12, 224, 224) and prepared.clips.dtype == np.float32
    ds = read_hmcqu(copy, subset="all")
    for name, clip, count in zip(prepared.names, prepared.clips, prepared.source_frames):
        r = ds[name]
        frames = ref21_read(r.video, name, r.start_frame, r.end_frame)
        assert (
            count
            == len(frames)
            == (
                len(range(0, r.end_frame - r.start_frame - 1, 2))
                if name == quirk
                else r.end_frame - r.start_frame
            )
        )
        np.testing.assert_allclose(clip / 255, ref21_clip(frames), atol=5e-6, err_msg=name)


def _delete_column(xlsx: Path, header: str) -> None:
    book = openpyxl.load_workbook(xlsx)
    sheet = book.active
    sheet.delete_cols(next(c.column for c in sheet[1] if c.value == header))
    book.save(xlsx)


def test_a_deleted_segment_or_end_column_is_named_not_read_from_its_neighbour(root, tmp_path):
    seg = _copy(root, tmp_path / "seg")
    _delete_column(seg / "A4C.xlsx", "SEG3")
    with pytest.raises(HmcQuError, match=r"A4C\.xlsx: missing column\(s\) \['SEG3'\] \(SEG3: MI / non-MI\)"):
        read_hmcqu(seg)
    end = _copy(root, tmp_path / "end")
    _delete_column(end / "A4C.xlsx", "End of Cycle")
    with pytest.raises(
        HmcQuError, match=r"A4C\.xlsx: missing column\(s\) \['end'\] \(end: end frame \(End of Cycle\)\)"
    ):
        read_hmcqu(end)
    # an unknown header at the end column's place is read by position, and the report says so
    other = _copy(root, tmp_path / "other")
    _set_cell(other / "A4C.xlsx", 1, 9, "Finish")
    ds = read_hmcqu(other)
    assert len(ds) == 8 and ds.column_mapping()["end"] == "column 9 'Finish' (by position)"
    _set_cell(other / "A4C.xlsx", ds.records[0].row, 9, "late")
    reason = read_hmcqu(other).skipped[0].reason
    assert reason.endswith(
        "end frame (column 9 'Finish', taken by position: no header names it): expected a frame number, got 'late'"
    )


def test_the_column_mapping_is_in_the_report_and_the_data_mode_output(root, tmp_path, capsys):
    c = hmcqu_demo.get_config("quick")
    c.data.synthetic.enabled = False
    c.data.root = str(root)
    c.data.fold_file = str(root / FOLD_FILE)
    cli.run("data", c, str(tmp_path))
    mapping = {
        "echo": "column 1 'ECHO' (by name)",
        "start": "column 8 'Reference Frame' (by name)",
        "end": "column 9 'End of Cycle' (by name)",
        "mask": "column 10 'LV Wall Ground-truth Segmentation Masks' (by name)",
        **{s: f"column {k + 2} '{s}' (by name)" for k, s in enumerate(A4C_SEGMENT_COLUMNS)},
    }
    assert json.loads((tmp_path / transfer_sets.REPORT_FILE).read_text())["columns"] == mapping
    printed = capsys.readouterr().out
    assert "columns: " + ", ".join(f"{k}={v}" for k, v in mapping.items()) in printed.splitlines()


def test_a_workdir_of_the_old_protocol_names_the_change_and_resumes_with_the_old_fields():
    from coreecho_jax.train.workdir import config_differences, config_record

    new = config_record(hmcqu.get_config())
    old = json.loads(json.dumps(new))
    for field in ("spatial", "time_sampling", "cycle_frames"):
        del old["data"][field]  # a config.json written before these fields existed
    old["data"].update(frames=16, image_size=112)
    assert config_differences(old, new) == {
        "data.cycle_frames": ("inclusive", "ref21"),
        "data.frames": (16, 12),
        "data.image_size": (112, 224),
        "data.spatial": ("area", "ref21"),
        "data.time_sampling": ("ends", "centres"),
    }
    c = hmcqu.get_config()  # the old protocol's fields, as the config's docstring gives them
    c.data.update(frames=16, image_size=112, cycle_frames="inclusive", spatial="area", time_sampling="ends")
    assert config_differences(old, config_record(c)) == {}
