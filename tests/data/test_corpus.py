"""Tests for the echo-corpus source (coreecho_jax.data.corpus), its DICOM facts (data.video.dicom) and the
synthetic DICOM corpus writer (data.synthetic.dicom_corpus), on the in-process path. The Beam path: test_beam.py.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pydicom
import pytest
import tensorflow_datasets as tfds
from pydicom.dataset import Dataset
from pydicom.pixels import get_decoder
from pydicom.uid import (
    MPEG2MPML,
    ComprehensiveSRStorage,
    ExplicitVRLittleEndian,
    JPEGBaseline8Bit,
    JPEGLSLossless,
    RLELossless,
    XRayAngiographicImageStorage,
)

from configs import demo
from coreecho_jax import cli
from coreecho_jax.data import clips
from coreecho_jax.data.corpus import corpus_tfds as ct
from coreecho_jax.data.corpus import reading, sources
from coreecho_jax.data.corpus.guard import GuardedWorker, GuardStartError, TaskFailed
from coreecho_jax.data.echonet import echonet_tfds as et
from coreecho_jax.data.echonet import pipeline
from coreecho_jax.data.synthetic import dicom_corpus as synth
from coreecho_jax.data.video import dicom
from coreecho_jax.data.video.video_types import NotAnEchoVideoError, VideoReadError
from coreecho_jax.inference.video_clips import clips_for_video
from tests.data.test_video_io import make_dicom
from tests.paths import REPO

TASKS = "tests.data.guard_tasks"
#: A small corpus: 8 cines (one at 30 fps; JPEG, RGB and grey; every timing variant) and the 5 bad files.
SMALL = dict(
    n_files=8, seed=10, min_frames=24, max_frames=30, slow_fraction=0.2, jpeg_fraction=0.2, rgb_fraction=0.2
)


def read_all(builder, split: str = "corpus") -> list[dict]:
    return list(tfds.as_numpy(et.split_dataset(builder, split)))


def same_records(a: list[dict], b: list[dict]) -> bool:
    """Field by field and byte for byte (NaN labels compare equal), in storage order."""

    def raw(value) -> bytes:
        return np.asarray(value).tobytes() if not isinstance(value, bytes) else value

    return len(a) == len(b) and all(
        x.keys() == y.keys() and all(raw(x[k]) == raw(y[k]) for k in x) for x, y in zip(a, b)
    )


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return synth.write_dicom_corpus(tmp_path_factory.mktemp("corpus") / "src", **SMALL)


@pytest.fixture(scope="module")
def prepared(corpus, tmp_path_factory):
    return ct.prepare_corpus(corpus / synth.FILES_DIR, tmp_path_factory.mktemp("tfds"), workers=2)


# ----------------------------------------------------------------------------- DICOM facts


def test_timing_tags_in_order_and_their_disagreement_noted():
    ds = Dataset()
    ds.RecommendedDisplayFrameRate = 30
    ds.FrameTimeVector = [0.0, 20.0, 20.0]
    ds.FrameTime = 20.0
    ds.CineRate = 51
    candidates = dicom.dicom_fps_candidates(ds)
    assert list(candidates) == list(dicom.FPS_TAGS)  # every tag, in the order they are trusted
    assert dicom.dicom_fps(ds) == (pytest.approx(50.0), "FrameTime")
    assert dicom.fps_disagreement(ds) == (
        "the timing tags disagree (FrameTime 50.00 fps, CineRate 51.00 fps, RecommendedDisplayFrameRate "
        "30.00 fps, FrameTimeVector 50.00 fps); FrameTime wins: 50.00 fps"
    )
    del ds.RecommendedDisplayFrameRate
    assert dicom.fps_disagreement(ds) is None  # 50 vs 51: within 5%


def test_what_is_not_an_ultrasound_cine_is_named_from_the_header(tmp_path):
    """One header check for prediction and preparation (dicom.cine_facts); the UIDs kept for joins."""
    frames = np.zeros((4, 8, 8), np.uint8)
    uids = dict(StudyInstanceUID="1.2", SeriesInstanceUID="1.2.3")
    cine = make_dicom(tmp_path / "cine.dcm", frames, photometric="MONOCHROME2", FrameTime=20.0, **uids)
    facts = dicom.cine_facts(cine)
    assert dicom.cine_refusal(facts) is None
    assert (facts.study_uid, facts.series_uid, facts.sop_uid) == (
        "1.2",
        "1.2.3",
        pydicom.dcmread(cine).SOPInstanceUID,
    )
    assert (facts.sop_class, facts.modality, facts.num_frames) == (
        "Ultrasound Multi-frame Image Storage",
        "US",
        4,
    )
    assert (facts.transfer_syntax, facts.photometric_interpretation, facts.fps_note) == (
        ExplicitVRLittleEndian,
        "MONOCHROME2",
        None,
    )
    report = make_dicom(
        tmp_path / "sr.dcm",
        frames,
        photometric="MONOCHROME2",
        pixel_data=False,
        SOPClassUID=ComprehensiveSRStorage,
        Modality="SR",
    )
    with pytest.raises(
        NotAnEchoVideoError,
        match=r"sr.dcm: a DICOM Comprehensive SR Storage object without pixel data, not an echo cine$",
    ):
        dicom.cine_facts(report)
    angio = make_dicom(
        tmp_path / "xa.dcm",
        frames,
        photometric="MONOCHROME2",
        SOPClassUID=XRayAngiographicImageStorage,
        Modality="XA",
    )
    with pytest.raises(
        NotAnEchoVideoError,
        match=r"xa.dcm: a DICOM X-Ray Angiographic Image Storage object of Modality XA, not an ultrasound cine$",
    ):
        dicom.cine_facts(angio)
    cut = make_dicom(tmp_path / "cut.dcm", frames, photometric="MONOCHROME2", pixel_data=False)
    with pytest.raises(
        VideoReadError,
        match=r"cut.dcm: a DICOM Ultrasound Multi-frame Image Storage object without its pixel data: truncated",
    ):
        dicom.cine_facts(cut)
    (tmp_path / "junk.dcm").write_bytes(b"not a DICOM file at all" * 20)
    with pytest.raises(VideoReadError, match=r"junk.dcm: not a"):
        dicom.cine_facts(tmp_path / "junk.dcm")
    single = make_dicom(tmp_path / "one.dcm", frames[:1], photometric="MONOCHROME2")
    assert dicom.cine_facts(single).num_frames == 1  # a single frame is refused once decoded (a still image)


def test_decoders_of_this_install():
    """requirements.txt installs Pillow but none of pylibjpeg / pyjpegls / gdcm: JPEG Baseline decodes
    with Pillow, JPEG-LS is refused with the packages that would decode it; MPEG-2 goes to OpenCV's FFmpeg."""
    assert dicom.decoder_of(ExplicitVRLittleEndian) == ("pydicom", None)
    assert dicom.decoder_of(RLELossless)[1] is None
    assert dicom.decoder_of(JPEGBaseline8Bit) == ("pillow", None)
    assert dicom.decoder_of(MPEG2MPML) == (dicom.VIDEO_STREAM_DECODER, None)
    decoder, line = dicom.decoder_of(JPEGLSLossless)
    assert decoder is None
    assert line == (
        "transfer syntax JPEG-LS Lossless Image Compression (1.2.840.10008.1.2.4.80): no decoder installed; "
        "install " + "; ".join(get_decoder(JPEGLSLossless).missing_dependencies)
    )
    assert dicom.decoder_of("1.2.3.4.5") == (
        None,
        "transfer syntax 1.2.3.4.5 (1.2.3.4.5): pydicom has no decoder for it",
    )


def transfer_syntax_table() -> str:
    """The table docs/beam.md shows: every transfer syntax pydicom knows, and what decodes it here."""
    rows = ["| transfer syntax | UID | decoded by (requirements.txt's install) |", "| --- | --- | --- |"]
    for uid, name, decoder, reason in dicom.transfer_syntax_support():
        how = decoder or "not decoded: " + reason.split("): ", 1)[1]
        rows.append(f"| {name} | `{uid}` | {how} |")
    return "\n".join(rows)


def test_the_docs_table_of_transfer_syntaxes_is_what_this_install_decodes():
    page = (REPO / "docs" / "beam.md").read_text()
    shown = page.split("<!-- transfer-syntaxes:start -->\n", 1)[1].split("\n<!-- transfer-syntaxes:end -->")[
        0
    ]
    expected = transfer_syntax_table()
    assert shown == expected, "docs/beam.md's table should read:\n" + expected
    assert "| JPEG Baseline (Process 1) | `1.2.840.10008.1.2.4.50` | pillow |" in shown


# ----------------------------------------------------------------------------- sources


def test_a_tree_lists_dicom_and_video_files_by_relative_key(tmp_path):
    frames = np.zeros((3, 8, 8), np.uint8)
    (tmp_path / "p10").mkdir()
    make_dicom(tmp_path / "p10" / "b.dcm", frames, photometric="MONOCHROME2")
    make_dicom(tmp_path / "p10" / "noext", frames, photometric="MONOCHROME2")
    (tmp_path / "a.avi").write_bytes(b"x")
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / ".hidden.dcm").write_bytes(b"x")
    (tmp_path / ".cache").mkdir()
    (tmp_path / ".cache" / "c.dcm").write_bytes(b"x")
    listed = sources.list_corpus(tmp_path)
    assert [e.key for e in listed.entries] == ["a.avi", "p10/b.dcm", "p10/noext"]
    assert listed.ignored == ("notes.txt",)
    assert listed.splits == ["corpus"] and math.isnan(listed.entries[0].ef)
    before = listed.identity()
    (tmp_path / "a.avi").write_bytes(b"xy")
    assert sources.list_corpus(tmp_path).identity() != before


def test_a_path_with_no_dicom_or_video_is_one_line(tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(
        sources.CorpusSourceError,
        match=r"no DICOM or video file in this folder tree .*1 other file\(s\) found: notes.txt",
    ):
        sources.list_corpus(tmp_path)
    with pytest.raises(sources.CorpusSourceError, match="the corpus path does not exist"):
        sources.list_corpus(tmp_path / "missing")
    with pytest.raises(sources.CorpusSourceError, match="is neither a folder nor a manifest .csv"):
        sources.list_corpus(tmp_path / "notes.txt")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "file,ef\na.dcm,50\n",
            r"labels.csv: no 'path' column \(found \['file', 'ef'\]\); a manifest needs a 'path'",
        ),
        ("path,ef\na.dcm,high\n", r"labels.csv, line 2: column 'ef' must be a number or blank, got 'high'"),
        ("path\na.dcm\n\n ,\n", r"labels.csv, line 4: the 'path' column is blank"),
        ("path\na.dcm\nb.dcm\n./a.dcm\n", r"labels.csv: 1 path\(s\) listed more than once: a.dcm"),
        ("path,split\na.dcm,all\n", r"labels.csv, line 2: split 'all' must be letters"),
        ("path\n", r"labels.csv: the manifest lists no file"),
    ],
)
def test_a_bad_manifest_is_one_line(tmp_path, text, message):
    (tmp_path / "labels.csv").write_text(text)
    with pytest.raises(sources.CorpusSourceError, match=message):
        sources.list_corpus(tmp_path / "labels.csv")


def test_a_manifest_gives_labels_splits_and_keys(tmp_path):
    (tmp_path / "labels.csv").write_text(
        f"path,ef,split\nsub/b.dcm,55.5,Train\na.dcm,,\n{tmp_path.parent / 'x.dcm'},1,val\n"
    )
    listed = sources.list_corpus(tmp_path / "labels.csv")
    keys = [e.key for e in listed.entries]
    assert keys == sorted(["sub/b.dcm", "a.dcm", (tmp_path.parent / "x.dcm").as_posix()])
    by_key = {e.key: e for e in listed.entries}
    assert by_key["sub/b.dcm"].ef == 55.5 and by_key["sub/b.dcm"].split == "train"
    assert by_key["a.dcm"].split == "corpus" and math.isnan(by_key["a.dcm"].ef)
    assert by_key["sub/b.dcm"].path == str(tmp_path / "sub" / "b.dcm")
    assert listed.splits == ["corpus", "train", "val"]


# ----------------------------------------------------------------------------- the guard


def test_the_guard_answers_and_keeps_one_child():
    with GuardedWorker(f"{TASKS}:echo", timeout_s=30, memory_mb=256) as worker:
        first, payload = worker.run(text="ab", repeat=3)
        second, _ = worker.run(text="c")
        assert payload == b"ababab" and first["text"] == "ab"
        assert first["pid"] == second["pid"] and worker.starts == 1
        assert worker.memory_limited  # Linux: RLIMIT_AS is set


def test_a_task_that_hangs_is_stopped_after_the_time_limit():
    with GuardedWorker(f"{TASKS}:sleep", timeout_s=1.0, memory_mb=None) as worker:
        start = time.monotonic()
        with pytest.raises(
            TaskFailed, match=r"took longer than the time limit of 1 s per file; stopped"
        ) as info:
            worker.run(seconds=60)
        assert info.value.kind == "timeout" and time.monotonic() - start < 30
        assert worker.run(seconds=0)[0] == {"slept": 0}  # a fresh child
        assert worker.starts == 2


def test_a_task_that_eats_memory_or_dies_is_reported_and_the_worker_restarts():
    with GuardedWorker(f"{TASKS}:allocate", timeout_s=60, memory_mb=128) as worker:
        with pytest.raises(TaskFailed, match=r"ran out of memory \(over the worker's limit\)") as info:
            worker.run(mib=1024)
        assert info.value.kind == "memory"
        assert worker.run(mib=16)[0] == {"sum": 16}
    with GuardedWorker(f"{TASKS}:crash", timeout_s=60, memory_mb=128) as worker:
        with pytest.raises(TaskFailed, match=r"the decoding process died \(exit code 3\)") as info:
            worker.run()
        assert info.value.kind == "worker_died"
    with GuardedWorker(f"{TASKS}:fail", timeout_s=60, memory_mb=128) as worker:
        with pytest.raises(TaskFailed, match="ValueError: damaged header") as info:
            worker.run(message="damaged header")
        assert info.value.kind == "ValueError" and worker.starts == 1  # a raised error keeps the child


def test_a_guard_that_cannot_start_says_why():
    with pytest.raises(GuardStartError, match=r"did not start .*No module named 'tests.data.no_such_module'"):
        GuardedWorker("tests.data.no_such_module:task", timeout_s=5, memory_mb=64).run()


def test_the_reading_child_loads_no_tensorflow():
    with GuardedWorker(f"{TASKS}:tensorflow_modules", timeout_s=120, memory_mb=None) as worker:
        header, _ = worker.run()
    assert header == {"reading": True, "tensorflow": []}


# ----------------------------------------------------------------------------- one file


def test_a_file_is_prepared_as_prediction_prepares_it(corpus):
    """The stored video, fps and crop of a cine are those ``clips_for_video`` (predict) reads."""
    key = synth.layout(SMALL["n_files"], SMALL["seed"])[0]
    path = corpus / synth.FILES_DIR / key
    facts, payload = reading.read_corpus_file(str(path), 112, "auto", 3)
    frames = np.frombuffer(payload, np.uint8).reshape(facts["shape"])
    predicted = clips_for_video(demo.get_config(), path, k=2)
    np.testing.assert_array_equal(frames, predicted.video.frames)
    ds = pydicom.dcmread(path)
    assert facts["fps"] == pytest.approx(predicted.video.fps)
    assert (facts["fps"], facts["fps_source"]) == dicom.dicom_fps(ds)
    assert (facts["study_uid"], facts["series_uid"], facts["sop_uid"]) == (
        ds.StudyInstanceUID,
        ds.SeriesInstanceUID,
        ds.SOPInstanceUID,
    )
    size = synth.DicomCorpusConfig(**SMALL).size
    box = [synth.SIDE_COLUMNS, synth.BAR_ROWS, synth.SIDE_COLUMNS + size, synth.BAR_ROWS + size]
    assert facts["crop_mode"] == "region" and facts["crop_box"] == box
    assert facts["regions"] == [[*box, 1, 1]]
    assert facts["source_shape"] == [ds.NumberOfFrames, ds.Rows, ds.Columns]
    assert facts["transfer_syntax"] == ds.file_meta.TransferSyntaxUID
    assert facts["photometric_interpretation"] == ds.PhotometricInterpretation


def test_a_recording_far_from_the_training_rate_is_flagged(tmp_path):
    cfg = synth.DicomCorpusConfig(
        n_files=1, slow_fraction=1.0, jpeg_fraction=0.0, rgb_fraction=0.0, bad_files=False
    )
    path = tmp_path / "p10" / "slow.dcm"
    synth.write_cine(cfg, 0, "p10/p10000000/s50000000/slow.dcm", path)
    facts, _ = reading.read_corpus_file(str(path), 112, "auto", 1)
    assert (
        facts["fps"] == pytest.approx(30.0, abs=1e-6)
        and facts["fps_far"]
        and facts["shape"][1:] == [112, 112]
    )
    assert any("30.0 fps is far from the training data's ~50 fps" in n for n in facts["notes"])


def test_an_undecodable_transfer_syntax_is_refused_before_decoding(tmp_path):
    path = make_dicom(
        tmp_path / "ls.dcm",
        np.zeros((4, 8, 8), np.uint8),
        photometric="MONOCHROME2",
        encoded_frames=[b"\xff\xd8\xff\xd9"] * 4,
        transfer_syntax=JPEGLSLossless,
        Modality="US",
    )
    with pytest.raises(
        reading.CorpusFileError, match=r"JPEG-LS Lossless Image Compression .*: no decoder installed"
    ) as info:
        reading.read_corpus_file(str(path), 112, "auto", 3)
    assert info.value.kind == "no_decoder"


# ----------------------------------------------------------------------------- the synthetic corpus


def test_the_synthetic_corpus_is_in_the_mimic_layout_and_written_once(corpus):
    keys = synth.layout(SMALL["n_files"], SMALL["seed"])
    assert len(set(keys)) == SMALL["n_files"]
    for key in keys:
        subject_group, subject, study, name = key.split("/")
        assert subject_group == subject[:3] and len(subject) == 9 and subject[1:].isdigit()
        assert study[0] == "s" and name.startswith(study[1:] + "_") and name.endswith(".dcm")
    rows = (corpus / synth.LABELS).read_text().splitlines()
    assert rows[0] == "path,ef,edv,esv" and len(rows) == 1 + SMALL["n_files"] + len(synth.BAD_FILES)
    stamp = {p: p.stat().st_mtime_ns for p in corpus.rglob("*.dcm")}
    synth.write_dicom_corpus(corpus, **SMALL)  # idempotent: nothing rewritten
    assert {p: p.stat().st_mtime_ns for p in corpus.rglob("*.dcm")} == stamp


def test_the_synthetic_command_writes_a_dicom_corpus(tmp_path):
    argv = ["synthetic", "--dataset=dicom", f"--root={tmp_path / 'd'}", "--n=2", "--seed=4", "--size=32"]
    root = cli.parse([*argv, "--nobad_files"]).run()
    keys = synth.layout(2, 4)
    assert sorted(p.relative_to(root / synth.FILES_DIR).as_posix() for p in root.rglob("*.dcm")) == sorted(
        keys
    )
    assert pydicom.dcmread(root / synth.FILES_DIR / keys[0]).Rows == 32 + synth.BAR_ROWS
    with pytest.raises(
        cli.UsageError, match="--bad_files: a flag of --dataset=dicom, not of --dataset=hmcqu"
    ):
        cli.parse(["synthetic", "--dataset=hmcqu", f"--root={tmp_path / 'h'}", "--bad_files"]).run()


# ----------------------------------------------------------------------------- preparation


def test_a_corpus_prepares_with_its_report_and_uids(prepared, corpus):
    report = json.loads((Path(prepared.data_dir) / ct.REPORT_NAME).read_text())
    split = report["splits"]["corpus"]
    assert (report["num_files"], report["num_prepared"], report["num_refused"]) == (14, 8, 6)
    refused = {Path(r["key"]).name: r["kind"] for r in split["refused"]}
    assert refused == {
        "59999999_9001.dcm": "not_cine",
        "59999999_9002.dcm": "not_echo_loop",  # a single frame: a still image, as prediction says
        "59999999_9003.dcm": "unreadable",
        "59999999_9004.dcm": "unreadable",
        "59999999_9005.dcm": "not_echo_loop",
        "59999999_9006.dcm": "not_cine",  # another modality
    }
    assert all(r["reason"].startswith(r["path"] + ": ") for r in split["refused"])  # each names its file
    reasons = {Path(r["key"]).name: r["reason"].split(".dcm: ", 1)[1] for r in split["refused"]}
    assert reasons["59999999_9001.dcm"] == (
        "a DICOM Comprehensive SR Storage object without pixel data, not an echo cine"
    )
    assert reasons["59999999_9002.dcm"].startswith("a still image (1 frame), not an echo loop")
    assert (
        reasons["59999999_9003.dcm"]
        == "a DICOM file with neither a SOP class nor pixel data: truncated or damaged"
    )
    assert reasons["59999999_9004.dcm"] == "not a DICOM file (no 'DICM' magic at byte 128, no SOP class)"
    assert reasons["59999999_9006.dcm"] == (
        "a DICOM X-Ray Angiographic Image Storage object of Modality XA, not an ultrasound cine"
    )
    assert set(report["refused_kinds"]) >= {"not_cine", "unreadable", "timeout", "memory", "worker_died"}
    records = read_all(prepared)
    keys = [r["filename"].decode() for r in records]
    assert sorted(keys) == sorted(synth.layout(SMALL["n_files"], SMALL["seed"]))
    assert et.split_videos(prepared, "corpus") == {
        r["filename"].decode(): int(r["num_frames"]) for r in sorted(records, key=lambda r: r["filename"])
    }
    for record in records:
        ds = pydicom.dcmread(corpus / synth.FILES_DIR / record["filename"].decode(), stop_before_pixels=True)
        assert (
            record["sop_uid"].decode() == ds.SOPInstanceUID
            and record["study_uid"].decode() == ds.StudyInstanceUID
        )
        assert int(record["num_frames"]) == ds.NumberOfFrames  # never resampled
        assert len(record["frames"]) == int(record["num_frames"]) * 112 * 112 * int(record["channels"])
        assert math.isnan(record["ef"])
    slow = [r["filename"].decode() for r in records if r["fps_far"]]
    assert slow and sorted(slow) == split["fps_far_from_training"]
    assert all(np.isclose(r["fps"], synth.SLOW_FPS) for r in records if r["fps_far"])
    syntaxes = split["transfer_syntaxes"]
    assert set(syntaxes) == {
        "Explicit VR Little Endian (1.2.840.10008.1.2.1)",
        "JPEG Baseline (Process 1) (1.2.840.10008.1.2.4.50)",
    }
    assert sum(split["fps_sources"].values()) == 8
    assert set(split["fps_sources"]) == {"FrameTime", "CineRate", "RecommendedDisplayFrameRate"}
    assert sum("the timing tags disagree" in r["notes"].decode() for r in records) >= 1


def test_the_output_does_not_depend_on_the_worker_count_and_is_reused(prepared, corpus, tmp_path):
    one = ct.prepare_corpus(corpus / synth.FILES_DIR, tmp_path, workers=1)
    assert same_records(read_all(one), read_all(prepared))
    assert (Path(one.data_dir) / ct.REPORT_NAME).read_text() == (
        Path(prepared.data_dir) / ct.REPORT_NAME
    ).read_text()
    start = time.monotonic()
    again = ct.prepare_corpus(corpus / synth.FILES_DIR, tmp_path, workers=1)  # prepared: only opened
    assert again.data_dir == one.data_dir and time.monotonic() - start < 10
    assert ct.load_corpus(tmp_path, corpus / synth.FILES_DIR).data_dir == one.data_dir


def test_the_command_prepares_in_process_and_says_what_it_read(prepared, corpus, tmp_path, capsys):
    from coreecho_jax import cli

    source = corpus / synth.FILES_DIR
    assert cli.main(["prepare-corpus", f"--source={source}", f"--data_dir={tmp_path}", "--workers=1"]) == 0
    built = ct.load_corpus(tmp_path, source)
    report = json.loads((Path(built.data_dir) / ct.REPORT_NAME).read_text())
    assert report == json.loads((Path(prepared.data_dir) / ct.REPORT_NAME).read_text())
    said = capsys.readouterr()
    assert said.out.splitlines()[-1] == (
        f"{built.data_dir}: {report['num_prepared']} of {report['num_files']} files prepared, "
        f"{report['num_refused']} refused (reasons in {ct.REPORT_NAME})"
    )
    assert said.err.splitlines()[-1].startswith(f"wrote: {tmp_path}")


def test_the_command_s_bad_beam_options_are_one_line_before_any_work(corpus, tmp_path, capsys):
    from tests.test_cli import _one_error_line

    argv = ["prepare-corpus", f"--source={corpus / synth.FILES_DIR}", f"--data_dir={tmp_path / 'tfds'}"]
    assert _one_error_line([*argv, "--beam_options=--runer=FlinkRunner"], capsys) == (
        "Beam does not know the pipeline option --runer; check its spelling and your runner's options "
        "(docs/beam.md)"
    )
    assert _one_error_line([*argv, "--beam_options='--runner"], capsys) == (
        "--beam_options: No closing quotation (quote it as one shell word)"
    )
    assert not (tmp_path / "tfds").exists()


def test_a_preparation_killed_half_way_is_redone_without_duplicates(prepared, corpus, tmp_path, caplog):
    """Killed after some files were written: nothing is trusted, the rerun holds each file once."""
    data_dir = tmp_path / "tfds"
    code = f"""
import time
from coreecho_jax.data.corpus import corpus_tfds as ct
prepare = ct.prepare_file
done = []
def stuck(entry, options):
    out = prepare(entry, options)
    done.append(entry["key"])
    if len(done) == 3:
        print("three files", flush=True)
        time.sleep(600)
    return out
ct.prepare_file = stuck
ct.prepare_corpus({str(corpus / synth.FILES_DIR)!r}, {str(data_dir)!r}, workers=1)
"""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.Popen(
        [sys.executable, "-c", code], cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
    )
    try:
        assert any(line.strip() == b"three files" for line in iter(proc.stdout.readline, b""))
    finally:
        proc.kill()
        proc.wait()
    leftovers = list(data_dir.rglob("incomplete.*"))
    assert len(leftovers) == 1 and not list(data_dir.rglob("dataset_info.json"))
    with pytest.raises(ct.CorpusNotPreparedError, match="no prepared corpus for"):
        ct.load_corpus(data_dir, corpus / synth.FILES_DIR)
    with caplog.at_level("WARNING"):
        again = ct.prepare_corpus(corpus / synth.FILES_DIR, data_dir, workers=1)
    assert "deleted 1 unfinished preparation folder" in caplog.text and not leftovers[0].exists()
    records = read_all(again)
    assert len({r["filename"] for r in records}) == len(records) == SMALL["n_files"]
    assert same_records(records, read_all(prepared))


def test_a_manifest_corpus_keeps_labels_and_reports_a_missing_file(corpus, tmp_path):
    lines = (corpus / synth.LABELS).read_text().splitlines()
    manifest = tmp_path / "manifest.csv"
    rows = [f"{corpus / line.split(',', 1)[0]},{line.split(',', 1)[1]}" for line in lines[1:4]]
    manifest.write_text("path,ef,edv,esv\n" + "\n".join(rows) + f"\n{tmp_path / 'gone.dcm'},40,,\n")
    builder = ct.prepare_corpus(manifest, tmp_path / "tfds", workers=1)
    by_key = {r["filename"].decode(): r for r in read_all(builder)}
    assert len(by_key) == 3
    for line in lines[1:4]:
        path, ef, _, _ = line.split(",")
        assert by_key[(corpus / path).as_posix()]["ef"] == pytest.approx(float(ef), abs=1e-4)
    report = json.loads((Path(builder.data_dir) / ct.REPORT_NAME).read_text())
    (row,) = report["splits"]["corpus"]["refused"]
    assert row["kind"] == "not_found" and row["key"] == "gone.dcm"
    assert row["reason"] == f"{tmp_path / 'gone.dcm'}: file not found (expected a DICOM file)"


def test_the_prepared_corpus_feeds_the_evaluation_pipeline_as_prediction_does(prepared, corpus):
    config = demo.get_config()
    spec = clips.ClipSpec.from_config(config.data)
    videos = et.split_videos(prepared, "corpus")
    starts = {name: clips.even_starts(n, 2, spec) for name, n in videos.items()}
    batch = next(
        pipeline.as_numpy(pipeline.eval_dataset(prepared, "corpus", starts, spec=spec, batch_size=3))
    )
    assert batch["video"].shape == (3, 2, spec.frames, spec.image_size, spec.image_size, 3)
    for i in range(3):
        name = batch["filename"][i].decode()
        expected = clips_for_video(config, corpus / synth.FILES_DIR / name, k=2)
        np.testing.assert_array_equal(batch["starts"][i], expected.starts)
        np.testing.assert_allclose(batch["video"][i], expected.clips, rtol=0, atol=1e-4)


def test_limits_per_file_become_report_rows(tmp_path):
    """A decode over the memory budget is refused with its kind; the small cines are prepared."""
    cfg = synth.DicomCorpusConfig(n_files=2, seed=1, min_frames=24, max_frames=26, bad_files=False)
    for i, key in enumerate(synth.layout(2, 1)):
        synth.write_cine(cfg, i, key, tmp_path / "src" / key)
    frames = (np.arange(64 * 512 * 512) % 251).astype(np.uint8).reshape(64, 512, 512)
    make_dicom(tmp_path / "src" / "big.dcm", frames, photometric="MONOCHROME2", FrameTime=20.0, Modality="US")
    builder = ct.prepare_corpus(tmp_path / "src", tmp_path / "tfds", workers=1, memory_mb=32)
    report = json.loads((Path(builder.data_dir) / ct.REPORT_NAME).read_text())
    (row,) = report["splits"]["corpus"]["refused"]
    assert row["key"] == "big.dcm" and row["kind"] in ("memory", "worker_died")
    assert row["reason"].startswith(f"{tmp_path / 'src' / 'big.dcm'}: ")  # the guard's line names the file
    assert report["num_prepared"] == 2 and report["options"]["memory_mb"] == 32


def test_a_corpus_whose_every_file_is_refused_leaves_nothing(tmp_path):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "a.dcm").write_bytes(b"not dicom")
    with pytest.raises(
        ct.CorpusPreparationError, match=r"every file of split 'corpus' \(1\) was refused, e.g. .*a.dcm: "
    ):
        ct.prepare_corpus(tmp_path / "src", tmp_path / "tfds", workers=1)
    assert not list((tmp_path / "tfds").rglob("dataset_info.json"))
    assert not list((tmp_path / "tfds").rglob("incomplete.*"))
    with pytest.raises(ct.CorpusNotPreparedError, match="no prepared corpus for"):
        ct.load_corpus(tmp_path / "tfds", tmp_path / "src")


def test_bad_options_are_one_line(corpus, tmp_path):
    with pytest.raises(
        ct.CorpusPreparationError,
        match=r"corpus options: crop must be one of .*got 'middle'; timeout_s must be > 0",
    ):
        ct.prepare_corpus(corpus / synth.FILES_DIR, tmp_path, crop="middle", timeout_s=0)
    assert dataclasses.asdict(ct.CorpusOptions())["size"] == 112
