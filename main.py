"""The checkout's entry point: ``python main.py --config=... [--mode=<command>] ...`` is ``coreecho <command> ...``.

python main.py --config=configs/demo.py --workdir=/tmp/coreecho_demo
python main.py --config=configs/demo.py:quick --workdir=/tmp/coreecho_quick
python main.py --config=configs/echonet.py --workdir=runs/echonet --config.data.root=/data/EchoNet-Dynamic
python main.py --config=configs/echonet.py --workdir=runs/eval --mode=evaluate --checkpoint=runs/echonet
python main.py --config=configs/echonet.py --workdir=runs/echonet --mode=predict --video=clip.dcm
python main.py --config=configs/echonet.py --workdir=runs/echonet --mode=embed --splits=train,test

``--mode`` (default ``train``) is one of train, evaluate, predict, data, embed: the ``coreecho`` command of
that name, with the same flags (``coreecho <command> --help``). Errors the library raises on purpose print
one line per problem, ``error: <message>``, and exit with status 1; anything else keeps its traceback.
"""

import sys

from coreecho_jax import cli  # light: no jax or TensorFlow at import
from coreecho_jax.errors import CoreEchoError

if __name__ == "__main__":
    try:
        argv = cli.mode_argv(sys.argv[1:])
    except CoreEchoError as e:
        cli.fail(e)
    sys.exit(cli.main(argv))
