"""prepare-corpus: :func:`coreecho_jax.data.corpus.corpus_tfds.prepare_corpus` from a shell. A DICOM
tree (MIMIC-IV-ECHO's layout) or a manifest CSV prepared once into a TFDS data directory, in this
process (threads) or as an Apache Beam pipeline (``--beam``; the optional extra apache-beam)."""

from __future__ import annotations

import json
from pathlib import Path

import ml_collections
from absl import flags

from coreecho_jax.commands import Spec
from coreecho_jax.commands.archive import beam_option_words


def _define(fv: flags.FlagValues) -> None:
    flags.DEFINE_string(
        "source",
        None,
        "A folder tree of DICOM/video files (e.g. MIMIC-IV-ECHO's files/; DICOM recognised by content) "
        "or a manifest CSV with a 'path' column (optional ef, edv, esv, split).",
        flag_values=fv,
    )
    flags.DEFINE_string(
        "data_dir",
        None,
        "The TFDS data directory written into (<data_dir>/echo_corpus/src_<key>/<version>); a source "
        "prepared before with the same options is reused.",
        flag_values=fv,
    )
    flags.DEFINE_bool(
        "beam",
        False,
        "Prepare as an Apache Beam pipeline (default runner: the DirectRunner, --workers processes); "
        "needs requirements-beam.txt. Default: in this process.",
        flag_values=fv,
    )
    flags.DEFINE_string(
        "beam_options",
        "",
        "More Beam pipeline options, as on a command line (another runner and its options, "
        "docs/beam.md); implies --beam.",
        flag_values=fv,
    )
    flags.DEFINE_integer(
        "workers",
        None,
        "Threads in this process, or the DirectRunner's worker processes (default: the cores); the "
        "records do not depend on it.",
        flag_values=fv,
    )
    flags.DEFINE_float(
        "timeout_s", 300.0, "Seconds one file may take before it is stopped and reported.", flag_values=fv
    )
    flags.DEFINE_integer(
        "memory_mb", 4096, "MiB a file's decoding may use before it is stopped and reported.", flag_values=fv
    )


def _run(fv: flags.FlagValues, config: ml_collections.ConfigDict | None) -> dict:
    from coreecho_jax.data.corpus import corpus_tfds

    beam = beam_option_words(fv.beam_options) if fv.beam or fv.beam_options else None
    builder = corpus_tfds.prepare_corpus(
        fv.source, fv.data_dir, workers=fv.workers, beam=beam, timeout_s=fv.timeout_s, memory_mb=fv.memory_mb
    )
    report = json.loads((Path(builder.data_dir) / corpus_tfds.REPORT_NAME).read_text())
    print(
        f"{builder.data_dir}: {report['num_prepared']} of {report['num_files']} files prepared, "
        f"{report['num_refused']} refused (reasons in {corpus_tfds.REPORT_NAME})"
    )
    return report


#: The command of this module (:data:`coreecho_jax.cli.COMMANDS`).
SPECS = {"prepare-corpus": Spec(_define, _run, config="none", required=("source", "data_dir"))}
