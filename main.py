"""coreecho-jax command line: train, evaluate, predict.

python main.py --config=configs/demo.py --workdir=/tmp/coreecho_demo
python main.py --config=configs/echonet.py --workdir=runs/echonet --config.data.root=/data/EchoNet-Dynamic
python main.py --config=configs/echonet.py --workdir=runs/echonet --mode=evaluate --checkpoint=best.pth
python main.py --config=configs/echonet.py --workdir=runs/echonet --mode=predict --video=clip.dcm
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags, logging
from ml_collections import config_flags

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Experiment config (a configs/*.py file).", lock_config=True)
flags.DEFINE_string("workdir", None, "Where checkpoints, metrics and results are written.")
flags.DEFINE_enum(
    "mode",
    "train",
    ["train", "evaluate", "predict", "data"],
    "train: both stages + test; evaluate: test a checkpoint; predict: EF of one video; "
    "data: prepare the dataset and print a summary and one batch.",
)
flags.DEFINE_string("checkpoint", None, "evaluate/predict: a run workdir, an imported Orbax dir or a .pth.")
flags.DEFINE_string("video", None, "predict: an AVI/MP4/DICOM file.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    del argv
    from coreecho_jax import cli  # after flag parsing: keeps --help fast and TensorFlow off the GPU

    if not FLAGS["verbosity"].present:  # library INFO logs (Orbax, TFDS) only when asked: -v 0
        logging.set_verbosity(logging.WARNING)

    cli.hide_gpus_from_tensorflow()
    logging.info("config:\n%s", FLAGS.config)
    cli.run(FLAGS.mode, FLAGS.config, FLAGS.workdir, checkpoint=FLAGS.checkpoint, video=FLAGS.video)


if __name__ == "__main__":
    app.run(main)
