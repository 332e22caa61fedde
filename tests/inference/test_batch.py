"""EF for a folder or a manifest (``coreecho_jax.inference.batch``, ``coreecho predict-folder``): one row per
file with errors named, rows equal to ``EchoModel.predict``, DICOM by content, a CSV manifest, reruns,
decoding ahead within a bound, a dying worker, one compilation, the CardioBench columns, DICOM variety
(compressed, YBR, palette, several regions, colour Doppler) and the persistent compilation cache.

The model is the tiny fake run of ``tests/inference/test_weights.py`` exported as a weights folder.
"""

from __future__ import annotations

import concurrent.futures
import csv
import json
import multiprocessing
import os
import shutil
import subprocess
import sys
import threading
import time

import cv2
import jax
import numpy as np
import pytest
from pydicom.data import get_testdata_file
from pydicom.pixels import get_decoder
from pydicom.uid import ComprehensiveSRStorage, JPEGLSLossless, RLELossless, generate_uid

import coreecho_jax
from coreecho_jax import cli, predict
from coreecho_jax.data.video.video_io import write_video
from coreecho_jax.errors import ConfigError, DataError
from coreecho_jax.inference import batch, compile_cache
from coreecho_jax.models.coreecho import CoReEcho
from tests.conftest import run_python
from tests.data.test_video_io import echo_like, make_dicom, region_item
from tests.inference import batch_helpers
from tests.inference.test_weights import make_run
from tests.paths import REPO
from tests.test_cli import _one_error_line

STUDY, SERIES = "1.2.826.0.1.3680043.10.1.1", "1.2.826.0.1.3680043.10.1.2"


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.mktemp("batch")


@pytest.fixture(scope="module")
def folder(root):
    return coreecho_jax.export_weights(make_run(root), root / "weights")


@pytest.fixture(scope="module")
def model(folder):
    return coreecho_jax.from_pretrained(folder, compilation_cache=False)


def read_rows(path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def write_echo(path, t: int = 40, seed: int = 0):
    frames, _ = echo_like(t=t, seed=seed)
    return write_video(path, frames, fps=50.0)


def echo_dicom(path, t: int = 40, **tags):
    frames, _ = echo_like(t=t)
    return make_dicom(path, frames, photometric="MONOCHROME2", FrameTime=20.0, **tags)


def assert_row_is_prediction(row: dict[str, str], p) -> None:
    """The row's every field equals ``EchoModel.predict``'s result, numbers read back exactly."""
    assert row["status"] == "ok" and row["error"] == ""
    assert float(row["ef"]) == p.ef and float(row["clip_spread"]) == p.clip_spread
    assert (float(row["ef_low"]), float(row["ef_high"])) == p.ef_interval
    assert float(row["interval_level"]) == p.interval_level and row["summary"] == p.summary
    assert row["category"] == p.category and int(row["num_frames"]) == p.num_frames
    assert float(row["fps"]) == p.fps and row["crop"] == p.crop
    assert float(row["colour_fraction"]) == p.colour_fraction
    assert row["flags"] == ";".join(p.flags) and row["shift_percentile"] == ""
    assert (row["study_uid"] or None, row["series_uid"] or None, row["sop_uid"] or None) == (
        p.study_uid,
        p.series_uid,
        p.sop_uid,
    )


# ----------------------------------------------------------------------------------- a mixed folder


@pytest.fixture(scope="module")
def mixed(root):
    """A folder of every kind of file an archive holds, each named by what it is."""
    d = root / "mixed"
    (d / "scans").mkdir(parents=True)
    write_echo(d / "good.avi")
    echo_dicom(d / "scans" / "echo_no_suffix", StudyInstanceUID=STUDY, SeriesInstanceUID=SERIES)
    frames, _ = echo_like(t=1)
    make_dicom(
        d / "scans" / "report.dcm",
        frames,
        photometric="MONOCHROME2",
        pixel_data=False,
        SOPClassUID=ComprehensiveSRStorage,
        Modality="SR",
        StudyInstanceUID=STUDY,
    )
    echo_dicom(d / "scans" / "single.dcm", t=1)
    (d / "renamed.avi").write_text("a text file with a video's name\n")
    whole = echo_dicom(root / "whole.dcm").read_bytes()
    (d / "scans" / "truncated.dcm").write_bytes(whole[: len(whole) // 2])
    frames, _ = echo_like(t=40)
    make_dicom(
        d / "scans" / "jpeg_ls.dcm",
        frames,
        photometric="MONOCHROME2",
        transfer_syntax=JPEGLSLossless,
        encoded_frames=[b"\xff\xd8\xff\xf7 not decoded"] * 40,
    )
    write_echo(d / ".hidden.avi")
    (d / ".cache").mkdir()
    write_echo(d / ".cache" / "inside_hidden.avi")
    return d


@pytest.mark.slow  # compiles the tiny model, starts a decoding process
def test_a_mixed_folder_gives_a_row_per_file_errors_named_and_good_rows_equal_predict(model, mixed, root):
    out = root / "mixed.csv"
    summary = batch.predict_folder(model, mixed, out, workers=1, progress=False, cardiobench=True)
    rows = {r["file"]: r for r in read_rows(out)}
    assert list(rows) == [  # every file but the hidden ones, in the order of their relative paths
        "good.avi",
        "renamed.avi",
        "scans/echo_no_suffix",
        "scans/jpeg_ls.dcm",
        "scans/report.dcm",
        "scans/single.dcm",
        "scans/truncated.dcm",
    ]
    assert (summary.predicted, summary.failed, summary.skipped) == (2, 5, 0)
    for name in ("good.avi", "scans/echo_no_suffix"):  # the DICOM is recognised by its content
        assert_row_is_prediction(rows[name], model.predict(mixed / name))
    dicom_row = rows["scans/echo_no_suffix"]
    assert (dicom_row["study_uid"], dicom_row["series_uid"]) == (STUDY, SERIES)
    assert dicom_row["transfer_syntax"] == "1.2.840.10008.1.2.1" and dicom_row["regions"] == "0"
    scans = mixed / "scans"
    assert {n: (r["flags"], r["error"]) for n, r in rows.items() if r["status"] == "error"} == {
        "renamed.avi": (
            "unreadable",
            f"{mixed / 'renamed.avi'}: OpenCV/FFmpeg cannot open it (expected a readable AVI/MP4/MOV/MKV video)",
        ),
        "scans/jpeg_ls.dcm": (
            "no_decoder",
            f"{scans / 'jpeg_ls.dcm'}: transfer syntax JPEG-LS Lossless Image Compression (1.2.840.10008.1.2.4.80): "
            f"no decoder installed; install {'; '.join(get_decoder(JPEGLSLossless).missing_dependencies)}",
        ),
        "scans/report.dcm": (
            "not_echo_cine",
            f"{scans / 'report.dcm'}: a DICOM Comprehensive SR Storage object without pixel data, not an echo cine",
        ),
        "scans/single.dcm": ("not_echo_cine", rows["scans/single.dcm"]["error"]),
        "scans/truncated.dcm": ("unreadable", rows["scans/truncated.dcm"]["error"]),
    }
    assert rows["scans/single.dcm"]["error"].startswith(
        f"{scans / 'single.dcm'}: a still image (1 frame), not an echo loop; EF needs at least"
    )
    assert rows["scans/truncated.dcm"]["error"].startswith(
        f"{scans / 'truncated.dcm'}: cannot decode DICOM pixel data (transfer syntax Explicit VR Little Endian)"
    )
    assert not get_decoder(JPEGLSLossless).is_available  # this installation has no JPEG-LS plugin
    assert rows["scans/report.dcm"]["study_uid"] == STUDY  # a refused DICOM still says which it is
    assert [r["FileName"] for r in rows.values()] == [  # CardioBench: the name without .avi / .dcm
        "good",
        "renamed",
        "echo_no_suffix",
        "jpeg_ls",
        "report",
        "single",
        "truncated",
    ]
    for name, row in rows.items():
        assert row["EF_pred"] == row["ef"]
        assert row["path"] == str(mixed / name) and row["weights"] == model.weights_sha256[:16]
        assert int(row["size_bytes"]) == (mixed / name).stat().st_size
    with open(out) as f:
        assert f.readline().rstrip().split(",") == [*batch.COLUMNS, "FileName", "EF_pred"]


# -------------------------------------------------------------------------------------- listing inputs


def test_a_folder_is_listed_recursively_without_hidden_files_and_without_the_output(tmp_path):
    (tmp_path / "b" / ".git").mkdir(parents=True)
    for name in ("z.dcm", "b/a.avi", "b/.git/x.avi", ".DS_Store", "out.csv"):
        (tmp_path / name).write_bytes(b"x")
    files = batch.list_inputs(tmp_path, exclude=[tmp_path / "out.csv"])
    assert [(f.name, f.path, f.size) for f in files] == [
        ("b/a.avi", tmp_path / "b" / "a.avi", 1),
        ("z.dcm", tmp_path / "z.dcm", 1),
    ]
    with pytest.raises(
        DataError, match=r"no such folder or file; expected a folder of videos, a CSV or a video"
    ):
        batch.list_inputs(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(
        DataError, match=r"empty: no files found in this folder \(hidden files are left out\)$"
    ):
        batch.list_inputs(tmp_path / "empty")


def test_a_manifest_names_files_relative_to_itself_and_bad_manifests_name_the_row(tmp_path):
    (tmp_path / "lists").mkdir()
    other = tmp_path / "elsewhere.avi"
    manifest = tmp_path / "lists" / "manifest.csv"
    manifest.write_text(f"id,path\n1,../a.avi\n2,{other}\n3,missing.avi\n")
    files = batch.list_inputs(manifest)
    assert [(f.name, f.path, f.size) for f in files] == [
        ("../a.avi", tmp_path / "lists" / ".." / "a.avi", None),
        (str(other), other, None),
        ("missing.avi", tmp_path / "lists" / "missing.avi", None),
    ]
    bad = tmp_path / "bad.csv"
    bad.write_text("file,label\na.avi,1\n")
    with pytest.raises(
        DataError, match=r"bad.csv: no 'path' column \(columns: file, label\); a manifest names"
    ):
        batch.list_inputs(bad)
    bad.write_text("path\na.avi\n\n b.avi\n ,\n")
    with pytest.raises(DataError, match=r"bad.csv, row 4: empty path$"):
        batch.list_inputs(bad)
    bad.write_text("path\na.avi\nb.avi\n./a.avi\n")
    with pytest.raises(DataError, match=r"bad.csv, row 4: ./a.avi is listed again \(first in row 2\)$"):
        batch.list_inputs(bad)


@pytest.mark.slow  # predicts three videos (decoding in this process)
def test_a_manifest_gives_rows_in_its_order_with_a_missing_file_as_an_error(model, tmp_path):
    write_echo(tmp_path / "a.avi")
    write_echo(tmp_path / "b.avi", t=36, seed=1)
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("path\nb.avi\nmissing.avi\na.avi\n")
    batch.predict_folder(model, manifest, tmp_path / "out.csv", workers=0, progress=False)
    rows = read_rows(tmp_path / "out.csv")
    assert [(r["file"], r["status"], r["flags"]) for r in rows] == [
        ("b.avi", "ok", ""),
        ("missing.avi", "error", "unreadable"),
        ("a.avi", "ok", ""),
    ]
    assert rows[1]["error"] == f"{tmp_path / 'missing.avi'}: file not found (expected an AVI/MP4/DICOM video)"
    assert_row_is_prediction(rows[2], model.predict(tmp_path / "a.avi"))


# ---------------------------------------------------------------------------------------------- reruns


@pytest.mark.slow  # predicts a few videos (decoding in this process)
def test_a_rerun_skips_files_done_and_redoes_a_changed_one(model, tmp_path):
    d = tmp_path / "videos"
    d.mkdir()
    write_echo(d / "a.avi")
    write_echo(d / "b.avi", t=40, seed=1)
    (d / "broken.avi").write_text("no video")
    out = tmp_path / "out.csv"
    first = batch.predict_folder(model, d, out, workers=0, progress=False)
    assert (first.predicted, first.failed, first.skipped) == (2, 1, 0)
    before = {r["file"]: r for r in read_rows(out)}

    again = batch.predict_folder(model, d, out, workers=0, progress=False)
    assert (again.predicted, again.failed, again.skipped) == (0, 0, 3)
    assert {r["file"]: r for r in read_rows(out)} == before

    time.sleep(0.01)
    write_echo(d / "b.avi", t=44, seed=2)  # changed: another size and modification time
    changed = batch.predict_folder(model, d, out, workers=0, progress=False)
    assert (changed.predicted, changed.failed, changed.skipped) == (1, 0, 2)
    rows = {r["file"]: r for r in read_rows(out)}
    assert sorted(rows) == ["a.avi", "b.avi", "broken.avi"]  # replaced, not added
    assert rows["b.avi"]["num_frames"] == "44" and rows["a.avi"] == before["a.avi"]

    retried = batch.predict_folder(model, d, out, workers=0, progress=False, retry_errors=True)
    assert (retried.predicted, retried.failed, retried.skipped) == (0, 1, 2)

    with open(out, "a") as f:  # a row cut short by an interrupted run: its file is done again
        f.write(f"a.avi,{d / 'a.avi'},1\n")
    rows_now = read_rows(out)
    assert len(rows_now) == 4
    cut = batch.predict_folder(model, d, out, workers=0, progress=False)
    assert (cut.predicted, cut.skipped) == (0, 3)  # the full row of a.avi still covers it

    with pytest.raises(
        DataError, match=r"out.csv: exists with other columns \(file, .*, weights\) than this run"
    ):
        batch.predict_folder(model, d, out, workers=0, progress=False, cardiobench=True)


# --------------------------------------------------------------------------------- decoding ahead


@pytest.mark.parametrize("window", [1, 3])
def test_decoding_ahead_never_holds_more_than_the_window_of_decoded_videos(window):
    lock = threading.Lock()
    state = {"held": 0, "most": 0}

    def decode(job: int) -> int:
        time.sleep(0.001)
        with lock:
            state["held"] += 1  # decoded, not yet consumed
            state["most"] = max(state["most"], state["held"])
        return job * 10

    seen = []
    for job, result in batch.decode_ahead(
        range(30), decode, lambda: concurrent.futures.ThreadPoolExecutor(4), window
    ):
        time.sleep(0.004)  # the model is slower than the decoders
        seen.append((job, result))
        with lock:
            state["held"] -= 1  # consumed
    assert seen == [(j, 10 * j) for j in range(30)]
    assert state["most"] == window
    with pytest.raises(ValueError, match="window must be >= 1, got 0"):
        next(batch.decode_ahead([1], decode, batch.InlineExecutor, 0))
    assert list(batch.decode_ahead([], decode, batch.InlineExecutor, 2)) == []


def test_predict_folder_decodes_ahead_within_workers_times_prefetch(model, tmp_path, monkeypatch):
    write_echo(tmp_path / "a.avi")
    windows = []

    def spy(jobs, decode, new_executor, window, *, died=None):
        windows.append(window)
        return iter(())

    monkeypatch.setattr(batch, "decode_ahead", spy)
    batch.predict_folder(model, tmp_path, tmp_path / "o1.csv", workers=3, prefetch=2, progress=False)
    batch.predict_folder(model, tmp_path, tmp_path / "o2.csv", workers=0, prefetch=5, progress=False)
    assert windows == [6, 1]


def test_a_decoding_process_that_dies_costs_only_its_own_file():
    context = multiprocessing.get_context("spawn")
    new = lambda: concurrent.futures.ProcessPoolExecutor(2, mp_context=context)
    jobs = ["a", "crash", "b", "c"]
    results = list(batch.decode_ahead(jobs, batch_helpers.crash_on, new, 3, died=lambda job: f"died: {job}"))
    assert results == [("a", "a"), ("crash", "died: crash"), ("b", "b"), ("c", "c")]
    with pytest.raises(concurrent.futures.process.BrokenProcessPool):
        list(batch.decode_ahead(jobs, batch_helpers.crash_on, new, 3))


class BreakingExecutor(concurrent.futures.Executor):
    """Runs jobs at once; ``"crash"`` breaks it, and every later ``submit`` raises as a broken pool does."""

    def __init__(self) -> None:
        self.broken = False

    def submit(self, fn, /, *args, **kwargs):
        if self.broken:
            raise concurrent.futures.process.BrokenProcessPool("a process died")
        future = concurrent.futures.Future()
        if args == ("crash",):
            self.broken = True
            future.set_exception(concurrent.futures.process.BrokenProcessPool("a process died"))
        else:
            future.set_result(fn(*args, **kwargs))
        return future


def test_a_pool_that_breaks_before_a_submit_costs_only_the_dead_job():
    """The crash is seen by ``submit`` of the next jobs (the pool broke between two looks), not only by a
    result: those jobs run again in a new pool, the crashed one gets ``died``."""
    jobs = ["a", "crash", "b", "c"]
    results = list(batch.decode_ahead(jobs, str.upper, BreakingExecutor, 3, died=lambda job: f"died: {job}"))
    assert results == [("a", "A"), ("crash", "died: crash"), ("b", "B"), ("c", "C")]


def test_decoding_processes_are_spawned_and_import_no_jax(model):
    settings = batch.DecodeSettings(model.config, 3)
    executor = batch.process_pool(1, settings)()
    try:
        assert executor.submit(batch_helpers.heavy_modules).result() == []
    finally:
        executor.shutdown()


def test_a_script_without_a_main_guard_gets_one_line_saying_so(tmp_path):
    script = tmp_path / "script.py"
    script.write_text(
        "import ml_collections\n"
        "from coreecho_jax.inference import batch\n"
        "settings = batch.DecodeSettings(ml_collections.ConfigDict(), 1)\n"
        "batch.process_pool(1, settings)()\n"
    )
    done = subprocess.run(
        [sys.executable, str(script)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert done.returncode == 1
    assert done.stderr.splitlines()[-1] == (
        "coreecho_jax.inference.batch.WorkerStartError: the decoding processes could not start; a script that "
        "calls predict_folder with workers > 0 must do so under if __name__ == '__main__': (multiprocessing "
        "starts each worker by importing the script), or pass workers=0"
    )


@pytest.mark.slow  # traces the tiny model once
def test_the_model_is_compiled_once_for_a_whole_folder(model, tmp_path, monkeypatch):
    for i, t in enumerate((40, 36, 48)):
        write_echo(tmp_path / f"v{i}.avi", t=t, seed=i)
    jax.clear_caches()
    traces = []
    forward = CoReEcho.__call__
    monkeypatch.setattr(
        CoReEcho, "__call__", lambda self, *a, **k: traces.append(1) or forward(self, *a, **k)
    )
    summary = batch.predict_folder(model, tmp_path, tmp_path / "out.csv", workers=0, progress=False)
    assert summary.predicted == 3 and len(traces) == 1


# ---------------------------------------------------------------------------------------- error flags


class RefusingModel:
    """A model whose prediction raises an error on purpose (the model's side of a failed row)."""

    has_head = True

    def predict_prepared(self, prepared):
        raise DataError("the model refused these clips")


def test_every_flag_a_failed_row_can_carry_is_in_the_table_of_error_flags(model, tmp_path, monkeypatch):
    batch.init_worker(batch.DecodeSettings(model.config, 3))  # as a worker (or workers=0) starts
    cv2.imwrite(str(tmp_path / "still.png"), np.full((40, 40), 128, np.uint8))
    make_dicom(
        tmp_path / "jpeg_ls.dcm",
        echo_like(t=40)[0],
        photometric="MONOCHROME2",
        transfer_syntax=JPEGLSLossless,
        encoded_frames=[b"\xff\xd8\xff\xf7 not decoded"] * 40,
    )
    write_echo(tmp_path / "good.avi")
    names = ("still.png", "jpeg_ls.dcm", "missing.avi", "good.avi")
    decoded = {name: batch.decode_file(tmp_path / name) for name in names}
    good = batch.InputFile.of("good.avi", tmp_path / "good.avi")
    refused = batch._row(RefusingModel(), good, decoded["good.avi"], "w", False)
    monkeypatch.setattr(batch.quality, "prepare", lambda *a, **k: {}["a bug"])
    flags = {name: d.flag for name, d in decoded.items()} | {
        "refused by the model": refused["flags"],
        "its worker died": batch._died(good).flag,
        "a bug": batch.decode_file(tmp_path / "good.avi").flag,
    }
    assert flags == {
        "still.png": "not_echo_cine",
        "jpeg_ls.dcm": "no_decoder",
        "missing.avi": "unreadable",
        "good.avi": None,
        "refused by the model": "unreadable",
        "its worker died": "worker_died",
        "a bug": "internal_error",
    }
    assert set(flags.values()) - {None} == set(batch.ERROR_FLAGS)  # each in the table, none unused
    assert not set(batch.ERROR_FLAGS) & set(predict.FLAGS)  # a code in the flags column means one thing
    with pytest.raises(
        ValueError, match=r"^Decoded: flag 'crashed' is not one of ERROR_FLAGS \(not_echo_cine, "
    ):
        batch.Decoded(error="x", flag="crashed")


# ------------------------------------------------------------------------------------- DICOM variety


def doppler_frames(t: int = 40) -> np.ndarray:
    """``echo_like`` frames in RGB with a colour-flow blob (red / blue, moving) inside the sector."""
    frames, _ = echo_like(t=t)
    rgb = np.repeat(frames[..., None], 3, axis=-1)
    for i in range(t):
        colour = (255, 40, 0) if i % 2 else (0, 60, 255)
        cv2.circle(rgb[i], (70, 60 + i % 8), 12, colour, -1)
    return rgb


@pytest.mark.slow  # predicts several DICOMs (decoding in this process)
def test_dicom_variety_compressed_ybr_palette_regions_and_colour_doppler(model, tmp_path):
    d = tmp_path / "dicom"
    d.mkdir()
    shutil.copy(
        get_testdata_file("examples_ybr_color.dcm"), d / "ybr_jpeg.dcm"
    )  # YBR_FULL_422, JPEG Baseline
    shutil.copy(get_testdata_file("examples_palette.dcm"), d / "palette.dcm")  # PALETTE COLOR, one frame
    frames, _ = echo_like(t=40)
    native = echo_dicom(d / "native.dcm")
    from pydicom import dcmread

    rle = dcmread(native)
    rle.compress(RLELossless, encoding_plugin="pydicom")
    rle.SOPInstanceUID = generate_uid()
    rle.save_as(d / "rle.dcm")
    two_regions = [region_item(20, 10, 130, 110), region_item(0, 112, 159, 119, spatial_format=4)]
    echo_dicom(d / "regions.dcm", SequenceOfUltrasoundRegions=two_regions)
    write_video(d / "doppler.avi", doppler_frames(), fps=50.0)
    batch.predict_folder(model, d, tmp_path / "out.csv", workers=0, progress=False)
    rows = {r["file"]: r for r in read_rows(tmp_path / "out.csv")}

    assert rows["ybr_jpeg.dcm"]["status"] == "ok"  # decoded by Pillow, YBR converted to RGB
    assert rows["ybr_jpeg.dcm"]["transfer_syntax"] == "1.2.840.10008.1.2.4.50"
    assert_row_is_prediction(rows["ybr_jpeg.dcm"], model.predict(d / "ybr_jpeg.dcm"))
    assert rows["palette.dcm"]["flags"] == "not_echo_cine"
    assert rows["palette.dcm"]["error"].startswith(
        f"{d / 'palette.dcm'}: a still image (1 frame), not an echo loop"
    )
    assert rows["rle.dcm"]["transfer_syntax"] == RLELossless
    for field in ("ef", "ef_low", "ef_high", "clip_spread", "crop", "num_frames"):  # lossless: the same EF
        assert rows["rle.dcm"][field] == rows["native.dcm"][field]
    assert (rows["regions.dcm"]["regions"], rows["regions.dcm"]["crop"]) == ("2", "region")
    assert_row_is_prediction(rows["regions.dcm"], model.predict(d / "regions.dcm"))
    assert rows["doppler.avi"]["flags"] == "colour_doppler"
    assert float(rows["doppler.avi"]["colour_fraction"]) >= 0.01
    assert rows["native.dcm"]["flags"] == "" and float(rows["native.dcm"]["colour_fraction"]) == 0.0


def test_colour_fraction_counts_colour_inside_the_moving_sector_only():
    from coreecho_jax.inference import quality

    rgb = doppler_frames()
    assert quality.colour_fraction(rgb) >= quality.COLOUR_DOPPLER_FRACTION
    grey = np.repeat(echo_like(t=40)[0][..., None], 3, axis=-1)
    assert quality.colour_fraction(grey) == 0.0
    grey[:, 20:100, 150:156] = (255, 200, 0)  # a static colour bar beside the sector
    assert quality.colour_fraction(grey) == 0.0


# ------------------------------------------------------------------------------ the command, the cache


def test_the_command_writes_the_csv_and_prints_one_line(folder, tmp_path, capsys):
    (tmp_path / "v").mkdir()
    write_echo(tmp_path / "v" / "a.avi")
    out = tmp_path / "preds.csv"
    argv = [
        "predict-folder",
        f"--weights={folder}",
        f"--input={tmp_path / 'v'}",
        f"--out={out}",
        "--workers=0",
    ]
    assert cli.main([*argv, "--noprogress", "--cardiobench", "--compile_cache=off"]) == 0
    printed = capsys.readouterr().out.strip()
    assert printed.startswith(
        f"{out}: 1 predicted, 0 failed (see the error column), 0 skipped (done before) in "
    )
    assert [r["FileName"] for r in read_rows(out)] == ["a"]


@pytest.mark.parametrize(
    "flags, message",
    [
        (
            ["--input={tmp}/nothing"],
            "{tmp}/nothing: no such folder or file; expected a folder of videos, a CSV or a video",
        ),
        (["--prefetch=0"], "predict_folder: needs workers >= 0 and prefetch >= 1, got 0 and 0"),
        (["--crop=middle"], "--crop=middle: value should be one of <auto|region|sector|none>"),
        (
            ["--compile_cache={tmp}/a_file"],
            "the compilation cache setting: {tmp}/a_file exists and is not a folder; "
            "give a folder for the compilation cache or COREECHO_COMPILE_CACHE=off",
        ),
    ],
)
def test_the_command_refuses_bad_flags_in_one_line(folder, tmp_path, capsys, flags, message):
    (tmp_path / "a_file").write_text("x")
    argv = ["predict-folder", f"--weights={folder}", f"--input={tmp_path}", f"--out={tmp_path / 'o.csv'}"]
    argv += ["--workers=0", "--noprogress"] + [f.format(tmp=tmp_path) for f in flags]
    assert _one_error_line(argv, capsys) == message.format(tmp=tmp_path)


def test_the_command_needs_its_input_output_and_weights(capsys):
    line = _one_error_line(["predict-folder", "--input=x", "--weights=w"], capsys)
    assert line == "--out is required: The CSV written, one row per file (a rerun skips the files done)."


@pytest.fixture
def jax_cache_dir():
    """JAX's cache folder setting as this test found it, restored afterwards."""
    before = jax.config.jax_compilation_cache_dir
    yield
    compile_cache.enable(before if before else False)


def test_the_compilation_cache_folder_setting(tmp_path, monkeypatch, jax_cache_dir):
    monkeypatch.delenv(compile_cache.CACHE_ENV, raising=False)
    monkeypatch.setenv("COREECHO_DATA_DIR", str(tmp_path / "home"))
    jax.config.update("jax_compilation_cache_dir", None)
    assert compile_cache.cache_dir() == tmp_path / "home" / "jax_compilation_cache"
    assert (
        compile_cache.cache_dir(False) is None and compile_cache.cache_dir(tmp_path / "c") == tmp_path / "c"
    )
    for off in ("off", "0", "None", ""):
        monkeypatch.setenv(compile_cache.CACHE_ENV, off)
        assert compile_cache.cache_dir() is None
    monkeypatch.setenv(compile_cache.CACHE_ENV, str(tmp_path / "env"))
    assert (
        compile_cache.cache_dir() == tmp_path / "env"
        and compile_cache.cache_dir(tmp_path / "c") == tmp_path / "c"
    )
    assert compile_cache.enable() == tmp_path / "env"
    assert jax.config.jax_compilation_cache_dir == str(tmp_path / "env")
    assert jax.config.jax_persistent_cache_min_compile_time_secs == compile_cache.MIN_COMPILE_SECONDS
    assert compile_cache.enable(False) is None and jax.config.jax_compilation_cache_dir is None
    monkeypatch.delenv(compile_cache.CACHE_ENV)
    jax.config.update(
        "jax_compilation_cache_dir", str(tmp_path / "own")
    )  # a folder given to JAX itself is kept
    assert compile_cache.cache_dir() == tmp_path / "own"
    assert [compile_cache.parse_setting(t) for t in (None, " ", "OFF", "no", "/x")] == [
        None,
        None,
        False,
        False,
        "/x",
    ]
    (tmp_path / "file").write_text("x")
    monkeypatch.setenv(compile_cache.CACHE_ENV, str(tmp_path / "file"))
    with pytest.raises(ConfigError, match=r"\$COREECHO_COMPILE_CACHE: .*/file exists and is not a folder"):
        compile_cache.cache_dir()


@pytest.mark.slow  # two fresh processes load the tiny model and predict
def test_a_second_process_reads_the_compiled_model_from_the_cache(folder, tmp_path):
    video = write_echo(tmp_path / "a.avi")
    cache = tmp_path / "cache"
    listen = (
        "import json, pathlib, jax\n"
        "events = []\n"
        "jax.monitoring.register_event_listener(lambda name, **kw: events.append(name))\n"
        "import coreecho_jax\n"
    )
    report = (
        "hits = events.count('/jax/compilation_cache/cache_hits')\n"
        f"files = sorted(p.name for p in pathlib.Path({str(cache)!r}).iterdir())\n"
        "print(json.dumps({'hits': hits, 'files': files}))\n"
    )
    first = run_python(
        listen
        + f"m = coreecho_jax.from_pretrained({str(folder)!r}, compilation_cache={str(cache)!r})\n"
        + f"print(m.predict({str(video)!r}).ef)\n"
        + report
    )
    assert first.returncode == 0, first.stderr
    second = run_python(
        listen
        + "from coreecho_jax import cli\n"
        + f"cli.main(['predict', '--config={REPO / 'configs/demo.py'}', '--config.data.frames=8', "
        + "'--config.data.stride=2', '--config.data.image_size=32', "
        + f"'--checkpoint={folder}', '--video={video}', '--compile_cache={cache}'])\n"
        + report
    )
    assert second.returncode == 0, second.stderr
    one = json.loads(first.stdout.strip().splitlines()[-1])
    two = json.loads(second.stdout.strip().splitlines()[-1])
    ef_first = float(first.stdout.strip().splitlines()[-2])
    assert one["hits"] == 0 and any("predict_step" in name for name in one["files"])
    forward = [name for name in one["files"] if "predict_step" in name]
    assert (
        two["hits"] >= 1 and [name for name in two["files"] if "predict_step" in name] == forward
    )  # read back
    assert f'"ef_mean": {ef_first!r}' in second.stdout
