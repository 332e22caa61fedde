"""EF over an archive on Apache Beam (``coreecho_jax.inference.archive``, ``coreecho predict-archive``): the
rows of ``predict_folder`` (column for column) from a Beam pipeline whose workers load the model once,
numbers equal to single-file prediction, a damaged file as an error row, Parquet, reruns, and the bad
inputs that are one line (a runner option Beam does not know, a manifest without its path column, no
apache-beam).

The model is the tiny fake run of ``tests/inference/test_weights.py`` exported as a weights folder.
"""

from __future__ import annotations

import functools
import os
import re
import signal
import time

import pytest

import coreecho_jax
from coreecho_jax import cli
from coreecho_jax.data.corpus import runners
from coreecho_jax.inference import batch
from coreecho_jax.inference.archive import run, transforms
from tests.conftest import run_python
from tests.inference import archive_helpers
from tests.inference.test_batch import assert_row_is_prediction, echo_dicom, read_rows, write_echo
from tests.inference.test_weights import make_run
from tests.paths import REPO
from tests.test_cli import _one_error_line

STUDY, SERIES = "1.2.826.0.1.3680043.10.1.1", "1.2.826.0.1.3680043.10.1.2"


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.mktemp("archive")


@pytest.fixture(scope="module")
def folder(root):
    return coreecho_jax.export_weights(make_run(root), root / "weights")


@pytest.fixture(scope="module")
def model(folder):
    return coreecho_jax.from_pretrained(folder, compilation_cache=False)


@pytest.fixture(scope="module")
def archive(root):
    """Synthetic videos, a DICOM known by its content, a damaged DICOM and a text file named .avi."""
    d = root / "archive"
    (d / "scans").mkdir(parents=True)
    write_echo(d / "a.avi")
    write_echo(d / "b.avi", t=48, seed=1)
    echo_dicom(d / "scans" / "echo_no_suffix", StudyInstanceUID=STUDY, SeriesInstanceUID=SERIES)
    whole = echo_dicom(root / "whole.dcm").read_bytes()
    (d / "scans" / "truncated.dcm").write_bytes(whole[: len(whole) // 2])
    (d / "renamed.avi").write_text("a text file with a video's name\n")
    return d


@pytest.fixture(scope="module")
def beam_run(root, folder, archive):
    """One pipeline on 2 workers (shards of one file): its summary, the CSV, and the loads of the model."""
    marker = root / "loads.txt"
    load = functools.partial(archive_helpers.counting_load, str(marker), str(folder))
    out = root / "beam" / "preds.csv"
    options = run.ArchiveOptions(workers=2, parquet=True, cardiobench=True)
    summary = run.predict_archive(load, archive, out, options)
    return summary, out, marker


@pytest.mark.slow  # a Beam pipeline: 2 worker processes each load and compile the tiny model
def test_rows_equal_predict_folder_s_and_single_file_prediction_with_errors_as_rows(beam_run, model, archive):
    summary, out, marker = beam_run
    assert (summary.predicted, summary.failed, summary.skipped) == (3, 2, 0)
    reference = out.parent / "folder.csv"
    batch.predict_folder(model, archive, reference, workers=0, progress=False, cardiobench=True)
    with open(out) as f:
        assert f.readline().rstrip().split(",") == [*batch.COLUMNS, *batch.CARDIOBENCH_COLUMNS]
    rows = read_rows(out)
    assert rows == read_rows(reference)  # every column of every row, in the listing's order
    by_name = {r["file"]: r for r in rows}
    for name in ("a.avi", "b.avi", "scans/echo_no_suffix"):
        assert_row_is_prediction(by_name[name], model.predict(archive / name))
    assert (by_name["scans/echo_no_suffix"]["study_uid"], by_name["scans/echo_no_suffix"]["series_uid"]) == (
        STUDY,
        SERIES,
    )
    assert {r["flags"] for r in rows if r["status"] == "error"} <= set(batch.ERROR_FLAGS)
    assert {n: r["flags"] for n, r in by_name.items() if r["status"] == "error"} == {
        "renamed.avi": "unreadable",
        "scans/truncated.dcm": "unreadable",
    }
    assert by_name["renamed.avi"]["error"] == (
        f"{archive / 'renamed.avi'}: OpenCV/FFmpeg cannot open it (expected a readable AVI/MP4/MOV/MKV video)"
    )
    # the model loaded once here (the checks) and once in each of the 2 workers, for 5 shards
    pids = archive_helpers.loads(marker)
    assert len(pids) == 3 and len(set(pids)) == 3 and pids[0] == os.getpid()
    assert not (out.parent / ".preds.csv.beam").exists()  # the shards and row files are gone


@pytest.mark.slow  # reads the pipeline's output
def test_parquet_holds_the_csv_rows_with_numbers_typed(beam_run):
    pq = pytest.importorskip("pyarrow.parquet")
    _, out, _ = beam_run
    table = pq.read_table(out.with_suffix(".parquet")).to_pylist()
    rows = read_rows(out)
    assert [t["file"] for t in table] == [r["file"] for r in rows]
    for t, r in zip(table, rows):
        for column, value in r.items():
            if column in run.FLOAT_COLUMNS:
                assert t[column] == (float(value) if value else None), column
            elif column in run.INT_COLUMNS:
                assert t[column] == (int(value) if value else None), column
            else:
                assert t[column] == value, column
    assert isinstance(table[0]["ef"], float) and isinstance(table[0]["size_bytes"], int)


@pytest.mark.slow  # reads the pipeline's output
def test_a_rerun_of_the_command_skips_the_files_done_without_a_pipeline(beam_run, folder, archive, capsys):
    _, out, marker = beam_run
    before = out.read_text()
    argv = ["predict-archive", f"--input={archive}", f"--out={out}", f"--weights={folder}", "--cardiobench"]
    assert cli.main([*argv, "--compile_cache=off"]) == 0
    said = capsys.readouterr().out
    assert f"{out}: 0 predicted, 0 failed (see the error column), 5 skipped (done before) in " in said
    assert out.read_text() == before
    assert len(archive_helpers.loads(marker)) == 3  # no worker started


@pytest.mark.slow  # a Beam pipeline on 1 worker
def test_the_command_writes_predict_folder_s_rows_and_its_worker_says_nothing(root, folder, model, capfd):
    d = root / "small"
    d.mkdir()
    write_echo(d / "v.avi", t=44, seed=2)
    (d / "broken.avi").write_bytes(b"RIFF not a video")
    out = root / "small.csv"
    argv = ["predict-archive", f"--input={d}", f"--out={out}", f"--weights={folder}", "--workers=1"]
    assert cli.main([*argv, "--compile_cache=off"]) == 0
    said = capfd.readouterr()  # file descriptors: the Beam worker's stderr too
    assert f"{out}: 1 predicted, 1 failed (see the error column), 0 skipped" in said.out
    assert said.err.splitlines() == [f"wrote: {out}"]  # no worker chatter (apitools, handler notices, TF)
    batch.predict_folder(model, d, root / "small_folder.csv", workers=0, progress=False)
    assert read_rows(out) == read_rows(root / "small_folder.csv")


# ------------------------------------------------------------------------------------------ bad input


@pytest.mark.parametrize(
    "flags, message",
    [
        (
            ["--no_such_option=1"],
            "Beam does not know the pipeline option --no_such_option; check its spelling and your runner's "
            "options (docs/archive.md)",
        ),
        (
            ["--runner=NoSuchRunner"],
            "Beam runner 'NoSuchRunner': Unexpected pipeline runner: NoSuchRunner. Valid values are ",
        ),
        (["runner=DirectRunner"], "Beam pipeline options look like --name=value, got runner=DirectRunner"),
        (
            ["--direct_num_workers=two"],
            "Beam pipeline options --direct_num_workers=two: argument --direct_num_workers: invalid int value: "
            "'two'",
        ),
    ],
)
def test_a_bad_pipeline_option_is_one_line(flags, message):
    with pytest.raises(runners.BeamOptionsError) as info:
        run.pipeline_options(flags, workers=2)
    assert str(info.value).startswith(message) and "\n" not in str(info.value)


def test_the_default_runner_is_the_direct_runner_with_n_processes_and_flags_override_it():
    from apache_beam.options.pipeline_options import DirectOptions, StandardOptions

    options = run.pipeline_options(["--direct_num_workers=3"], workers=2)
    direct = options.view_as(DirectOptions)
    assert options.view_as(StandardOptions).runner == "DirectRunner"
    assert (direct.direct_running_mode, direct.direct_num_workers) == ("multi_processing", 3)
    assert run.pipeline_options([], workers=2).view_as(DirectOptions).direct_num_workers == 2
    with pytest.raises(runners.BeamOptionsError, match=r"^Beam workers must be >= 1, got 0$"):
        run.pipeline_options([], workers=0)


def test_the_command_s_bad_inputs_are_one_line_before_any_work(root, folder, capsys):
    manifest = root / "manifest.csv"
    manifest.write_text("file,label\na.avi,1\n")
    out = root / "never.csv"
    base = ["predict-archive", f"--out={out}", f"--weights={folder}", "--compile_cache=off"]
    assert _one_error_line([*base, f"--input={manifest}"], capsys) == (
        f"{manifest}: no 'path' column (columns: file, label); a manifest names its videos in a column "
        "called path"
    )
    line = _one_error_line([*base, f"--input={root}", "--beam_options=--runer=FlinkRunner"], capsys)
    assert line == (
        "Beam does not know the pipeline option --runer; check its spelling and your runner's options "
        "(docs/archive.md)"
    )
    line = _one_error_line([*base, f"--input={root}", "--beam_options='--runner"], capsys)
    assert line == "--beam_options: No closing quotation (quote it as one shell word)"
    assert not out.exists() and not (root / ".never.csv.beam").exists()


def test_without_apache_beam_the_package_imports_and_the_command_says_what_to_install(tmp_path):
    code = f"""
import sys
sys.modules["apache_beam"] = None  # as if apache-beam were not installed
import coreecho_jax.inference.archive
from coreecho_jax import cli
assert cli.main(["predict-archive", "--help"]) == 0
cli.main(["predict-archive", "--input={tmp_path}", "--out={tmp_path / "o.csv"}", "--weights={tmp_path}"])
"""
    done = run_python(code)
    assert done.returncode == 1, done.stderr
    assert done.stderr.splitlines()[-1] == (
        "error: EF over an archive on Beam needs apache-beam, which this install lacks: pip install -r "
        "requirements-beam.txt (see docs/archive.md)"
    )


# ----------------------------------------------------------------------------------------- the parts


def test_small_archives_are_cut_into_enough_shards_for_every_worker():
    files = [(i, batch.InputFile(f"{i}.avi", None, None, None)) for i in range(40)]
    assert [len(s) for s in run.shards(files, workers=2)] == [5] * 8
    assert [len(s) for s in run.shards(files, workers=1)] == [10] * 4
    assert [len(s) for s in run.shards(files * 10, workers=2)] == [16] * 25
    assert [len(s) for s in run.shards(files[:3], workers=2)] == [1, 1, 1]
    assert [len(s) for s in run.shards(files, workers=2, size=32)] == [32, 8]
    assert [i for s in run.shards(files, workers=3) for i, _ in s] == list(range(40))


def test_a_worker_s_decoding_process_that_died_is_replaced_for_the_next_shard(model, tmp_path):
    write_echo(tmp_path / "a.avi")
    line = transforms.shard_line([(7, batch.InputFile.of("a.avi", tmp_path / "a.avi"))])
    prepare = transforms.PrepareShard(batch.DecodeSettings(model.config, model.clips_per_video), prefetch=2)
    prepare.setup()
    try:
        ((index, file, decoded),) = list(prepare.process(line))
        assert (index, file.name, decoded.error) == (7, "a.avi", None)
        first = prepare._pool.submit(os.getpid).result()
        os.kill(first, signal.SIGKILL)
        time.sleep(0.5)
        ((index, _, again),) = list(prepare.process(line))  # a new process decodes the next shard
        assert index == 7 and again.error is None
        assert again.prepared.clips.tolist() == decoded.prepared.clips.tolist()
        assert prepare._pool.submit(os.getpid).result() != first
    finally:
        prepare.teardown()


@pytest.mark.slow  # a Beam pipeline on 1 worker, whose model fails to load
def test_a_pipeline_that_fails_is_one_line_and_writes_no_csv(root, folder, archive):
    out = root / "failed" / "preds.csv"
    load = functools.partial(archive_helpers.load_here_only, os.getpid(), str(folder))
    with pytest.raises(run.ArchiveError) as info:
        run.predict_archive(load, archive, out, run.ArchiveOptions(workers=1))
    assert str(info.value) == (
        "the Beam pipeline failed and no CSV was written: coreecho_jax.inference.weights_folder.WeightsError: "
        f"{folder}: changed since the driver read it [while running 'Predict/BeamML_RunInference']"
    )
    assert not out.exists() and not (out.parent / ".preds.csv.beam").exists()


def test_the_docs_list_predict_folder_s_columns_and_only_options_beam_knows():
    page = (REPO / "docs" / "archive.md").read_text()
    assert f"`{', '.join(batch.COLUMNS)}`" in page
    examples = re.findall(r"--beam_options='([^']+)'", page)
    runners = [run.pipeline_options(e.split(), workers=1).get_all_options()["runner"] for e in examples]
    assert runners == ["DataflowRunner", "FlinkRunner", "SparkRunner"]
