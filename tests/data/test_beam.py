"""Preparation as Apache Beam pipelines (DirectRunner, multi-processing mode): the EchoNet builder and the
echo-corpus builder give the records, metadata and report of their in-process path; bad runner options
and a failed preparation are one line and leave nothing a later run trusts.

Each pipeline starts worker processes that import TensorFlow: tens of seconds per preparation.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from coreecho_jax.data.corpus import corpus_tfds as ct
from coreecho_jax.data.corpus import runners
from coreecho_jax.data.echonet import echonet_tfds as et
from coreecho_jax.data.synthetic import dicom_corpus as synth
from tests.data.test_corpus import SMALL, read_all, same_records
from tests.data.test_echonet import write_layout


def report_of(builder) -> str:
    return (Path(builder.data_dir) / et.REPORT_NAME).read_text()


@pytest.mark.slow
def test_echonet_on_beam_gives_the_records_metadata_and_report_of_the_in_process_path(tmp_path):
    root = write_layout(tmp_path / "echo", num_frames=(30, 40, 50, 36, 44, 32, 60), colour_videos=(1,))
    (root / "Videos" / "0XVID0004.avi").write_bytes(b"not a video")  # a val video: skipped, reported
    truncated = root / "Videos" / "0XVID0006.avi"
    truncated.write_bytes(truncated.read_bytes()[: truncated.stat().st_size // 2])
    here = et.prepare_echonet(root, tmp_path / "here", workers=2)
    beam = et.prepare_echonet(root, tmp_path / "beam", workers=2, beam=[])
    for split in ("train", "val", "test"):
        assert same_records(read_all(beam, split), read_all(here, split))
    assert json.dumps(beam.info.metadata, sort_keys=True) == json.dumps(here.info.metadata, sort_keys=True)
    assert report_of(beam) == report_of(here)
    report = json.loads(report_of(beam))
    assert report["num_skipped_unreadable"] == 1 and report["num_truncated"] == 1
    assert sorted(p.name for p in Path(beam.data_dir).iterdir()) == sorted(
        p.name for p in Path(here.data_dir).iterdir()
    )  # the Beam work folder (items, rows) is gone


@pytest.mark.slow
def test_a_corpus_on_beam_with_two_workers_gives_the_in_process_records_and_report(tmp_path):
    source = synth.write_dicom_corpus(tmp_path / "src", **SMALL) / synth.FILES_DIR
    here = ct.prepare_corpus(source, tmp_path / "here", workers=1)
    beam = ct.prepare_corpus(source, tmp_path / "beam", workers=2, beam=[])
    assert same_records(read_all(beam), read_all(here))
    assert report_of(beam) == report_of(here)
    assert json.loads(report_of(beam))["num_refused"] == len(synth.BAD_FILES)
    assert not (Path(beam.data_dir) / ct.BEAM_WORK_DIR).exists()


@pytest.mark.slow
def test_the_command_on_beam_prepares_the_corpus_and_its_workers_say_nothing(tmp_path, capfd):
    from coreecho_jax import cli, logs

    source = synth.write_dicom_corpus(tmp_path / "src", **SMALL) / synth.FILES_DIR
    argv = [
        "prepare-corpus",
        f"--source={source}",
        f"--data_dir={tmp_path / 'tfds'}",
        "--beam",
        "--workers=2",
    ]
    assert cli.main(argv) == 0
    said = capfd.readouterr()  # file descriptors: the Beam workers' stderr too
    report = json.loads(report_of(ct.load_corpus(tmp_path / "tfds", source)))
    assert f"{report['num_prepared']} of {report['num_files']} files prepared" in said.out
    chatter = (*runners.WORKER_CHATTER, *logs.NATIVE_CHATTER, "local_job_service")
    assert not [line for line in said.err.splitlines() if any(c in line for c in chatter)], said.err
    assert said.err.splitlines()[-1].startswith(f"wrote: {tmp_path / 'tfds'}")


@pytest.mark.slow
def test_a_beam_preparation_whose_every_file_is_refused_leaves_nothing(tmp_path):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "a.dcm").write_bytes(b"not dicom")
    with pytest.raises(
        ct.CorpusPreparationError,
        match=r"src: the Beam preparation failed and nothing was kept: ValueError: The total number of generated "
        r"examples is 0 for split corpus.* \(no file of that split could be prepared; prepare without Beam",
    ):
        ct.prepare_corpus(tmp_path / "src", tmp_path / "tfds", workers=1, beam=[])
    assert not list((tmp_path / "tfds").rglob("dataset_info.json"))
    assert not list((tmp_path / "tfds").rglob("incomplete.*"))


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (
            ["--no_such_option=1"],
            r"^Beam does not know the pipeline option --no_such_option; check its spelling and your runner's "
            r"options \(docs/beam.md\)$",
        ),
        (["--direct_running_mode=bogus"], r"argument --direct_running_mode: invalid choice: 'bogus'"),
        (["--runner=NoSuchRunner"], r"Beam runner 'NoSuchRunner': Unexpected pipeline runner: NoSuchRunner"),
        (["runner=DirectRunner"], r"^Beam pipeline options look like --name=value, got runner=DirectRunner$"),
    ],
)
def test_a_bad_beam_option_is_one_line_before_any_work(tmp_path, flags, message):
    source = tmp_path / "src"
    source.mkdir()
    (source / "a.dcm").write_bytes(b"x")
    with pytest.raises(runners.BeamOptionsError, match=message):
        ct.prepare_corpus(source, tmp_path / "tfds", beam=flags)
    assert not (tmp_path / "tfds").exists()


def test_the_default_runner_and_the_options_of_other_runners():
    options = runners.pipeline_options(workers=3).get_all_options()
    assert (options["runner"], options["direct_running_mode"], options["direct_num_workers"]) == (
        "DirectRunner",
        "multi_processing",
        3,
    )
    assert options["default_sdk_harness_log_level"] == "WARNING"  # the workers' INFO bookkeeping hidden
    given = runners.pipeline_options(["--default_sdk_harness_log_level=INFO"]).get_all_options()
    assert given["default_sdk_harness_log_level"] == "INFO"  # the caller's flags win
    dataflow = runners.pipeline_options(
        ["--runner=DataflowRunner", "--project=p", "--region=europe-west4", "--temp_location=gs://b/tmp"]
    ).get_all_options()
    assert (dataflow["runner"], dataflow["region"], dataflow["temp_location"]) == (
        "DataflowRunner",
        "europe-west4",
        "gs://b/tmp",
    )
    flink = runners.pipeline_options(["--runner=FlinkRunner", "--flink_master=host:8081", "--parallelism=8"])
    assert flink.get_all_options()["flink_master"] == "host:8081"
    spark = runners.pipeline_options(["--runner=SparkRunner", "--spark_master_url=spark://host:7077"])
    assert spark.get_all_options()["spark_master_url"] == "spark://host:7077"
    with pytest.raises(runners.BeamOptionsError, match="Beam workers must be >= 1, got 0"):
        runners.pipeline_options(workers=0)
