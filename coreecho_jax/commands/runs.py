"""train, transfer, evaluate, predict, embed, data: the run modes of :func:`coreecho_jax.cli.run`; and
predict-folder (:func:`coreecho_jax.inference.batch.predict_folder`), predict's sibling for many files."""

from __future__ import annotations

import ml_collections
from absl import flags

from coreecho_jax import cli, config_check
from coreecho_jax.commands import Spec
from coreecho_jax.errors import ConfigError

CHECKPOINT_HELP = "A run workdir, an imported Orbax folder or a CoReEcho .pth; default: --workdir."
COMPILE_CACHE_HELP = (
    "JAX's persistent compilation cache, so that the next run does not compile the model again: a folder, "
    "or off; default: $COREECHO_COMPILE_CACHE, else <data home>/jax_compilation_cache."
)


def _compile_cache(fv: flags.FlagValues) -> None:
    from coreecho_jax.inference import compile_cache

    compile_cache.enable(compile_cache.parse_setting(fv.compile_cache))


def _workdir(fv: flags.FlagValues, what: str) -> None:
    flags.DEFINE_string("workdir", None, what, flag_values=fv)


def _define_train(fv: flags.FlagValues) -> None:
    _workdir(fv, "Where checkpoints, metrics and results are written (one run per workdir).")
    flags.DEFINE_bool(
        "allow_config_change",
        False,
        "Resume a workdir whose config.json differs from --config on fields that change results (each "
        "accepted change is appended to <workdir>/config_changes.jsonl).",
        flag_values=fv,
    )


def _train(fv: flags.FlagValues, config: ml_collections.ConfigDict) -> dict:
    return cli.run("train", config, fv.workdir, allow_config_change=fv.allow_config_change)


def _transfer(fv: flags.FlagValues, config: ml_collections.ConfigDict) -> dict:
    if not config_check.is_transfer(config):
        raise ConfigError(
            "transfer takes a transfer config (camus, hmcqu, camus_demo, hmcqu_demo or one like them); "
            "train an EchoNet config with: coreecho train"
        )
    return _train(fv, config)


def _define_evaluate(fv: flags.FlagValues) -> None:
    _workdir(fv, "Where the metrics, predictions and calibration of the test are written.")
    flags.DEFINE_string("checkpoint", None, CHECKPOINT_HELP, flag_values=fv)


def _evaluate(fv: flags.FlagValues, config: ml_collections.ConfigDict) -> dict:
    return cli.run("evaluate", config, fv.workdir, checkpoint=fv.checkpoint)


def _define_predict(fv: flags.FlagValues) -> None:
    flags.DEFINE_string("video", None, "The AVI, MP4 or DICOM file.", flag_values=fv)
    flags.DEFINE_string("checkpoint", None, CHECKPOINT_HELP, flag_values=fv)
    _workdir(fv, "The run workdir whose best checkpoint predicts (when --checkpoint is not given).")
    flags.DEFINE_string("compile_cache", None, COMPILE_CACHE_HELP, flag_values=fv)


def _predict(fv: flags.FlagValues, config: ml_collections.ConfigDict) -> dict:
    if not (fv.checkpoint or fv.workdir):
        raise cli.UsageError(
            "predict needs --checkpoint=<run workdir, imported folder or .pth> (or --workdir)"
        )
    _compile_cache(fv)
    return cli.run("predict", config, fv.workdir or fv.checkpoint, checkpoint=fv.checkpoint, video=fv.video)


def _define_predict_folder(fv: flags.FlagValues) -> None:
    from coreecho_jax.inference import batch

    flags.DEFINE_string(
        "input",
        None,
        "A folder (searched recursively; DICOM recognised by content), a CSV with a 'path' column (paths "
        "relative to the CSV), or one video.",
        flag_values=fv,
    )
    flags.DEFINE_string(
        "out", None, "The CSV written, one row per file (a rerun skips the files done).", flag_values=fv
    )
    define_weights_flags(fv)
    flags.DEFINE_integer(
        "workers",
        None,
        f"Decoding processes ahead of the model (default: cores - 1, here {batch.default_workers()}; 0: "
        "decode in the main process).",
        flag_values=fv,
    )
    flags.DEFINE_integer(
        "prefetch",
        batch.PREFETCH,
        "Decoded videos held per worker (memory bound: workers x this).",
        flag_values=fv,
    )
    flags.DEFINE_bool("progress", True, "A progress bar with the rate and the time left.", flag_values=fv)
    define_row_flags(fv)


def define_weights_flags(fv: flags.FlagValues) -> None:
    """Where the model comes from, alike in predict-folder and predict-archive: ``--weights`` and the
    Hub ``--revision``."""
    flags.DEFINE_string(
        "weights",
        None,
        "A weights folder (coreecho export-weights), a run workdir, or a Hugging Face Hub id owner/name.",
        flag_values=fv,
    )
    flags.DEFINE_string("revision", None, "The Hub revision to pin (a Hub id only).", flag_values=fv)


def define_row_flags(fv: flags.FlagValues) -> None:
    """The flags of the rows' content, alike in predict-folder and predict-archive: the CardioBench
    columns, retrying errors, the crop, the frame rate, the compilation cache."""
    from coreecho_jax.data.video.video_io import CROP_MODES

    flags.DEFINE_bool(
        "cardiobench",
        False,
        "Append the columns FileName,EF_pred (CardioBench-style scoring).",
        flag_values=fv,
    )
    flags.DEFINE_bool("retry_errors", False, "Redo the files whose earlier row is an error.", flag_values=fv)
    flags.DEFINE_enum(
        "crop",
        None,
        list(CROP_MODES),
        "The crop (default: none for 112x112 videos, else auto).",
        flag_values=fv,
    )
    flags.DEFINE_float(
        "target_fps", None, "Resample each video to this frame rate first (e.g. 50).", flag_values=fv
    )
    flags.DEFINE_string("compile_cache", None, COMPILE_CACHE_HELP, flag_values=fv)


def _predict_folder(fv: flags.FlagValues, config: ml_collections.ConfigDict | None):
    from coreecho_jax.inference import batch, compile_cache
    from coreecho_jax.weights import api

    model = api.from_pretrained(
        fv.weights,
        fv.revision,
        config=config,
        compilation_cache=compile_cache.parse_setting(fv.compile_cache),
    )
    summary = batch.predict_folder(
        model,
        fv.input,
        fv.out,
        workers=fv.workers,
        prefetch=fv.prefetch,
        cardiobench=fv.cardiobench,
        retry_errors=fv.retry_errors,
        progress=fv.progress,
        crop=fv.crop,
        target_fps=fv.target_fps,
    )
    print(summary.line())
    return summary


def _define_embed(fv: flags.FlagValues) -> None:
    _workdir(fv, "Where embeddings_<split>.npz, analysis.json and the UMAP pictures are written.")
    flags.DEFINE_string("checkpoint", None, CHECKPOINT_HELP, flag_values=fv)
    flags.DEFINE_string(
        "splits", "test", "Comma list of the splits to embed (train, val, test).", flag_values=fv
    )


def _embed(fv: flags.FlagValues, config: ml_collections.ConfigDict) -> dict:
    return cli.run("embed", config, fv.workdir, checkpoint=fv.checkpoint, splits=fv.splits)


def _define_data(fv: flags.FlagValues) -> None:
    _workdir(fv, "The run's workdir (a transfer config writes its preparation report there).")


def _data(fv: flags.FlagValues, config: ml_collections.ConfigDict) -> dict:
    return cli.run("data", config, fv.workdir)


#: The commands of this module, by name (:data:`coreecho_jax.cli.COMMANDS`).
SPECS = {
    "train": Spec(_define_train, _train, required=("workdir",)),
    "transfer": Spec(_define_train, _transfer, required=("workdir",)),
    "evaluate": Spec(_define_evaluate, _evaluate, required=("workdir",)),
    "predict": Spec(_define_predict, _predict, required=("video",), writes=False),
    "predict-folder": Spec(
        _define_predict_folder, _predict_folder, config="optional", required=("input", "out", "weights")
    ),
    "embed": Spec(_define_embed, _embed, required=("workdir",)),
    "data": Spec(_define_data, _data, required=("workdir",)),
}
