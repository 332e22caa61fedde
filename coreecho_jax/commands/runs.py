"""train, transfer, evaluate, predict, embed, data: the run modes of :func:`coreecho_jax.cli.run`."""

from __future__ import annotations

import ml_collections
from absl import flags

from coreecho_jax import cli, config_check
from coreecho_jax.commands import Spec
from coreecho_jax.errors import ConfigError

CHECKPOINT_HELP = "A run workdir, an imported Orbax folder or a CoReEcho .pth; default: --workdir."


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


def _predict(fv: flags.FlagValues, config: ml_collections.ConfigDict) -> dict:
    if not (fv.checkpoint or fv.workdir):
        raise cli.UsageError(
            "predict needs --checkpoint=<run workdir, imported folder or .pth> (or --workdir)"
        )
    return cli.run("predict", config, fv.workdir or fv.checkpoint, checkpoint=fv.checkpoint, video=fv.video)


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
    "embed": Spec(_define_embed, _embed, required=("workdir",)),
    "data": Spec(_define_data, _data, required=("workdir",)),
}
