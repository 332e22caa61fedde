"""The paper's ablation tables as one command (see :mod:`coreecho_jax.analysis.ablate` for the rows).

python -m coreecho_jax.ablate --config=configs/demo.py --workdir=runs/ablate --table=2 --seeds=3
python -m coreecho_jax.ablate --config=configs/echonet.py --workdir=runs/ablate --table=2 \
    --config.data.root=/data/EchoNet-Dynamic --init_from=/weights/uniformer_small_k400_16x8.pth
python -m coreecho_jax.ablate --config=configs/demo.py:quick --workdir=/tmp/ablate --table=3 --seeds=1

``--config.<name>=<value>`` overrides go to every row, except the fields the rows set. A rerun reads
finished runs back and resumes unfinished ones. Errors raised on purpose print ``error: <line>`` lines
and exit with status 1, as ``main.py`` does.
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags, logging
from ml_collections import config_flags

from coreecho_jax import cli  # light: no jax or TensorFlow at import
from coreecho_jax.errors import CoreEchoError

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file(
    "config", None, "Experiment config: a configs/*.py file, optionally file.py:variant.", lock_config=True
)
flags.DEFINE_string("workdir", None, "Ablation folder: runs go to <workdir>/table<k>/<row>/seed<s>.")
flags.DEFINE_enum("table", None, ["2", "3"], "The paper's table: 2 (components) or 3 (augmentation, clips).")
flags.DEFINE_integer("seeds", 3, "Runs per row, seeds config.seed .. config.seed + seeds - 1 (paper: 3).")
flags.DEFINE_string(
    "init_from", "", "Table 2: Kinetics-400 UniFormer weights (.pth); without, K400 rows are skipped."
)
flags.mark_flags_as_required(["config", "workdir", "table"])


def main(argv: list[str]) -> None:
    del argv
    from coreecho_jax.analysis import ablate

    if not FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)
    try:
        ablate.check_ablation_config(FLAGS.config)
        table = ablate.get_table(FLAGS.table)
        _, names = cli.config_overrides(sys.argv)
        ablate.check_user_overrides(table, names, FLAGS.init_from)
        ablate.run_table(
            FLAGS.config, FLAGS.workdir, table.number, seeds=FLAGS.seeds, init_from=FLAGS.init_from
        )
    except CoreEchoError as e:
        cli.fail(e)


if __name__ == "__main__":
    app.run(main, flags_parser=cli.parse_flags)
