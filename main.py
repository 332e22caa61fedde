"""coreecho-jax command line: train, evaluate, predict.

python main.py --config=configs/demo.py --workdir=/tmp/coreecho_demo
python main.py --config=configs/demo.py:quick --workdir=/tmp/coreecho_quick
python main.py --config=configs/echonet.py --workdir=runs/echonet --config.data.root=/data/EchoNet-Dynamic
python main.py --config=configs/echonet.py --workdir=runs/echonet --mode=evaluate --checkpoint=best.pth
python main.py --config=configs/echonet.py --workdir=runs/echonet --mode=predict --video=clip.dcm
python main.py --config=configs/echonet.py --workdir=runs/echonet --mode=embed --splits=train,test

Errors the library raises on purpose (a bad config, input, checkpoint or workdir) print one line per
problem, ``error: <message>``, and exit with status 1; anything else keeps its traceback.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags, logging
from ml_collections import config_flags

from coreecho_jax import cli, logs  # light: no jax or TensorFlow at import
from coreecho_jax.errors import CoreEchoError

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file(
    "config", None, "Experiment config: a configs/*.py file, optionally file.py:variant.", lock_config=True
)
flags.DEFINE_string("workdir", None, "Where checkpoints, metrics and results are written.")
flags.DEFINE_enum(
    "mode",
    "train",
    ["train", "evaluate", "predict", "data", "embed"],
    "train: both stages + test; evaluate: test a checkpoint; predict: EF of one video; "
    "data: prepare the dataset and print a summary and one batch; embed: encoder embeddings of "
    "--splits, continuity numbers and UMAP.",
)
flags.DEFINE_string(
    "checkpoint", None, "evaluate/predict/embed: a run workdir, an imported Orbax dir or a .pth."
)
flags.DEFINE_string("video", None, "predict: an AVI/MP4/DICOM file.")
flags.DEFINE_string("splits", "test", "embed: comma list of splits to embed (train, val, test).")
flags.DEFINE_bool(
    "allow_config_change",
    False,
    "train: resume a workdir whose config.json differs from --config on fields that change results "
    "(each accepted change is appended to <workdir>/config_changes.jsonl).",
)
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    del argv
    logs.configure(FLAGS.verbosity)  # quiet; -v 1: library INFO logs and chatter, -v 2: DEBUG

    logging.info("config:\n%s", FLAGS.config)
    try:
        cli.run(
            FLAGS.mode,
            FLAGS.config,
            FLAGS.workdir,
            checkpoint=FLAGS.checkpoint,
            video=FLAGS.video,
            allow_config_change=FLAGS.allow_config_change,
            splits=FLAGS.splits,
        )
    except CoreEchoError as e:
        cli.fail(e)


if __name__ == "__main__":
    app.run(main, flags_parser=cli.parse_flags)
