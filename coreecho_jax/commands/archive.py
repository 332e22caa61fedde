"""predict-archive: :func:`coreecho_jax.inference.archive.run.predict_archive`, predict-folder's rows
computed on Apache Beam (the optional extra apache-beam; its absence is one line when the command runs).

A command of its own rather than a flag of predict-folder: it takes other options (a Beam runner and its
pipeline options, Beam workers that each load the model), needs another install, and leaves
predict-folder, the embedded one-machine path, unchanged."""

from __future__ import annotations

import functools
import shlex

import ml_collections
from absl import flags

from coreecho_jax.commands import Spec
from coreecho_jax.commands.runs import define_row_flags, define_weights_flags


def _define(fv: flags.FlagValues) -> None:
    from coreecho_jax.inference import batch

    flags.DEFINE_string(
        "input",
        None,
        "A folder (searched recursively; DICOM recognised by content), a CSV with a 'path' column (paths "
        "relative to the CSV), or one video; on a cluster, a path every worker reads.",
        flag_values=fv,
    )
    flags.DEFINE_string(
        "out",
        None,
        "The CSV written (predict-folder's columns), one row per file; a rerun skips the files done.",
        flag_values=fv,
    )
    define_weights_flags(fv)
    flags.DEFINE_integer(
        "workers",
        None,
        "Worker processes of the default runner (DirectRunner, multi-processing), each loading the model "
        "once (default: the cores).",
        flag_values=fv,
    )
    flags.DEFINE_string(
        "beam_options",
        "",
        "More Beam pipeline options, as on a command line: another runner and its options, e.g. "
        "'--runner=FlinkRunner --flink_master=host:8081' (docs/archive.md).",
        flag_values=fv,
    )
    flags.DEFINE_integer(
        "prefetch", batch.PREFETCH, "Decoded videos held ahead of the model per worker.", flag_values=fv
    )
    flags.DEFINE_integer(
        "shard_files", None, "Files per shard, the unit a worker takes (default: up to 16).", flag_values=fv
    )
    flags.DEFINE_bool(
        "parquet",
        False,
        "Also write the rows as Parquet beside the CSV (its name with .parquet).",
        flag_values=fv,
    )
    define_row_flags(fv)


def beam_option_words(value: str) -> list[str]:
    """A ``--beam_options`` value split as a shell splits words (prepare-corpus takes it too)."""
    from coreecho_jax import cli

    try:
        return shlex.split(value)
    except ValueError as e:
        raise cli.UsageError(f"--beam_options: {e} (quote it as one shell word)") from None


def _run(fv: flags.FlagValues, config: ml_collections.ConfigDict | None):
    from coreecho_jax.inference import compile_cache
    from coreecho_jax.inference.archive import run
    from coreecho_jax.weights import api, hub

    beam_options = tuple(beam_option_words(fv.beam_options))
    options = run.ArchiveOptions(
        workers=fv.workers,
        beam_options=beam_options,
        prefetch=fv.prefetch,
        shard_files=fv.shard_files,
        cardiobench=fv.cardiobench,
        retry_errors=fv.retry_errors,
        parquet=fv.parquet,
        crop=fv.crop,
        target_fps=fv.target_fps,
    )
    run.pipeline_options(options.beam_options, workers=options.default_workers())  # before a Hub fetch
    folder, _ = hub.resolve(fv.weights, fv.revision)  # a Hub id is fetched once, here, not by each worker
    load = functools.partial(
        api.from_pretrained,
        str(folder),
        config=config,
        compilation_cache=compile_cache.parse_setting(fv.compile_cache),
    )
    summary = run.predict_archive(load, fv.input, fv.out, options)
    print(summary.line())
    return summary


#: The command of this module (:data:`coreecho_jax.cli.COMMANDS`).
SPECS = {
    "predict-archive": Spec(_define, _run, config="optional", required=("input", "out", "weights")),
}
